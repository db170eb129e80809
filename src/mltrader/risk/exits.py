"""Exit levels of a position: the ONE rule the backtest kernel and the live runner both use.

A long's stop sits at entry x (1 - stop_loss), its trailing stop at the best price since
entry x (1 - trailing_stop); the higher of the two is the level (the trailing stop only when
strictly higher), and the target sits at entry x (1 + take_profit). Mirrored for a short.
A switched-off rule is 0: its level is -inf / +inf (stop) or NaN (target).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def exit_levels(long: bool, entry: float, best: float, sl: float, tp: float,
                ts: float) -> tuple[float, bool, float]:
    """(stop level, whether the trailing stop sets it, target level or NaN)."""
    if long:
        stop = entry * (1.0 - sl) if sl > 0 else -np.inf
        trail = best * (1.0 - ts) if ts > 0 else -np.inf
        tgt = entry * (1.0 + tp) if tp > 0 else np.nan
        if trail > stop:
            return trail, True, tgt
        return stop, False, tgt
    stop = entry * (1.0 + sl) if sl > 0 else np.inf
    trail = best * (1.0 + ts) if ts > 0 else np.inf
    tgt = entry * (1.0 - tp) if tp > 0 else np.nan
    if trail < stop:
        return trail, True, tgt
    return stop, False, tgt
