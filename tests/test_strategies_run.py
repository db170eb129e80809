"""Every built-in strategy end to end through `pipeline.run`, with the risk layer acting."""

from __future__ import annotations

import numpy as np
import pytest

from mltrader.config import config_from_dict
from mltrader.errors import ConfigError
from mltrader.pipeline import run
from mltrader.testing import synthetic_bars

BARS = synthetic_bars(1500, 5, seed=11, ohlc=True, start="2000-01-03")
BASE = {"model": {"name": "ridge"},
        "walk_forward": {"first_test_year": 2003, "min_train_rows": 100}}


def _run(strategy: dict, **extra):
    return run(config_from_dict({**BASE, "strategy": strategy, **extra}), bars=BARS)


def test_crossover_trains_nothing_and_is_judged_on_the_same_bars():
    out = _run({"name": "crossover", "fast": 10, "slow": 40})
    model_run = _run({"name": "threshold", "threshold": 0.0})
    assert out.metrics["model"] is None and out.signals.folds == []
    assert out.strategy.equity.index[0] == model_run.strategy.equity.index[0]
    assert out.metrics["strategy"]["trades"] > 0
    assert any("needs no model" in n for n in out.notes)


def test_regime_filter_with_fixed_shares_stop_and_target():
    out = _run({"name": "regime_filter", "buy_above": 0.0, "sell_below": -0.001},
               risk={"sizing": "fixed_shares", "shares": 40, "stop_loss": 0.03,
                     "take_profit": 0.05}, initial_cash=1_000_000)
    pos = out.strategy.positions.to_numpy()
    assert set(np.unique(pos)) <= {0.0, 40.0}  # whole positions of 40 shares or nothing
    exits = out.metrics["risk"]["exits"]
    assert exits.get("stop_loss", 0) > 0 and exits.get("take_profit", 0) > 0
    # no entry decided on a bar whose regime was bearish
    codes = out.signals.regimes.to_numpy()
    t = out.strategy.trades
    decided = t["entry_bar"].to_numpy() - 1
    cols = [list(BARS.symbols).index(s) for s in t["symbol"]]
    assert not np.isin(codes[decided, cols], (0, 1)).any()


def test_ensemble_votes_with_the_members_it_has_and_says_so():
    out = _run({"name": "ensemble", "members": ["ridge", "logistic", "rl"],
                "models": [{"name": "logistic"}]},
               risk={"sizing": "percent_of_equity", "percent": 0.1})
    assert any("without rl" in n for n in out.notes)
    w = out.strategy.weights.to_numpy()
    assert (w < -0.01).any() and (w > 0.01).any()  # shorts and longs (allow_short default)
    assert np.nanmax(np.abs(w)) < 0.2


def test_topk_holds_at_most_k_and_reports_turnover_and_cost_drag():
    out = _run({"name": "topk", "k": 2, "n_drop": 1, "rebalance": "weekly"})
    held = (out.strategy.positions.to_numpy() != 0).sum(axis=1)
    assert held.max() <= 2
    m = out.metrics["strategy"]
    assert m["turnover"] > 0 and m["cost_drag"] > 0
    assert any("cost drag" in n for n in out.notes)


def test_guards_from_the_config_act_in_the_run():
    out = _run({"name": "threshold", "threshold": 0.0},
               risk={"kill_switch_drawdown": 0.05, "time_stop": 5})
    acted = out.metrics["risk"]
    assert "kill_switch" in acted["exits"] or "time_stop" in acted["exits"]
    assert any(k.startswith("risk: kill switch") for k in acted["orders"])


def test_stress_tables_are_in_every_run():
    out = _run({"name": "threshold", "threshold": 0.0})
    assert set(out.stress) == {"crises", "regimes"}
    assert len(out.stress["regimes"]) >= 6
    assert out.metrics["stress"]["regimes"]


@pytest.mark.parametrize(("strategy", "needle"), [
    ({"name": "nope"}, "unknown strategy 'nope'"),
    ({"name": "topk", "kk": 3}, "unknown key 'strategy.kk'"),
    ({"name": "topk", "k": 0}, "strategy.k"),
    ({"name": "crossover", "fast": 200, "slow": 50}, "fast"),
])
def test_bad_strategy_config_is_one_line(strategy, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("(", r"\(")) as e:
        config_from_dict({"strategy": strategy})
    assert "\n" not in str(e.value)


def test_risk_per_trade_without_a_stop_is_refused():
    with pytest.raises(ConfigError, match="stop_loss"):
        _run({"name": "threshold"}, risk={"sizing": "risk_per_trade"})


def test_a_strategy_that_never_trades_says_so():
    out = _run({"name": "regime_filter", "buy_above": 0.5})
    assert out.metrics["strategy"]["fills"] == 0
    assert any("never traded" in w for w in out.warnings)
    assert any("Regime filter: the signal was above buy_above on 0" in n for n in out.notes)
