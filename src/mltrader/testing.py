"""Small deterministic helpers for tests and examples: synthetic bars that pass validation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mltrader.data.bars import Bars


def synthetic_bars(
    n_bars: int = 1500,
    n_symbols: int = 4,
    *,
    seed: int = 0,
    ohlc: bool = False,
    start: str = "2000-01-03",
    drift: float = 0.0003,
    vol: float = 0.015,
) -> Bars:
    """A geometric random walk per symbol on business days (close-only unless `ohlc`)."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range(start, periods=n_bars, tz="UTC")
    rets = rng.normal(drift, vol, size=(n_bars, n_symbols))
    close = 50.0 * np.exp(np.cumsum(rets, axis=0))
    symbols = tuple(f"S{i:02d}" for i in range(n_symbols))
    if not ohlc:
        return Bars(index=index, symbols=symbols, close=close, source="synthetic")
    prev = np.vstack([close[:1], close[:-1]])
    open_ = prev * np.exp(rng.normal(0, vol / 4, size=close.shape))
    span = np.abs(rng.normal(0, vol / 2, size=close.shape))
    high = np.maximum(open_, close) * (1 + span)
    low = np.minimum(open_, close) * (1 - span)
    volume = rng.integers(1_000, 100_000, size=close.shape).astype(float)
    return Bars(index=index, symbols=symbols, close=close, open=open_, high=high, low=low,
                volume=volume, source="synthetic")
