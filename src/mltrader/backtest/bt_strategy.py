"""The backtrader strategy of `--engine backtrader` (see bt_engine.py): a row of targets
per bar traded the way our kernel trades it, with our stops, targets and market rules."""

from __future__ import annotations

import math
from dataclasses import dataclass

import backtrader as bt
import numpy as np

from mltrader.backtest import kernel as K
from mltrader.core.market import at_limit_down, at_limit_up, lot_round
from mltrader.core.orders import decision_orders, order_delta
from mltrader.risk.exits import exit_levels

BLOCK_REASONS: tuple[str, ...] = ("cash", "no_price", "lot", "limit_up", "limit_down",
                                  "rejected")


# ----------------------------------------------------------------------------- strategy
@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything the strategy reads, as (T, N) arrays on the traded bars."""

    targets: np.ndarray
    closes: np.ndarray  # last traded close (NaN before a symbol's first price)
    ref: np.ndarray  # raw fill price of each bar (NaN: no fill possible)
    symbols: tuple[str, ...]
    buy_bps: float
    band: float
    whole: bool
    lot: float
    exectype: int
    unit_shares: bool = False
    limit_up: np.ndarray | None = None  # (T, N) limit prices, NaN: no limit
    limit_down: np.ndarray | None = None
    payout: np.ndarray | None = None  # (T, N) cash per held share (ex-rights days)
    # exits: stop / target / trailing fractions (0: off) and the raw bars they are judged on
    sl: float = 0.0
    tp: float = 0.0
    ts: float = 0.0
    ohlc: tuple[np.ndarray, ...] = ()
    day: np.ndarray | None = None  # each bar's session (T+1)

    @property
    def exits(self) -> bool:
        return self.sl > 0 or self.tp > 0 or self.ts > 0


class _TargetWeights(bt.Strategy):
    """Trades to a row of targets per bar (weights sized at the decision close, or share
    counts), with our stops and targets."""

    params = (("plan", None),)

    def __init__(self) -> None:
        self.plan: _Plan = self.p.plan
        self.bar = -1
        self.working: dict[int, tuple[bt.Order, float, float]] = {}
        self.blocked = dict.fromkeys(BLOCK_REASONS, 0)
        self.fill_rows: list[tuple] = []
        self.paid_out = 0.0
        n_bars, n = self.plan.targets.shape
        self.rec_equity = np.full(n_bars, np.nan)
        self.rec_cash = np.full(n_bars, np.nan)
        self.rec_positions = np.zeros((n_bars, n))
        self.rec_weights = np.zeros((n_bars, n))
        self.index_of = {d: i for i, d in enumerate(self.datas)}
        # each position as our kernel keeps it: shares, entry bar and fill price, ex-rights
        # factor since entry, best high since entry
        self.sh = np.zeros(n)
        self.e_bar = np.full(n, -1, dtype=np.int64)
        self.e_px = np.zeros(n)
        self.xr = np.ones(n)
        self.best = np.zeros(n)

    def next_open(self) -> None:
        """Bar t+1 opened, the broker has not tried the orders yet: payouts of the day, then
        the orders its prices rule out (suspended; a buy at limit-up, a sell at limit-down;
        a share order inside the rebalance band), then the exits the bar triggers."""
        t = self.bar = len(self.datas[0]) - 1
        p = self.plan
        if p.day is not None:
            self.broker.session = int(p.day[t])
        if p.payout is not None and t > 0:
            cash_in = 0.0
            for i, d in enumerate(self.datas):
                held = self.getposition(d).size
                if held != 0.0 and p.payout[t, i] != 0.0:
                    cash_in += held * p.payout[t, i]
                    last = p.closes[t - 1, i]
                    if last > 0.0:  # stops and targets move with the ex-rights price
                        ratio = 1.0 - p.payout[t, i] / last
                        self.xr[i] *= ratio
                        self.best[i] *= ratio
            if cash_in:
                self.broker.pay(cash_in)
                self.paid_out += cash_in
        after = {i: self.getposition(d).size for i, d in enumerate(self.datas)}
        value = None
        for i, (order, delta, desired) in self.working.items():
            px = p.ref[t, i]
            why = ""
            if not px == px:
                why = "no_price"  # suspended: the order placed at the close cannot fill
            elif p.limit_up is not None and delta > 0 and at_limit_up(px, p.limit_up[t, i]):
                why = "limit_up"
            elif (p.limit_down is not None and delta < 0
                  and at_limit_down(px, p.limit_down[t, i])):
                why = "limit_down"
            elif p.unit_shares and p.band > 0:
                if value is None:
                    value = self._value_at(t)
                if order_delta(desired, after[i], px, value, p.band) == 0.0:
                    self.cancel(order)  # inside the band at the fill price: no order
                    continue
            if why:
                self.cancel(order)
                self.blocked[why] += 1
            else:
                after[i] += delta
        self.working = {}
        if p.exits:
            self._exits(t, after)

    def _value_at(self, t: int) -> float:
        """The book's value at this bar's fill prices (the last close where there is none)."""
        p = self.plan
        value = self.broker.getcash()
        for i, d in enumerate(self.datas):
            held = self.getposition(d).size
            if held:
                px = p.ref[t, i]
                value += held * (px if px == px else p.closes[t - 1, i])
        return value

    def _exits(self, t: int, after: dict[int, float]) -> None:
        """Stops, targets and trailing stops of the positions held before bar t (kernel.py,
        "exits and marks"), each handed to the broker as one sell (see the module doc)."""
        p = self.plan
        o, h, lo, c = p.ohlc
        for i, d in enumerate(self.datas):
            if self.getposition(d).size <= 0.0 or after[i] <= 0.0 or not c[t, i] == c[t, i]:
                continue
            oi, hi, li = o[t, i], h[t, i], lo[t, i]
            lvl, trailing, tgt = exit_levels(True, self.e_px[i] * self.xr[i], self.best[i],
                                             p.sl, p.tp, p.ts)
            px, why, stop = math.nan, K.R_TRAIL if trailing else K.R_STOP, True
            if oi <= lvl:
                px = oi
            elif li <= lvl:
                px = lvl
            elif tgt == tgt:
                why, stop = K.R_TARGET, False
                if oi >= tgt:
                    px = oi
                elif hi >= tgt:
                    px = tgt
            if not px == px:
                continue
            hold_ld = p.limit_down is not None and at_limit_down(px, p.limit_down[t, i])
            if stop:
                self.sell(data=d, size=after[i], exectype=bt.Order.Stop, price=float(lvl),
                          exit_px=float(px), why=why, hold_ld=hold_ld)
            else:
                self.sell(data=d, size=after[i], exectype=bt.Order.Market, exit_px=float(px),
                          why=why, hold_ld=hold_ld)

    def notify_order(self, order: bt.Order) -> None:
        if order.status in (order.Completed, order.Partial):
            i = self.index_of[order.data]
            ex = order.executed
            q, px = float(ex.size), float(ex.price)
            info = order.info
            ref = info["exit_px"] if "exit_px" in info else self.plan.ref[self.bar, i]
            why = info["why"] if "why" in info else K.R_ORDER
            self.fill_rows.append((self.bar, i, q, px, abs(q) * px, float(ex.comm),
                                   abs(q) * abs(px - ref), why))
            before = self.sh[i]
            self.sh[i] = before + q
            if before == 0.0:  # a new position: its entry, as ours
                self.e_bar[i] = self.bar
                self.e_px[i] = px
                self.xr[i] = 1.0
                self.best[i] = px
            if self.sh[i] == 0.0:
                self.e_bar[i] = -1
        elif order.status == order.Margin:
            self.blocked["cash"] += 1
        elif order.status == order.Rejected:
            self.blocked["rejected"] += 1

    def next(self) -> None:
        """Bar t closed: the best price of each position since entry, record the marks, then
        turn the target row into orders."""
        t = self.bar = len(self.datas[0]) - 1
        p = self.plan
        if p.ts > 0:
            c, h = p.ohlc[3], p.ohlc[1]
            for i in range(len(self.datas)):
                if self.sh[i] > 0 and self.e_bar[i] < t and c[t, i] == c[t, i]:
                    if h[t, i] > self.best[i]:
                        self.best[i] = h[t, i]
        self.rec_equity[t] = equity = self.broker.getvalue()
        self.rec_cash[t] = self.broker.getcash()
        held = {}
        for i, d in enumerate(self.datas):
            self.rec_positions[t, i] = held[p.symbols[i]] = float(self.getposition(d).size)
            if equity:
                self.rec_weights[t, i] = self.rec_positions[t, i] * d.close[0] / equity
        if t == len(p.targets) - 1:
            return  # no bar left to fill a decision
        row, closes = {}, {}
        for i, sym in enumerate(p.symbols):
            w = p.targets[t, i]
            if w != w:
                continue
            if not p.closes[t, i] == p.closes[t, i] and not p.unit_shares:
                self.blocked["no_price"] += 1  # no price yet: nothing to size with
                continue
            row[sym], closes[sym] = float(w), float(p.closes[t, i])
        if p.unit_shares:  # share counts: the band is judged at the fill (next_open)
            deltas = decision_orders(row, equity, closes, held, p.buy_bps, 0.0, p.whole,
                                     unit="shares")
        else:
            deltas = decision_orders(row, equity, closes, held, p.buy_bps, p.band, p.whole)
        orders = []
        for sym, delta in deltas.items():
            if p.lot > 1:
                delta = float(lot_round(delta, held[sym], p.lot))
                if delta == 0.0:
                    self.blocked["lot"] += 1
                    continue
            orders.append((delta > 0, p.symbols.index(sym), delta, held[sym] + deltas[sym]))
        for _, i, delta, desired in sorted(orders):  # sells first, then buys; by symbol
            d = self.datas[i]
            if delta < 0:
                o = self.sell(data=d, size=-delta, exectype=p.exectype)
            else:
                o = self.buy(data=d, size=delta, exectype=p.exectype)
            self.working[i] = (o, delta, desired)


