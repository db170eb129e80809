"""Cell-level helpers for `files`: read a raw table, parse dates and numbers with row-level errors.

Everything is read as text first (CSV) so a bad cell can be reported with its row, column and
value exactly as the user sees them in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mltrader.errors import DataError

SUFFIXES: dict[str, str] = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet"}
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})
DATE_FORMATS = ("ISO8601", "%m/%d/%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S")
DATE_FIX = "write dates as YYYY-MM-DD (optionally with time and UTC offset) or M/D/YYYY"
NUMBER_FIX = "write plain numbers with a dot as decimal point, no thousands separator: 1234.5"


def file_kind(path: Path) -> str | None:
    """'csv' or 'parquet' from the (case-insensitive) extension, None when unsupported."""
    name = path.name.lower()
    return next((k for s, k in SUFFIXES.items() if name.endswith(s)), None)


def file_stem(path: Path) -> str:
    """The file name without its supported extension, e.g. ``spy.csv.gz`` -> ``spy``."""
    name = path.name
    for s in sorted(SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return path.stem


def one_line(text: str) -> str:
    """Collapse line breaks so an error stays a single line."""
    return " ".join(str(text).split())


@dataclass(frozen=True)
class Table:
    """A file's header and columns (by position, so duplicate names survive) plus row numbers."""

    file: str
    header: list[str]
    columns: list[pd.Series]
    rows: np.ndarray  # the row number a user sees for each data row
    row_word: str  # "row" for CSV (header = row 1), "data row" for Parquet (no visible header)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: int | None = None, col: int | None = None) -> str:
        """'file, row 7, column 'Close'' for messages."""
        parts = [self.file]
        if row is not None:
            parts.append(f"{self.row_word} {int(self.rows[row])}")
        if col is not None:
            parts.append(f"column {self.header[col]!r}")
        return ", ".join(parts)

    def err(
        self, problem: str, fix: str, row: int | None = None, col: int | None = None
    ) -> DataError:
        """A one-line DataError: where, what is wrong, how to fix it."""
        return DataError(one_line(f"{self.where(row, col)}: {problem}; {fix}"))

    def cell(self, row: int, col: int) -> str:
        """The cell as the user wrote it (Parquet values are shown with str())."""
        return str(self.columns[col].iloc[row])


def text_cells(s: pd.Series) -> np.ndarray:
    """Cells as an object array of stripped strings, missing values as ''."""
    vals = s.to_numpy(dtype=object)
    return np.array([v.strip() if isinstance(v, str) else ("" if pd.isna(v) else str(v))
                     for v in vals], dtype=object)


def read_csv(path: Path, file: str) -> Table:
    """Read a CSV (or gzipped CSV) as text; blank lines are skipped but keep row numbering."""
    try:
        df = pd.read_csv(path, header=None, dtype=str, na_filter=False, skip_blank_lines=False,
                         encoding="utf-8-sig", compression="infer")
    except pd.errors.EmptyDataError:
        raise DataError(f"{file}: the file holds no text (no header, no rows); give a header "
                        "line such as 'date,symbol,close' and data rows") from None
    except pd.errors.ParserError as e:
        raise DataError(one_line(f"{file}: malformed CSV ({e}); give every row the same number "
                                 "of comma-separated fields as the header")) from None
    except UnicodeDecodeError:
        raise DataError(f"{file}: not UTF-8 text; save the file as UTF-8 CSV") from None
    except (OSError, EOFError, ValueError) as e:
        msg = f"{file}: cannot read the file ({type(e).__name__}: {e}); "
        raise DataError(one_line(msg + "check that it is a valid CSV (gzip for .csv.gz)")) from None
    cols = [text_cells(df.iloc[:, j]) for j in range(df.shape[1])]
    header = [str(c[0]) for c in cols]
    data = [c[1:] for c in cols]
    rows = np.arange(2, len(df) + 1)
    keep = ~np.logical_and.reduce([c == "" for c in data]) if data else np.ones(0, dtype=bool)
    return Table(file, header, [pd.Series(c[keep], dtype=object) for c in data], rows[keep], "row")


def read_parquet(path: Path, file: str) -> Table:
    """Read a Parquet file; a non-default index (e.g. a saved DatetimeIndex) becomes columns."""
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises many types for corrupt files
        raise DataError(one_line(f"{file}: cannot read as Parquet ({type(e).__name__}: {e}); "
                                 "check that it is a valid Parquet file")) from None
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    header = [str(c).strip() for c in df.columns]
    cols = [df.iloc[:, j].reset_index(drop=True) for j in range(df.shape[1])]
    return Table(file, header, cols, np.arange(1, len(df) + 1), "data row")


def parse_dates(t: Table, j: int) -> pd.DatetimeIndex:
    """Column ``j`` as a UTC DatetimeIndex; naive times are taken as UTC."""
    s = t.columns[j]
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        idx = pd.DatetimeIndex(s)
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        if idx.isna().any():
            raise t.err("the date is empty", "fill in the date or delete the row",
                        row=int(np.argmax(idx.isna())), col=j)
        return idx.rename(None)
    cells = text_cells(s)
    empty = cells == ""
    if empty.any():
        raise t.err("the date is empty", "fill in the date or delete the row",
                    row=int(np.argmax(empty)), col=j)
    best: pd.DatetimeIndex | None = None
    for fmt in DATE_FORMATS:
        try:
            got = pd.to_datetime(pd.Index(cells), format=fmt, utc=True, errors="coerce")
        except (ValueError, TypeError, OverflowError):
            continue
        if not got.isna().any():
            return pd.DatetimeIndex(got).rename(None)
        if best is None or got.isna().sum() < best.isna().sum():
            best = got
    i = int(np.argmax(best.isna())) if best is not None else 0
    raise t.err(f"cannot read date {cells[i]!r}", DATE_FIX, row=i, col=j)


def parse_numbers(t: Table, j: int) -> np.ndarray:
    """Column ``j`` as float64; empty / NaN / NA / null cells become NaN, the rest must parse."""
    s = t.columns[j]
    if pd.api.types.is_bool_dtype(s.dtype):
        raise t.err("holds true/false values, not numbers", NUMBER_FIX, row=0, col=j)
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    cells = text_cells(s)
    out = np.full(len(cells), np.nan)
    present = np.array([c.lower() not in MISSING for c in cells], dtype=bool)
    try:
        if any("_" in c for c in cells[present]):
            raise ValueError
        out[present] = cells[present].astype(np.float64)
        return out
    except (ValueError, TypeError, OverflowError):
        pass
    for i in np.flatnonzero(present):
        try:
            if "_" in cells[i]:
                raise ValueError
            float(cells[i])
        except (ValueError, TypeError, OverflowError):
            raise t.err(f"cannot read number {cells[i]!r}", NUMBER_FIX, row=int(i), col=j) from None
    raise AssertionError("unreachable")  # pragma: no cover
