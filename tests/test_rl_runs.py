"""rl_sharpe through `pipeline.run` like every model: the same folds, positions only from
policies trained on earlier bars, traded by the positions rule, judged against buy-and-hold
through the same engine; reproducible by seed; refusals are one line."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from mltrader.config import config_from_dict  # noqa: E402
from mltrader.data.bars import Bars  # noqa: E402
from mltrader.errors import ConfigError  # noqa: E402
from mltrader.pipeline import compute_signals, run  # noqa: E402
from mltrader.runs import metrics_json  # noqa: E402
from mltrader.smoke import smoke_config  # noqa: E402
from mltrader.testing import synthetic_bars  # noqa: E402


def planted_bars(t_len: int = 1300, n_sym: int = 5, seed: int = 0, strength: float = 0.5
                 ) -> Bars:
    """Log returns r[t] = e[t] + strength * e[t-2]: the return of bar t+2, which a position
    decided at t's close earns (fills at the next close), is predictable from bar t's own
    return, an input the policy gets through `lags`. Nothing else is predictable."""
    base = synthetic_bars(t_len, n_sym, seed=seed)
    e = np.random.default_rng(seed).normal(0.0, 0.01, (t_len, n_sym))
    r = e.copy()
    r[2:] += strength * e[:-2]
    return base.replace(close=50.0 * np.exp(np.cumsum(r, axis=0)))


BARS = planted_bars()
PARAMS = {"lags": 2, "epochs": 60}


def _cfg(params: dict | None = None, **extra):
    raw = {
        "name": "rl-test",
        "features": ["ret_5", "vol_20"],
        "model": {"name": "rl_sharpe", "params": {**PARAMS, **(params or {})}},
        "walk_forward": {"first_test_year": 2003, "retrain": "yearly", "min_train_rows": 100},
        "strategy": {"name": "positions"},
        "execution": {"rebalance_band": 0.0},
    }
    return config_from_dict({**raw, **extra})


@pytest.fixture(scope="module")
def planted_run():
    return run(_cfg(), bars=BARS)


def test_the_planted_edge_is_traded_out_of_sample_and_judged_against_buy_and_hold(
        planted_run):
    m = planted_run.metrics
    assert m["model"]["name"] == "rl_sharpe"
    assert m["strategy_rule"]["name"] == "positions"
    assert m["out_of_sample"]["start"].startswith("2003-01")
    assert m["strategy"]["sharpe"] > 2.0 > m["buy_and_hold"]["sharpe"]  # net of 6 bps
    assert m["vs_buy_and_hold_significance"]["beats_benchmark"]
    w = planted_run.strategy.weights.to_numpy()
    assert (w < -0.01).any() and (w > 0.01).any()  # long and short, as positions say
    assert np.nanmax(np.abs(w)) <= 1 / 5 + 1e-12  # a 1/N slot each


def test_positions_exist_only_out_of_sample_from_policies_trained_before(planted_run):
    sig = planted_run.signals
    pred, weights = sig.predictions.to_numpy(), sig.weights.to_numpy()
    first = sig.folds[0].fold.test_start
    assert first == sig.start
    assert np.isnan(pred[:first]).all() and np.isnan(weights[:first]).all()
    assert np.isfinite(pred[first + 25:]).all()  # after the features' warm-up
    assert np.nanmax(np.abs(pred)) <= 1.0
    for report in sig.folds:  # the label horizon (2 bars) is embargoed, as for every model
        assert report.fold.train_stop == report.fold.test_start - 2


def test_the_embargo_is_respected():
    sig = compute_signals(BARS, _cfg(walk_forward={
        "first_test_year": 2003, "min_train_rows": 100, "embargo_bars": 5}))
    assert [r.fold.train_stop for r in sig.folds] == [r.fold.test_start - 7 for r in sig.folds]


def test_notes_and_metrics_name_the_model_and_the_cost_it_trained_on(planted_run):
    params = planted_run.metrics["model"]["params"]
    assert params["cost_bps"] == 6.0 and params["lags"] == 2 and params["epochs"] == 60
    text = " ".join(planted_run.notes)
    assert "Model rl_sharpe" in text
    assert "one-way cost 6 bps in training (the run's costs.commission_bps 1 + slippage_bps 5" \
        in text
    own = run(_cfg({"cost_bps": 2.5}), bars=BARS)
    assert own.metrics["model"]["params"]["cost_bps"] == 2.5
    assert "one-way cost 2.5 bps in training (model.params.cost_bps)" in " ".join(own.notes)


def test_same_seed_same_metrics_bytes_and_the_seed_matters(planted_run):
    again = run(_cfg(), bars=BARS)
    assert metrics_json(again) == metrics_json(planted_run)
    other = run(_cfg().model_copy(update={"seed": 7}), bars=BARS)
    assert not np.array_equal(other.signals.predictions.to_numpy(),
                              planted_run.signals.predictions.to_numpy(), equal_nan=True)


def test_online_adaptation_runs_through_the_pipeline():
    sig = compute_signals(BARS, _cfg({"online": True, "online_lr": 0.05}))
    batch = compute_signals(BARS, _cfg())
    first = sig.start
    assert np.isnan(sig.predictions.to_numpy()[:first]).all()
    assert not np.allclose(sig.predictions.to_numpy()[first + 25:],
                           batch.predictions.to_numpy()[first + 25:])
    assert any("keeps adapting out of sample" in n for n in sig.notes)


@pytest.mark.parametrize(("change", "needle"), [
    ({"model": {"name": "rl_sharpe", "tune": {"space": {"lr": [0.01, 0.1]}}}},
     "tuning rl_sharpe is not supported"),
    ({"target": {"kind": "direction"}}, "set target: {kind: return, horizon: 1}"),
    ({"target": {"kind": "return", "horizon": 5}}, "horizon 5"),
    ({"model": {"name": "rl_sharpe", "params": {"cost_bps": -1}}}, "cost_bps for rl_sharpe"),
    ({"model": {"name": "rl_sharpe", "params": {"lags": 1.5}}}, "lags for rl_sharpe"),
    ({"model": {"name": "rl_sharpe", "params": {"epoch": 3}}},
     "'epoch' is not a parameter of rl_sharpe"),
])
def test_what_rl_sharpe_cannot_do_is_refused_in_one_line(change, needle):
    raw = {"model": {"name": "rl_sharpe", "params": {"epochs": 1}},
           "walk_forward": {"first_test_year": 2003, "min_train_rows": 100},
           "strategy": {"name": "positions"}, **change}
    with pytest.raises(ConfigError, match=needle.replace("{", r"\{").replace("}", r"\}")) as e:
        compute_signals(BARS, config_from_dict(raw))
    assert "\n" not in str(e.value)


def test_smoke_caps_the_epochs_and_keeps_the_inputs():
    cfg = smoke_config(_cfg({"epochs": 500}))
    assert cfg.model.params == {"lags": 2, "epochs": 1}


def test_paper_and_live_serve_the_backtests_positions(planted_run):
    """The live signal serves rl_sharpe as the backtest ran it (tests/live/
    test_panel_serving.py holds it to every bar, a paper session and parity)."""
    from mltrader.live.signals import WalkForwardSignal

    start = planted_run.signals.start
    sig = WalkForwardSignal(_cfg(), BARS.select(None, None, BARS.index[start - 1]))
    for t in (start + 30, start + 31):
        got = sig(BARS.select(None, None, BARS.index[t])).to_numpy()
        np.testing.assert_allclose(got, planted_run.signals.predictions.to_numpy()[t],
                                   rtol=1e-9, atol=1e-9)
