"""The threshold rule: long when the predicted return > +x, flat when < -x, else hold.

Decisions are taken only on rebalance bars (daily, or the first bar of each new week / month,
which is known at that bar's close without peeking at the next bar). Longs share equity
equally. The output has one row per bar: target weights on rebalance bars, NaN elsewhere
("no decision, keep what you hold").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_PERIOD = {"weekly": "W", "monthly": "M"}


def rebalance_mask(index: pd.DatetimeIndex, rebalance: str) -> np.ndarray:
    """True on bars where a decision is taken; causal (compares a bar only with the one before)."""
    if rebalance == "daily":
        return np.ones(len(index), dtype=bool)
    periods = index.tz_localize(None).to_period(_PERIOD[rebalance])
    mask = np.ones(len(index), dtype=bool)
    mask[1:] = periods[1:] != periods[:-1]
    return mask


def threshold_states(pred: np.ndarray, threshold: float, mask: np.ndarray) -> np.ndarray:
    """Per-symbol long (1) / flat (0) state after each bar, held between decisions."""
    signal = np.full(pred.shape, np.nan)
    with np.errstate(invalid="ignore"):
        signal[pred > threshold] = 1.0
        signal[pred < -threshold] = 0.0
    signal[~mask] = np.nan
    state = pd.DataFrame(signal).ffill().fillna(0.0).to_numpy()
    return state


def threshold_weights(
    pred: pd.DataFrame, threshold: float, rebalance: str = "daily"
) -> pd.DataFrame:
    """Target weights (T x N): equal weight across longs on rebalance bars, NaN rows between."""
    mask = rebalance_mask(pred.index, rebalance)
    state = threshold_states(pred.to_numpy(np.float64), threshold, mask)
    n_long = state.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(n_long > 0, state / n_long, 0.0)
    weights[~mask] = np.nan
    return pd.DataFrame(weights, index=pred.index, columns=pred.columns)
