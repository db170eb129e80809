"""One data file (CSV, .csv.gz or Parquet) read, checked cell by cell and built into `Bars`
with its `LoadReport`: the step files.py (a path) and folder.py (one file per symbol) share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mltrader.data._cells import parse_dates, parse_numbers
from mltrader.data._clean import Fixed, fix_rows, fix_wide
from mltrader.data._layout import Layout, detect
from mltrader.data._parse import (
    SUFFIXES,
    Table,
    clip,
    file_kind,
    file_stem,
    one_line,
    read_csv,
    read_parquet,
    text_cells,
)
from mltrader.data.bars import FIELDS, Bars
from mltrader.data.intervals import detect_interval
from mltrader.errors import DataError

__all__ = ["LoadReport", "load_one"]

SUPPORTED = ", ".join(SUFFIXES)


@dataclass(frozen=True)
class LoadReport:
    """How a file was read and what loading changed, for run notes and `data check`.

    ``separator`` is None for Parquet ("mixed" for a folder of files read differently);
    ``interval`` is the bar interval detected from the timestamps (see `detect_interval`).
    """

    path: str
    layout: str  # "long", "wide", "single" or "folder"
    rows: int  # data rows read (before dropping)
    cells_filled: int = 0
    rows_dropped: int = 0
    separator: str | None = None
    decimal: str = "."
    interval: str = "1d"
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        """One line per note (empty when the file loaded as it is)."""
        return "\n".join(self.notes)


def load_one(p: Path, clean: str) -> tuple[Bars, LoadReport]:
    """One existing file as `Bars` and its `LoadReport`; ``clean`` is a checked cleaning mode.
    Every failure is a one-line `DataError` naming the file."""
    file = str(p)
    kind = file_kind(p)
    if kind is None:
        txt = " (a text export: rename it .csv or .tsv)" if p.suffix.lower() == ".txt" else ""
        raise DataError(f"{file}: unsupported file type{txt}; use one of {SUPPORTED}")
    try:
        if p.stat().st_size == 0:
            raise DataError(f"{file}: the file is empty (0 bytes); give a header line such as "
                            "'date,symbol,close' and data rows")
        t = read_csv(p, file) if kind == "csv" else read_parquet(p, file)
        return _build(t, p, clean)
    except DataError:
        raise
    except Exception as e:  # never let a pandas / pyarrow / OS error escape as another type
        raise DataError(one_line(f"{file}: cannot load ({type(e).__name__}: {clip(e, 200)}); "
                                 f"check that it is a valid {kind.upper()} file with a date "
                                 "column and prices")) from e


# ---------------------------------------------------------------------------- build
def _build(t: Table, p: Path, clean: str) -> tuple[Bars, LoadReport]:
    """Check the table cell by cell (so errors name the file row), then build `Bars`."""
    t, lay = detect(t)
    rows = len(np.unique(t.rows))  # file rows with data (a yfinance long table repeats them)
    if len(t) == 0:
        raise t.err("the file has a header but no data rows", "add at least one row of prices")
    dates = parse_dates(t, lay.date)
    if lay.kind == "wide":
        bars, fixed = _build_wide(t, lay, dates, clean)
    else:
        bars, fixed = _build_rows(t, lay, dates, clean, lay.name or file_stem(p).upper())
    interval = detect_interval(bars.index)
    report = LoadReport(path=t.file, layout=lay.kind, rows=rows, cells_filled=fixed.filled,
                        rows_dropped=fixed.dropped, separator=t.sep, decimal=t.decimal,
                        interval=interval, notes=tuple(t.notes))
    return bars, report


# ---------------------------------------------------------------------------- checks
def _check_values(t: Table, j: int, name: str, v: np.ndarray) -> None:
    """Present prices finite and > 0, present volume finite and >= 0 (NaN: handled by clean)."""
    with np.errstate(invalid="ignore"):
        bad = np.isinf(v) | ((v < 0) if name == "volume" else (v <= 0))
    if bad.any():
        i = int(np.argmax(bad))
        what = "volume must be finite and >= 0" if name == "volume" else \
            "prices must be finite and > 0"
        raise t.err(f"{name} is {t.cell(i, j)!r}: {what}", "fix the value or delete the row",
                    row=i, col=j)


def _check_ohlc(t: Table, lay: Layout, vals: dict[str, np.ndarray]) -> None:
    """high >= open, close >= low on every row, naming the bound that failed."""
    if "high" not in vals:
        return
    hi, lo = vals["high"], vals["low"]
    tol = 1e-9 * np.abs(hi)
    fix = "correct the bar or delete the row"
    with np.errstate(invalid="ignore"):
        checks = [("high", "low", hi < lo - tol, "below", "the high must be >= the low")]
        checks += [("high", f, vals[f] > hi + tol, "below", "the high must be >= open and close")
                   for f in ("open", "close")]
        checks += [("low", f, vals[f] < lo - tol, "above", "the low must be <= open and close")
                   for f in ("open", "close")]
    for a, b, bad, rel, rule in checks:
        if bad.any():
            i = int(np.argmax(bad))
            ja, jb = lay.fields[a], lay.fields[b]
            raise t.err(f"{a} {t.cell(i, ja)} is {rel} {b} {t.cell(i, jb)}", f"{rule}; {fix}",
                        row=i, col=ja)


def _check_index(t: Table, lay: Layout, dates: pd.DatetimeIndex) -> None:
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


def _check_long(t: Table, lay: Layout, dates: pd.DatetimeIndex, sym: np.ndarray,
                codes: np.ndarray) -> None:
    """Long files: one row per (date, symbol), each symbol's rows oldest first."""
    when = dates.asi8
    dup = pd.MultiIndex.from_arrays([when, sym]).duplicated()
    if dup.any():
        i = int(np.argmax(dup))
        first = int(np.flatnonzero((when == when[i]) & (sym == sym[i]))[0])
        raise t.err(f"duplicate row for {clip(sym[i])} on {t.cell(i, lay.date)!r} (same as "
                    f"{t.row_word} {t.rows[first]})", "keep one row per date and symbol", row=i)
    order = np.lexsort((np.arange(len(t)), codes))  # group by symbol, file order within
    back = (codes[order][1:] == codes[order][:-1]) & (np.diff(when[order]) < 0)
    if back.any():
        k = int(np.argmax(back))
        i, prev = int(order[k + 1]), int(order[k])
        raise t.err(f"{clip(sym[i])} date {t.cell(i, lay.date)!r} comes after "
                    f"{t.cell(prev, lay.date)!r} ({t.row_word} {t.rows[prev]})",
                    "sort each symbol's rows by date, oldest first", row=i)


