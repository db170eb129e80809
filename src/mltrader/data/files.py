"""Load and save a user's own market data: CSV, .csv.gz or Parquet, long or wide layout.

Every bad input becomes a one-line `DataError` naming the file, the row or column, what is
wrong and how to fix it; the loader never drops or changes data silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mltrader.data._parse import (
    SUFFIXES,
    Table,
    file_kind,
    file_stem,
    one_line,
    parse_dates,
    parse_numbers,
    read_csv,
    read_parquet,
    text_cells,
)
from mltrader.data.bars import FIELDS, Bars
from mltrader.errors import DataError

__all__ = ["load_file", "save_file"]

DATE_NAMES = ("date", "datetime", "timestamp", "time")
SYMBOL_NAMES = ("symbol", "ticker")
IGNORED = ("adjclose",)  # "Adj Close": the close stays the close; the adjusted close is not used
KNOWN = DATE_NAMES + SYMBOL_NAMES + FIELDS + IGNORED
SUPPORTED = ", ".join(SUFFIXES)


def _key(name: str) -> str:
    """Column name for matching: lower case, spaces / underscores / dots removed."""
    return re.sub(r"[\s_.]+", "", name.lower())


@dataclass
class _Layout:
    """Which column plays which role; kind is 'long', 'single' (one symbol's OHLCV) or 'wide'."""

    kind: str
    date: int
    symbol: int | None = None
    fields: dict[str, int] = field(default_factory=dict)
    symbols: list[int] = field(default_factory=list)


def load_file(path: str | Path, symbols_hint: None = None) -> Bars:
    """Load CSV / .csv.gz / Parquet market data (long, wide or single-symbol OHLCV) as `Bars`.

    ``symbols_hint`` is reserved and must be None. Raises `DataError` for every bad input.
    """
    p = Path(path)
    file = str(p)
    if symbols_hint is not None:
        raise DataError(f"{file}: symbols_hint is not supported yet; leave it as None")
    if not p.exists():
        raise DataError(f"{file}: file not found; check the path and the current directory")
    kind = file_kind(p)
    if kind is None:
        raise DataError(f"{file}: unsupported file type; use one of {SUPPORTED}")
    if p.is_dir():
        raise DataError(f"{file}: is a folder, not a file; give the path of a data file")
    try:
        if p.stat().st_size == 0:
            raise DataError(f"{file}: the file is empty (0 bytes); give a header line such as "
                            "'date,symbol,close' and data rows")
        t = read_csv(p, file) if kind == "csv" else read_parquet(p, file)
        return _build(t, p)
    except DataError:
        raise
    except Exception as e:  # never let a pandas / pyarrow / OS error escape as another type
        raise DataError(one_line(f"{file}: cannot load ({type(e).__name__}: {e}); check that it "
                                 f"is a valid {kind.upper()} file with a date column and prices")
                        ) from e


def save_file(bars: Bars, path: str | Path) -> Path:
    """Write `bars` in long format (CSV, .csv.gz or Parquet, by extension); `load_file` reads
    it back exactly (index in UTC). Refuses panels that long format cannot hold losslessly."""
    p = Path(path)
    file = str(p)
    kind = file_kind(p)
    if kind is None:
        raise DataError(f"{file}: unsupported file type; use one of {SUPPORTED}")
    _check_saveable(bars, file)
    df = bars.to_long()
    pos = {s: i for i, s in enumerate(bars.symbols)}
    # symbol-major rows, so the order in which symbols first appear is bars.symbols
    order = np.argsort(df["symbol"].map(pos).to_numpy(dtype=np.int64), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    df["date"] = df["date"].dt.tz_convert("UTC")
    try:
        if kind == "csv":
            df.to_csv(p, index=False)
        else:
            df.to_parquet(p, index=False)
    except OSError as e:
        raise DataError(one_line(f"{file}: cannot write ({e}); check that the folder exists "
                                 "and is writable")) from None
    return p


# ---------------------------------------------------------------------------- layout
def _detect(t: Table) -> _Layout:
    """Find the date / symbol / field columns and decide the layout from them."""
    seen: dict[str, int] = {}
    for j, h in enumerate(t.header):
        if not h:
            raise t.err(f"column {j + 1} has no name in the header", "name it or delete it")
        k = _key(h) if _key(h) in KNOWN else h
        if k in seen:
            raise t.err(f"column {h!r} appears twice (columns {seen[k] + 1} and {j + 1})",
                        "keep one of them")
        seen[k] = j
    names = ", ".join(repr(h) for h in t.header)
    dates = [j for j, h in enumerate(t.header) if _key(h) in DATE_NAMES]
    if not dates:
        raise t.err(f"no date column (columns are {names})",
                    "name the date column 'date' (or datetime, timestamp, time)")
    if len(dates) > 1:
        raise t.err(f"several date columns ({', '.join(repr(t.header[j]) for j in dates)})",
                    "keep exactly one (merge a separate date and time into one column)")
    syms = [j for j, h in enumerate(t.header) if _key(h) in SYMBOL_NAMES]
    if len(syms) > 1:
        raise t.err(f"several symbol columns ({', '.join(repr(t.header[j]) for j in syms)})",
                    "keep exactly one")
    fields = {_key(h): j for j, h in enumerate(t.header) if _key(h) in FIELDS}
    ignored = [j for j, h in enumerate(t.header) if _key(h) in IGNORED]
    other = [j for j in range(len(t.header))
             if j not in dates + syms + ignored + list(fields.values())]
    if not syms and not fields and not ignored:
        if not other:
            raise t.err("only a date column, no prices", "add one close column per symbol")
        return _Layout("wide", dates[0], symbols=other)
    kind = "long" if syms else "single"
    if other:
        h = t.header[other[0]]
        if kind == "long":
            raise t.err(f"unexpected column {h!r} in a long file (it has a symbol column)",
                        "long files take date, symbol, open, high, low, close, volume; remove it")
        raise t.err(f"column {h!r} is not a field (open, high, low, close, volume)",
                    "remove it; for one close column per symbol, name no column "
                    "open/high/low/close/volume; for several symbols in rows, add a symbol column")
    if "close" not in fields:
        raise t.err("no close column (Adj Close is not used as close)", "add a 'close' column")
    ohl = [f for f in ("open", "high", "low") if f in fields]
    if ohl and len(ohl) < 3:
        missing = [f for f in ("open", "high", "low") if f not in fields]
        raise t.err(f"has {', '.join(ohl)} but not {', '.join(missing)}",
                    "give all of open, high, low, or none of them")
    return _Layout(kind, dates[0], syms[0] if syms else None, fields)


def _build(t: Table, p: Path) -> Bars:
    """Check the table cell by cell (so errors name the file row), then build `Bars`."""
    lay = _detect(t)
    if len(t) == 0:
        raise t.err("the file has a header but no data rows", "add at least one row of prices")
    dates = parse_dates(t, lay.date)
    if lay.kind == "long":
        return _build_long(t, lay, dates)
    _check_index(t, lay, dates)
    if lay.kind == "single":
        vals = _check_rows(t, lay)
        arrays = {f: v.reshape(-1, 1) for f, v in vals.items()}
        return Bars(index=dates, symbols=(file_stem(p).upper(),), source=t.file, **arrays)
    return _build_wide(t, lay, dates)


# ---------------------------------------------------------------------------- checks
def _check_values(t: Table, j: int, name: str, v: np.ndarray, need: np.ndarray,
                  gap: tuple[str, str]) -> None:
    """NaN where a value is needed, prices not finite and > 0, volume not finite and >= 0."""
    miss = need & np.isnan(v)
    if miss.any():
        raise t.err(*gap, row=int(np.argmax(miss)), col=j)
    with np.errstate(invalid="ignore"):
        bad = np.isinf(v) | ((v < 0) if name == "volume" else (v <= 0))
    if bad.any():
        i = int(np.argmax(bad))
        what = "volume must be finite and >= 0" if name == "volume" else \
            "prices must be finite and > 0"
        raise t.err(f"{name} is {t.cell(i, j)!r}: {what}", "fix the value or delete the row",
                    row=i, col=j)


def _check_rows(t: Table, lay: _Layout) -> dict[str, np.ndarray]:
    """Parse the field columns of a long / single-symbol file: every row needs every field."""
    vals = {f: parse_numbers(t, lay.fields[f]) for f in FIELDS if f in lay.fields}
    need = np.ones(len(t), dtype=bool)
    for f, v in vals.items():
        gap = (f"{f} is empty", f"fill in the {f} or delete the row" if f != "volume" else
               "fill in the volume or remove the volume column")
        _check_values(t, lay.fields[f], f, v, need, gap)
    if "high" in vals:
        hi, lo = vals["high"], vals["low"]
        tol = 1e-9 * np.abs(hi)
        checks = [("high", "low", hi < lo - tol, "below")]
        for f in ("open", "close"):
            checks += [(f, "high", vals[f] > hi + tol, "above"),
                       (f, "low", vals[f] < lo - tol, "below")]
        for a, b, bad, rel in checks:
            if bad.any():
                i = int(np.argmax(bad))
                ja, jb = lay.fields[a], lay.fields[b]
                raise t.err(f"{a} {t.cell(i, ja)} is {rel} {b} {t.cell(i, jb)}",
                            "fix the bar so that high >= open, close >= low", row=i, col=ja)
    return vals


def _check_index(t: Table, lay: _Layout, dates: pd.DatetimeIndex) -> None:
    """Wide / single-symbol files: one row per date, oldest first."""
    dup = dates.duplicated()
    if dup.any():
        i = int(np.argmax(dup))
        first = int(np.flatnonzero(dates == dates[i])[0])
        raise t.err(f"duplicate date {t.cell(i, lay.date)!r} (same time as "
                    f"{t.row_word} {t.rows[first]})", "keep one row per date", row=i)
    back = np.diff(dates.asi8) < 0
    if back.any():
        i = int(np.argmax(back)) + 1
        raise t.err(f"date {t.cell(i, lay.date)!r} comes after {t.cell(i - 1, lay.date)!r} "
                    f"({t.row_word} {t.rows[i - 1]})", "sort the file by date, oldest first",
                    row=i)


# ---------------------------------------------------------------------------- layouts
def _build_wide(t: Table, lay: _Layout, dates: pd.DatetimeIndex) -> Bars:
    """One close column per symbol; leading / trailing gaps allowed, gaps inside are errors."""
    close = np.column_stack([parse_numbers(t, j) for j in lay.symbols])
    valid = ~np.isnan(close)
    for c, j in enumerate(lay.symbols):
        have = np.flatnonzero(valid[:, c])
        if len(have) == 0:
            raise t.err("the column has no prices at all", "fill in prices or remove it", col=j)
        need = np.zeros(len(t), dtype=bool)
        need[have[0]: have[-1] + 1] = True
        gap = (f"no price for {t.header[j]} inside its history (it has prices before and "
               "after)", "fill in the price; only leading (not yet listed) and trailing "
               "(delisted) gaps are allowed")
        _check_values(t, j, "close", close[:, c], need, gap)
    empty = ~valid.any(axis=1)
    if empty.any():
        raise t.err("the row has a date but no price for any symbol",
                    "fill in prices or delete the row", row=int(np.argmax(empty)))
    symbols = tuple(t.header[j] for j in lay.symbols)
    return Bars(index=dates, symbols=symbols, close=close, source=t.file)


def _build_long(t: Table, lay: _Layout, dates: pd.DatetimeIndex) -> Bars:
    """One row per (date, symbol), pivoted on the union of dates (NaN: did not trade)."""
    assert lay.symbol is not None
    sym = text_cells(t.columns[lay.symbol])
    if (sym == "").any():
        raise t.err("the symbol is empty", "fill in the symbol or delete the row",
                    row=int(np.argmax(sym == "")), col=lay.symbol)
    vals = _check_rows(t, lay)
    when = dates.asi8
    dup = pd.MultiIndex.from_arrays([when, sym]).duplicated()
    if dup.any():
        i = int(np.argmax(dup))
        first = int(np.flatnonzero((when == when[i]) & (sym == sym[i]))[0])
        raise t.err(f"duplicate row for {sym[i]} on {t.cell(i, lay.date)!r} (same as "
                    f"{t.row_word} {t.rows[first]})", "keep one row per date and symbol", row=i)
    codes, uniques = pd.factorize(sym)  # symbols in order of first appearance
    order = np.lexsort((np.arange(len(t)), codes))  # group by symbol, file order within
    back = (codes[order][1:] == codes[order][:-1]) & (np.diff(when[order]) < 0)
    if back.any():
        k = int(np.argmax(back))
        i, prev = int(order[k + 1]), int(order[k])
        raise t.err(f"{sym[i]} date {t.cell(i, lay.date)!r} comes after "
                    f"{t.cell(prev, lay.date)!r} ({t.row_word} {t.rows[prev]})",
                    "sort each symbol's rows by date, oldest first", row=i)
    index = dates.unique().sort_values()
    ti = index.get_indexer(dates)
    arrays = {}
    for f, v in vals.items():
        a = np.full((len(index), len(uniques)), np.nan)
        a[ti, codes] = v
        arrays[f] = a
    return Bars(index=index, symbols=tuple(str(s) for s in uniques), source=t.file, **arrays)


def _check_saveable(bars: Bars, file: str) -> None:
    """Long format has a row only where close is known; refuse what it could not hold."""
    has = ~np.isnan(bars.close)
    for c, s in enumerate(bars.symbols):
        if not s or s != s.strip():
            raise DataError(f"{file}: cannot save symbol {s!r}: empty or with surrounding "
                            "spaces, which the file cannot keep; rename the symbol")
        if not has[:, c].any():
            raise DataError(f"{file}: cannot save {s}: it has no close prices, so long format "
                            "would lose it; remove it with bars.select(symbols=...)")
    no_close = ~has.any(axis=1)
    if no_close.any():
        d = bars.index[int(np.argmax(no_close))]
        raise DataError(f"{file}: cannot save {d}: no symbol has a close then, so long format "
                        "would lose that date; drop the date before saving")
    for f in ("open", "high", "low", "volume"):
        arr = getattr(bars, f)
        if arr is None:
            continue
        off = np.isnan(arr) != ~has
        if off.any():
            r, c = np.argwhere(off)[0]
            state = "missing" if np.isnan(arr[r, c]) else "present without a close"
            raise DataError(f"{file}: cannot save {f} of {bars.symbols[c]} on {bars.index[r]}: "
                            f"it is {state}; long format needs every field exactly where there "
                            "is a close")
