"""A folder of one file per symbol (``aapl.csv``, ``BTC-USD.parquet``) loaded as one `Bars`
on the union of dates: the symbol is the file name, upper-cased."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mltrader.data._load import LoadReport, load_one
from mltrader.data._parse import SUFFIXES, file_kind, file_stem, name_list
from mltrader.data.bars import FIELDS, Bars
from mltrader.data.intervals import detect_interval
from mltrader.errors import DataError

__all__ = ["load_folder"]

SUPPORTED = ", ".join(SUFFIXES)


def _files(folder: Path) -> tuple[list[Path], list[str]]:
    """Supported files (sorted by name) and notes on what was skipped; hidden files are
    skipped without a note."""
    files, skipped = [], []
    for p in sorted(folder.iterdir(), key=lambda q: q.name.lower()):
        if p.name.startswith("."):
            continue
        if p.is_file() and file_kind(p) is not None:
            files.append(p)
        else:
            skipped.append(p.name + ("/" if p.is_dir() else ""))
    notes = [f"{folder}: not loaded (not {SUPPORTED} files): {name_list(skipped)}"] \
        if skipped and files else []
    if not files:
        found = f" (found {name_list(skipped)})" if skipped else ""
        raise DataError(f"{folder}: the folder holds no data file{found}; put one file per "
                        f"symbol in it, named after the symbol (aapl.csv, BTC-USD.parquet), "
                        f"with a supported extension: {SUPPORTED}")
    return files, notes


def _one_symbol(p: Path, bars: Bars, symbol: str) -> Bars:
    """The file's bars under the file-name symbol; a file holding several symbols is an error."""
    if len(bars.symbols) != 1:
        raise DataError(f"{p}: holds {len(bars.symbols)} symbols ({name_list(list(bars.symbols))}"
                        "); in a folder every file holds one symbol, named by the file: split "
                        "it or load it on its own")
    arrays = {f: getattr(bars, f) for f in FIELDS}
    return Bars(index=bars.index, symbols=(symbol,), source=str(p), **arrays)


def load_folder(folder: Path, clean: str = "none") -> tuple[Bars, LoadReport]:
    """Every supported file in ``folder`` (not its sub-folders) as one panel; fields that not
    every file has are left out, with a note naming a file that lacks them."""
    files, notes = _files(folder)
    parts: list[Bars] = []
    reports: list[LoadReport] = []
    owner: dict[str, Path] = {}
    for p in files:
        symbol = file_stem(p).upper()
        if symbol in owner:
            raise DataError(f"{p}: symbol {symbol} also comes from {owner[symbol].name}; keep "
                            "one file per symbol")
        owner[symbol] = p
        bars, rep = load_one(p, clean)
        parts.append(_one_symbol(p, bars, symbol))
        reports.append(rep)
        notes += rep.notes
    index = parts[0].index
    for b in parts[1:]:
        index = index.union(b.index)
    index = pd.DatetimeIndex(index).sort_values()
    fields = [f for f in FIELDS if all(getattr(b, f) is not None for b in parts)]
    for f in FIELDS:
        lacking = [files[k].name for k, b in enumerate(parts) if getattr(b, f) is None]
        if f != "close" and lacking and len(lacking) < len(parts):
            notes.append(f"{folder}: {f} not used: {name_list(lacking)} has no {f} column")
    arrays = {f: np.full((len(index), len(parts)), np.nan) for f in fields}
    for c, b in enumerate(parts):
        rows = index.get_indexer(b.index)
        for f in fields:
            arrays[f][rows, c] = getattr(b, f)[:, 0]
    bars = Bars(index=index, symbols=tuple(owner), source=str(folder), **arrays)
    seps = {r.separator for r in reports}
    decs = {r.decimal for r in reports}
    report = LoadReport(
        path=str(folder), layout="folder", rows=sum(r.rows for r in reports),
        cells_filled=sum(r.cells_filled for r in reports),
        rows_dropped=sum(r.rows_dropped for r in reports),
        separator=seps.pop() if len(seps) == 1 else "mixed",
        decimal=decs.pop() if len(decs) == 1 else "mixed",
        interval=detect_interval(bars.index), notes=tuple(notes))
    return bars, report
