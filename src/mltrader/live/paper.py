"""The built-in paper broker: orders fill on the next bar of a feed with the engine's costs.

An order submitted after bar t's close works from bar t+1: a market order fills at t+1's
open (`fill="next_open"`) or close (`"next_close"`), a limit order when the bar reaches its
price (at the open if it gaps through), each at the price after the engine's slippage and
half-spread, paying the engine's commission (backtest/costs.py). A volume cap
(`max_volume_share`) fills part of an order per bar; the rest keeps working (GTC) or is
cancelled at the end of the bar (day orders). As in the engine, orders that reduce a
position fill first; a buy is then cut to the cash left and to the gross leverage limit
(or rejected, with `oversize="reject"`). Sells beyond the position when shorting is off
are rejected at submission. Submission is idempotent by client order id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from mltrader.backtest.costs import CostModel, limit_fill_price
from mltrader.backtest.settings import EngineSettings
from mltrader.data.feeds import BarEvent
from mltrader.live.broker import (
    Account,
    BrokerError,
    Fill,
    Order,
    OrderRejected,
    OrderRequest,
    OrderUpdate,
    Position,
)
from mltrader.risk.orders import cash_room, leverage_room


@dataclasses.dataclass
class _Working:
    order: Order
    request: OrderRequest


class PaperBroker:
    """A simulated broker driven bar by bar (`on_bar`); implements `Broker`."""

    name = "paper"

    def __init__(self, settings: EngineSettings | None = None, close_only: bool = False
                 ) -> None:
        self.settings = settings or EngineSettings(fill="next_open")
        self.costs = CostModel(self.settings, close_only)
        self.cash = float(self.settings.initial_cash)
        self._qty: dict[str, float] = {}
        self._cost: dict[str, float] = {}  # cost basis (for the average price)
        self._last: dict[str, float] = {}
        self._orders: dict[str, Order] = {}
        self._working: dict[str, _Working] = {}
        self._events: list[OrderUpdate] = []
        self._n = 0
        self._time: pd.Timestamp | None = None

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

    def submit(self, request: OrderRequest) -> Order:
        known = self._orders.get(request.client_order_id)
        if known is not None:  # idempotent: the same id is the same order
            return known
        if request.type not in ("market", "limit"):
            raise BrokerError(f"paper broker: {request.type} orders are not simulated; use "
                              "market or limit")
        side = 1.0 if request.side == "buy" else -1.0
        held = self._qty.get(request.symbol, 0.0)
        if side < 0 and not self.settings.allow_short and request.qty > held + 1e-9:
            return self._reject(request, "not allowed to short: the order sells more than "
                                "the position")
        self._n += 1
        order = Order(request.client_order_id, f"paper-{self._n}", request.symbol, request.side,
                      request.qty, 0.0, "accepted", request.type, None, request.limit_price,
                      request.stop_price, self._time)
        self._orders[order.client_order_id] = order
        self._working[order.client_order_id] = _Working(order, request)
        self._events.append(OrderUpdate(order, "new", time=self._now()))
        return order

    def cancel(self, client_order_id: str) -> None:
        w = self._working.pop(client_order_id, None)
        if w is not None:
            self._set(w.order, status="cancelled", event="canceled")

    def replace(self, client_order_id: str, qty: float | None = None,
                limit_price: float | None = None, stop_price: float | None = None) -> Order:
        w = self._working.get(client_order_id)
        if w is None:
            raise BrokerError(f"paper broker: order {client_order_id} is not working; "
                              "nothing to replace")
        req = dataclasses.replace(w.request, qty=qty or w.request.qty,
                                  limit_price=limit_price or w.request.limit_price)
        order = dataclasses.replace(w.order, qty=req.qty, limit_price=req.limit_price)
        self._working[client_order_id] = _Working(order, req)
        self._orders[client_order_id] = order
        return order

    def updates(self) -> Iterable[OrderUpdate]:
        out, self._events = self._events, []
        return out

    def close(self) -> None:
        """Nothing to release."""

    # --- the simulation --------------------------------------------------------------
    def on_bar(self, time: pd.Timestamp, bars: Mapping[str, BarEvent]) -> None:
        """One bar of every symbol: fill what can fill (reducing orders first, then the
        rest, symbols in the bar's order), then mark to the close."""
        self._time = pd.Timestamp(time)
        next_open = self.settings.fill == "next_open"
        marks = {s: (b.open if next_open else b.close) for s, b in bars.items()
                 if np.isfinite(b.close)}
        marks = {s: marks.get(s, self._last.get(s, np.nan)) for s in set(marks) | set(self._last)}
        order_of = {s: k for k, s in enumerate(bars)}
        working = sorted(self._working.items(),
                         key=lambda kv: order_of.get(kv[1].order.symbol, len(order_of)))
        for phase in (0, 1):
            for cid, w in working:
                if cid not in self._working:
                    continue
                w = self._working[cid]
                held = self._qty.get(w.order.symbol, 0.0)
                side = 1.0 if w.order.side == "buy" else -1.0
                reduces = held != 0 and (held > 0) != (side > 0) and \
                    w.order.qty - w.order.filled_qty <= abs(held) + 1e-9
                if (phase == 0) != reduces:
                    continue
                self._try_fill(cid, w, bars, marks, side, reduces, next_open)
        for sym, bar in bars.items():
            if np.isfinite(bar.close):
                self._last[sym] = float(bar.close)

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
        qty = w.order.qty - w.order.filled_qty
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
                ok = min(ok, cash_room(self.cash, fpx, s.commission_bps,
                                       s.commission_per_share, s.commission_min,
                                       s.commission_fixed))
            if ok < qty - 1e-12:
                if s.oversize == "reject":
                    self._working.pop(cid, None)
                    self._set(w.order, status="rejected", event="rejected",
                              reason="insufficient buying power")
                    return
                qty = np.floor(ok) if s.whole_shares else ok
        if qty > 0:
            self._fill(w, side, qty, fpx, px)
        if cid in self._working and self._working[cid].order.filled_qty < \
                self._working[cid].order.qty - 1e-9:
            self._expire_day(cid, self._working[cid])

    def _reference(self, req: OrderRequest, side: float, o: float, h: float, lo: float
                   ) -> float | None:
        """The bar's reference fill price (before costs), None if the order does not fill."""
        if req.type == "market":
            return o
        px = limit_fill_price(side, float(req.limit_price), o, h, lo)  # type: ignore[arg-type]
        return None if px != px else px

    def _fill(self, w: _Working, side: float, qty: float, price: float, ref: float) -> None:
        sym = w.order.symbol
        comm = self.costs.commission(qty, qty * price)
        self.cash -= side * qty * price + comm
        held = self._qty.get(sym, 0.0)
        new = held + side * qty
        if held == 0 or (held > 0) != (new > 0) or new == 0:
            self._cost[sym] = new * price
        elif abs(new) > abs(held):
            self._cost[sym] = self._cost.get(sym, 0.0) + side * qty * price
        else:
            self._cost[sym] = self._cost.get(sym, 0.0) * new / held
        self._qty[sym] = new
        filled = w.order.filled_qty + qty
        avg = ((w.order.avg_fill_price or 0.0) * w.order.filled_qty + price * qty) / filled
        done = filled >= w.order.qty - 1e-9
        order = dataclasses.replace(w.order, filled_qty=filled, avg_fill_price=avg,
                                    status="filled" if done else "partially_filled")
        fill = Fill(order.client_order_id, order.broker_id, f"{order.broker_id}:{filled:g}",
                    sym, order.side, qty, price, comm, self._now())
        self._orders[order.client_order_id] = order
        if done:
            self._working.pop(order.client_order_id, None)
        else:
            self._working[order.client_order_id] = _Working(order, w.request)
        self._events.append(OrderUpdate(order, "fill" if done else "partial_fill", fill,
                                        time=self._now()))

    def _expire_day(self, cid: str, w: _Working) -> None:
        if w.request.time_in_force == "day":
            current = self._working.pop(cid, w).order
            self._set(current, status="cancelled" if not current.filled_qty else
                      "partially_filled", event="canceled", reason="day order not filled")
            self._orders[cid] = dataclasses.replace(self._orders[cid], status="cancelled")

    def _reject(self, request: OrderRequest, why: str) -> Order:
        order = Order(request.client_order_id, "", request.symbol, request.side, request.qty,
                      0.0, "rejected", request.type, reason=why)
        self._orders[request.client_order_id] = order
        self._events.append(OrderUpdate(order, "rejected", time=self._now()))
        raise OrderRejected(f"paper broker: {request.symbol} {request.side} {request.qty:g}: "
                            f"{why}")

    def _set(self, order: Order, status: str, event: str, reason: str = "") -> None:
        new = dataclasses.replace(order, status=status, reason=reason or order.reason)
        self._orders[order.client_order_id] = new
        self._events.append(OrderUpdate(new, event, time=self._now()))

    def _now(self) -> pd.Timestamp:
        return self._time if self._time is not None else pd.Timestamp.now(tz="UTC")
