"""Technical indicators on wide close frames (index x symbols), all causal.

Each function takes closes (T x N) and returns a T x N frame whose row t depends only on rows
<= t. NaN during warm-up and wherever the symbol did not trade.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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
        out[:, j] = _rsi_1d(values[:, j], n)
    return pd.DataFrame(out, index=close.index, columns=close.columns)


def _rsi_1d(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(x))
    if len(valid) <= n:
        return out
    first, last = valid[0], valid[-1]
    seg = x[first : last + 1]
    if np.isnan(seg).any():  # a gap inside the history: compute per contiguous run
        runs = np.split(np.arange(first, last + 1), np.flatnonzero(np.isnan(seg)) + 1)
        for r in runs:
            r = r[~np.isnan(x[r])]
            if len(r) > n:
                out[r] = _rsi_1d_contiguous(x[r], n)
        return out
    out[first : last + 1] = _rsi_1d_contiguous(seg, n)
    return out


def _rsi_1d_contiguous(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    d = np.diff(x)
    gain = np.where(d > 0, d, 0.0)
    loss = np.where(d < 0, -d, 0.0)
    avg_g = gain[:n].mean()
    avg_l = loss[:n].mean()
    out[n] = _rsi_value(avg_g, avg_l)
    for i in range(n, len(d)):
        avg_g = (avg_g * (n - 1) + gain[i]) / n
        avg_l = (avg_l * (n - 1) + loss[i]) / n
        out[i + 1] = _rsi_value(avg_g, avg_l)
    return out


def _rsi_value(avg_gain: float, avg_loss: float) -> float:
    total = avg_gain + avg_loss
    return 50.0 if total == 0 else 100.0 * avg_gain / total
