"""Parse a table column into dates or numbers, vectorised, with row-level one-line errors.

Dates: ISO 8601 (any offsets, converted to UTC), M/D/YYYY, D.M.YYYY, YYYY.MM.DD, YYYYMMDD and
Unix epochs in s / ms / us / ns. Numbers: dot or (when the file uses them) comma decimals; the
missing-value spellings in `MISSING` become NaN for the caller to handle.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from mltrader.data._parse import Table, clip, text_cells

MISSING = frozenset({"", ".", "nan", "-nan", "na", "n/a", "#n/a", "null", "none", "nat"})
DATE_FORMATS = ("ISO8601", "%m/%d/%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y",
                "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d/%m/%Y", "%d/%m/%Y %H:%M")
DATE_FIX = "write dates as YYYY-MM-DD (optionally with time and UTC offset) or M/D/YYYY"
NUMBER_FIX = "write plain numbers with a dot as decimal point, no thousands separator: 1234.5"
COMMA_FIX = ("the file uses decimal commas: write plain numbers with a decimal comma and no "
             "thousands separator: 1234,5")

_DIGITS = re.compile(r"^\d{1,18}(\.0+)?$")
_LOCAL_MIDNIGHT = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]00:00(:00(\.0+)?)?[+-]\d{2}(:?\d{2})?$")
_THOUSANDS = {".": re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$"),
              ",": re.compile(r"^[+-]?\d{1,3}(\.\d{3})+(,\d+)?$")}
_EPOCH_UNITS = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))


def missing_mask(t: Table, j: int) -> np.ndarray:
    """True where column ``j`` holds a missing-value spelling (or a null in Parquet)."""
    s = t.columns[j]
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.isna().to_numpy()
    return pd.Series(text_cells(s), dtype="str").str.lower().isin(MISSING).to_numpy()


def spellings(t: Table, j: int, mask: np.ndarray, limit: int = 4) -> list[str]:
    """The distinct ways missing cells of column ``j`` are written (error / notes path)."""
    s = t.columns[j]
    if pd.api.types.is_numeric_dtype(s.dtype):
        return ["null"]
    return list(pd.unique(text_cells(s)[mask]))[:limit]


def _epochs_or_ymd(v: np.ndarray) -> pd.DatetimeIndex | None:
    """Integers as YYYYMMDD (8 digits, all valid dates) or Unix epochs (>= 1e8, i.e. after
    1973; unit by magnitude: s, ms, us, ns); None when they are neither."""
    if len(v) == 0 or v.min() < 0:
        return None
    if v.min() >= 10_000_000 and v.max() <= 99_999_999:
        got = pd.to_datetime(pd.Index(v.astype(str)), format="%Y%m%d", errors="coerce", utc=True)
        return None if got.isna().any() else pd.DatetimeIndex(got)
    if v.min() < 100_000_000:
        return None
    unit = next((u for lim, u in _EPOCH_UNITS if v.max() < lim), "ns")
    try:
        return pd.DatetimeIndex(pd.to_datetime(v, unit=unit, utc=True))
    except (ValueError, OverflowError):  # out of range: not epochs after all
        return None


def _datetime_column(t: Table, j: int, idx: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """A datetime-typed column (Parquet) in UTC; local-midnight stamps keep their date."""
    if idx.isna().any():
        raise t.err("the date is empty", "fill in the date or delete the row",
                    row=int(np.argmax(idx.isna())), col=j)
    if idx.tz is None:
        return idx.tz_localize("UTC")
    if str(idx.tz) != "UTC" and (idx == idx.normalize()).all():
        t.note(f"dates at local midnight ({idx.tz}) read as calendar dates")
        return idx.tz_localize(None).tz_localize("UTC")
    return idx.tz_convert("UTC")


def parse_dates(t: Table, j: int) -> pd.DatetimeIndex:
    """Column ``j`` as a UTC DatetimeIndex; naive times are taken as UTC, local-midnight
    stamps with an offset (a daily series saved from a tz-aware index) as calendar dates."""
    s = t.columns[j]
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return _datetime_column(t, j, pd.DatetimeIndex(s)).rename(None)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        if s.isna().any():
            raise t.err("the date is empty", "fill in the date or delete the row",
                        row=int(np.argmax(s.isna().to_numpy())), col=j)
        vals = s.to_numpy(dtype=np.float64)
        got = _epochs_or_ymd(s.to_numpy(dtype=np.int64)) if (vals == np.floor(vals)).all() \
            else None
        if got is None:
            raise t.err(f"cannot read {t.cell(0, j)!r} as a date (numbers that are neither "
                        "YYYYMMDD nor Unix epoch seconds / milliseconds)", DATE_FIX, row=0, col=j)
        return got.rename(None)
    cells = text_cells(s)
    empty = cells == ""
    if empty.any():
        raise t.err("the date is empty", "fill in the date or delete the row",
                    row=int(np.argmax(empty)), col=j)
    ser = pd.Series(cells, dtype="str")
    if ser.str.fullmatch(_DIGITS.pattern).all():
        ints = ser.str.replace(r"\.0+$", "", regex=True).to_numpy(dtype=object).astype(np.int64)
        got = _epochs_or_ymd(ints)
        if got is not None:
            return got.rename(None)
    if ser.str.fullmatch(_LOCAL_MIDNIGHT.pattern).all() and not ser.str.endswith("+00:00").all():
        t.note("dates at local midnight with a UTC offset read as calendar dates")
        cells = ser.str.slice(0, 10).to_numpy(dtype=object)
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
    raise t.err(f"cannot read date {clip(cells[i])!r}", DATE_FIX, row=i, col=j)


def _number_error(t: Table, j: int, i: int, cell: str) -> Exception:
    """The message for one cell that is not a number: names a thousands separator if any."""
    if _THOUSANDS[t.decimal].match(cell):
        mark = "," if t.decimal == "." else "."
        plain = cell.replace(mark, "")
        return t.err(f"cannot read number {clip(cell)!r}: {mark!r} is a thousands separator",
                     f"remove it ({plain}) or save the file without thousands separators",
                     row=i, col=j)
    return t.err(f"cannot read number {clip(cell)!r}", COMMA_FIX if t.decimal == "," else
                 NUMBER_FIX, row=i, col=j)


def parse_numbers(t: Table, j: int) -> np.ndarray:
    """Column ``j`` as float64; missing spellings (`MISSING`) become NaN, the rest must parse."""
    s = t.columns[j]
    if pd.api.types.is_bool_dtype(s.dtype):
        raise t.err("holds true/false values, not numbers", NUMBER_FIX, row=0, col=j)
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    ser = pd.Series(text_cells(s), dtype="str")
    present = ~ser.str.lower().isin(MISSING).to_numpy()
    txt = ser[present]
    bad = txt.str.contains("_", regex=False)
    if t.decimal == ",":
        bad |= txt.str.contains(".", regex=False)
        txt = txt.str.replace(",", ".", regex=False)
    out = np.full(len(ser), np.nan)
    if not bad.any():
        try:
            out[present] = txt.to_numpy(dtype=object).astype(np.float64)
            return out
        except (ValueError, TypeError, OverflowError):
            pass
    for i in np.flatnonzero(present):  # error path only: find the first bad cell
        cell = str(ser.iloc[i])
        try:
            if "_" in cell or (t.decimal == "," and "." in cell):
                raise ValueError
            float(cell.replace(",", ".") if t.decimal == "," else cell)
        except (ValueError, TypeError, OverflowError):
            raise _number_error(t, j, int(i), cell) from None
    raise AssertionError("unreachable")  # pragma: no cover