# ---------------------------------------------------------------------------- layouts
def _build_rows(t: Table, lay: Layout, dates: pd.DatetimeIndex, clean: str,
                name: str) -> tuple[Bars, Fixed]:
    """Long (one row per date and symbol) or single-symbol rows, pivoted on the union of
    dates (NaN: did not trade); missing fields are handled by ``clean``."""
    if lay.kind == "long":
        assert lay.symbol is not None
        sym = text_cells(t.columns[lay.symbol])
        if (sym == "").any():
            raise t.err("the symbol is empty", "fill in the symbol or delete the row",
                        row=int(np.argmax(sym == "")), col=lay.symbol)
    else:
        sym = np.full(len(t), name, dtype=object)
    vals = {f: parse_numbers(t, lay.fields[f]) for f in FIELDS if f in lay.fields}
    for f, v in vals.items():
        _check_values(t, lay.fields[f], f, v)
    _check_ohlc(t, lay, vals)
    codes, uniques = pd.factorize(sym)  # symbols in order of first appearance
    if lay.kind == "long":
        _check_long(t, lay, dates, sym, codes)
    else:
        _check_index(t, lay, dates)
    fixed = fix_rows(t, lay.fields, vals, codes, clean)
    if fixed.keep is not None:
        if not fixed.keep.any():
            raise t.err("every row has a missing price, nothing is left after dropping them",
                        "fill in the prices")
        dates, codes = dates[fixed.keep], codes[fixed.keep]
        vals = {f: v[fixed.keep] for f, v in vals.items()}
    index = dates.unique().sort_values()
    ti = index.get_indexer(dates)
    arrays = {}
    for f, v in vals.items():
        a = np.full((len(index), len(uniques)), np.nan)
        a[ti, codes] = v
        arrays[f] = a
    bars = Bars(index=index, symbols=tuple(str(s) for s in uniques), source=t.file, **arrays)
    return bars, fixed


def _build_wide(t: Table, lay: Layout, dates: pd.DatetimeIndex,
                clean: str) -> tuple[Bars, Fixed]:
    """One close column per symbol; leading / trailing gaps allowed, inner gaps per ``clean``."""
    _check_index(t, lay, dates)
    close = np.column_stack([parse_numbers(t, j) for j in lay.symbols])
    for c, j in enumerate(lay.symbols):
        if np.isnan(close[:, c]).all():
            raise t.err("the column has no prices at all", "fill in prices or remove it", col=j)
        _check_values(t, j, "close", close[:, c])
    fixed = fix_wide(t, lay.symbols, close, clean)
    if fixed.keep is not None:
        close, dates = close[fixed.keep], dates[fixed.keep]
        gone = np.isnan(close).all(axis=0)
        if gone.any():
            j = lay.symbols[int(np.argmax(gone))]
            raise t.err("no price left after dropping dates with missing prices",
                        "fill in the missing prices or use data.clean: ffill", col=j)
    symbols = tuple(t.header[j] for j in lay.symbols)
    return Bars(index=dates, symbols=symbols, close=close, source=t.file), fixed

