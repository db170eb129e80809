"""Which column is the date, the symbol and each price field, and so which layout a file has.

Besides plain headers it recognises what tools write: a pandas index saved by ``to_csv``
(unnamed first column), yfinance's two-row ``Price`` / ``Ticker`` header, MetaTrader's
``<DATE>``, ``<TIME>``, ``<VOL>``, ``<TICKVOL>`` columns and Binance klines without a header.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mltrader.data._cells import parse_dates, parse_numbers
from mltrader.data._parse import Table, clip, name_list, one_line, text_cells
from mltrader.data._sniff import SEP_NAMES, SEPARATORS
from mltrader.data.bars import FIELDS
from mltrader.errors import DataError

DATE_NAMES = ("date", "datetime", "timestamp", "time", "opentime", "observationdate")
SYMBOL_NAMES = ("symbol", "ticker")
ALIASES = {"vol": "volume"}  # MetaTrader <VOL>
TICKVOL = "tickvol"
_BINANCE_EXTRA = ("closetime", "quotevolume", "quoteassetvolume", "count", "trades",
                  "numberoftrades", "takerbuyvolume", "takerbuybasevolume",
                  "takerbuyquotevolume", "takerbuybaseassetvolume", "takerbuyquoteassetvolume",
                  "ignore")
IGNORED = ("adjclose", "dividends", "stocksplits", "capitalgains", "spread") + _BINANCE_EXTRA
KNOWN = DATE_NAMES + SYMBOL_NAMES + FIELDS + tuple(ALIASES) + (TICKVOL,) + IGNORED
BINANCE = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
           "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore")

UNNAMED = re.compile(r"^(Unnamed: \d+(_level_\d+)?)?$")
_TIME = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?$")
_DATA_DATE = re.compile(r"^(\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[/.]\d{1,2}[/.]\d{4}|\d{9,19})")
_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$")


def key(name: str) -> str:
    """Column name for matching: lower case, without spaces, ``_ . - / < >``."""
    return re.sub(r"[\s_.\-/<>]+", "", name.lower())


@dataclass
class Layout:
    """Which column plays which role; kind is 'long', 'single' (one symbol's OHLCV) or 'wide'.
    ``name`` is the symbol of a single-symbol file when the file itself says it (yfinance)."""

    kind: str
    date: int
    symbol: int | None = None
    fields: dict[str, int] = field(default_factory=dict)
    symbols: list[int] = field(default_factory=list)
    name: str | None = None


def detect(t: Table) -> tuple[Table, Layout]:
    """The (possibly reshaped) table and its layout; a one-line `DataError` when unclear."""
    t, name = _yahoo_header(t)
    t = _unnamed(_headerless(t))
    keys = [key(h) for h in t.header]
    seen: dict[str, int] = {}
    for j, h in enumerate(t.header):
        if UNNAMED.match(h):
            raise t.err(f"column {j + 1} has no name in the header", "name it or delete it")
        k = keys[j] if keys[j] in KNOWN else h
        if k in seen:
            raise t.err(f"column {clip(h)!r} appears twice (columns {seen[k] + 1} and {j + 1})",
                        "keep one of them")
        seen[k] = j
    dates = [j for j, k in enumerate(keys) if k in DATE_NAMES]
    if len(dates) == 2:
        t, dates = _merge_date_time(t, dates)
        keys = [key(h) for h in t.header]
    if not dates:
        raise t.err(f"no date column (columns are {name_list(t.header)}{_sep_hint(t)})",
                    "name the date column 'date' (or datetime, timestamp, time)")
    if len(dates) > 1:
        raise t.err(f"several date columns ({name_list([t.header[j] for j in dates])})",
                    "keep exactly one (a separate date and time are merged only when the time "
                    "column is named 'time' and holds times such as 09:30)")
    return t, _roles(t, keys, dates[0], name)


def _roles(t: Table, keys: list[str], date: int, name: str | None) -> Layout:
    """Symbol / field / ignored columns, and the layout they imply."""
    syms = [j for j, k in enumerate(keys) if k in SYMBOL_NAMES]
    if len(syms) > 1:
        raise t.err(f"several symbol columns ({name_list([t.header[j] for j in syms])})",
                    "keep exactly one")
    fields = {k: j for j, k in enumerate(keys) if k in FIELDS}
    for alias, f in ALIASES.items():
        if alias in keys and f not in fields:
            fields[f] = keys.index(alias)
    if TICKVOL in keys:
        tick, vol = keys.index(TICKVOL), fields.get("volume")
        if vol is None or np.nansum(np.abs(parse_numbers(t, vol))) == 0:
            fields["volume"] = tick
            t.note(f"tick volume {t.header[tick]!r} used as the volume"
                   + (f" ({t.header[vol]!r} is all 0)" if vol is not None else ""))
    used = set(fields.values()) | set(syms) | {date}
    ignored = [j for j, k in enumerate(keys) if j not in used
               and (k in IGNORED or k == TICKVOL or k in ALIASES)]
    other = [j for j in range(len(keys)) if j not in used and j not in ignored]
    if not syms and not fields and not ignored:
        if not other:
            raise t.err("only a date column, no prices", "add one close column per symbol")
        return Layout("wide", date, symbols=other)
    if ignored:
        t.note(f"columns not used: {name_list([t.header[j] for j in ignored])} (the close is "
               "the close; adjusted close, corporate actions, spread and exchange extras are "
               "not read)")
    kind = "long" if syms else "single"
    if other:
        h = clip(t.header[other[0]])
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
    return Layout(kind, date, syms[0] if syms else None, fields, name=name)


def _sep_hint(t: Table) -> str:
    """For 'no date column': which separator was used, and another one seen in the header."""
    if t.sep is None:
        return ""
    other = [s for s in SEPARATORS if s != t.sep and any(s in h for h in t.header)]
    hint = f"; read with {SEP_NAMES[t.sep]} separator"
    if other:
        hint += (f", but the header also holds {SEP_NAMES[other[0]]}s: use one separator "
                 "on every line")
    return hint


# ---------------------------------------------------------------------------- special headers
def _yahoo_header(t: Table) -> tuple[Table, str | None]:
    """yfinance ``download(...).to_csv()``: rows 'Price,...' / 'Ticker,...' / 'Date,,,' above
    the data. One ticker: a single-symbol table named after it; several: a long table."""
    n = len(t.header)
    if t.sep is None or len(t) < 2 or n < 2:
        return t, None
    k0, r0, r1 = key(t.header[0]), key(t.cell(0, 0)), key(t.cell(1, 0))
    if {k0, r0} != {"price", "ticker"} or r1 not in DATE_NAMES \
            or any(t.cell(1, j) for j in range(1, n)):
        return t, None
    second = [str(c.iloc[0]) for c in t.columns]
    fields, tickers = (t.header, second) if k0 == "price" else (second, t.header)
    body = t.take(np.arange(len(t)) >= 2)
    date_name = str(t.columns[0].iloc[1])
    uniq = list(dict.fromkeys(tickers[1:]))
    t.note(f"yfinance download layout (Price / Ticker header rows), symbols {name_list(uniq)}")
    if len(uniq) == 1:
        return body.with_columns([date_name] + list(fields[1:]), body.columns), uniq[0]
    names = [fields[j] for j in range(1, n) if tickers[j] == uniq[0]]
    parts: list[list[pd.Series]] = []
    for tk in uniq:
        pos = {fields[j]: j for j in range(1, n) if tickers[j] == tk}
        if sorted(pos) != sorted(names):
            raise t.err(f"{tk} has fields {name_list(sorted(pos))}, {uniq[0]} has "
                        f"{name_list(sorted(names))}", "give every ticker the same fields")
        ticker = pd.Series(np.full(len(body), tk, dtype=object))
        parts.append([body.columns[0], ticker] + [body.columns[pos[f]] for f in names])
    cols = [pd.concat([p[c] for p in parts], ignore_index=True) for c in range(len(names) + 2)]
    rows = np.tile(body.rows, len(uniq))
    long = Table(t.file, [date_name, "Ticker", *names], cols, rows, t.row_word, t.sep,
                 t.decimal, t.notes)
    traded = ~np.logical_and.reduce([text_cells(c) == "" for c in cols[2:]])
    return long.take(traded), None


def _headerless(t: Table) -> Table:
    """Row 1 holding data: Binance klines (12 columns, epoch ms / us first) get their column
    names; anything else is an error asking for a header line."""
    h = t.header
    if t.sep is None or len(h) < 2 or not _DATA_DATE.match(h[0]) \
            or not all(_NUMBER.match(c) for c in h[1:]):
        return t
    if len(h) == len(BINANCE) and re.fullmatch(r"\d{13}|\d{16}", h[0]):
        cols = [pd.concat([pd.Series([h[j]], dtype=object), t.columns[j]], ignore_index=True)
                for j in range(len(h))]
        t.note("no header line: read as Binance klines (open_time, open, high, low, close, "
               "volume, ...)")
        return Table(t.file, list(BINANCE), cols, np.concatenate([[1], t.rows]), t.row_word,
                     t.sep, t.decimal, t.notes)
    example = t.sep.join(("date", "open", "high", "low", "close", "volume"))
    raise DataError(one_line(
        f"{t.file}, row 1: the first line holds data ({name_list(h, 4)}), not column names; "
        f"add a header line such as {example!r} (one symbol) or "
        f"{t.sep.join(('date', 'AAPL', 'MSFT'))!r} (one close column per symbol)"))


def _unnamed(t: Table) -> Table:
    """A pandas index saved with the data: an unnamed first column holding dates becomes the
    date column (when there is no other), one holding row numbers is dropped; unnamed columns
    with no values at all (a trailing separator) are dropped."""
    header, cols = list(t.header), list(t.columns)
    drop: list[int] = []
    if len(header) > 1 and UNNAMED.match(header[0]) and len(t):
        other_date = any(key(h) in DATE_NAMES for h in header[1:])
        if not other_date and _are_dates(t, 0):
            t.note(f"column 1 has no name ({header[0]!r}): read as the dates")
            header[0] = "date"
        elif _row_numbers(cols[0]):
            t.note(f"column 1 has no name ({header[0]!r}) and holds row numbers (a saved "
                   "index): not used")
            drop.append(0)
    for j in range(1, len(header)):
        if UNNAMED.match(header[j]) and (text_cells(cols[j]) == "").all():
            drop.append(j)
    if len(drop) > (1 if 0 in drop else 0):
        t.note(f"{len(drop) - (0 in drop)} empty column(s) without a name (trailing "
               "separators) not used")
    keep = [j for j in range(len(header)) if j not in drop]
    return t.with_columns([header[j] for j in keep], [cols[j] for j in keep])


def _are_dates(t: Table, j: int) -> bool:
    """Whether column ``j`` parses as dates (no notes recorded)."""
    try:
        parse_dates(dataclasses.replace(t, notes=[]), j)
    except DataError:
        return False
    return True


def _row_numbers(s: pd.Series) -> bool:
    """Strictly increasing non-negative integers: the row labels of a saved RangeIndex."""
    cells = pd.Series(text_cells(s), dtype="str")
    if not cells.str.fullmatch(r"\d{1,18}").all():
        return False
    v = cells.to_numpy(dtype=object).astype(np.int64)
    return bool((np.diff(v) > 0).all())


def _merge_date_time(t: Table, dates: list[int]) -> tuple[Table, list[int]]:
    """A date column plus a 'time' column of clock times (MetaTrader's <DATE>, <TIME>) become
    one date column; other pairs stay as they are (then 'several date columns')."""
    times = [j for j in dates if key(t.header[j]) == "time"]
    if len(times) != 1:
        return t, dates
    tj = times[0]
    dj = next(j for j in dates if j != tj)
    tc = pd.Series(text_cells(t.columns[tj]), dtype="str")
    if t.sep is None or not tc.str.fullmatch(_TIME.pattern).all():
        return t, dates
    dc = pd.Series(text_cells(t.columns[dj]), dtype="str")
    merged = pd.Series((dc + " " + tc).to_numpy(dtype=object), dtype=object)
    header = [h for j, h in enumerate(t.header) if j != tj]
    cols = [merged if j == dj else c for j, c in enumerate(t.columns) if j != tj]
    t.note(f"date column {t.header[dj]!r} and time column {t.header[tj]!r} merged")
    return t.with_columns(header, cols), [dj if dj < tj else dj - 1]
