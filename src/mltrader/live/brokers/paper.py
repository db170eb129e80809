"""The built-in paper broker: orders fill on the next bar of a feed with the engine's costs.

An order submitted after bar t's close works from bar t+1: a market order fills at t+1's
open (`fill="next_open"`) or close (`"next_close"`), a limit order when the bar reaches its
price (at the open if it gaps through), each at the price after the engine's slippage and
half-spread, paying the engine's commission (core/costs.py). A short position pays the
engine's borrow fee (`borrow_bps_per_year` / `periods_per_year` a bar) at the start of each
bar on its value at the last close, as the kernel charges it: from cash, the running total
in `borrow_paid`. A volume cap
(`max_volume_share`) fills part of an order per bar; the rest keeps working (GTC) or is
cancelled at the end of the bar (day orders). As in the engine, orders that reduce a
position fill first; a buy is then cut to the cash left and to the gross leverage limit
(or rejected, with `oversize="reject"`). Sells beyond the position when shorting is off
are rejected at submission. Submission is idempotent by client order id.

A `stop` order is a protective exit with the kernel's exit semantics: reduce-only, GTC,
checked after the bar's other orders from the bar after the position opened; a gap through
the stop (or the optional `take_profit`) fills at the open, else at the level, the stop
first when both lie in one bar; an exit that flattens the position voids the symbol's other
working orders. A `fill_gate` (the risk guards) may veto a market/limit fill that adds
exposure, as the kernel's `gate_fill`; exits are never gated.

A market's own rules (`settings.market`, core/market.py; China A-shares) apply as in the
kernel: board lots (buys in whole lots, an odd lot sold whole), T+1 (shares bought in a
session are not sold in it; protective exits wait too), the minimum commission, stamp duty
and transfer fee at the day's rates, and, given the market's per-bar arrays
(`market_arrays` on `market_index` x `market_symbols`, from `core.market.rule_arrays`),
no buy at a limit-up price, no sell at limit-down, and the ex-rights payouts to holders.

With `state_path` the whole state lives in a SQLite file (paper_store.py) and every call
that changes it commits in one transaction before it returns, so a restarted process
resumes exactly where the last call left off; `on_bar` ignores a bar it has already
processed, so replaying a feed after a restart is safe.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Concatenate, ParamSpec, Protocol, TypeVar

import numpy as np
import pandas as pd

from mltrader.core.costs import CostModel, limit_fill_price
from mltrader.core.market import RuleArrays, at_limit_down, at_limit_up, lot_round
from mltrader.core.orders import cash_room, leverage_room
from mltrader.core.settings import EngineSettings
from mltrader.data.feeds import BarEvent
from mltrader.live.brokers.base import (
    Account,
    BrokerError,
    Fill,
    Order,
    OrderRejected,
    OrderRequest,
    OrderUpdate,
    Position,
)
from mltrader.live.brokers.paper_store import PaperStore

_P = ParamSpec("_P")
_R = TypeVar("_R")


class FillGate(Protocol):
    """The risk guards' view of fills (the kernel's gate_fill / record_fill)."""

    def check(self, symbol: str, adds: bool, ref_price: float) -> str | None:
        """None to let the fill happen, else why it is refused."""
        ...

    def filled(self, symbol: str) -> None:
        """Count one fill."""
        ...


@dataclasses.dataclass
class _Working:
    order: Order
    request: OrderRequest


def _durable(method: Callable[Concatenate[PaperBroker, _P], _R]
             ) -> Callable[Concatenate[PaperBroker, _P], _R]:
    """Commit the call's changes in one transaction (a rejection it records included);
    any other exception rolls the broker back to the last commit."""

    @functools.wraps(method)
    def call(self: PaperBroker, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._store is None:
            return method(self, *args, **kwargs)
        try:
            out = method(self, *args, **kwargs)
        except OrderRejected:  # the rejected order is recorded, whole
            self._commit()
            raise
        except BaseException:
            if self._changed() and not self._store.closed:
                self._restore()
            raise
        self._commit()
        return out

    return call


def exit_price(long: bool, stop: float, target: float | None, o: float, h: float,
               lo: float) -> float | None:
    """The kernel's protective exit on one bar (before costs), None if it does not fill:
    a gap through the stop at the open, else the stop if touched; then the same for the
    take-profit level (the stop first when both lie inside the bar)."""
    if long:
        if o <= stop:
            return o
        if lo <= stop:
            return stop
        if target is not None:
            if o >= target:
                return o
            if h >= target:
                return target
    else:
        if o >= stop:
            return o
        if h >= stop:
            return stop
        if target is not None:
            if o <= target:
                return o
            if lo <= target:
                return target
    return None


class PaperBroker:
    """A simulated broker driven bar by bar (`on_bar`); implements `Broker`.

    `state_path`: keep the state in that SQLite file (resumed when it exists);
    `fill_gate`: the risk guards' veto on fills that add exposure (see `FillGate`)."""

    name = "paper"

    def __init__(self, settings: EngineSettings | None = None, close_only: bool = False,
                 *, state_path: str | os.PathLike[str] | None = None,
                 fill_gate: FillGate | None = None, market_arrays: RuleArrays | None = None,
                 market_index: pd.DatetimeIndex | None = None,
                 market_symbols: Sequence[str] = ()) -> None:
        self.settings = settings or EngineSettings(fill="next_open")
        self._arrays = market_arrays
        self._rows = ({t: k for k, t in enumerate(market_index)}
                      if market_index is not None else {})
        self._cols = {sym: j for j, sym in enumerate(market_symbols)}
        self._row = -1  # this bar's row in the market arrays (-1: none)
        self._bought: dict[str, tuple[object, float]] = {}  # T+1: session -> shares bought
        self.payouts = 0.0  # ex-rights cash credited to holders so far (in `cash` already)
        self.close_only = close_only
        self.costs = CostModel(self.settings, close_only)
        self.fill_gate = fill_gate
        self.cash = float(self.settings.initial_cash)
        self.borrow_paid = 0.0  # borrow fees charged on shorts so far (in `cash` already)
        # the kernel's per-bar rate, computed as core/params.pack computes it
        s = self.settings
        self._borrow = s.borrow_bps_per_year * 1e-4 / s.periods_per_year
        self._qty: dict[str, float] = {}
        self._cost: dict[str, float] = {}  # cost basis (for the average price)
        self._opened: dict[str, pd.Timestamp | None] = {}  # bar a position was opened on
        self._last: dict[str, float] = {}
        self._orders: dict[str, Order] = {}
        self._working: dict[str, _Working] = {}
        self._events: list[OrderUpdate] = []
        self._fills: list[Fill] = []
        self._n = 0
        self._time: pd.Timestamp | None = None
        self._last_bar: pd.Timestamp | None = None
        self._store: PaperStore | None = None
        self._clean()
        self._committed = self._scalars()
        if state_path is not None:
            # periods_per_year only sets the borrow rate: left out, so a file resumes
            # under the calendar's count (written as 252 before borrow was charged) and a
            # caller that only submits (`mltrader flatten`) need not know it
            fingerprint = {k: v for k, v in dataclasses.asdict(self.settings).items()
                           if k != "periods_per_year"}
            fingerprint["close_only"] = close_only
            self._store = PaperStore(state_path, fingerprint)
            if not self._restore():
                self._commit(force=True)

    # --- Broker API ------------------------------------------------------------------
    def account(self) -> Account:
        equity = self.cash + sum(q * self._last.get(s, 0.0) for s, q in self._qty.items())
        gross = sum(abs(q) * self._last.get(s, 0.0) for s, q in self._qty.items())
        power = max(self.settings.max_gross_leverage * equity - gross, 0.0)
        return Account(cash=self.cash, equity=equity, buying_power=power)

    def positions(self) -> dict[str, Position]:
        return {s: Position(s, q, self._cost[s] / q if q else 0.0, q * self._last.get(s, 0.0))
                for s, q in self._qty.items() if q != 0}

    def open_orders(self) -> list[Order]:
        return [w.order for w in self._working.values()]

    def get_order(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def fills(self, client_order_id: str | None = None) -> list[Fill]:
        """Every execution so far (of one order, or all), oldest first."""
        if client_order_id is None:
            return list(self._fills)
        return [f for f in self._fills if f.client_order_id == client_order_id]

    @_durable
    def submit(self, request: OrderRequest) -> Order:
        known = self._orders.get(request.client_order_id)
        if known is not None:  # idempotent: the same id is the same order
            return known
        if request.type not in ("market", "limit", "stop"):
            raise BrokerError(f"paper broker: {request.type} orders are not simulated; use "
                              "market, limit or stop (a protective exit)")
        side = 1.0 if request.side == "buy" else -1.0
        held = self._qty.get(request.symbol, 0.0)
        if (side < 0 and request.type != "stop" and not self.settings.allow_short
                and request.qty > held + 1e-9):  # a stop is reduce-only: never a short
            return self._reject(request, "not allowed to short: the order sells more than "
                                "the position")
        self._n += 1
        order = Order(request.client_order_id, f"paper-{self._n}", request.symbol, request.side,
                      request.qty, 0.0, "accepted", request.type, None, request.limit_price,
                      request.stop_price, self._time)
        self._put(order)
        self._work(_Working(order, request))
        self._emit(OrderUpdate(order, "new", time=self._now()))
        return order

    @_durable
    def cancel(self, client_order_id: str) -> None:
        w = self._unwork(client_order_id)
        if w is not None:
            self._set(w.order, status="cancelled", event="canceled")

    @_durable
    def replace(self, client_order_id: str, qty: float | None = None,
                limit_price: float | None = None, stop_price: float | None = None) -> Order:
        w = self._working.get(client_order_id)
        if w is None:
            raise BrokerError(f"paper broker: order {client_order_id} is not working; "
                              "nothing to replace")
        req = dataclasses.replace(w.request, qty=qty or w.request.qty,
                                  limit_price=limit_price or w.request.limit_price,
                                  stop_price=stop_price or w.request.stop_price)
        order = dataclasses.replace(w.order, qty=req.qty, limit_price=req.limit_price,
                                    stop_price=req.stop_price)
        self._work(_Working(order, req))
        self._put(order)
        return order

    @_durable
    def updates(self) -> Iterable[OrderUpdate]:
        out, self._events = self._events, []
        if self._store is not None and out:
            self._d_cleared, self._d_events = True, []
        return out

    def close(self) -> None:
        """Release the state file (nothing to release in memory)."""
        if self._store is not None:
            self._store.close()

    # --- the simulation --------------------------------------------------------------
    @_durable
    def on_bar(self, time: pd.Timestamp, bars: Mapping[str, BarEvent]) -> bool:
        """One bar of every symbol: charge borrow on shorts, fill what can fill (reducing
        orders first, then the rest, symbols in the bar's order), then the protective exits,
        then mark to the close. A bar not after the last processed one is ignored (False)."""
        now = pd.Timestamp(time)
        if self._last_bar is not None and now <= self._last_bar:
            return False
        self._time = self._last_bar = now
        if self._borrow > 0:
            self._charge_borrow()
        self._row = self._rows.get(now, -1)
        if self._arrays is not None and self._row >= 0 and \
                self._arrays.payout.shape[0] == len(self._rows):
            for sym, q in self._qty.items():  # the kernel's ex-rights payout, before fills
                j = self._cols.get(sym)
                pay = self._arrays.payout[self._row, j] if j is not None else 0.0
                if q != 0 and pay != 0:
                    self.cash += q * pay
                    self.payouts += q * pay
        next_open = self.settings.fill == "next_open"
        marks = {s: (b.open if next_open else b.close) for s, b in bars.items()
                 if np.isfinite(b.close)}
        marks = {s: marks.get(s, self._last.get(s, np.nan)) for s in set(marks) | set(self._last)}
        order_of = {s: k for k, s in enumerate(bars)}
        working = sorted(self._working.items(),
                         key=lambda kv: order_of.get(kv[1].order.symbol, len(order_of)))
        for phase in (0, 1):
            for cid, w in working:
                if cid not in self._working or w.request.type == "stop":
                    continue
                w = self._working[cid]
                held = self._qty.get(w.order.symbol, 0.0)
                side = 1.0 if w.order.side == "buy" else -1.0
                reduces = held != 0 and (held > 0) != (side > 0) and \
                    w.order.qty - w.order.filled_qty <= abs(held) + 1e-9
                if (phase == 0) != reduces:
                    continue
                self._try_fill(cid, w, bars, marks, side, reduces, next_open)
        for cid, w in working:
            if w.request.type == "stop" and cid in self._working:
                self._try_exit(cid, self._working[cid], bars)
        durable = self._store is not None
        for sym, bar in bars.items():
            if np.isfinite(bar.close):
                self._last[sym] = float(bar.close)
                if durable:
                    self._d_marks.add(sym)
        return True

    def _charge_borrow(self) -> None:
        """The kernel's borrow fee at the start of a bar: each short pays the per-bar rate
        on its value at the last close (a symbol without a close yet pays nothing)."""
        for sym, q in self._qty.items():
            last = self._last.get(sym, np.nan)
            if q < 0 and last == last:
                fee = -q * last * self._borrow
                self.cash -= fee
                self.borrow_paid += fee

    def _try_fill(self, cid: str, w: _Working, bars: Mapping[str, BarEvent],
                  marks: Mapping[str, float], side: float, reduces: bool,
                  next_open: bool) -> None:
        s = self.settings
        bar = bars.get(w.order.symbol)
        if bar is None or not np.isfinite(bar.close):
            self._expire_day(cid, w)
            return
        o, h, lo = (bar.open, bar.high, bar.low) if next_open else (bar.close,) * 3
        px = self._reference(w.request, side, o, h, lo)
        if px is None:
            self._expire_day(cid, w)
            return
        if self.fill_gate is not None:  # the risk guards, before costs (kernel: gate_fill)
            why = self.fill_gate.check(w.order.symbol, not reduces, float(px))
            if why is not None:
                self._unwork(cid)
                self._set(w.order, status="rejected", event="rejected", reason=why)
                return
        qty = w.order.qty - w.order.filled_qty
        held = self._qty.get(w.order.symbol, 0.0)
        blocked, qty = self._market_gate(w.order.symbol, side, px, qty, held)
        if blocked:
            self._unwork(cid)
            self._set(w.order, status="rejected", event="rejected", reason=blocked)
            return
        if s.max_volume_share and np.isfinite(bar.volume):
            cap = bar.volume * s.max_volume_share
            qty = min(qty, np.floor(cap) if s.whole_shares else cap)
        fpx = self.costs.fill_price(px, side, h, lo)
        if not reduces:  # the engine's cash and leverage limits on added exposure
            sym = w.order.symbol
            held = self._qty.get(sym, 0.0)
            value = self.cash + sum(q * marks.get(k, 0.0) for k, q in self._qty.items())
            gross = sum(abs(q) * marks.get(k, 0.0) for k, q in self._qty.items())
            ok = min(qty, leverage_room(held, side * qty, marks.get(sym, px), value, gross,
                                        s.max_gross_leverage))
            if side > 0 and s.max_gross_leverage <= 1.0 + 1e-12:
                ok = min(ok, cash_room(self.cash, fpx, s.commission_bps + self._tax(1.0),
                                       s.commission_per_share, s.commission_min,
                                       s.commission_fixed + s.market.min_commission))
            if ok < qty - 1e-12:
                if s.oversize == "reject":
                    self._unwork(cid)
                    self._set(w.order, status="rejected", event="rejected",
                              reason="insufficient buying power")
                    return
                qty = np.floor(ok) if s.whole_shares else ok
        lot = float(s.market.lot_size)
        if lot > 1 and qty > 0:  # board lots, after every other cut (as the kernel)
            qty = abs(lot_round(side * qty, self._qty.get(w.order.symbol, 0.0), lot))
            if qty == 0:
                self._unwork(cid)
                self._set(w.order, status="rejected", event="rejected",
                          reason="market: board lot (under one lot to trade)")
                return
        if qty > 0:
            self._fill(w, side, qty, fpx, px)
        if cid in self._working and self._working[cid].order.filled_qty < \
                self._working[cid].order.qty - 1e-9:
            self._expire_day(cid, self._working[cid])

    def _try_exit(self, cid: str, w: _Working, bars: Mapping[str, BarEvent]) -> None:
        """A protective exit on this bar, as the kernel's exits (never gated)."""
        sym = w.order.symbol
        bar = bars.get(sym)
        if bar is None or not np.isfinite(bar.close):
            return  # GTC: works on the symbol's next bar
        held = self._qty.get(sym, 0.0)
        side = 1.0 if w.order.side == "buy" else -1.0
        if held == 0:
            self._void(cid, "position is flat")
            return
        if (held > 0) == (side > 0):
            self._void(cid, "reduce-only: the stop is on the position's own side")
            return
        if self._opened.get(sym) == self._time:
            return  # the kernel checks exits from the bar after the entry
        if self.settings.market.t_plus_one and held > 0 and self._bought_today(sym) > 0:
            return  # T+1: bought this session, it can only go in the next one
        if self.close_only:
            o = h = lo = float(bar.close)
        else:
            o, h, lo = float(bar.open), float(bar.high), float(bar.low)
        tp = w.request.take_profit
        px = exit_price(held > 0, float(w.request.stop_price),  # type: ignore[arg-type]
                        None if tp is None else float(tp), o, h, lo)
        if px is None:
            return
        limits = self._limits(sym)
        if limits is not None and held > 0 and at_limit_down(px, limits[1]):
            return  # locked at limit-down: no buyer (the kernel holds the stop back too)
        qty = min(w.order.qty - w.order.filled_qty, abs(held))
        self._fill(w, side, qty, self.costs.fill_price(px, side, h, lo), px)
        if self._qty.get(sym, 0.0) == 0:  # flat: the symbol's other orders are void
            for other in [c for c, x in self._working.items() if x.order.symbol == sym]:
                self._void(other, "position exited")

    def _reference(self, req: OrderRequest, side: float, o: float, h: float, lo: float
                   ) -> float | None:
        """The bar's reference fill price (before costs), None if the order does not fill."""
        if req.type == "market":
            return o
        px = limit_fill_price(side, float(req.limit_price), o, h, lo)  # type: ignore[arg-type]
        return None if px != px else px

    def _limits(self, sym: str) -> tuple[float, float] | None:
        """This bar's (limit-up, limit-down) prices of `sym`, None when unknown or none."""
        if not self.settings.market.price_limits or self._arrays is None or self._row < 0:
            return None
        j = self._cols.get(sym)
        if j is None or self._arrays.limit_up.shape[0] != len(self._rows):
            return None
        return float(self._arrays.limit_up[self._row, j]), \
            float(self._arrays.limit_down[self._row, j])

    def _tax(self, side: float) -> float:
        """The market's taxes in bps on this bar for a buy (+1) or a sell (-1)."""
        m = self.settings.market
        if not (m.stamp_duty or m.transfer_fee):
            return 0.0
        if self._arrays is not None and self._row >= 0:
            arr = self._arrays.sell_tax_bps if side < 0 else self._arrays.buy_tax_bps
            return float(arr[self._row])
        sell, buy = m.rates(self._now().date())
        return sell if side < 0 else buy

    def _bought_today(self, sym: str) -> float:
        day, qty = self._bought.get(sym, (None, 0.0))
        return qty if day == self._now().date() else 0.0

    def _market_gate(self, sym: str, side: float, px: float, qty: float, held: float
                     ) -> tuple[str | None, float]:
        """A market's rules on an order about to fill at reference price `px`: why it may
        not fill (limit locks, T+1), else None and the quantity it may fill."""
        limits = self._limits(sym)
        if limits is not None:
            if side > 0 and at_limit_up(px, limits[0]):
                return "market: limit-up lock (no buy at the limit price)", qty
            if side < 0 and at_limit_down(px, limits[1]):
                return "market: limit-down lock (no sell at the limit price)", qty
        if self.settings.market.t_plus_one and side < 0 and held > 0:
            sellable = held - self._bought_today(sym)
            if qty > sellable:
                if sellable <= 0:
                    return "market: T+1 (shares bought this session cannot be sold)", qty
                qty = sellable
        return None, qty

    def _fill(self, w: _Working, side: float, qty: float, price: float, ref: float) -> None:
        sym = w.order.symbol
        comm = self.costs.commission(qty, qty * price) + qty * price * self._tax(side) * 1e-4
        if side > 0 and self.settings.market.t_plus_one:
            self._bought[sym] = (self._now().date(), self._bought_today(sym) + qty)
        self.cash -= side * qty * price + comm
        held = self._qty.get(sym, 0.0)
        new = held + side * qty
        if held == 0 or (held > 0) != (new > 0) or new == 0:
            self._cost[sym] = new * price
        elif abs(new) > abs(held):
            self._cost[sym] = self._cost.get(sym, 0.0) + side * qty * price
        else:
            self._cost[sym] = self._cost.get(sym, 0.0) * new / held
        if held == 0 or (new != 0 and (held > 0) != (new > 0)):
            self._opened[sym] = self._time
        self._qty[sym] = new
        filled = w.order.filled_qty + qty
        avg = ((w.order.avg_fill_price or 0.0) * w.order.filled_qty + price * qty) / filled
        done = filled >= w.order.qty - 1e-9
        order = dataclasses.replace(w.order, filled_qty=filled, avg_fill_price=avg,
                                    status="filled" if done else "partially_filled",
                                    commission=w.order.commission + comm)
        fill = Fill(order.client_order_id, order.broker_id, f"{order.broker_id}:{filled:.17g}",
                    sym, order.side, qty, price, comm, self._now())
        self._put(order)
        if done:
            self._unwork(order.client_order_id)
        else:
            self._work(_Working(order, w.request))
        self._fills.append(fill)
        if self._store is not None:
            self._d_pos.add(sym)
            self._d_fills.append(fill)
        self._emit(OrderUpdate(order, "fill" if done else "partial_fill", fill,
                               time=self._now()))
        if self.fill_gate is not None:
            self.fill_gate.filled(sym)

    def _expire_day(self, cid: str, w: _Working) -> None:
        if w.request.time_in_force == "day":
            # final: a partly filled day order is cancelled at the end of the day, its
            # filled quantity kept (an open status here left the journal waiting forever)
            current = (self._unwork(cid) or w).order
            self._set(current, status="cancelled", event="canceled",
                      reason="day order not filled" if not current.filled_qty else
                      "day order partly filled; the rest cancelled at the end of the day")

    def _void(self, cid: str, why: str) -> None:
        w = self._unwork(cid)
        if w is not None:
            self._set(w.order, status="cancelled", event="canceled", reason=why)

    def _reject(self, request: OrderRequest, why: str) -> Order:
        order = Order(request.client_order_id, "", request.symbol, request.side, request.qty,
                      0.0, "rejected", request.type, reason=why)
        self._put(order)
        self._emit(OrderUpdate(order, "rejected", time=self._now()))
        raise OrderRejected(f"paper broker: {request.symbol} {request.side} {request.qty:g}: "
                            f"{why}")

    def _set(self, order: Order, status: str, event: str, reason: str = "") -> None:
        new = dataclasses.replace(order, status=status, reason=reason or order.reason)
        self._put(new)
        self._emit(OrderUpdate(new, event, time=self._now()))

    def _now(self) -> pd.Timestamp:
        return self._time if self._time is not None else pd.Timestamp.now(tz="UTC")

    # --- state changes, tracked for the state file -----------------------------------
    def _put(self, order: Order) -> None:
        self._orders[order.client_order_id] = order
        if self._store is not None:
            self._d_orders[order.client_order_id] = None

    def _work(self, w: _Working) -> None:
        self._working[w.order.client_order_id] = w
        if self._store is not None:
            self._d_working[w.order.client_order_id] = None

    def _unwork(self, cid: str) -> _Working | None:
        w = self._working.pop(cid, None)
        if w is not None and self._store is not None:
            self._d_working[cid] = None
        return w

    def _emit(self, update: OrderUpdate) -> None:
        self._events.append(update)
        if self._store is not None:
            self._d_events.append(update)

    def _clean(self) -> None:
        self._d_orders: dict[str, None] = {}  # an ordered set: new rows in creation order
        self._d_working: dict[str, None] = {}
        self._d_pos: set[str] = set()
        self._d_marks: set[str] = set()
        self._d_events: list[OrderUpdate] = []
        self._d_fills: list[Fill] = []
        self._d_cleared = False

    def _scalars(self) -> tuple[float, int, pd.Timestamp | None, pd.Timestamp | None, float]:
        return (self.cash, self._n, self._time, self._last_bar, self.borrow_paid)

    def _changed(self) -> bool:
        """Whether anything changed since the last commit."""
        return bool(self._d_orders or self._d_working or self._d_pos or self._d_marks
                    or self._d_events or self._d_fills or self._d_cleared
                    or self._scalars() != self._committed)

    def _commit(self, force: bool = False) -> None:
        """Write what changed since the last commit, in one transaction."""
        store = self._store
        assert store is not None
        if not (force or self._changed()):
            return
        try:
            store.commit(
                cash=self.cash, n=self._n, time=self._time, last_bar=self._last_bar,
                borrow_paid=self.borrow_paid,
                positions={s: (self._qty[s], self._cost.get(s, 0.0), self._opened.get(s))
                           for s in self._d_pos},
                marks={s: self._last[s] for s in self._d_marks},
                orders=[self._orders[c] for c in self._d_orders],
                working=[self._working[c].request for c in self._d_working
                         if c in self._working],
                unworked=[c for c in self._d_working if c not in self._working],
                events_cleared=self._d_cleared, events=self._d_events, fills=self._d_fills)
        except BrokerError:
            if not store.closed:
                self._restore()  # memory back in step with the file
            raise
        self._committed = self._scalars()
        self._clean()

    def _restore(self) -> bool:
        """Load the committed state (False: the file is new)."""
        assert self._store is not None
        self._clean()
        snap = self._store.load()
        if snap is None:
            return False
        self.cash, self._n = float(snap.cash), int(snap.n)
        self.borrow_paid = float(snap.borrow_paid)
        self._time, self._last_bar = snap.time, snap.last_bar
        self._qty = {s: q for s, (q, _, _) in snap.positions.items()}
        self._cost = {s: c for s, (_, c, _) in snap.positions.items()}
        self._opened = {s: o for s, (_, _, o) in snap.positions.items()}
        self._last = dict(snap.marks)
        self._orders = {o.client_order_id: o for o in snap.orders}
        self._working = {r.client_order_id: _Working(self._orders[r.client_order_id], r)
                         for r in snap.working}
        self._events = snap.events
        self._fills = snap.fills
        self._committed = self._scalars()
        return True
