"""Moving-average crossover signals: the canonical strategy of the engine cross-checks.

Cross-up at t: fast[t-1] < slow[t-1] and fast[t] > slow[t]; cross-down mirrored. Both use
only closes up to t, so the signals are causal.
"""

from __future__ import annotations

import numpy as np


def sma(close: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average over n bars along axis 0 (NaN until n values exist)."""
    x = np.asarray(close, dtype=np.float64)
    x2 = x.reshape(len(x), -1)
    out = np.full(x2.shape, np.nan)
    if len(x2) >= n:  # exact window sums (a running cumsum drifts by ~1e-10 over long series)
        windows = np.lib.stride_tricks.sliding_window_view(x2, n, axis=0)
        out[n - 1 :] = windows.sum(axis=-1) / n
    return out.reshape(x.shape)


def sma_cross_signals(close: np.ndarray, fast: int = 20, slow: int = 100
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (entries, exits) arrays shaped like `close`: cross-up and cross-down bars."""
    if not 0 < fast < slow:
        raise ValueError(f"need 0 < fast < slow, got fast={fast}, slow={slow}")
    f, s = sma(close, fast), sma(close, slow)
    entries = np.zeros(f.shape, dtype=bool)
    exits = np.zeros(f.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        entries[1:] = (f[:-1] < s[:-1]) & (f[1:] > s[1:])
        exits[1:] = (f[:-1] > s[:-1]) & (f[1:] < s[1:])
    return entries, exits
