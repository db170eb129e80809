"""The canonical strategy in vectorbt: `Portfolio.from_signals` on shifted signals.

How each rule of the spec maps onto vectorbt 1.2:
- next-open fills: the signals are shifted one bar forward and `price=open`;
- size: `size=0.95, size_type="percent"` with `fees=0.001` buys floor(0.95 x cash / 1.001 /
  open) whole shares (`size_granularity=1`): vectorbt divides the cash by (1 + fees), and
  the spec's buffer equals the fee rate, so this is the spec's size up to rounding;
- stops: `sl_stop=0.03`, `tp_stop=0.05` from the fill price (`stop_entry_price="fillprice"`),
  first checked on the bar after entry, stop before target, gap -> open, else the level
  (`stop_exit_price="stoplimit"`): vectorbt's own rule is the spec's;
- "the signal exit wins over the stops": vectorbt gives stops priority over user signals,
  so `adjust_sl_func_nb` / `adjust_tp_func_nb` switch the stops off on a bar that carries a
  (shifted) exit signal; the exit then fills at that bar's open.
- independent books: one column per symbol, no grouping, `init_cash` per column.
vectorbt does not record why a position was closed, so the trade reason is left empty.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import vectorbt as vbt
from numba import njit
from reference import (
    COMMISSION,
    FAST,
    SIZE_BUFFER,
    SIZE_FRACTION,
    SLOW,
    STOP_LOSS,
    TAKE_PROFIT,
)

from peers import PeerResult

assert SIZE_BUFFER == COMMISSION, "the percent-size trick needs buffer == fee rate"


@njit(cache=True)
def _sl_off_on_exit(c, exits):
    if exits[c.i, c.col]:
        return np.nan, False
    return c.curr_stop, c.curr_trail


@njit(cache=True)
def _tp_off_on_exit(c, exits):
    if exits[c.i, c.col]:
        return np.nan
    return c.curr_stop


def _shift(a: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a)
    out[1:] = a[:-1]
    return out


def portfolio(index, open_, high, low, close, initial_cash: float, entries=None, exits=None):
    """The timed part: signals (mltrader's, unless given) and the vectorbt simulation."""
    c = np.asarray(close, dtype=np.float64).reshape(len(close), -1)
    o, h, lo = (np.asarray(a, dtype=np.float64).reshape(c.shape) for a in (open_, high, low))
    if entries is None:
        from mltrader.strategy.crossover import sma_cross_signals

        entries, exits = sma_cross_signals(c, FAST, SLOW)
    ent = _shift(np.asarray(entries, dtype=bool).reshape(c.shape))
    ext = np.ascontiguousarray(_shift(np.asarray(exits, dtype=bool).reshape(c.shape)))
    idx = pd.RangeIndex(len(c)) if index is None else pd.DatetimeIndex(index)
    wrap = (lambda a: pd.DataFrame(a, index=idx))  # noqa: E731
    return vbt.Portfolio.from_signals(
        wrap(c), entries=wrap(ent), exits=wrap(ext), price=wrap(o), open=wrap(o), high=wrap(h),
        low=wrap(lo), size=SIZE_FRACTION, size_type="percent", size_granularity=1.0,
        fees=COMMISSION, init_cash=initial_cash, direction="longonly", accumulate=False,
        sl_stop=STOP_LOSS, tp_stop=TAKE_PROFIT, stop_entry_price="fillprice",
        stop_exit_price="stoplimit", upon_stop_exit="close",
        adjust_sl_func_nb=_sl_off_on_exit, adjust_sl_args=(ext,),
        adjust_tp_func_nb=_tp_off_on_exit, adjust_tp_args=(ext,),
        freq="1D",
    )


def to_peer(pf) -> PeerResult:
    rec = pf.trades.values  # structured array: col, size, entry_idx, ..., status
    cols = rec["col"].astype(int)
    order = np.lexsort((rec["entry_idx"], cols))
    rows = []
    for k in order:
        r = rec[k]
        is_open = int(r["status"]) == 0  # TradeStatus.Open
        rows.append((int(r["col"]), int(r["entry_idx"]), int(r["exit_idx"]),
                     float(r["entry_price"]), float(r["exit_price"]), int(round(r["size"])),
                     "open" if is_open else ""))
    final = np.asarray(pf.final_value(), dtype=np.float64).reshape(-1)
    return PeerResult(rows, final)


def run(index, open_, high, low, close, initial_cash: float) -> PeerResult:
    return to_peer(portfolio(index, open_, high, low, close, initial_cash))
