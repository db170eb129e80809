"""The positions rule: trade a model that outputs positions, not forecasts, as it says.

A policy model (rl_sharpe) already decides how much of each symbol to hold: a position in
[-1, 1] per symbol and bar (short .. long). This rule only turns positions into weights of
equity: each symbol gets ``clip(position, -1, 1) * allocation / N`` (N = symbols in the
run), so the whole book is ``allocation`` of equity when every position is at +-1; with
``allow_short`` off negative positions become flat (clipped at 0). A NaN position (no
out-of-sample decision, or a bar whose features are missing) is a NaN target: keep what you
hold. Every bar is a decision bar; the engine's ``execution.rebalance_band`` skips the tiny
re-weights. Causal as its input: row t reads row t only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from mltrader.strategy.base import StrategyInputs, StrategyParams, StrategySpec


class PositionsParams(StrategyParams):
    allocation: float = Field(1.0, gt=0, le=1, description=(
        "share of equity the book spans when every position is at +-1: each symbol's "
        "weight is position x allocation / N"))
    allow_short: bool = Field(True, description=(
        "negative positions are shorts (True) or flat (False: clipped at 0)"))
    member: str = Field("model", description="which predictions (positions) to use")


def position_weights(positions: np.ndarray, allocation: float = 1.0,
                     allow_short: bool = True) -> np.ndarray:
    """(T, N) weights: positions clipped to [-1, 1] (or [0, 1]) x allocation / N; NaN kept."""
    lo = -1.0 if allow_short else 0.0
    return np.clip(positions, lo, 1.0) * (allocation / positions.shape[1])


def positions_strategy(inputs: StrategyInputs, allocation: float = 1.0,
                       allow_short: bool = True, member: str = "model") -> pd.DataFrame:
    """Hold the model's positions, each a 1/N slot of ``allocation`` x equity."""
    return inputs.frame(position_weights(inputs.signal(member), allocation, allow_short))


SPEC = StrategySpec(
    name="positions", fn=positions_strategy, params=PositionsParams, needs_model=True,
    description="hold the model's positions in [-1, 1] (a policy such as rl_sharpe), each "
                "symbol a 1/N slot of allocation x equity; NaN keeps what is held",
)
