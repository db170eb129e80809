"""No look-ahead: changing any input after bar t leaves every feature, prediction and target
weight at or before t unchanged. A planted future feature must make this check fail."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mltrader.config import config_from_dict
from mltrader.data.bars import Bars
from mltrader.features.registry import FEATURES, register_feature
from mltrader.pipeline import Signals, compute_signals
from mltrader.testing import synthetic_bars

T = 1100
CLOSE_ONLY = synthetic_bars(T, 4, seed=11)
OHLC = synthetic_bars(T, 4, seed=12, ohlc=True)


def _cfg(model: str = "ridge", features: list[str] | None = None):
    raw = {
        "model": {"name": model, "params": {"n_estimators": 20} if model == "lightgbm" else {}},
        "walk_forward": {"first_test_year": 2002, "retrain": "quarterly", "min_train_rows": 50},
        "strategy": {"threshold": 0.0, "rebalance": "daily"},
    }
    if features is not None:
        raw["features"] = features
    return config_from_dict(raw)


CFG = _cfg()
BASELINE = {id(CLOSE_ONLY): compute_signals(CLOSE_ONLY, CFG), id(OHLC): compute_signals(OHLC, CFG)}


def perturb(bars: Bars, u: int, j: int, factor: float, tail: bool) -> Bars:
    """Scale symbol j's whole bar u (or every bar from u on) by `factor`: still valid data."""
    rows = slice(u, None) if tail else slice(u, u + 1)
    new = {}
    for name in ("open", "high", "low", "close"):
        arr = getattr(bars, name)
        if arr is not None:
            arr = arr.copy()
            arr[rows, j] *= factor
            new[name] = arr
    return bars.replace(**new)


def _frames(sig: Signals) -> dict[str, pd.DataFrame]:
    out = {f"feature {k}": v for k, v in sig.features.items()}
    out["predictions"] = sig.predictions
    out["target weights"] = sig.weights
    return out


def first_leak(a: Signals, b: Signals, t: int) -> str | None:
    """The first output that differs between two runs at some row <= t, or None."""
    fa, fb = _frames(a), _frames(b)
    for name in fa:
        x = fa[name].to_numpy()[: t + 1]
        y = fb[name].to_numpy()[: t + 1]
        if not np.array_equal(x, y, equal_nan=True):
            row = int(np.flatnonzero(~((x == y) | (np.isnan(x) & np.isnan(y))).all(axis=1))[0])
            return f"{name} at row {row}"
    return None


def changed_after(a: Signals, b: Signals, t: int) -> bool:
    return any(not np.array_equal(x.to_numpy()[t + 1 :], y.to_numpy()[t + 1 :], equal_nan=True)
               for x, y in zip(_frames(a).values(), _frames(b).values(), strict=True))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    ohlc=st.booleans(),
    j=st.integers(0, 3),
    factor=st.sampled_from([0.5, 0.9, 1.1, 2.0]),
    tail=st.booleans(),
)
def test_changing_the_future_never_changes_the_past(data, ohlc, j, factor, tail):
    bars = OHLC if ohlc else CLOSE_ONLY
    t = data.draw(st.integers(200, T - 2), label="t")
    u = data.draw(st.integers(t + 1, T - 1), label="u")
    base = BASELINE[id(bars)]
    other = compute_signals(perturb(bars, u, j, factor, tail), CFG)
    assert first_leak(base, other, t) is None
    assert changed_after(base, other, t)  # the perturbation was real, so the check has teeth


def test_lightgbm_pipeline_is_causal_too():
    cfg = _cfg("lightgbm")
    t = 800
    base = compute_signals(OHLC, cfg)
    other = compute_signals(perturb(OHLC, t + 1, 0, 1.5, tail=True), cfg)
    assert first_leak(base, other, t) is None
    assert changed_after(base, other, t)


PPO_TINY = {"total_timesteps": 128, "n_steps": 32, "batch_size": 32, "n_envs": 2, "window": 3,
            "episode_length": 64, "net_arch": [16]}


