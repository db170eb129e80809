"""The threshold rule: long when the signal > +threshold, flat (or short) when < -sell_threshold.

Between the two thresholds, or where the signal is NaN, the previous state is held. Decisions
are taken only on rebalance bars (daily, or the first bar of each new week / month, which is
known at that bar's close without peeking at the next bar). Active positions share equity
equally: on a decision bar each long gets +1/n and each short -1/n, n = number of non-flat
symbols (0 everywhere when none). The output has one row per bar: target weights on rebalance
bars, NaN rows elsewhere ("no decision, keep what you hold").
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from mltrader.strategy.base import StrategyInputs, StrategyParams, StrategySpec

_PERIOD = {"weekly": "W", "monthly": "M"}


def rebalance_mask(index: pd.DatetimeIndex, rebalance: str) -> np.ndarray:
    """True on bars where a decision is taken; causal (compares a bar only with the one before)."""
    if rebalance == "daily":
        return np.ones(len(index), dtype=bool)
    periods = index.tz_localize(None).to_period(_PERIOD[rebalance])
    mask = np.ones(len(index), dtype=bool)
    mask[1:] = periods[1:] != periods[:-1]
    return mask


def threshold_states(pred: np.ndarray, threshold: float, mask: np.ndarray,
                     sell_threshold: float | None = None, allow_short: bool = False
                     ) -> np.ndarray:
    """Per-symbol state after each bar: long 1, flat 0 (short -1 if allowed), held between."""
    sell = threshold if sell_threshold is None else sell_threshold
    signal = np.full(pred.shape, np.nan)
    with np.errstate(invalid="ignore"):
        signal[pred > threshold] = 1.0
        signal[pred < -sell] = -1.0 if allow_short else 0.0
    signal[~mask] = np.nan
    return pd.DataFrame(signal).ffill().fillna(0.0).to_numpy()


def threshold_weights(pred: pd.DataFrame, threshold: float, rebalance: str = "daily", *,
                      sell_threshold: float | None = None, allow_short: bool = False
                      ) -> pd.DataFrame:
    """Target weights (T x N): equal shares of equity across active positions on rebalance
    bars (+1/n long, -1/n short), NaN rows between."""
    mask = rebalance_mask(pred.index, rebalance)
    state = threshold_states(pred.to_numpy(np.float64), threshold, mask, sell_threshold,
                             allow_short)
    n_active = np.abs(state).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(n_active > 0, state / n_active, 0.0)
    weights[~mask] = np.nan
    return pd.DataFrame(weights, index=pred.index, columns=pred.columns)


class ThresholdParams(StrategyParams):
    threshold: float = Field(0.02, ge=0, lt=1, description=(
        "buy when the signal > +threshold (0.02: predicted price above close x 1.02)"))
    sell_threshold: float | None = Field(None, ge=0, lt=1, description=(
        "sell when the signal < -sell_threshold; None: the same as threshold"))
    rebalance: Literal["daily", "weekly", "monthly"] = Field(
        "daily", description="decide every bar, or on the first bar of each week / month")
    allow_short: bool = Field(False, description="sell = go short (True) or go flat (False)")
    member: str = Field("model", description="which predictions to use")


def threshold_strategy(inputs: StrategyInputs, threshold: float = 0.02,
                       sell_threshold: float | None = None, rebalance: str = "daily",
                       allow_short: bool = False, member: str = "model") -> pd.DataFrame:
    """The threshold rule on ``inputs.predictions[member]`` (see the module docstring)."""
    pred = inputs.frame(inputs.signal(member))
    return threshold_weights(pred, threshold, rebalance, sell_threshold=sell_threshold,
                             allow_short=allow_short)


SPEC = StrategySpec(
    name="threshold", fn=threshold_strategy, params=ThresholdParams, needs_model=True,
    description="long above +threshold, flat (or short) below -sell_threshold, hold between; "
                "equal shares of equity across active positions",
)
