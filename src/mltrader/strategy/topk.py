"""Top-k with limited turnover (Qlib's TopkDropout idea): hold k symbols, swap few at a time.

On each rebalance bar (daily, or the first bar of each week / month), in this order:

1. Forced exits: a held symbol whose signal or close is NaN on that bar is sold. These do NOT
   count toward ``n_drop``: they are not a choice, and their slots are refilled in step 2.
2. Fill: while fewer than k are held, buy the best-ranked eligible non-held symbol (eligible =
   signal and close both known). The initial fill is therefore not limited by ``n_drop``.
3. Dropout: up to ``n_drop`` held symbols outside the current top k (by signal, among the
   eligible) are sold, worst-ranked first, each replaced by the best-ranked non-held symbol,
   but only if that candidate ranks better than the one dropped.

Ties in the signal rank by symbol order. Targets on rebalance bars: 1/k for each held symbol
(so fewer than k eligible symbols leave part of equity in cash), 0 for the rest; NaN rows
between rebalances. Path-dependent: a loop over rebalance bars, vectorised across symbols.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from mltrader.strategy.base import StrategyInputs, StrategyParams, StrategySpec
from mltrader.strategy.threshold import rebalance_mask


class TopkParams(StrategyParams):
    k: int = Field(5, ge=1, description="number of symbols held, 1/k of equity each")
    n_drop: int = Field(1, ge=0, description="at most this many discretionary replacements "
                        "per rebalance (forced exits of NaN symbols are extra)")
    rebalance: Literal["daily", "weekly", "monthly"] = Field(
        "weekly", description="decide every bar, or on the first bar of each week / month")
    member: str = Field("model", description="which predictions to use")


def topk_holdings(sig: np.ndarray, close: np.ndarray, mask: np.ndarray, k: int,
                  n_drop: int) -> np.ndarray:
    """Boolean (T, N) holdings after each rebalance bar (rows off the mask are all False)."""
    t_len, n = sig.shape
    out = np.zeros((t_len, n), dtype=bool)
    held = np.zeros(n, dtype=bool)
    for t in np.flatnonzero(mask):
        s = sig[t]
        eligible = ~np.isnan(s) & ~np.isnan(close[t])
        held &= eligible  # 1. forced exits
        order = np.argsort(np.where(eligible, -s, np.inf), kind="stable")[: eligible.sum()]
        rank = np.full(n, n)
        rank[order] = np.arange(len(order))
        free = order[~held[order]]  # non-held eligible, best first
        n_fill = min(max(k - int(held.sum()), 0), len(free))  # 2. fill
        held[free[:n_fill]] = True
        free = free[n_fill:]
        outside = np.flatnonzero(held & (rank >= k))  # 3. dropout
        outside = outside[np.argsort(-rank[outside], kind="stable")]  # worst first
        for i in range(min(n_drop, len(outside), len(free))):
            if rank[free[i]] >= rank[outside[i]]:
                break  # candidates only get worse and the dropped only better from here
            held[outside[i]] = False
            held[free[i]] = True
        out[t] = held
    return out


def topk_strategy(inputs: StrategyInputs, k: int = 5, n_drop: int = 1,
                  rebalance: str = "weekly", member: str = "model") -> pd.DataFrame:
    """Hold the top k by signal at 1/k each, replacing at most n_drop per rebalance."""
    sig = inputs.signal(member)
    mask = rebalance_mask(inputs.bars.index, rebalance)
    held = topk_holdings(sig, inputs.bars.close, mask, k, n_drop)
    weights = held / float(k)
    weights[~mask] = np.nan
    return inputs.frame(weights)


SPEC = StrategySpec(
    name="topk", fn=topk_strategy, params=TopkParams, needs_model=True,
    description="hold the k best-ranked symbols at 1/k each, replacing at most n_drop per "
                "rebalance (TopkDropout)",
)
