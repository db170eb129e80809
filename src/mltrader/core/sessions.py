"""Each bar's trading session, for the daily risk guards (daily loss limit, per-day limits).

One rule for the backtest engine (`backtest.engine`) and the RL environment (`rl.env`), so a
guard's "day" is the same in both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mltrader.errors import MltraderError


class SessionsError(MltraderError, ValueError):
    """A sessions array that does not give one session number per bar."""


def session_days(index: pd.DatetimeIndex, sessions: np.ndarray | None = None) -> np.ndarray:
    """Each bar's session number, for the daily loss limit and the per-day trade limits.

    `sessions`: precomputed ones (`mltrader.data.calendars.session_ids`: the trading session
    of the data's calendar), checked and returned as int64; None: the bar's calendar date in
    the index's time zone (the rule without a calendar)."""
    if sessions is not None:
        out = np.ascontiguousarray(sessions, dtype=np.int64)
        if out.shape != (len(index),):
            raise SessionsError(f"sessions has shape {out.shape}, expected ({len(index)},): "
                                "one session number per bar")
        return out
    local = index.tz_localize(None) if index.tz is not None else index
    return local.to_numpy().astype("datetime64[D]").astype(np.int64)
