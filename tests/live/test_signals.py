"""The live model signal predicts, bar by bar, exactly what the backtest predicted."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest

from mltrader.config import config_from_dict
from mltrader.data.bars import Bars
from mltrader.data.feeds import ReplayFeed
from mltrader.errors import ConfigError
from mltrader.live.brokers.paper import PaperBroker
from mltrader.live.journal import Journal
from mltrader.live.runner import Runner
from mltrader.live.signals import WalkForwardSignal, fast_tail
from mltrader.pipeline import compute_signals, engine_settings, resolve_fill, run, run_folds
from mltrader.testing import synthetic_bars

BARS = synthetic_bars(1300, 4, seed=21, ohlc=True, start="2000-01-03")  # 2000 .. 2004
LGBM = {"n_estimators": 15, "num_leaves": 7, "min_child_samples": 50}


def _cfg(model: dict, **extra: object) -> object:
    raw = {"model": model,
           "walk_forward": {"first_test_year": 2003, "min_train_rows": 100},
           "strategy": {"name": "threshold", "threshold": 0.0},
           "execution": {"size_at": "decision"}}
    for key, value in extra.items():
        merge = isinstance(value, dict) and not (key == "strategy" and "name" in value)
        raw[key] = {**raw.get(key, {}), **value} if merge else value
    return config_from_dict(raw)


def _history(cfg, bars=BARS) -> tuple[Bars, int]:
    start = run_folds(bars, cfg)[0].test_start
    return bars.select(None, None, bars.index[start - 1]), start


def _window(bars: Bars, t: int) -> Bars:
    return bars.select(None, None, bars.index[t])


def _feed(cfg, bars=BARS, rows=None) -> tuple[WalkForwardSignal, list[int], np.ndarray]:
    """Feed windows bar by bar (all replayed bars, or `rows`); the stacked predictions."""
    history, start = _history(cfg, bars)
    sig = WalkForwardSignal(cfg, history)
    rows = list(range(start, len(bars))) if rows is None else rows
    return sig, rows, np.array([sig(_window(bars, t)).to_numpy() for t in rows])


def _assert_backtest(cfg, got: np.ndarray, rows: list[int], bars=BARS) -> None:
    want = compute_signals(bars, cfg).predictions.to_numpy()[rows]
    assert np.isfinite(want).sum() > 0.9 * want.size
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model, retrain", [
    ({"name": "ridge"}, "quarterly"),
    ({"name": "lightgbm", "params": LGBM}, "yearly"),
])
def test_bar_by_bar_predictions_equal_the_backtest(model, retrain, caplog):
    cfg = _cfg(model, walk_forward={"retrain": retrain})
    with caplog.at_level(logging.INFO, logger="mltrader.live.signals"):
        sig, rows, got = _feed(cfg)
    _assert_backtest(cfg, got, rows)
    periods = len(run_folds(BARS, cfg))
    assert periods >= 2
    retrains = [r for r in caplog.records if r.name == "mltrader.live.signals"]
    assert len(retrains) == periods and all("training rows" in r.message for r in retrains)
    # the journal's view: the last fit's period, features and model hash
    assert sig.last_fit == BARS.index[run_folds(BARS, cfg)[-1].test_start]
    assert set(sig.last_features) == set(BARS.symbols)
    assert list(sig.last_features["S00"]) == list(cfg.features)
    assert len(sig.artifact_hash) == 64


def test_artifact_hash_is_empty_before_a_fit_and_names_the_fitted_model():
    cfg = _cfg({"name": "ridge"})
    history, start = _history(cfg)
    sig, other = WalkForwardSignal(cfg, history), WalkForwardSignal(cfg, history)
    assert sig.artifact_hash == "" and sig.last_fit is None and sig.last_features == {}
    sig(_window(BARS, start))
    first = sig.artifact_hash
    other(_window(BARS, start + 3))  # the same fold's model, fitted separately: same hash
    assert other.artifact_hash == first
    nxt = run_folds(BARS, cfg)[1].test_start
    sig(_window(BARS, nxt))
    assert sig.artifact_hash not in ("", first)


@pytest.mark.parametrize("target, model", [
    ({"kind": "price"}, {"name": "ridge"}),
    ({"kind": "direction"}, {"name": "ridge"}),  # a regressor on 0/1: P(up) - 0.5
    ({"kind": "direction"}, {"name": "logistic"}),  # a classifier: predict_proba - 0.5
    ({"kind": "return", "horizon": 3}, {"name": "ridge"}),
])
def test_price_direction_and_horizon_targets_give_the_backtest_predictions(target, model):
    cfg = _cfg(model, target=target, walk_forward={"embargo_bars": 2})
    _, rows, got = _feed(cfg)
    _assert_backtest(cfg, got, rows)


def test_a_tuned_model_is_tuned_once_on_the_first_window_as_in_the_backtest(monkeypatch):
    import mltrader.live.signals as signals

    cfg = _cfg({"name": "ridge", "tune": {"n_trials": 3, "cv_splits": 2,
                                          "space": {"alpha": ["float_log", 0.01, 1000.0]}}})
    calls = []
    real = signals.tuned_params
    monkeypatch.setattr(signals, "tuned_params", lambda *a: calls.append(1) or real(*a))
    history, start = _history(cfg)
    rows = [start, start + 1, run_folds(BARS, cfg)[1].test_start, len(BARS) - 1]
    sig, _, got = _feed(cfg, rows=rows)
    assert len(calls) == 1
    backtest = compute_signals(BARS, cfg)
    assert sig.params == backtest.params and sig.params != {}
    np.testing.assert_allclose(got, backtest.predictions.to_numpy()[rows], rtol=1e-9,
                               atol=1e-12)


def test_ensemble_members_equal_the_backtests_members():
    cfg = _cfg({"name": "ridge"}, strategy={
        "name": "ensemble", "members": ["ridge", "lr", "small_gbm"],
        "models": [{"name": "logistic", "label": "lr"},
                   {"name": "lightgbm", "label": "small_gbm", "params": LGBM}]})
    history, start = _history(cfg)
    sig = WalkForwardSignal(cfg, history)
    backtest = compute_signals(BARS, cfg).members
    rows = list(range(start, len(BARS), 7))
    got = {k: [] for k in backtest}
    for t in rows:
        w = _window(BARS, t)
        out = sig.members(w)
        assert list(out) == list(backtest)  # "model", "ridge", "lr", "small_gbm"
        np.testing.assert_array_equal(sig(w).to_numpy(), out["model"].to_numpy())
        for k, v in out.items():
            got[k].append(v.to_numpy())
    for k, want in backtest.items():
        np.testing.assert_allclose(np.array(got[k]), want.to_numpy()[rows], rtol=1e-9,
                                   atol=1e-12, err_msg=k)
    assert set(sig.artifact_hashes) == {"ridge", "lr", "small_gbm"}


def test_a_sequence_model_is_served_on_each_symbols_newest_window():
    cfg = _cfg({"name": "lstm", "window": 5,
                "params": {"hidden": 4, "layers": 1, "epochs": 1, "threads": 1}},
               features=["ret_1", "ret_5", "vol_20"])
    _, start = _history(cfg)
    nxt = run_folds(BARS, cfg)[1].test_start
    rows = [start, start + 1, start + 40, nxt, nxt + 1, len(BARS) - 1]
    _, _, got = _feed(cfg, rows=rows)
    _assert_backtest(cfg, got, rows)


def test_features_without_a_newest_row_path_use_the_full_computation():
    names = ["ret_1", "sma_ratio_20", "regime_60", "market_regime_60"]
    assert fast_tail(names) is None and fast_tail(["ret_1", "rsi_14"]) >= 14 * 60
    cfg = _cfg({"name": "ridge"}, features=names)
    _, start = _history(cfg)
    rows = [start, start + 10, len(BARS) - 1]
    _, _, got = _feed(cfg, rows=rows)
    _assert_backtest(cfg, got, rows)


def test_too_few_training_rows_is_the_backtests_error():
    cfg = _cfg({"name": "ridge"}, walk_forward={"min_train_rows": 10_000})
    with pytest.raises(ConfigError) as backtest:
        compute_signals(BARS, cfg)
    history, start = _history(cfg)
    sig = WalkForwardSignal(cfg, history)
    with pytest.raises(ConfigError) as live:
        sig(_window(BARS, start))
    assert str(live.value) == str(backtest.value)


def test_a_bar_before_the_first_test_year_gets_no_prediction():
    cfg = _cfg({"name": "ridge"})
    history, start = _history(cfg)
    out = WalkForwardSignal(cfg, history)(_window(BARS, start - 5))
    assert out.isna().all() and list(out.index) == list(BARS.symbols)


def _perturbed_after(t: int, seed: int) -> Bars:
    """BARS with every bar after t scaled by a random factor (OHLC stays valid)."""
    rng = np.random.default_rng(seed)
    f = np.ones(BARS.shape)
    f[t + 1:] = np.exp(rng.normal(0.0, 0.05, size=(len(BARS) - t - 1, BARS.shape[1])))
    return Bars(index=BARS.index, symbols=BARS.symbols, close=BARS.close * f,
                open=BARS.open * f, high=BARS.high * f, low=BARS.low * f,
                volume=BARS.volume[::-1].copy(), source="perturbed")


@pytest.fixture(scope="module")
def ridge_backtest() -> tuple[object, np.ndarray]:
    cfg = _cfg({"name": "ridge"}, walk_forward={"retrain": "quarterly"})
    return cfg, compute_signals(BARS, cfg).predictions.to_numpy()


@pytest.mark.parametrize("offset, ahead", [(0, 1), (0, 20), (5, 3), (30, 25)])
def test_the_prediction_at_t_never_depends_on_bars_after_t(ridge_backtest, offset, ahead):
    cfg, want = ridge_backtest
    folds = run_folds(BARS, cfg)
    t = folds[1].test_start + offset  # t and t + ahead lie in the same quarter
    assert t + ahead < folds[1].test_stop
    history, _ = _history(cfg)
    sig = WalkForwardSignal(cfg, history)
    # first served (and trained) on a window whose bars after t are perturbed ...
    sig(_window(_perturbed_after(t, seed=offset + ahead), t + ahead))
    # ... the prediction at t is still the backtest's, which saw the true future
    np.testing.assert_allclose(sig(_window(BARS, t)).to_numpy(), want[t], rtol=1e-9,
                               atol=1e-12)
    # and a backtest on the perturbed future predicts the same at t
    other = compute_signals(_perturbed_after(t, seed=1), cfg).predictions.to_numpy()[t]
    np.testing.assert_allclose(other, want[t], rtol=1e-9, atol=1e-12)


def _replay(cfg, journal):
    history, start = _history(cfg)
    broker = PaperBroker(engine_settings(cfg, resolve_fill(cfg, BARS)))
    runner = Runner(cfg, broker, history, journal=journal,
                    signal=WalkForwardSignal(cfg, history))
    feed = ReplayFeed(BARS, start=BARS.index[start])
    for t, group in itertools.groupby(feed.bars(), key=lambda e: e.time):
        group = {e.symbol: e for e in group}
        broker.on_bar(t, group)
        runner.on_bar(t, group)
    runner.finish()
    return broker, runner


def test_a_model_strategy_replayed_through_the_runner_trades_what_the_backtest_trades(
        tmp_path):
    cfg = _cfg({"name": "ridge"}, walk_forward={"retrain": "quarterly", "first_test_year": 2004},
               strategy={"threshold": 0.0005}, execution={"rebalance_band": 0.0},
               costs={"commission_bps": 1, "slippage_bps": 5})
    backtest = run(cfg, bars=BARS)
    journal = Journal(f"sqlite:///{tmp_path / 'j.db'}")
    broker, runner = _replay(cfg, journal)
    ef = backtest.strategy.fills
    fills = journal.fills_for()
    assert len(fills) == len(ef) > 10
    got = sorted(zip(fills["symbol"], fills["qty"].round(9), strict=True))
    want = sorted(zip(ef["symbol"].astype(str), ef["qty"].abs().round(9), strict=True))
    assert got == want
    assert broker.cash == pytest.approx(backtest.strategy.cash.iloc[-1], rel=1e-9)
    assert broker.account().equity == pytest.approx(backtest.strategy.equity.iloc[-1],
                                                    rel=1e-9)
