"""The interface every news source implements (alpaca, yahoo, rss, file) and its error type.

A `NewsSource` returns the canonical news frame of `frame.py`: one row per item, times in UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import pandas as pd

from mltrader.errors import DataError


class NewsError(DataError):
    """A news source or file could not deliver: one line naming the problem and the fix."""


@runtime_checkable
class NewsSource(Protocol):
    """A news source. `name` is its registry name (alpaca, yahoo, rss, file)."""

    name: str

    def fetch(self, symbols: Sequence[str], start: pd.Timestamp,
              end: pd.Timestamp) -> pd.DataFrame:
        """Items about any of `symbols` published in [start, end], as the canonical frame."""
        ...


def utc(value: object) -> pd.Timestamp:
    """A date or timestamp as a tz-aware UTC Timestamp (naive values are read as UTC)."""
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def check_range(start: object, end: object) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end] in UTC; NewsError when start is after end."""
    a, b = utc(start), utc(end)
    if a > b:
        raise NewsError(f"news: start {a} is after end {b}; swap them")
    return a, b
