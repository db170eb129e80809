"""Read a raw table for `files`: the header, the columns as the user wrote them, row numbers.

Everything is read as text first (CSV) so a bad cell can be reported with its row, column and
value exactly as the user sees them in the file. Cell parsing lives in `_cells`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mltrader.data._sniff import (
    SEP_NAMES,
    encoding_of,
    read_head,
    sample_lines,
    sniff_decimal,
    sniff_separator,
)
from mltrader.errors import DataError

# .txt is not a data type here: a folder of prices often holds a readme.txt (a MetaTrader
# .txt export loads once renamed .csv or .tsv; the unsupported-type error says so)
SUFFIXES: dict[str, str] = {".csv": "csv", ".csv.gz": "csv", ".tsv": "csv", ".tsv.gz": "csv",
                            ".parquet": "parquet"}
TAB_SUFFIXES = (".tsv", ".tsv.gz")  # save_file writes these tab-separated
CELL_CHARS = 80  # longest cell / column name echoed in a message
LIST_NAMES = 8  # most names listed in a message


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


def clip(text: object, limit: int = CELL_CHARS) -> str:
    """``text`` cut to ``limit`` characters (with '...') so a message stays readable."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def name_list(names: list[str], limit: int = LIST_NAMES) -> str:
    """"'a', 'b', ... and N more": at most ``limit`` quoted, clipped names."""
    shown = ", ".join(repr(clip(n)) for n in names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class Table:
    """A file's header and columns (by position, so duplicate names survive) plus row numbers,
    how it was read (separator, decimal mark) and notes for the load report."""

    file: str
    header: list[str]
    columns: list[pd.Series]
    rows: np.ndarray  # the row number a user sees for each data row
    row_word: str  # "row" for CSV (header = row 1), "data row" for Parquet (no visible header)
    sep: str | None = None  # None for Parquet
    decimal: str = "."
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: int | None = None, col: int | None = None) -> str:
        """'file, row 7, column 'Close'' for messages."""
        parts = [self.file]
        if row is not None:
            parts.append(f"{self.row_word} {int(self.rows[row])}")
        if col is not None:
            parts.append(f"column {clip(self.header[col])!r}")
        return ", ".join(parts)

    def err(
        self, problem: str, fix: str, row: int | None = None, col: int | None = None
    ) -> DataError:
        """A one-line DataError: where, what is wrong, how to fix it."""
        return DataError(one_line(f"{self.where(row, col)}: {problem}; {fix}"))

    def cell(self, row: int, col: int) -> str:
        """The cell as the user wrote it (Parquet values are shown with str()), clipped."""
        return clip(self.columns[col].iloc[row])

    def note(self, text: str) -> None:
        """Add one human line to the load report."""
        self.notes.append(one_line(f"{self.file}: {text}"))

    def with_columns(self, header: list[str], columns: list[pd.Series]) -> Table:
        """The same table with other columns (same rows, notes shared)."""
        return dataclasses.replace(self, header=header, columns=columns, notes=self.notes)

    def take(self, keep: np.ndarray) -> Table:
        """Only the rows where ``keep`` is True (row numbers kept for messages)."""
        cols = [c[keep].reset_index(drop=True) for c in self.columns]
        return dataclasses.replace(self, columns=cols, rows=self.rows[keep], notes=self.notes)


def text_cells(s: pd.Series) -> np.ndarray:
    """Cells as an object array of stripped strings, missing values as ''."""
    return s.astype("str").str.strip().fillna("").to_numpy(dtype=object)


def read_csv(path: Path, file: str) -> Table:
    """Read a CSV (or gzipped CSV) as text with its separator, decimal mark and encoding
    guessed from the first lines; blank lines are skipped but keep row numbering."""
    head = read_head(path)
    enc = encoding_of(head)
    lines = sample_lines(head, enc)
    sep = sniff_separator(lines)
    decimal = sniff_decimal(lines, sep)
    try:
        df = pd.read_csv(path, sep=sep, header=None, dtype=str, na_filter=False,
                         skip_blank_lines=False, encoding=enc, compression="infer")
    except pd.errors.EmptyDataError:
        raise DataError(f"{file}: the file holds no text (no header, no rows); give a header "
                        "line such as 'date,symbol,close' and data rows") from None
    except pd.errors.ParserError as e:
        raise DataError(one_line(
            f"{file}: malformed CSV ({clip(e, 200)}); give every row the same number of "
            f"{SEP_NAMES[sep]}-separated fields as the header")) from None
    except UnicodeDecodeError:
        raise DataError(f"{file}: not UTF-8 text; save the file as UTF-8 CSV") from None
    except (OSError, EOFError, ValueError) as e:
        msg = f"{file}: cannot read the file ({type(e).__name__}: {clip(e, 200)}); "
        raise DataError(one_line(msg + "check that it is a valid CSV (gzip for .csv.gz)")) from None
    cols = [text_cells(df.iloc[:, j]) for j in range(df.shape[1])]
    header = [str(c[0]) for c in cols]
    data = [c[1:] for c in cols]
    rows = np.arange(2, len(df) + 1)
    keep = ~np.logical_and.reduce([c == "" for c in data]) if data else np.ones(0, dtype=bool)
    columns = [pd.Series(c[keep], dtype=object) for c in data]
    t = Table(file, header, columns, rows[keep], "row", sep, decimal)
    if sep != ",":
        t.note(f"read with {SEP_NAMES[sep]} separator"
               + (" and decimal commas" if decimal == "," else ""))
    return t


def read_parquet(path: Path, file: str) -> Table:
    """Read a Parquet file; a non-default index (e.g. a saved DatetimeIndex) becomes leading
    columns, an unnamed one with an empty name (so `_layout` can recognise it)."""
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises many types for corrupt files
        raise DataError(one_line(f"{file}: cannot read as Parquet ({type(e).__name__}: "
                                 f"{clip(e, 200)}); check that it is a valid Parquet file")
                        ) from None
    header = [str(c).strip() for c in df.columns]
    cols = [df.iloc[:, j].reset_index(drop=True) for j in range(df.shape[1])]
    idx = df.index
    if not isinstance(idx, pd.RangeIndex):
        header = ["" if n is None else str(n).strip() for n in idx.names] + header
        cols = [pd.Series(idx.get_level_values(k)) for k in range(idx.nlevels)] + cols
    return Table(file, header, cols, np.arange(1, len(df) + 1), "data row")
