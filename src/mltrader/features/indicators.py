"""Technical indicators on wide close frames (index x symbols), all causal.

Each function takes closes (T x N) and returns a T x N frame whose row t depends only on rows
<= t. NaN during warm-up and wherever the symbol did not trade.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit


def returns(close: pd.DataFrame, n: int) -> pd.DataFrame:
    """Simple return over the last n bars: close[t] / close[t-n] - 1."""
    return close / close.shift(n) - 1.0


def sma_ratio(close: pd.DataFrame, n: int) -> pd.DataFrame:
    """Price relative to its n-bar simple moving average, minus one (0 = on the average)."""
    return close / close.rolling(n, min_periods=n).mean() - 1.0


def volatility(close: pd.DataFrame, n: int) -> pd.DataFrame:
    """Rolling standard deviation of daily log returns over n bars (not annualised)."""
    logret = np.log(close / close.shift(1))
    return logret.rolling(n, min_periods=n).std(ddof=1)


def rsi(close: pd.DataFrame, n: int = 14) -> pd.DataFrame:
    """Wilder's RSI: 100 - 100 / (1 + avg gain / avg loss), smoothed with alpha = 1/n.

    Seeded with the simple mean of the first n changes, as TA-Lib and Wilder do, so the values
    match TA-Lib's RSI (checked in the tests).
    """
    out = np.full(close.shape, np.nan)
    values = close.to_numpy(np.float64)
    for j in range(values.shape[1]):
        out[:, j] = _rsi_1d(np.ascontiguousarray(values[:, j]), n)
    return pd.DataFrame(out, index=close.index, columns=close.columns)


@njit(cache=True)
def _rsi_1d(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's RSI of one series; a NaN gap restarts the warm-up on the next valid run."""
    out = np.full(x.shape, np.nan)
    t = 0
    while t < len(x):
        while t < len(x) and x[t] != x[t]:
            t += 1
        start = t
        while t < len(x) and x[t] == x[t]:
            t += 1
        if t - start > n:  # a contiguous run long enough to seed the averages
            _rsi_run(x[start:t], n, out[start:t])
    return out


@njit(cache=True)
def _rsi_run(x: np.ndarray, n: int, out: np.ndarray) -> None:
    avg_g = 0.0
    avg_l = 0.0
    for i in range(1, n + 1):  # seed: simple means of the first n changes (as TA-Lib)
        d = x[i] - x[i - 1]
        if d > 0:
            avg_g += d
        else:
            avg_l -= d
    avg_g /= n
    avg_l /= n
    out[n] = _rsi_value(avg_g, avg_l)
    for i in range(n + 1, len(x)):
        d = x[i] - x[i - 1]
        avg_g = (avg_g * (n - 1) + (d if d > 0 else 0.0)) / n
        avg_l = (avg_l * (n - 1) + (-d if d < 0 else 0.0)) / n
        out[i] = _rsi_value(avg_g, avg_l)


@njit(cache=True)
def _rsi_value(avg_gain: float, avg_loss: float) -> float:
    total = avg_gain + avg_loss
    return 50.0 if total == 0 else 100.0 * avg_gain / total
