"""A panel policy (rl_sharpe) served bar by bar by the live signal holds, on every bar, the
position its backtest held: the same fold fits, the same warm-up start, the same labels; a
paper session of it trades what the backtest trades (`mltrader paper` + `mltrader parity`);
and no bar after t reaches the position at t."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from typer.testing import CliRunner  # noqa: E402

from mltrader.cli import app  # noqa: E402
from mltrader.config import config_from_dict  # noqa: E402
from mltrader.data.bars import Bars  # noqa: E402
from mltrader.data.files import save_file  # noqa: E402
from mltrader.errors import ConfigError  # noqa: E402
from mltrader.live.journal import Journal  # noqa: E402
from mltrader.live.session import journal_url  # noqa: E402
from mltrader.live.signals import WalkForwardSignal  # noqa: E402
from mltrader.models.panel import WARMUP  # noqa: E402
from mltrader.parity import parity_report  # noqa: E402
from mltrader.pipeline import (  # noqa: E402
    compute_signals,
    load_data,
    run,
    run_clock,
    run_folds,
    trade_targets,
)
from mltrader.rl.causal import perturb_after  # noqa: E402
from mltrader.testing import synthetic_bars  # noqa: E402

# 2000-01-03 .. 2003-01: the test bars are 2002 (quarterly folds: 4 fits), each fold's policy
# runs from WARMUP bars before its test period
BARS = synthetic_bars(800, 4, seed=21, ohlc=True, start="2000-01-03")
PARAMS = {"lags": 2, "epochs": 3}
cli = CliRunner(env={"COLUMNS": "200", "FORCE_COLOR": None, "NO_COLOR": "1"})


def _cfg(params: dict | None = None, **extra: object):
    raw: dict = {
        "name": "rl-live",
        "features": ["ret_5", "vol_20"],
        "model": {"name": "rl_sharpe", "params": {**PARAMS, **(params or {})}},
        "walk_forward": {"first_test_year": 2002, "retrain": "quarterly",
                         "min_train_rows": 100},
        "strategy": {"name": "positions"},
        "execution": {"size_at": "decision", "rebalance_band": 0.0},
        "costs": {"commission_bps": 1, "slippage_bps": 5},
    }
    raw.update(extra)
    return config_from_dict(raw)


def _history(cfg, bars: Bars = BARS) -> tuple[Bars, int]:
    start = run_folds(bars, cfg)[0].test_start
    return bars.select(None, None, bars.index[start - 1]), start


def _window(bars: Bars, t: int) -> Bars:
    return bars.select(None, None, bars.index[t])


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("online", [False, True])
def test_every_bar_gets_the_backtests_position(online, caplog):
    cfg = _cfg({"online": online, "online_lr": 0.05})
    backtest = compute_signals(BARS, cfg)
    want = backtest.predictions.to_numpy()
    history, start = _history(cfg)
    sig = WalkForwardSignal(cfg, history)
    with caplog.at_level(logging.INFO, logger="mltrader.live.signals"):
        got = np.array([sig(_window(BARS, t)).to_numpy() for t in range(start, len(BARS))])
    assert np.isfinite(want[start:]).all()
    _close(got, want[start:])
    assert np.abs(got).max() <= 1.0 and np.abs(got).max() > 0.01
    folds = run_folds(BARS, cfg)
    assert len(folds) >= 4
    retrains = [r for r in caplog.records if r.name == "mltrader.live.signals"]
    assert len(retrains) == len(folds) and all("training rows" in r.message for r in retrains)
    # the journal's view and the backtest's report of the same fits
    assert sig.last_fit == BARS.index[folds[-1].test_start]
    assert sig.params == backtest.params and sig.params["cost_bps"] == 6.0
    assert len(sig.artifact_hash) == 64
    assert list(sig.last_features["S00"]) == list(cfg.features)


def test_a_signal_first_served_mid_fold_warms_up_from_the_backtests_row():
    """A runner started (or restarted) inside a fold fits that fold and runs its policy from
    WARMUP bars before the fold's test period, not from its own first bar (online, the
    weights adapt along the whole span: another start gives another position)."""
    cfg = _cfg({"online": True, "online_lr": 0.05})
    want = compute_signals(BARS, cfg).predictions.to_numpy()
    folds = run_folds(BARS, cfg)
    assert folds[1].test_start - WARMUP > 0  # the warm-up does not reach the first bar
    for first in (folds[1].test_start + 30, folds[-1].test_stop - 8):
        sig = WalkForwardSignal(cfg, _history(cfg)[0])
        for t in (first, first + 1, first + 7):  # the fit's bar, then the bars after it
            _close(sig(_window(BARS, t)).to_numpy(), want[t])


def _perturbed_after(t: int, seed: int) -> Bars:
    """BARS with every bar after t scaled by a random factor (each bar stays valid)."""
    return perturb_after(BARS, t, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def online_backtest():
    cfg = _cfg({"online": True, "online_lr": 0.05})
    return cfg, compute_signals(BARS, cfg).predictions.to_numpy()


@pytest.mark.parametrize("offset, ahead", [(0, 1), (2, 2), (20, 30)])
def test_no_bar_after_t_changes_the_position_at_t(online_backtest, offset, ahead):
    """Online, the policy learns from realised labels: the labels of t-1 and t (realised
    after bar t) and every later bar must not reach the position at t, live or backtest."""
    cfg, want = online_backtest
    folds = run_folds(BARS, cfg)
    t = folds[1].test_start + offset
    assert t + ahead < folds[1].test_stop
    bent = _perturbed_after(t, seed=offset + ahead)
    sig = WalkForwardSignal(cfg, _history(cfg)[0])
    # fitted on a window whose bars after t are perturbed, then asked about t
    later = sig(_window(bent, t + ahead)).to_numpy()
    _close(sig(_window(BARS, t)).to_numpy(), want[t])
    # the backtest on the perturbed future holds the same position at t ...
    other = compute_signals(bent, cfg).predictions.to_numpy()
    _close(other[t], want[t])
    # ... and its own, different, position at t + ahead is the live one on that future
    _close(later, other[t + ahead])
    assert not np.allclose(other[t + ahead], want[t + ahead])


def test_a_panel_member_of_another_strategy_is_served_too():
    cfg = _cfg(model={"name": "ridge"}, strategy={
        "name": "positions", "member": "rl",
        "models": [{"name": "rl_sharpe", "label": "rl", "params": PARAMS}]})
    backtest = compute_signals(BARS, cfg).members
    history, start = _history(cfg)
    sig = WalkForwardSignal(cfg, history)
    folds = run_folds(BARS, cfg)
    rows = [start, start + 1, folds[2].test_start + 5, len(BARS) - 1]
    for t in rows:
        out = sig.members(_window(BARS, t))
        assert list(out) == list(backtest)  # "model", "ridge", "rl"
        for k, v in out.items():
            _close(v.to_numpy(), backtest[k].to_numpy()[t])
    assert set(sig.artifact_hashes) == {"ridge", "rl"}


def test_a_deep_rl_agent_trades_the_windows_market_as_in_the_backtest():
    """An SB3 agent (`models.rl_agent`) acts in a simulated market (`plan.panel_market`):
    live over the window's bars, which end at t, in the backtest over every bar."""
    pytest.importorskip("stable_baselines3")
    tiny = {"total_timesteps": 128, "n_steps": 32, "batch_size": 32, "n_envs": 2,
            "window": 3, "episode_length": 64, "net_arch": [16]}
    cfg = _cfg(model={"name": "ppo", "params": tiny})
    want = compute_signals(BARS, cfg).predictions.to_numpy()
    history, start = _history(cfg)
    sig = WalkForwardSignal(cfg, history)
    folds = run_folds(BARS, cfg)
    for t in (start, start + 1, start + 2, folds[1].test_start + 5, folds[1].test_start + 6,
              len(BARS) - 1):
        _close(sig(_window(BARS, t)).to_numpy(), want[t])


