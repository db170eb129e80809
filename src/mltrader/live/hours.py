"""Market hours of the round-the-clock calendars for the live loop: 24/7 (crypto: always open)
and 24/5 (FX: open from Sunday 17:00 to Friday 17:00 New York). The same interface as
`session.MarketHours` (an exchange's hours), and the same sessions as `data.calendars`, so a
live bot counts days as its backtest does."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mltrader.data.calendars import CONTINUOUS, CRYPTO, FX_TZ, fx_closed, session_ids

__all__ = ["ContinuousHours"]


class ContinuousHours:
    """Whether a time is inside a 24/7 or 24/5 market, and when it opens next."""

    def __init__(self, name: str) -> None:
        if name not in CONTINUOUS:
            raise ValueError(f"not a round-the-clock calendar: {name!r}")
        self.name = name

    def _open(self, t: pd.Timestamp) -> bool:
        if self.name == CRYPTO:
            return True
        return not bool(fx_closed(pd.DatetimeIndex([pd.Timestamp(t).tz_convert("UTC")]))[0])

    def is_session(self, day: pd.Timestamp) -> bool:
        """A trading day: every day (24/7), Monday to Friday (24/5)."""
        return self.name == CRYPTO or pd.Timestamp(day).day_of_week < 5

    def in_hours(self, t: pd.Timestamp, interval: str) -> bool:
        """Daily bars: the bar's day trades; intraday: the market is open at ``t``."""
        t = pd.Timestamp(t).tz_convert("UTC")
        if interval == "1d":
            return self.is_session(t.normalize())
        return self._open(t)

    def is_open(self, now: pd.Timestamp) -> bool:
        return self._open(pd.Timestamp(now))

    def sessions_since(self, last_bar: pd.Timestamp, now: pd.Timestamp) -> int:
        """Trading days after `last_bar`'s day that have ended by `now` (0 = current)."""
        last, current = session_ids(self.name, pd.DatetimeIndex(
            [pd.Timestamp(last_bar).tz_convert("UTC"), pd.Timestamp(now).tz_convert("UTC")]))
        if current <= last + 1:
            return 0
        days = np.arange(last + 1, current).astype("datetime64[D]")
        return int(len(days) if self.name == CRYPTO else np.is_busday(days).sum())

    def next_open(self, now: pd.Timestamp) -> pd.Timestamp:
        """``now`` when open; else (the FX weekend) the coming Sunday 17:00 New York."""
        now = pd.Timestamp(now).tz_convert("UTC")
        if self._open(now):
            return now
        local = now.tz_convert(FX_TZ)
        sunday = (local + pd.Timedelta(days=(6 - local.day_of_week) % 7)).normalize()
        opens = sunday.tz_localize(None).replace(hour=17).tz_localize(FX_TZ)
        return opens.tz_convert("UTC")
