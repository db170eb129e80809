"""The canonical strategy in backtesting.py (`Backtest(..., commission=0.001)`).

- Orders placed in `next()` on bar t fill at bar t+1's open (`trade_on_close=False`).
- Size: `self.buy(size=0.95)`; backtesting.py turns a fractional size into
  int(0.95 x cash // (open + commission per share)) = floor(0.95 x cash / (open x 1.001))
  whole units at the fill bar's open, because the spec's buffer equals the commission rate.
- Stops: on the entry bar (after the fill, in `next()`) the trade gets `sl = entry x 0.97`
  and `tp = entry x 1.05`, so they are live from the bar after entry. backtesting.py puts
  stop orders at the front of its queue, so the stop is tried before the target; a stop
  fills at min(open, stop), a target at max(open, target): the spec's rule.
- A cross-down cancels sl/tp and closes at the next open, so the exit wins over the stops.
- Signals: mltrader's `sma_cross_signals`, passed in (backtesting.py's usual pandas rolling
  mean is a running sum whose rounding could, in a near tie, flip a cross).
"""

from __future__ import annotations

import warnings

import backtesting.backtesting as _btpy
import numpy as np
import pandas as pd
from backtesting import Backtest, Strategy
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

assert SIZE_BUFFER == COMMISSION, "the fractional-size trick needs buffer == commission rate"
_btpy._tqdm = lambda seq, **_: seq  # no progress bar on stderr (it is tqdm.auto, leave=False)


class CanonicalSmaCross(Strategy):
    entries = None  # bool arrays, set per run
    exits = None

    def init(self) -> None:
        pass

    def next(self) -> None:
        t = len(self.data) - 1
        if self.position:
            trade = self.trades[-1]
            if self.exits[t]:
                trade.sl = None  # cancel the stops: the signal exit wins at the next open
                trade.tp = None
                self.position.close()
            elif trade.sl is None and trade.entry_bar == t:
                e = trade.entry_price
                trade.sl = e * (1.0 - STOP_LOSS)
                trade.tp = e * (1.0 + TAKE_PROFIT)
        elif self.entries[t]:
            self.buy(size=SIZE_FRACTION)


def frame(index, open_, high, low, close) -> pd.DataFrame:
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return pd.DataFrame({"Open": open_, "High": high, "Low": low, "Close": close},
                        index=idx)


def run_one(df: pd.DataFrame, entries, exits, initial_cash: float):
    strat = type("Canonical", (CanonicalSmaCross,),
                 {"entries": np.asarray(entries, dtype=bool).tolist(),
                  "exits": np.asarray(exits, dtype=bool).tolist()})
    bt = Backtest(df, strat, cash=initial_cash, commission=COMMISSION, trade_on_close=False,
                  exclusive_orders=False, finalize_trades=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = bt.run()
    st = stats._strategy
    n = len(df)
    last = float(df["Close"].iloc[-1])
    log = []
    for tr in st.closed_trades:
        log.append((tr.entry_bar, tr.exit_bar, tr.entry_price, tr.exit_price, tr.size, ""))
    for tr in st.trades:  # still open at the end: marked at the last close
        log.append((tr.entry_bar, n - 1, tr.entry_price, last, tr.size, "open"))
    return log, float(stats["Equity Final [$]"])


def run(index, open_, high, low, close, initial_cash: float) -> PeerResult:
    from mltrader.strategy.crossover import sma_cross_signals

    c = np.asarray(close, dtype=np.float64).reshape(len(close), -1)
    o, h, lo = (np.asarray(a, dtype=np.float64).reshape(c.shape) for a in (open_, high, low))
    ent, ext = sma_cross_signals(c, FAST, SLOW)
    rows, finals = [], []
    for j in range(c.shape[1]):
        log, eq = run_one(frame(index, o[:, j], h[:, j], lo[:, j], c[:, j]), ent[:, j],
                          ext[:, j], initial_cash)
        rows += [(j, *r) for r in log]
        finals.append(eq)
    return PeerResult(rows, np.array(finals))
