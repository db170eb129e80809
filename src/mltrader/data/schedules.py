"""Exchange sessions and their UTC open/close times, from `exchange-calendars` (imported only
when needed), each calendar built once and cached: the layer that both calendars.py
(annualisation, session ids, expected bars) and quality.py (gap checks) read."""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from mltrader.errors import DataError

__all__ = ["calendar_schedule", "calendar_sessions", "get_calendar"]


@lru_cache(maxsize=16)
def _calendar(name: str, first_year: int, last_year: int) -> Any:
    try:
        import exchange_calendars as xcals
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DataError(
            "exchange-calendars is not installed; it is needed for calendar checks: "
            "pip install 'exchange-calendars>=4.5' (or pass calendar=None)"
        ) from e
    try:
        with warnings.catch_warnings():
            # exchange-calendars 4.13.2 uses Series.values on tz-aware data: a Pandas4Warning
            # (a DeprecationWarning) on pandas 3.1; harmless, and not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            # some calendars record holidays for a bounded range only (XSHG to 2026, XTKS
            # from 1997): ask for the part of the years that the calendar can give
            kind = type(xcals.get_calendar(name))
            lo, hi = kind.bound_min(), kind.bound_max()
            start, end = pd.Timestamp(f"{first_year}-01-01"), pd.Timestamp(f"{last_year}-12-31")
            start = start if lo is None else max(start, pd.Timestamp(lo))
            end = end if hi is None else min(end, pd.Timestamp(hi))
            return xcals.get_calendar(name, start=start, end=end)
    except xcals.errors.InvalidCalendarName as e:
        raise DataError(
            f"unknown exchange calendar {name!r}; use an exchange-calendars code such as XNYS, "
            "XNAS, XLON, XTKS, XHKG (exchange_calendars.get_calendar_names() lists them)"
        ) from e


def get_calendar(name: str, start: pd.Timestamp | None = None,
                 end: pd.Timestamp | None = None) -> Any:
    """An exchange-calendars calendar covering at least [start, end] (built once, cached)."""
    this_year = pd.Timestamp.now(tz="UTC").year
    first = min(1970, pd.Timestamp(start).year) if start is not None else 1970
    last = max(this_year + 1, pd.Timestamp(end).year) if end is not None else this_year + 1
    return _calendar(name, first, last)


def _utc(t: Any) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@lru_cache(maxsize=16)
def _schedule_arrays(cal: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Session labels, opens and closes of a calendar as int64 ns since the epoch (UTC)."""
    sched = cal.schedule

    def ns(values: Any) -> np.ndarray:
        d = pd.DatetimeIndex(getattr(values, "array", values))
        d = d.tz_localize("UTC") if d.tz is None else d.tz_convert("UTC")
        return d.as_unit("ns").asi8

    return ns(sched.index), ns(sched["open"]), ns(sched["close"])


def calendar_schedule(name: str, start: Any, end: Any) -> pd.DataFrame:
    """Sessions whose date lies in [start's date, end]: index = session label (00:00 UTC),
    columns ``open`` and ``close`` (UTC timestamps, early closes included)."""
    start, end = _utc(start), _utc(end)
    labels, opens, closes = _schedule_arrays(get_calendar(name, start, end))
    a = np.searchsorted(labels, start.normalize().as_unit("ns").value, side="left")
    b = np.searchsorted(labels, end.as_unit("ns").value, side="right")

    def utc(x: np.ndarray) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(x.astype("datetime64[ns]")).tz_localize("UTC")

    return pd.DataFrame({"open": utc(opens[a:b]), "close": utc(closes[a:b])},
                        index=utc(labels[a:b]))


def calendar_sessions(name: str, start: Any, end: Any) -> pd.DatetimeIndex:
    """Session labels (00:00 UTC of the session date) with start's date <= label <= end."""
    return calendar_schedule(name, start, end).index
