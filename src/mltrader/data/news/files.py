"""Read and write a user's own news file (CSV, .csv.gz or Parquet) as the canonical frame.

Columns: ``timestamp``, ``symbols``, ``headline`` and optional ``summary``, ``source``, ``id``
(``provider`` too, so a written file reads back unchanged). ``symbols`` is a string of tickers
separated by spaces, commas or ``|`` (a list in Parquet). Every bad input is a one-line
`NewsError` naming the file, the row (1 = the first data row) and the fix; nothing is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mltrader.data.news.base import NewsError, check_range
from mltrader.data.news.frame import (
    NEWS_COLUMNS,
    empty_news,
    parse_symbols,
    stable_id,
    validate_news,
)
from mltrader.errors import ConfigError

log = logging.getLogger(__name__)

REQUIRED = ("timestamp", "symbols", "headline")
OPTIONAL = ("summary", "source", "id", "provider")
TZ_HINT = ("add an offset (2024-01-02T15:30:00-05:00) or set news.tz in the config "
           "(--tz for `mltrader news import`), e.g. America/New_York")


def _kind(p: Path) -> str:
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    raise NewsError(f"{p}: unknown news file type; use .csv, .csv.gz or .parquet")


def _read_table(p: Path) -> pd.DataFrame:
    if not p.exists():
        raise NewsError(f"{p}: news file not found (current folder {Path.cwd()}); "
                        "check the path")
    kind = _kind(p)
    try:
        if kind == "parquet":
            return pd.read_parquet(p)
        return pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except Exception as e:  # pandas / pyarrow raise many kinds
        text = " ".join(str(e).split())[:200]
        raise NewsError(f"{p}: cannot read the news file ({type(e).__name__}: {text}); "
                        f"check that it is a valid {kind.upper()} file") from None


def _check_tz(tz: str | None) -> str | None:
    if tz is None:
        return None
    try:
        pd.Timestamp("2024-01-02").tz_localize(tz)
    except Exception:
        raise ConfigError(f"news.tz: unknown time zone {tz!r}; use an IANA name such as "
                          "America/New_York or UTC") from None
    return tz


def _times(p: Path, col: pd.Series, tz: str | None) -> list[pd.Timestamp]:
    """Each row's time in UTC; naive ones localized in `tz` (an error when tz is None)."""
    out: list[pd.Timestamp] = []
    for i, v in enumerate(col.tolist(), start=1):
        try:
            ts = pd.Timestamp(v.strip() if isinstance(v, str) else v)
            if pd.isna(ts):
                raise ValueError("empty")
        except (ValueError, TypeError, OverflowError):
            raise NewsError(f"{p}: row {i}: timestamp {str(v)!r} is not a date/time; write "
                            "it as ISO 8601, e.g. 2024-01-02T15:30:00-05:00") from None
        if ts.tzinfo is None:
            if tz is None:
                raise NewsError(f"{p}: timestamps (row {i}: {str(v)!r}) have no time zone: "
                                f"{TZ_HINT}")
            try:
                ts = ts.tz_localize(tz, ambiguous="raise", nonexistent="raise")
            except Exception:
                raise NewsError(f"{p}: row {i}: {str(v)!r} does not exist or is ambiguous in "
                                f"{tz} (a daylight-saving change); add an offset") from None
        out.append(ts.tz_convert("UTC"))
    return out


def read_news_file(path: str | Path, tz: str | None = None,
                   symbols: Collection[str] | None = None) -> pd.DataFrame:
    """The canonical news frame of a CSV / Parquet news file (see module doc).

    ``tz``: the zone of timestamps without an offset (None: such stamps are an error).
    ``symbols``: the universe; a ticker outside it is an error naming the row.
    """
    p = Path(path)
    tz = _check_tz(tz)
    raw = _read_table(p)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    for c in REQUIRED:
        if c not in raw.columns:
            found = ", ".join(map(str, raw.columns)) or "none"
            raise NewsError(f"{p}: no {c!r} column (columns found: {found}); a news file "
                            f"needs {', '.join(REQUIRED)}")
    if raw.empty:
        return empty_news()
    times = _times(p, raw["timestamp"], tz)
    universe = {s.upper() for s in symbols} if symbols is not None else None
    rows: list[dict[str, Any]] = []
    for i, (t, rec) in enumerate(zip(times, raw.to_dict("records"), strict=True), start=1):
        headline = _text(rec.get("headline"))
        if not headline:
            raise NewsError(f"{p}: row {i}: empty headline; every item needs one")
        syms = parse_symbols(rec.get("symbols"))
        if not syms:
            raise NewsError(f"{p}: row {i}: no symbols; list the tickers the item is about, "
                            "e.g. 'AAPL MSFT'")
        if universe is not None:
            bad = next((s for s in syms if s not in universe), None)
            if bad is not None:
                raise NewsError(f"{p}: unknown symbol {bad!r} in row {i}: remove it or add it "
                                f"to the universe; the universe is {', '.join(sorted(universe))}")
        rows.append({"id": _text(rec.get("id")) or stable_id(t, headline), "time": t,
                     "symbols": syms, "headline": headline,
                     "summary": _text(rec.get("summary")), "source": _text(rec.get("source")),
                     "provider": _text(rec.get("provider")) or "file"})
    df = pd.DataFrame.from_records(rows, columns=NEWS_COLUMNS)
    out = validate_news(df)
    if len(out) < len(df):
        log.warning("%s: %d row(s) repeat an earlier id and were skipped (first kept)",
                    p, len(df) - len(out))
    return out


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return str(v).strip()


def write_news_file(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a news frame as Parquet or CSV (by suffix) so `read_news_file` reads it back
    unchanged: times as UTC ISO stamps, symbols space-separated in CSV (a list in Parquet)."""
    p = Path(path)
    kind = _kind(p)
    news = validate_news(df)
    out = pd.DataFrame({
        "timestamp": news["time"], "symbols": news["symbols"].map(list),
        "headline": news["headline"], "summary": news["summary"], "source": news["source"],
        "id": news["id"], "provider": news["provider"]})
    p.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        out.to_parquet(p, index=False)
    else:
        out["timestamp"] = news["time"].map(lambda t: t.isoformat())
        out["symbols"] = news["symbols"].map(" ".join)
        out.to_csv(p, index=False)
    return p


class FileNews:
    """A news file as a `NewsSource`: the items of the asked symbols in [start, end]."""

    name = "file"

    def __init__(self, path: str | Path, tz: str | None = None,
                 symbols: Collection[str] | None = None) -> None:
        self.path, self.tz, self.universe = Path(path), tz, symbols
        self._frame: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"FileNews({str(self.path)!r}, tz={self.tz!r})"

    def fetch(self, symbols: Sequence[str], start: pd.Timestamp,
              end: pd.Timestamp) -> pd.DataFrame:
        a, b = check_range(start, end)
        if self._frame is None:
            self._frame = read_news_file(self.path, self.tz, self.universe)
        df = self._frame
        want = {s.upper() for s in symbols}
        keep = (df["time"] >= a) & (df["time"] <= b) & df["symbols"].map(
            lambda s: bool(want.intersection(s)))
        return df[keep].reset_index(drop=True)
