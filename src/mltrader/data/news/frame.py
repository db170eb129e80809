"""The canonical news frame: one row per news item, the shape every news source returns.

Columns (`NEWS_COLUMNS`): ``id`` str (unique per provider), ``time`` publication time (tz-aware
UTC, sorted ascending), ``symbols`` tuple of upper-case tickers, ``headline`` non-empty str,
``summary`` str ("" if none), ``source`` str (publisher, "" if unknown), ``provider`` str
(alpaca, yahoo, rss, file).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from mltrader.data.news.base import NewsError

NEWS_COLUMNS = ["id", "time", "symbols", "headline", "summary", "source", "provider"]
_TEXT = ("id", "headline", "summary", "source", "provider")
_SPLIT = re.compile(r"[\s,|;]+")


def empty_news() -> pd.DataFrame:
    """The canonical frame with no rows."""
    out = pd.DataFrame({c: pd.Series([], dtype=object) for c in NEWS_COLUMNS})
    out["time"] = pd.DatetimeIndex([], tz="UTC").as_unit("ns")
    for c in _TEXT:
        out[c] = out[c].astype(str)
    return out


def stable_id(time: pd.Timestamp, headline: str) -> str:
    """A stable id for an item without one: a hash of its UTC time and headline."""
    key = f"{pd.Timestamp(time).tz_convert('UTC').isoformat()}|{headline.strip()}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def parse_symbols(value: Any) -> tuple[str, ...]:
    """Tickers from a string ("AAPL MSFT", "AAPL,MSFT", "AAPL|MSFT") or a list, upper-case,
    without duplicates, in their order."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    items: Iterable[Any] = (_SPLIT.split(value) if isinstance(value, str) else value)
    out: list[str] = []
    for v in items:
        s = str(v).strip().upper().lstrip("$")
        if s and s not in out:
            out.append(s)
    return tuple(out)


def news_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The canonical frame from dicts with the `NEWS_COLUMNS` keys (validated)."""
    rows = list(records)
    if not rows:
        return empty_news()
    return validate_news(pd.DataFrame.from_records(rows, columns=NEWS_COLUMNS))


def validate_news(df: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise a news frame: types, UTC times, tuple symbols; duplicates by id
    keep the first; sorted by time (stable). NewsError for a missing column, a naive or
    missing time, or an empty headline."""
    missing = [c for c in NEWS_COLUMNS if c not in df.columns]
    if missing:
        raise NewsError(f"news frame: no {', '.join(missing)} column(s); "
                        f"a news frame has the columns {', '.join(NEWS_COLUMNS)}")
    if df.empty:
        return empty_news()
    out = df[NEWS_COLUMNS].copy()
    time = _utc_times(out["time"])
    if time.isna().any():
        raise NewsError(f"news frame: {int(time.isna().sum())} item(s) without a time; "
                        "drop them before building the frame")
    out["time"] = time.dt.tz_convert("UTC").dt.as_unit("ns")
    for c in _TEXT:
        out[c] = out[c].fillna("").astype(str).str.strip()
    empty = out["headline"] == ""
    if empty.any():
        raise NewsError(f"news frame: item {out['id'][empty].iloc[0]!r} has an empty headline")
    out["symbols"] = pd.Series([parse_symbols(v) for v in out["symbols"]], index=out.index,
                               dtype=object)
    out = out[~out["id"].duplicated(keep="first")]
    out = out.sort_values("time", kind="stable").reset_index(drop=True)
    return out


def _utc_times(col: pd.Series) -> pd.Series:
    """A column of tz-aware times (any offsets) in UTC; NewsError when one has no zone."""
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        return col
    if not pd.api.types.is_datetime64_dtype(col.dtype):
        try:
            stamps = [pd.Timestamp(v) if v is not None else pd.NaT for v in col]
        except (ValueError, TypeError) as e:
            raise NewsError(f"news frame: a 'time' is not a date/time ({e})") from None
        if all(pd.isna(t) or t.tzinfo is not None for t in stamps):
            return pd.to_datetime(pd.Series(stamps, index=col.index, dtype=object), utc=True)
    raise NewsError("news frame: 'time' has no time zone; give publication times in UTC")


def explode_symbols(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (item, symbol), with the ticker in a ``symbol`` column; items without a
    symbol give no row. Keeps the item's other columns, in time order."""
    if df.empty:
        out = df.copy()
        out["symbol"] = pd.Series([], dtype=str)
        return out.reset_index(drop=True)
    out = df.assign(symbol=df["symbols"].map(list)).explode("symbol")
    out = out[out["symbol"].notna()]
    out["symbol"] = out["symbol"].astype(str)
    return out.reset_index(drop=True)
