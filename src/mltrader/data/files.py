"""Load and save a user's own market data: CSV, .csv.gz or Parquet (long, wide or
single-symbol layout), or a folder of one file per symbol.

Every bad input becomes a one-line `DataError` naming the file, the row or column, what is
wrong and how to fix it; the loader never drops or changes data silently: what ``clean``
changes is counted in the `LoadReport`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

from mltrader.data._clean import CLEAN_MODES
from mltrader.data._load import LoadReport, load_one
from mltrader.data._parse import SUFFIXES, TAB_SUFFIXES, clip, file_kind, one_line
from mltrader.data.bars import Bars
from mltrader.data.folder import load_folder
from mltrader.errors import DataError

__all__ = ["LoadReport", "load_file", "load_file_report", "save_file"]

SUPPORTED = ", ".join(SUFFIXES)


def load_file(path: str | Path, symbols_hint: None = None, clean: str = "none") -> Bars:
    """Load CSV / .csv.gz / Parquet market data (long, wide or single-symbol OHLCV), or a
    folder of one file per symbol, as `Bars`; `load_file_report` also says what it did.

    ``symbols_hint`` is reserved and must be None. Raises `DataError` for every bad input.
    """
    return load_file_report(path, clean=clean, symbols_hint=symbols_hint)[0]


def load_file_report(path: str | Path, clean: str = "none",
                     symbols_hint: None = None) -> tuple[Bars, LoadReport]:
    """`load_file` plus a `LoadReport`. ``clean`` (the config's ``data.clean``) decides what
    missing prices do: "none" an error naming their count, "drop" delete those rows (dates in
    a wide file), "ffill" carry the previous close forward; the report counts the changes."""
    p = Path(path)
    file = str(p)
    if symbols_hint is not None:
        raise DataError(f"{file}: symbols_hint is not supported yet; leave it as None")
    if clean not in CLEAN_MODES:
        raise DataError(f"{file}: clean={clean!r} is not a cleaning mode; use one of "
                        f"{', '.join(CLEAN_MODES)}")
    if not p.exists():
        raise DataError(_not_found(p))
    if p.is_dir():
        try:
            return load_folder(p, clean)
        except OSError as e:
            raise DataError(one_line(f"{file}: cannot read the folder ({type(e).__name__}: "
                                     f"{clip(e, 200)}); check that it is readable")) from None
    return load_one(p, clean)


def _not_found(p: Path) -> str:
    """'file not found' with the absolute path, the current folder and a close name if any."""
    absolute = p.absolute()
    looked = "" if p.is_absolute() else f"looked for {absolute}; "
    msg = f"{p}: file not found ({looked}current folder {Path.cwd()})"
    folder = absolute.parent
    if not folder.is_dir():
        return f"{msg}; the folder {folder} does not exist either; check the path"
    names = [c.name for c in folder.iterdir() if not c.name.startswith(".")]
    lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(p.name.lower(), list(lower), n=1, cutoff=0.6)
    if close:
        return f"{msg}; did you mean {str(folder / lower[close[0]])!r}?"
    return f"{msg}; check the path"


def save_file(bars: Bars, path: str | Path) -> Path:
    """Write `bars` in long format (CSV, .tsv / .txt tab-separated, gzipped with .gz, or
    Parquet, by extension); `load_file` reads
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
            tab = p.name.lower().endswith(TAB_SUFFIXES)
            df.to_csv(p, index=False, sep="\t" if tab else ",")
        else:
            df.to_parquet(p, index=False)
    except OSError as e:
        raise DataError(one_line(f"{file}: cannot write ({e}); check that the folder exists "
                                 "and is writable")) from None
    return p



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
