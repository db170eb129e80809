"""Causality of every built-in: changing any input after bar t leaves rows <= t unchanged."""

import numpy as np
import pandas as pd
import pytest

from mltrader.strategy.base import StrategyInputs
from mltrader.strategy.registry import STRATEGIES, register_strategy, run_strategy
from mltrader.testing import synthetic_bars

T, N = 260, 6
CASES = {
    "threshold": [{"threshold": 0.002, "rebalance": "weekly", "allow_short": True},
                  {"threshold": 0.001, "sell_threshold": 0.0}],
    "crossover": [{"fast": 5, "slow": 20}, {"fast": 3, "slow": 10, "allow_short": True}],
    "regime_filter": [{"buy_above": 0.001, "sell_below": -0.001}],
    "ensemble": [{}, {"members": ["model", "cnn"], "allow_short": False}],
    "topk": [{"k": 2, "n_drop": 1, "rebalance": "daily"}, {"k": 3, "rebalance": "weekly"}],
    "positions": [{}, {"allocation": 0.5, "allow_short": False, "member": "lstm"}],
}


def random_inputs(seed: int) -> StrategyInputs:
    rng = np.random.default_rng(seed)
    bars = synthetic_bars(T, N, seed=seed)
    close = bars.close.copy()
    close[:30, 0] = np.nan  # listed late
    close[rng.random((T, N)) < 0.01] = np.nan  # missing bars
    bars = bars.replace(close=close)

    def frame(values):
        return pd.DataFrame(values, index=bars.index, columns=list(bars.symbols))

    preds = {}
    for name in ("model", "lstm", "cnn"):
        p = rng.normal(0, 0.003, (T, N))
        p[rng.random((T, N)) < 0.05] = np.nan
        preds[name] = frame(p)
    reg = rng.integers(0, 6, (T, N)).astype(float)
    reg[rng.random((T, N)) < 0.05] = np.nan
    return StrategyInputs(bars=bars, predictions=preds, regimes=frame(reg))


def perturb_after(inputs: StrategyInputs, t: int, seed: int) -> StrategyInputs:
    """New, independent values for every input on bars > t."""
    rng = np.random.default_rng(seed)
    close = inputs.bars.close.copy()
    close[t + 1:] *= np.exp(rng.normal(0, 0.2, close[t + 1:].shape))
    preds = {}
    for name, p in inputs.predictions.items():
        q = p.copy()
        q.iloc[t + 1:] = rng.normal(0, 0.01, q.iloc[t + 1:].shape)
        preds[name] = q
    reg = inputs.regimes.copy()
    reg.iloc[t + 1:] = rng.integers(0, 6, reg.iloc[t + 1:].shape).astype(float)
    return StrategyInputs(bars=inputs.bars.replace(close=close), predictions=preds, regimes=reg)


def first_leak(name: str, params: dict, seed: int = 0) -> int | None:
    """The first bar t whose rows <= t change when the future changes, or None."""
    base = random_inputs(seed)
    w0 = run_strategy(name, base, params).to_numpy()
    for i, t in enumerate((25, 60, 119, 180, 240)):
        w1 = run_strategy(name, perturb_after(base, t, seed + 100 + i), params).to_numpy()
        if not np.array_equal(w0[: t + 1], w1[: t + 1], equal_nan=True):
            return t
        assert not np.array_equal(w0, w1, equal_nan=True)  # the perturbation mattered
    return None


@pytest.mark.parametrize("name,params",
                         [(n, p) for n, ps in CASES.items() for p in ps])
def test_builtin_is_causal(name, params):
    assert first_leak(name, params) is None


def test_every_builtin_is_covered():
    assert set(CASES) == {n for n in STRATEGIES if not n.startswith("_")}


def test_the_check_catches_a_peeking_strategy():
    @register_strategy("_peek", needs_model=False, replace=True)
    def peek(inputs):
        """Long when tomorrow's close is higher: uses the future."""
        close = inputs.bars.frame("close")
        return (close.shift(-1) > close).astype(float) / close.shape[1]

    try:
        assert first_leak("_peek", {}) == 25
    finally:
        STRATEGIES.pop("_peek")
