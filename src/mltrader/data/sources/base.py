"""The one interface every market-data source implements, and its conventions.

A `Source` fetches one symbol's bars for a date range and interval and returns a plain
DataFrame in the standard shape below; `mltrader.data.fetch` turns many of those into a
`Bars` panel, with the cache and the fallback between sources around them.

Standard frame (what `Source.fetch` returns):
- index: a tz-aware DatetimeIndex, sorted, unique. Daily bars ("1d"): 00:00 UTC of the
  session date (the convention of the bundled data). Intraday bars: the bar's START time,
  in UTC.
- columns: open, high, low, close, volume as float64 (volume NaN when the source has none);
  only COMPLETED bars (a bar still forming is never returned): a bar is complete at
  `bar_end` (start + interval; a daily bar at the 16:00 New York close of its date).
- adjusted=True: prices adjusted for splits and dividends (the source's own adjustment);
  adjusted=False: raw traded prices.
- no rows = an empty frame with those columns (not an error): the range simply had no bars.
Failures raise `SourceError` (one line: source, symbol, what went wrong, what to do) after
the source's own bounded retries.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, Protocol, TypeVar, runtime_checkable

import pandas as pd

from mltrader.errors import DataError

Interval = Literal["1m", "5m", "15m", "1h", "1d"]
INTERVALS: tuple[str, ...] = ("1m", "5m", "15m", "1h", "1d")
COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
INTERVAL_MINUTES = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "1d": 390}
NEW_YORK = "America/New_York"
_T = TypeVar("_T", pd.Timestamp, pd.DatetimeIndex)


class SourceError(DataError):
    """A source could not deliver (network, rate limit after retries, bad symbol, bad key)."""


@runtime_checkable
class Source(Protocol):
    """A market-data source. `name` is its registry name (yahoo, alphavantage, alpaca, ...)."""

    name: str

    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp, interval: str,
              adjusted: bool = True) -> pd.DataFrame:
        """One symbol's completed bars with start <= index <= end, in the standard frame."""
        ...


def empty_frame() -> pd.DataFrame:
    """The standard frame with no rows."""
    idx = pd.DatetimeIndex([], tz="UTC")
    return pd.DataFrame({c: pd.Series([], dtype="float64") for c in COLUMNS}, index=idx)


def standardize(df: pd.DataFrame, source: str, symbol: str) -> pd.DataFrame:
    """Check and normalise a source's frame: UTC index, sorted, unique, float columns."""
    if df.empty:
        return empty_frame()
    missing = [c for c in ("open", "high", "low", "close") if c not in df.columns]
    if missing:
        raise SourceError(f"{source}: {symbol}: the response has no {', '.join(missing)} "
                          "column(s); the provider's format may have changed")
    out = pd.DataFrame(index=pd.DatetimeIndex(df.index))
    for c in COLUMNS:
        out[c] = (pd.to_numeric(df[c], errors="coerce").astype("float64") if c in df
                  else float("nan"))
    if out.index.tz is None:
        out.index = out.index.tz_localize("UTC")
    else:
        out.index = out.index.tz_convert("UTC")
    out = out[~out.index.duplicated(keep="last")].sort_index()
    return out


def check_interval(interval: str) -> str:
    if interval not in INTERVALS:
        raise SourceError(f"interval {interval!r} is not supported; use one of "
                          f"{', '.join(INTERVALS)}")
    return interval


def interval_span(interval: str) -> pd.Timedelta:
    """The length of one bar (a calendar day for daily bars)."""
    check_interval(interval)
    return pd.Timedelta(days=1) if interval == "1d" else pd.Timedelta(
        minutes=INTERVAL_MINUTES[interval])


def bar_end(start: _T, interval: str) -> _T:
    """When a bar that starts at `start` (UTC) is complete: start + interval, or for a daily
    bar the 16:00 New York close of its session date. Works on a Timestamp or an index."""
    check_interval(interval)
    if interval != "1d":
        return start + interval_span(interval)
    day = start.tz_convert("UTC").tz_localize(None).normalize()
    return (day + pd.Timedelta(hours=16)).tz_localize(NEW_YORK).tz_convert("UTC")


def as_utc(value: str | dt.date | pd.Timestamp | None, default: pd.Timestamp) -> pd.Timestamp:
    """A date or timestamp as a tz-aware UTC Timestamp (naive values are read as UTC)."""
    if value is None:
        return default
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def now_utc() -> pd.Timestamp:
    """The wall clock as a tz-aware UTC Timestamp (the sources' default `now`)."""
    return pd.Timestamp.now(tz="UTC")
