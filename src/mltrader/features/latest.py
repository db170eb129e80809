"""Features of the newest bar only: the live path, where one row is all a decision needs.

`compute_features` builds whole T x N frames (research); a live bot needs one (N, K) row per
new bar within milliseconds. These numpy versions compute exactly that row, and a test holds
them to the last row of `compute_features`.
"""

from __future__ import annotations

import re

import numpy as np

from mltrader.data.bars import Bars
from mltrader.features.indicators import _rsi_1d
from mltrader.features.registry import FEATURES, RAW_FIELDS


def _last_rsi(close: np.ndarray, n: int) -> np.ndarray:
    return np.array([_rsi_1d(np.ascontiguousarray(close[:, j]), n)[-1]
                     for j in range(close.shape[1])])


def latest_features(bars: Bars, names: list[str] | tuple[str, ...]) -> np.ndarray:
    """(N symbols, K features) for the last bar of `bars`; NaN where history is too short.

    Pass enough history for the longest window (e.g. 260 bars for SMA 200 and RSI 14).
    Falls back to the full computation for registered custom features and regimes.
    """
    c = bars.close
    out = np.full((c.shape[1], len(names)), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, name in enumerate(names):
            m = re.fullmatch(r"([a-z_]+?)_(\d+)", name)
            kind, n = (m.group(1), int(m.group(2))) if m else (name, 0)
            if name in FEATURES:
                from mltrader.features.registry import compute_features

                out[:, k] = compute_features(bars, [name])[name].to_numpy()[-1]
            elif name in RAW_FIELDS:
                out[:, k] = bars.frame(name).to_numpy()[-1]
            elif kind == "ret" and len(c) > n:
                out[:, k] = c[-1] / c[-1 - n] - 1.0
            elif kind == "sma_ratio" and len(c) >= n:
                out[:, k] = c[-1] / c[-n:].mean(axis=0) - 1.0
            elif kind == "sma" and len(c) >= n:
                out[:, k] = c[-n:].mean(axis=0)
            elif kind == "vol" and len(c) > n:
                lr = np.log(c[-n:] / c[-n - 1 : -1])
                out[:, k] = lr.std(axis=0, ddof=1)
            elif kind == "rsi" and len(c) > n:
                out[:, k] = _last_rsi(c, n) / 100.0 - 0.5
            elif kind not in ("ret", "sma_ratio", "sma", "vol", "rsi"):
                # anything else (regimes, ...): the full computation's last row, never NaN
                # by omission; regimes learn expanding thresholds, so pass all the history
                from mltrader.features.registry import compute_features

                out[:, k] = compute_features(bars, [name])[name].to_numpy()[-1]
    return out
