"""Missing prices in a file (``.``, ``NA``, empty, ...): an error naming the count and the fix
(``clean="none"``), or rows dropped / prices carried forward (``"drop"`` / ``"ffill"``), each
counted in the load report so nothing changes silently."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mltrader.data._cells import missing_mask, spellings
from mltrader.data._parse import Table, clip

CLEAN_MODES = ("none", "drop", "ffill")
_ROWS_FIX = ("fill them in the file, or set data.clean: drop (delete those rows) or ffill "
             "(carry the previous close forward)")
_WIDE_FIX = ("fill them in the file, or set data.clean: drop (delete those dates) or ffill "
             "(carry the previous price forward); only leading (not yet listed) and trailing "
             "(delisted) gaps are allowed as they are")


@dataclass
class Fixed:
    """What cleaning changed: rows to keep (None: all), cells written, rows dropped."""

    keep: np.ndarray | None = None
    filled: int = 0
    dropped: int = 0


def _written(t: Table, cols: dict[str, int], miss: dict[str, np.ndarray]) -> str:
    """'close 2, volume 1; written '.', 'NA'' for messages and notes."""
    counts = ", ".join(f"{f} {int(m.sum())}" for f, m in miss.items() if m.any())
    spell: list[str] = []
    for f, m in miss.items():
        if m.any():
            spell += [s for s in spellings(t, cols[f], m & missing_mask(t, cols[f]))
                      if s not in spell]
    shown = ", ".join(repr(clip(s)) if s else "empty" for s in spell[:4]) or "empty"
    return f"{counts}, written as {shown}"


def fix_rows(t: Table, cols: dict[str, int], vals: dict[str, np.ndarray], codes: np.ndarray,
             clean: str) -> Fixed:
    """Long / single-symbol rows with a missing field. ``codes`` groups rows by symbol (file
    order within a symbol is date order). ``ffill`` writes, in place in ``vals``: a row without
    a close becomes a flat bar at the symbol's previous close with volume 0; a row with a close
    gets open = close, high / low = max / min(open, close), volume 0 where those are missing."""
    miss = {f: np.isnan(v) for f, v in vals.items()}
    bad = np.logical_or.reduce(list(miss.values()))
    if not bad.any():
        return Fixed()
    n = int(sum(m.sum() for m in miss.values()))
    what = _written(t, cols, miss)
    if clean == "none":
        i = int(np.argmax(bad))
        f = next(f for f in vals if miss[f][i])
        cell = t.cell(i, cols[f])
        raise t.err(f"{f} is {'missing (' + repr(cell) + ')' if cell else 'empty'}; the file "
                    f"has {n} missing cell(s) ({what})", _ROWS_FIX, row=i, col=cols[f])
    if clean == "drop":
        t.note(f"{int(bad.sum())} row(s) with {n} missing cell(s) ({what}) dropped "
               "(data.clean: drop)")
        return Fixed(keep=~bad, dropped=int(bad.sum()))
    close = vals["close"]
    prev = pd.Series(close).groupby(codes).ffill().to_numpy()
    lead = miss["close"] & np.isnan(prev)  # nothing earlier to carry forward
    flat = miss["close"] & ~lead
    close[flat] = prev[flat]
    filled = int(flat.sum())
    for f in ("open", "high", "low", "volume"):
        if f not in vals:
            continue
        a = vals[f]
        todo = (flat | np.isnan(a)) & ~lead
        if f == "open":
            a[todo] = close[todo]
        elif f in ("high", "low"):
            bound = (np.maximum if f == "high" else np.minimum)(vals["open"], close)
            a[todo] = bound[todo]
        else:
            a[todo] = 0.0
        filled += int(todo.sum())
    t.note(f"{n} missing cell(s) ({what}) forward-filled: {filled} cell(s) written "
           "(data.clean: ffill)")
    if lead.any():
        t.note(f"{int(lead.sum())} leading row(s) without a close dropped: no earlier close "
               "to carry forward")
    return Fixed(keep=~lead if lead.any() else None, filled=filled, dropped=int(lead.sum()))


def fix_wide(t: Table, syms: list[int], close: np.ndarray, clean: str) -> Fixed:
    """Gaps inside a symbol's history in a wide file: error, drop the date, or carry the
    previous price forward (in place); then rows with no price at all (error under "none",
    dropped otherwise)."""
    valid = ~np.isnan(close)
    pos = np.arange(len(close))[:, None]
    first = np.argmax(valid, axis=0)
    last = len(close) - 1 - np.argmax(valid[::-1], axis=0)
    gap = (pos >= first) & (pos <= last) & ~valid
    out = Fixed()
    keep = np.ones(len(close), dtype=bool)
    if gap.any():
        n = int(gap.sum())
        miss = {t.header[j]: gap[:, c] for c, j in enumerate(syms)}
        what = _written(t, {t.header[j]: j for j in syms}, miss)
        if clean == "none":
            i, c = np.argwhere(gap)[0]
            name = clip(t.header[syms[c]])
            raise t.err(f"no price for {name} inside its history (it has prices before and "
                        f"after); the file has {n} such missing cell(s) ({what})", _WIDE_FIX,
                        row=int(i), col=syms[c])
        if clean == "drop":
            rows = gap.any(axis=1)
            keep &= ~rows
            out.dropped += int(rows.sum())
            t.note(f"{int(rows.sum())} date(s) with {n} missing price(s) inside a history "
                   f"({what}) dropped (data.clean: drop)")
        else:
            ff = pd.DataFrame(close).ffill().to_numpy()
            close[gap] = ff[gap]
            out.filled = n
            t.note(f"{n} missing price(s) inside a history ({what}) forward-filled "
                   "(data.clean: ffill)")
    empty = ~(~np.isnan(close)).any(axis=1) & keep
    if empty.any():
        if clean == "none":
            raise t.err("the row has a date but no price for any symbol",
                        "fill in prices or delete the row", row=int(np.argmax(empty)))
        keep &= ~empty
        out.dropped += int(empty.sum())
        t.note(f"{int(empty.sum())} date(s) with no price for any symbol dropped "
               f"(data.clean: {clean})")
    out.keep = None if keep.all() else keep
    return out