@pytest.mark.parametrize(("change", "needle"), [
    ({"target": {"kind": "direction"}}, "set target: {kind: return, horizon: 1}"),
    ({"model": {"name": "rl_sharpe", "params": {"lags": 1.5}}}, "lags for rl_sharpe"),
    ({"model": {"name": "rl_sharpe", "params": {"epoch": 3}}},
     "'epoch' is not a parameter of rl_sharpe"),
])
def test_a_bad_panel_config_is_refused_when_the_signal_is_built(change, needle):
    cfg = _cfg(**change)
    with pytest.raises(ConfigError, match=needle.replace("{", r"\{").replace("}", r"\}")) as e:
        WalkForwardSignal(cfg, _history(_cfg())[0])
    assert "\n" not in str(e.value)


def test_too_few_training_rows_is_the_backtests_error():
    cfg = _cfg(walk_forward={"first_test_year": 2002, "min_train_rows": 100_000})
    with pytest.raises(ConfigError) as backtest:
        compute_signals(BARS, cfg)
    history, start = _history(cfg)
    with pytest.raises(ConfigError) as live:
        WalkForwardSignal(cfg, history)(_window(BARS, start))
    assert str(live.value) == str(backtest.value)


# ---------------------------------------------------------------- paper + parity, end to end
@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """`mltrader paper` on an online rl_sharpe config: every out-of-sample bar served."""
    d = tmp_path_factory.mktemp("panel_paper")
    data = save_file(BARS, d / "bars.csv")
    raw = _cfg({"online": True, "online_lr": 0.05}).model_dump(mode="json")
    raw["data"] = {"source": "file", "path": str(data)}
    raw["output_dir"] = str(d / "runs")
    config = d / "rl.yaml"
    config.write_text(yaml.safe_dump(raw))
    folder = d / "sess"
    result = cli.invoke(app, ["paper", "-c", str(config), "--session", str(folder)])
    assert result.exit_code == 0, result.output
    return folder, config_from_dict(raw), result