@pytest.mark.parametrize(("model", "needs"), [
    ({"name": "rl_sharpe", "params": {"lags": 2, "epochs": 20}}, "torch"),
    ({"name": "rl_sharpe", "params": {"lags": 2, "epochs": 20, "online": True,
                                      "online_lr": 0.05}}, "torch"),
    ({"name": "ppo", "params": PPO_TINY}, "stable_baselines3"),
], ids=["rl_sharpe", "rl_sharpe-online", "ppo"])
def test_rl_policies_are_causal_too(model, needs):
    """A policy run from a warm-up before each test period (rl_sharpe adapting on realised
    returns when online; a PPO agent trading its own simulated book after training in a
    market of the training years) still reads nothing after bar t for its position at t."""
    pytest.importorskip(needs)
    cfg = config_from_dict({
        "features": ["ret_5", "rsi_14"],
        "model": model,
        "walk_forward": {"first_test_year": 2002,
                         "retrain": "yearly" if model["name"] == "ppo" else "quarterly",
                         "min_train_rows": 50},
        "strategy": {"name": "positions"},
    })
    t = 800
    for bars in (CLOSE_ONLY, OHLC):
        base = compute_signals(bars, cfg)
        other = compute_signals(perturb(bars, t + 1, 1, 1.5, tail=True), cfg)
        assert first_leak(base, other, t) is None
        assert changed_after(base, other, t)
        assert np.isnan(base.predictions.to_numpy()[: base.start]).all()


@pytest.fixture
def planted_leak():
    def peek(b: Bars) -> pd.DataFrame:
        return b.frame("close").shift(-1) / b.frame("close") - 1  # tomorrow's return: a leak

    register_feature("leak_next_return", peek)
    yield
    FEATURES.pop("leak_next_return")


@pytest.mark.usefixtures("planted_leak")
def test_the_check_catches_a_planted_future_feature():
    """Test of the test: a feature that peeks one bar ahead must be caught."""
    cfg = _cfg(features=["ret_1", "rsi_14", "leak_next_return"])
    t = 900
    base = compute_signals(CLOSE_ONLY, cfg)
    other = compute_signals(perturb(CLOSE_ONLY, t + 1, 2, 1.1, tail=False), cfg)
    leak = first_leak(base, other, t)
    assert leak is not None and leak.startswith("feature leak_next_return")
    # and the leak flows on into the predictions at t
    assert not np.array_equal(base.predictions.to_numpy()[t], other.predictions.to_numpy()[t])


def test_a_share_features_sectors_regimes_and_fundamentals_are_causal():
    """The A-share side: Alpha158 factors, sector measures (the board snapshot is known only
    from its as-of date), the six regimes, point-in-time fundamentals and the regime filter
    on real CSI 300 stocks: changing prices after t changes nothing at or before t."""
    from mltrader.data.ashare import load_ashare

    data = load_ashare("qfq").select(
        ["000001.SZ", "601318.SH", "600036.SH", "601166.SH", "600519.SH", "000858.SZ"],
        "2017-01-01", "2020-12-31")
    bars = data.bars
    cfg = config_from_dict({
        "market": "cn_a",
        "data": {"source": "bundled", "dataset": "ashare_csi300"},
        "features": ["a158_KMID", "a158_ROC5", "a158_CORR20", "a158_RSQR10", "a158_VSUMD30",
                     "sector_rel_20", "sector_breadth_20", "sector_rank_20", "regime_60",
                     "market_regime_60", "fund_roe", "fund_revenue_growth"],
        "model": {"name": "ridge"},
        "walk_forward": {"first_test_year": 2019, "retrain": "quarterly",
                         "min_train_rows": 100},
        "strategy": {"name": "regime_filter", "buy_above": 0.0, "sell_below": -0.001},
    })
    base = compute_signals(bars, cfg)
    assert base.predictions.notna().to_numpy().any()
    for t in (len(bars) - 250, len(bars) - 60):
        other = compute_signals(perturb(bars, t + 1, 1, 1.3, tail=True), cfg)
        assert first_leak(base, other, t) is None
        assert changed_after(base, other, t)
