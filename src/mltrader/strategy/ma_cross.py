"""The moving-average crossover rule on closes only (no model).

Golden cross at t (fast SMA crosses above the slow SMA, see `sma_cross_signals`): target
+1/N for that symbol; death cross: 0 (flat), or -1/N with ``allow_short``. Every other cell
is NaN ("no decision, keep what you hold"), so positions are held between crosses and each
symbol owns a fixed 1/N slot (N = number of symbols): one symbol entering never resizes the
others. Before the first cross a symbol is flat, as in backtrader's canonical SMA-cross.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from mltrader.strategy.base import StrategyInputs, StrategyParams, StrategySpec
from mltrader.strategy.crossover import sma_cross_signals


class CrossoverParams(StrategyParams):
    fast: int = Field(50, ge=1, description="bars in the fast simple moving average")
    slow: int = Field(200, ge=2, description="bars in the slow simple moving average")
    allow_short: bool = Field(False, description="death cross = go short (True) or flat")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> CrossoverParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be below slow ({self.slow})")
        return self


def crossover_strategy(inputs: StrategyInputs, fast: int = 50, slow: int = 200,
                       allow_short: bool = False) -> pd.DataFrame:
    """Golden cross -> +1/N, death cross -> 0 (or -1/N), NaN elsewhere."""
    entries, exits = sma_cross_signals(inputs.bars.close, fast, slow)
    slot = 1.0 / inputs.n_symbols
    weights = np.full(entries.shape, np.nan)
    weights[exits] = -slot if allow_short else 0.0
    weights[entries] = slot
    return inputs.frame(weights)


SPEC = StrategySpec(
    name="crossover", fn=crossover_strategy, params=CrossoverParams, needs_model=False,
    warmup=lambda p: p.slow - 1,  # the slow SMA's first value
    description="SMA crossover on closes: long from a golden cross, flat (or short) from a "
                "death cross; fixed 1/N slot per symbol",
)
