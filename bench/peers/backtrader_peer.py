"""The canonical strategy in backtrader (cheat-on-open; native Stop/Limit orders as stops).

- Decisions on bar t's close happen in `next()`; the order is placed in `next_open()` of bar
  t+1, which with `Cerebro(cheat_on_open=True)` runs before the broker fills that bar, so the
  size can use t+1's open and the market order fills at t+1's open.
- The stop (a sell Stop order) and the target (a sell Limit order, OCO with the stop) are
  placed in `next_open()` of the bar after entry. backtrader's broker tries pending orders in
  submission order, so the stop is tried before the target on a bar that reaches both, and
  its Stop/Limit fills use the open on a gap through the level, else the level: the spec's rule.
- A cross-down exit cancels both in `next_open()` before the broker runs, so it wins.
- Signals: by default backtrader's own `bt.ind.SMA` (math.fsum window sums) with the spec's
  strict cross rule; with `signals=(entries, exits)` the given arrays ride along in the data
  feed instead. engine_vs_peers.py passes mltrader's signals so that every library is judged
  on identical signals: where fast == slow exactly in real numbers (it happens: AMD's
  20- and 100-day means are both 7.095 on bar 3262 of the bundled set), the cross decision
  rests on rounding, and two correct SMA codes can cross one bar apart.
"""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np
import pandas as pd
from reference import (
    COMMISSION,
    FAST,
    INITIAL_CASH,
    SIZE_BUFFER,
    SIZE_FRACTION,
    SLOW,
    STOP_LOSS,
    TAKE_PROFIT,
)

from peers import PeerResult


class SignalData(bt.feeds.PandasData):
    """OHLCV plus precomputed `entry` / `exit` columns (1.0 / 0.0)."""

    lines = ("entry", "exit")
    params = (("entry", -1), ("exit", -1))


class CanonicalSmaCross(bt.Strategy):
    params = dict(fast=FAST, slow=SLOW, size_fraction=SIZE_FRACTION, size_buffer=SIZE_BUFFER,
                  stop_loss=STOP_LOSS, take_profit=TAKE_PROFIT, feed_signals=False)

    def __init__(self) -> None:
        if not self.p.feed_signals:
            self.fast = bt.ind.SMA(self.data.close, period=self.p.fast)
            self.slow = bt.ind.SMA(self.data.close, period=self.p.slow)
        self.pending: str | None = None
        self.stop_order = None
        self.target_order = None
        self.entry_bar = -1
        self.entry_price = 0.0
        self.log: list[tuple] = []  # (entry_bar, exit_bar, entry_price, exit_price, qty, reason)

    def next(self) -> None:  # bar t has closed
        if self.p.feed_signals:
            up, down = self.data.entry[0] > 0.5, self.data.exit[0] > 0.5
        else:
            f_prev, s_prev, f, s = self.fast[-1], self.slow[-1], self.fast[0], self.slow[0]
            up = f_prev < s_prev and f > s
            down = f_prev > s_prev and f < s
        if not self.position and up:
            self.pending = "buy"
        elif self.position and down:
            self.pending = "sell"

    def next_open(self) -> None:  # bar t+1 has opened; the broker has not filled anything yet
        t = len(self.data) - 1
        if self.pending == "buy":
            op = self.data.open[0]
            size = math.floor(self.p.size_fraction * self.broker.getcash()
                              / (op * (1.0 + self.p.size_buffer)))
            if size > 0:
                self.buy(size=size, exectype=bt.Order.Market)
        elif self.pending == "sell":
            self._cancel_protection()
            self.close(exectype=bt.Order.Market)
        elif self.position and self.stop_order is None and t > self.entry_bar >= 0:
            size = self.position.size
            stop = self.entry_price * (1.0 - self.p.stop_loss)
            target = self.entry_price * (1.0 + self.p.take_profit)
            self.stop_order = self.sell(size=size, exectype=bt.Order.Stop, price=stop)
            self.target_order = self.sell(size=size, exectype=bt.Order.Limit, price=target,
                                          oco=self.stop_order)
        self.pending = None

    def _cancel_protection(self) -> None:
        for o in (self.stop_order, self.target_order):
            if o is not None and o.alive():
                self.cancel(o)
        self.stop_order = self.target_order = None

    def notify_order(self, order) -> None:
        if order.status != order.Completed:
            return
        t = len(self.data) - 1
        price = order.executed.price
        if order.isbuy():
            self.entry_bar = t
            self.entry_price = price
            return
        # the broker notifies clones of the orders: compare by ref
        if self.stop_order is not None and order.ref == self.stop_order.ref:
            reason = "stop"
        elif self.target_order is not None and order.ref == self.target_order.ref:
            reason = "target"
        else:
            reason = "signal"
        self.log.append((self.entry_bar, t, self.entry_price, price,
                         int(round(-order.executed.size)), reason))
        self.stop_order = self.target_order = None
        self.entry_bar = -1


def frame(index, open_, high, low, close) -> pd.DataFrame:
    """A backtrader-ready OHLCV frame (tz-naive index; volume 0)."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": np.zeros(len(close))}, index=idx)


def run_one(df: pd.DataFrame, initial_cash: float = INITIAL_CASH):
    """One symbol, one book; `df` may carry `entry`/`exit` columns to use as the signals.
    Returns (trade log, final equity)."""
    cerebro = bt.Cerebro(cheat_on_open=True, stdstats=False)
    feed = "entry" in df.columns
    cerebro.adddata(SignalData(dataname=df) if feed else bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(CanonicalSmaCross, feed_signals=feed)
    cerebro.broker.setcash(initial_cash)
    cerebro.broker.setcommission(commission=COMMISSION)  # 0.1 % of value (percabs)
    strat = cerebro.run()[0]
    log = list(strat.log)
    if strat.position:
        n = len(df)
        log.append((strat.entry_bar, n - 1, strat.entry_price, float(df["close"].iloc[-1]),
                    int(strat.position.size), "open"))
    return log, float(cerebro.broker.getvalue())


def run(index, open_, high, low, close, initial_cash: float = INITIAL_CASH,
        signals: tuple[np.ndarray, np.ndarray] | None = None) -> PeerResult:
    """Independent books, one cerebro per column of (T, N) arrays. `signals`: optional
    (entries, exits) shaped like close; None = backtrader's own SMAs."""
    c = np.asarray(close, dtype=np.float64).reshape(len(close), -1)
    o, h, lo = (np.asarray(a, dtype=np.float64).reshape(c.shape) for a in (open_, high, low))
    if signals is not None:
        ent, ext = (np.asarray(a, dtype=np.float64).reshape(c.shape) for a in signals)
    rows, finals = [], []
    for j in range(c.shape[1]):
        df = frame(index, o[:, j], h[:, j], lo[:, j], c[:, j])
        if signals is not None:
            df["entry"], df["exit"] = ent[:, j], ext[:, j]
        log, eq = run_one(df, initial_cash)
        rows += [(j, *r) for r in log]
        finals.append(eq)
    return PeerResult(rows, np.array(finals))