def test_the_paper_session_decides_what_the_backtest_decides_on_every_bar(session):
    folder, cfg, result = session
    assert "Run 1: replayed" in result.stdout
    bars, _ = load_data(cfg)
    out = run(cfg, bars=bars)
    start = out.signals.start
    targets = trade_targets(out.signals, bars, cfg, run_clock(cfg, bars).periods_per_year)
    journal = Journal(journal_url(folder))
    try:
        dec = journal.decisions_frame()
    finally:
        journal.close()
    assert len(dec) == (len(bars) - start) * len(bars.symbols)
    assert (dec["model_artifact_hash"].str.len() == 64).all()
    assert dec["model_artifact_hash"].nunique() == len(out.signals.folds)
    pred = dec.pivot(index="bar_time", columns="symbol", values="prediction")
    target = dec.pivot(index="bar_time", columns="symbol", values="target")
    assert list(pred.index) == list(bars.index[start:])
    _close(pred[list(bars.symbols)].to_numpy(), out.signals.predictions.to_numpy()[start:])
    _close(target[list(bars.symbols)].to_numpy(), targets.values.to_numpy()[start:])


def test_parity_of_the_paper_session(session):
    folder, _, res = session
    rep = parity_report(folder)
    assert rep.ok, rep.summary()
    assert rep.matched > 50 and rep.backtest_only == rep.journal_only == rep.differs == 0
    shown = cli.invoke(app, ["parity", str(folder)])
    assert shown.exit_code == 0, shown.output
    assert "PARITY" in shown.stdout and "0 only in the backtest, 0 only in the journal" in \
        shown.stdout


def test_a_stacked_model_is_refused_in_one_line():
    """The ensemble's RL member reads other models' predictions (nested walk-forward): the
    live runner cannot serve that yet and says so, instead of serving it without them."""
    from mltrader.testing import synthetic_bars

    cfg = config_from_dict({
        "model": {"name": "ridge", "label": "a"},
        "walk_forward": {"first_test_year": 2003, "min_train_rows": 100},
        "strategy": {"name": "ensemble", "members": ["a", "rl"], "models": [
            {"name": "rl_sharpe", "label": "rl", "inputs": ["a"], "params": {"epochs": 2}}]},
    })
    with pytest.raises(ConfigError, match="cannot serve a stacked model yet") as e:
        WalkForwardSignal(cfg, synthetic_bars(300, 3, seed=1))
    assert "\n" not in str(e.value)
