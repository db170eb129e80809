"""Interactive Brokers adapter for the `Broker` protocol (ib_async's synchronous API).

Connects to a running TWS or IB Gateway: paper ports 7497 (TWS) / 4002 (Gateway) by default.
The live ports 7496 / 4001 need `live_confirmed=True` (the CLI asks for a typed
confirmation); without it, a connection whose account is not a paper account (paper account
ids start with "D": DU..., DF...) is closed again at once, whatever the port.

How IB's model maps onto ours (statuses, fills, broker ids: ib_wire.py):
- IB's `orderId` is per session and client; the deterministic client order id travels in
  `Order.orderRef`, which TWS keeps on open orders, completed orders and executions. Every
  look-up goes by orderRef, so a reconnect or a restarted process finds its orders again.
- `submit` is idempotent: before placing, it looks for a trade with that orderRef
  (`trades()`, which after a connect holds the open and the completed orders of the day) and
  for executions with it (`fills()`, and once per connection `reqExecutions()`), and returns
  that order instead of placing a second one. After a dropped connection during
  `placeOrder` it reconnects and looks again before resending.

`updates()` diffs the trades and fills ib_async keeps (after `ib.sleep(0)` lets it process
what arrived) against what this adapter already reported, for the orders it submitted or
has seen. Fills are deduplicated by execId (IB re-sends executions, e.g. after every
reconnect). A fill is held back until its commission report is there (it may come before or
after the execution) or `commission_wait` seconds have passed; then it is reported with
commission 0 and a warning. An execution *correction* (same execId up to the last ".")
is not counted a second time: it is logged for manual reconciliation.

Protective exits (`OrderRequest.type == "stop"` with `take_profit`): two IB orders in one
OCA group (`ocaGroup` = the client order id, `ocaType` 1: a fill of one cancels the other,
with overfill protection): the stop leg (orderRef = the client order id) and the
take-profit limit leg (orderRef = client order id + "-tp"). Both are ONE domain `Order`
under the client order id (type "stop", `stop_price` of the stop leg, `limit_price` of the
take-profit leg, their fills summed and reported under the client order id). The stop leg
is placed first; a take-profit leg that cannot be placed (connection) is placed again at
the next `updates()` (the stop protects the position meanwhile); a leg IB rejects at once
cancels the other and the submit raises OrderRejected. A stop that cannot trigger (0 for a
sell, >= 1e11 for a buy) carries a take-profit alone: one limit order (orderRef = the client
order id). `replace(cid, qty=..., stop_price=...)` modifies the stop leg in place (and the
take-profit leg's quantity with it). Exit prices are rounded to the tick ($0.01, $0.0001
below $1). `fills(cid)` lists an order's executions (both legs) for the runner's reconcile.

The TWS session (connecting, reconnects, calls) is ib_session.py; order errors, commission
reports and the look-ups by orderRef, ib_lookup.py; reading IB's objects and building its
orders, ib_wire.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mltrader.live.brokers.base import (
    Account,
    BrokerError,
    Fill,
    Order,
    OrderRejected,
    OrderRequest,
    OrderUpdate,
    Position,
    TransientBrokerError,
    merge_exit_legs,
    us_tick,
)
from mltrader.live.brokers.ib_lookup import IBLookups
from mltrader.live.brokers.ib_wire import (
    _CANCELLED,
    TP_SUFFIX,
    _broker_id,
    _exec_base,
    _exit_kind,
    _hint,
    _num,
    _ts,
    account_tags,
    order_from_fills,
    to_fill,
    to_ib_order,
    to_order,
    to_positions,
)

log = logging.getLogger("mltrader.live.ib")

PAPER_PORTS = frozenset({7497, 4002})  # TWS paper, IB Gateway paper
LIVE_PORTS = frozenset({7496, 4001})  # TWS live, IB Gateway live
INSTALL_HINT = 'pip install "mltrader[live]"'

_STATUS_EVENT = {"cancelled": "canceled", "rejected": "rejected", "expired": "expired"}
_FINAL = frozenset({"filled", "cancelled", "rejected", "expired", "replaced"})


@dataclass
class _Track:
    """What `updates()` already reported about one client order id."""

    status: str = ""
    announced: bool = False
    reported_qty: float = 0.0
    closed: bool = False
    request: OrderRequest | None = None


class IBBroker(IBLookups):
    """`Broker` for Interactive Brokers through TWS / IB Gateway. See the module docstring."""

    name = "ib"

    def __init__(self, host: str = "127.0.0.1", port: int = 7497, client_id: int = 1,
                 account: str | None = None, ib: Any = None, live_confirmed: bool = False,
                 timeout: float = 10, *, max_reconnects: int = 3, backoff: float = 1.0,
                 ack_timeout: float = 2.0, commission_wait: float = 5.0,
                 poll_interval: float = 0.1, sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        port = int(port)
        if port in LIVE_PORTS and not live_confirmed:
            raise BrokerError(f"ib: port {port} is a LIVE trading port (TWS 7496 / Gateway "
                              "4001); live trading needs an explicit confirmation "
                              "(live_confirmed=True; the CLI asks for it). Paper: port 7497 "
                              "(TWS) or 4002 (Gateway)")
        if port not in PAPER_PORTS | LIVE_PORTS:
            log.warning("ib: port %d is not a standard TWS/Gateway port; the account is "
                        "checked after connecting", port)
        if max_reconnects < 0:
            raise BrokerError(f"ib: max_reconnects must be >= 0, got {max_reconnects}")
        self.host, self.port, self.client_id = host, port, int(client_id)
        self._account = account
        self.live_confirmed = live_confirmed
        self.timeout = float(timeout)
        self.max_reconnects = max_reconnects
        self.backoff = backoff
        self.ack_timeout = ack_timeout
        self.commission_wait = commission_wait
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock
        if ib is None:
            try:
                from ib_async import IB
            except ImportError:
                raise BrokerError("ib: the ib_async package is not installed "
                                  f"({INSTALL_HINT})") from None
            ib = IB()
            ib.RequestTimeout = self.timeout  # blocking requests must not hang forever
        self._ib = ib
        self._account_id: str = account or ""
        self._ever_connected = False
        self._exec_synced = False
        self._contracts: dict[str, Any] = {}
        self._tracks: dict[str, _Track] = {}
        self._oid_cid: dict[int, str] = {}
        self._errors: dict[str, tuple[int, str]] = {}
        self._commissions: dict[str, float] = {}
        self._exec_cache: dict[str, Any] = {}  # execId -> Fill found by reqExecutions only
        self._emitted: set[str] = set()  # execIds reported (or skipped as corrections)
        self._emitted_bases: dict[str, str] = {}  # execId base -> execId reported
        self._first_seen: dict[str, float] = {}
        self._late_warned: set[str] = set()
        self._tp_missing: dict[str, OrderRequest] = {}  # OCA exits whose TP leg is not placed
        self._subscribed = False
        self._subscribe()

    def __repr__(self) -> str:
        mode = "LIVE" if self.port in LIVE_PORTS else "paper"
        return f"IBBroker({mode}, {self.host}:{self.port}, client_id={self.client_id})"

    # ------------------------------------------------------------------ mapping

    def _to_order(self, cid: str, trade: Any, fills: list[Any]) -> Order:
        return to_order(cid, trade, self._unique_fills(fills), self._order_error)

    def _order_from_fills(self, cid: str, fills: list[Any]) -> Order:
        """An order TWS no longer lists but whose executions carry its orderRef."""
        request = self._tracks[cid].request if cid in self._tracks else None
        return order_from_fills(cid, self._unique_fills(fills), request)

    def _track(self, cid: str, request: OrderRequest | None = None) -> _Track:
        track = self._tracks.get(cid)
        if track is None:
            track = self._tracks[cid] = _Track(request=request)
        elif request is not None and track.request is None:
            track.request = request
        return track

    def _legs(self, cid: str) -> tuple[Any, Any]:
        """(the trade with orderRef `cid`, its OCA take-profit leg (orderRef `cid`-tp) or
        None). The leg is found by its orderRef alone: TWS may rewrite ocaGroup strings."""
        return self._find_trade(cid), self._find_trade(cid + TP_SUFFIX)

    def _view(self, cid: str, main: Any, take: Any) -> tuple[Order, list[Any]]:
        """One domain order and its executions from the trade(s) of a client order id."""
        fills = self._fills_for(cid, main) if main is not None else []
        if take is None:
            return self._to_order(cid, main, fills), fills
        take_fills = self._fills_for(cid + TP_SUFFIX, take)
        take_order = self._to_order(cid + TP_SUFFIX, take, take_fills)
        if main is None:  # the stop leg is not listed (any more): the take-profit alone
            return dataclasses.replace(take_order, client_order_id=cid), take_fills
        merged = merge_exit_legs(cid, self._to_order(cid, main, fills), take_order)
        both = sorted(fills + take_fills, key=lambda f: _ts(f.execution.time)
                      or pd.Timestamp.min.tz_localize("UTC"))
        return merged, both

    def _state(self, cid: str) -> Order | None:
        """The current view of one order (None: IB knows nothing under this id)."""
        main, take = self._legs(cid)
        if main is not None or take is not None:
            return self._view(cid, main, take)[0]
        fills = self._executions_lookup(cid)
        return self._order_from_fills(cid, fills) if fills else None
    # ------------------------------------------------------------------ Broker API

    def account(self) -> Account:
        values = list(self._call("account", lambda: self._ib.accountValues(self._account_id))
                      or [])
        picked = account_tags(values, self._account_id)
        if len(picked) < 3 and hasattr(self._ib, "accountSummary"):
            summary = self._call("account", lambda: self._ib.accountSummary(self._account_id))
            picked = {**account_tags(list(summary or []), self._account_id), **picked}
        missing = [t for t in ("NetLiquidation", "TotalCashValue", "BuyingPower")
                   if t not in picked]
        if missing:
            raise BrokerError(f"ib account: TWS sent no {', '.join(missing)} for account "
                              f"{self._account_id or '?'}; wait for the account update after "
                              "connecting, or check the account id")
        currency = picked["NetLiquidation"][1]
        return Account(cash=picked["TotalCashValue"][0], equity=picked["NetLiquidation"][0],
                       buying_power=picked["BuyingPower"][0], currency=currency)

    def positions(self) -> dict[str, Position]:
        raws = list(self._call("positions", lambda: self._ib.positions(self._account_id))
                    or [])
        values: dict[int, float] = {}
        portfolio = getattr(self._ib, "portfolio", None)
        if portfolio is not None:
            for item in self._call("portfolio", lambda: portfolio(self._account_id)) or []:
                mv = _num(item.marketValue)
                if mv is not None:
                    values[item.contract.conId] = mv
        return to_positions(raws, values, self._account_id)

    def open_orders(self) -> list[Order]:
        out = []
        roots: set[str] = set()
        for trade in self._call("open_orders", self._ib.openTrades) or []:
            ref = trade.order.orderRef or ""
            root = ref[:-len(TP_SUFFIX)] if ref.endswith(TP_SUFFIX) else ref  # a TP leg: its exit
            if not root:
                bid = _broker_id(trade.order.permId, trade.order.orderId)
                out.append(self._to_order(f"ib:{bid}", trade, self._fills_for(f"ib:{bid}",
                                                                               trade)))
                continue
            if root in roots:
                continue
            roots.add(root)
            self._track(root)
            main, take = self._legs(root)
            if main is None and take is None:  # pragma: no cover - listed a moment ago
                main = trade
            out.append(self._view(root, main, take)[0])
        return out

    def get_order(self, client_order_id: str) -> Order | None:
        order = self._state(client_order_id)
        if order is not None:
            self._track(client_order_id)
        return order

    def fills(self, client_order_id: str) -> list[Fill]:
        """The executions of an order (both legs of an OCA exit), execution corrections
        left out, as `Fill`s (fill_id = execId, as `updates()` reports them)."""
        cid = client_order_id
        main, take = self._legs(cid)
        if main is None and take is None:
            raw = self._executions_lookup(cid)
            if not raw:
                return []
            order = self._order_from_fills(cid, raw)
        else:
            order, raw = self._view(cid, main, take)
        return [to_fill(cid, order, f, self._commission(f) or 0.0)
                for f in self._unique_fills(raw)]

    def submit(self, request: OrderRequest) -> Order:
        cid = request.client_order_id
        if abs(request.qty - round(request.qty)) > 1e-9:
            raise OrderRejected(f"ib submit {cid}: IB API stock orders need whole shares, got "
                                f"{request.qty:g}")
        kind = _exit_kind(request)
        take_px, stop_px = request.take_profit or 0.0, request.stop_price or 0.0
        if kind == "oca" and ((us_tick(take_px) <= us_tick(stop_px)) if request.side == "sell"
                              else (us_tick(take_px) >= us_tick(stop_px))):
            where = "above" if request.side == "sell" else "below"
            raise OrderRejected(f"ib submit {cid}: the take-profit {request.take_profit:g} "
                                f"must lie {where} the stop {request.stop_price:g} of a "
                                f"{request.side} exit")
        existing = self._state(cid)
        if existing is not None:
            log.warning("ib submit %s: IB already has an order with this orderRef (%s, %s); "
                        "returning it instead of sending a second one", cid, existing.status,
                        existing.broker_id)
            self._track(cid, request)
            if kind == "oca":
                self._ensure_take_profit(cid, request)
            return self._checked(request, existing)
        contract = self._contract(request.symbol)
        track = self._track(cid, request)
        legs = [("stop", cid), ("take_profit", cid + TP_SUFFIX)] if kind == "oca" else [
            ("", cid)]
        for leg, ref in legs:
            try:
                trade = self._place(cid, ref,
                                    lambda lg=leg: to_ib_order(request, lg, self._account_id),
                                    contract)
            except TransientBrokerError as e:
                if leg != "take_profit":
                    raise
                self._tp_missing[cid] = request
                log.error("ib submit %s: the take-profit leg was not placed (%s); the stop "
                          "leg protects the position alone until updates() places it", cid, e)
                continue
            if trade is None:  # the failed attempt reached IB
                found = self._state(cid) if kind != "oca" else None
                if found is not None:
                    return self._checked(request, found)
                continue
            log.info("ib submit %s: %s %g %s %s%s sent (orderId %s)", cid, request.side,
                     request.qty, request.symbol, request.type,
                     f" ({leg.replace('_', '-')} leg)" if leg else "", trade.order.orderId)
            self._await_ack(trade)
        main, take = self._legs(cid)
        if main is None and take is None:
            raise TransientBrokerError(f"ib submit {cid}: sent, but TWS lists no order with "
                                       "this orderRef yet; submitting it again is safe (it "
                                       "is looked up first)")
        order, _ = self._view(cid, main, take)
        refused = [(name, o) for name, o in self._leg_orders(cid, main, take)
                   if o.status == "rejected"]
        if refused:
            for t in (main, take):  # an exit is both legs or nothing
                if t is not None and t.orderStatus.status not in _CANCELLED | {"Filled"}:
                    self._call("cancel", lambda t=t: self._ib.cancelOrder(t.order), cid)
            track.status, track.closed = "rejected", True
            text = "; ".join(f"{name}: {o.reason or 'no reason given'}" for name, o in refused)
            raise OrderRejected(f"ib rejected {cid} ({request.side} {request.qty:g} "
                                f"{request.symbol}): {text}; {_hint(text)}")
        if order.status == "pending":
            log.warning("ib submit %s: no acknowledgement from TWS within %.1fs; updates() "
                        "will report it", cid, self.ack_timeout)
        return order

    def _leg_orders(self, cid: str, main: Any, take: Any) -> list[tuple[str, Order]]:
        out = []
        if main is not None:
            out.append(("stop leg" if take is not None else "order",
                        self._to_order(cid, main, self._fills_for(cid, main))))
        if take is not None:
            ref = cid + TP_SUFFIX
            out.append(("take-profit leg", self._to_order(ref, take,
                                                          self._fills_for(ref, take))))
        return out

    def _place(self, cid: str, ref: str, make: Callable[[], Any], contract: Any) -> Any:
        """Place one order (orderRef `ref`) with bounded reconnects; after a dropped
        connection the ref is looked up before it is sent again. Returns its Trade, or None
        when the failed attempt reached IB."""
        failures = 0
        while True:
            order = make()  # a fresh object per attempt (no stale orderId)
            self._ensure()
            trade, fault, transient = self._once(lambda o=order: self._ib.placeOrder(contract,
                                                                                     o))
            if fault is None:
                if trade.order.orderId:
                    self._oid_cid[trade.order.orderId] = ref
                return trade
            if not transient:
                log.error("ib submit %s: %s", cid, fault)
                raise BrokerError(f"ib submit {cid}: {fault}")
            failures += 1
            log.warning("ib submit %s: %s (attempt %d); reconnecting and looking the order up "
                        "before sending it again", cid, fault, failures)
            if failures > self.max_reconnects:
                raise TransientBrokerError(
                    f"ib submit {cid}: connection to TWS/IB Gateway kept failing ({fault}). "
                    "The order may or may not be at IB; submitting the same client order id "
                    "again is safe (it is looked up by orderRef first)")
            self._ensure()
            if self._find_trade(ref) is not None or any(
                    f.execution.orderRef == ref for f in self._executions_lookup(cid)):
                log.warning("ib submit %s: the failed attempt reached IB; not sending it "
                            "again", cid)
                return None

    def _ensure_take_profit(self, cid: str, request: OrderRequest) -> None:
        """Place an OCA exit's missing take-profit leg while its stop leg works."""
        main, take = self._legs(cid)
        ref = cid + TP_SUFFIX
        if main is None or take is not None \
                or any(f.execution.orderRef == ref for f in self._ref_fills(cid)):
            self._tp_missing.pop(cid, None)
            return
        if main.orderStatus.status in _CANCELLED | {"Filled"}:
            self._tp_missing.pop(cid, None)
            return
        remaining = _num(main.orderStatus.remaining) or _num(main.order.totalQuantity)
        leg_request = dataclasses.replace(request, qty=remaining or request.qty)
        try:
            trade = self._place(cid, ref,
                                lambda: to_ib_order(leg_request, "take_profit", self._account_id),
                                main.contract)
        except BrokerError as e:
            self._tp_missing[cid] = request
            log.warning("ib order %s: the take-profit leg is still not placed (%s)", cid, e)
            return
        self._tp_missing.pop(cid, None)
        if trade is not None:
            log.info("ib order %s: take-profit leg placed (orderId %s)", cid,
                     trade.order.orderId)

    @staticmethod
    def _checked(request: OrderRequest, order: Order) -> Order:
        if (order.symbol, order.side) != (request.symbol, request.side) or (
                order.qty and abs(order.qty - request.qty) > 1e-9):
            log.warning("ib submit %s: the order IB holds under this id (%s %g %s) differs "
                        "from the request (%s %g %s)", request.client_order_id, order.side,
                        order.qty, order.symbol, request.side, request.qty, request.symbol)
        return order

    def cancel(self, client_order_id: str) -> None:
        """Cancel an order (an OCA exit: both legs)."""
        cid = client_order_id
        main, take = self._legs(cid)
        if main is None and take is None:
            if self._executions_lookup(cid):
                log.info("ib cancel %s: nothing to cancel, the order has executed", cid)
                return
            raise BrokerError(f"ib cancel {cid}: IB has no order with this client order id "
                              "(orderRef)")
        self._track(cid)
        order, _ = self._view(cid, main, take)
        live = [t for t in (main, take) if t is not None
                and t.orderStatus.status not in _CANCELLED | {"Filled", "PendingCancel"}]
        if order.done or not live:
            log.info("ib cancel %s: nothing to cancel, order is %s", cid, order.status)
            return
        for trade in live:
            self._call("cancel", lambda t=trade: self._ib.cancelOrder(t.order), cid)
            log.info("ib cancel %s: cancel sent (orderId %s)", cid, trade.order.orderId)

    def replace(self, client_order_id: str, qty: float | None = None,
                limit_price: float | None = None, stop_price: float | None = None) -> Order:
        """Modify the working order in place (same orderId and orderRef, so the client
        order id stays). An OCA exit: the stop leg (stop price, quantity), the take-profit
        leg's quantity with it (and its limit price when `limit_price` is given)."""
        cid = client_order_id
        if qty is None and limit_price is None and stop_price is None:
            raise BrokerError(f"ib replace {cid}: give qty, limit_price or stop_price")
        if qty is not None and (qty <= 0 or abs(qty - round(qty)) > 1e-9):
            raise OrderRejected(f"ib replace {cid}: qty must be a whole number > 0, got "
                                f"{qty:g}")
        main, take = self._legs(cid)
        if main is None and take is None:
            raise BrokerError(f"ib replace {cid}: IB has no order with this client order id")
        current, _ = self._view(cid, main, take)
        if current.done:
            raise BrokerError(f"ib replace {cid}: the order is {current.status}, nothing to "
                              "replace")
        self._track(cid)
        if main is not None and take is not None:
            return self._replace_exit(cid, main, take, qty, limit_price, stop_price)
        trade = main if main is not None else take
        if limit_price is not None and current.type not in ("limit", "stop_limit"):
            raise BrokerError(f"ib replace {cid}: a {current.type} order has no limit price")
        if stop_price is not None and current.type not in ("stop", "stop_limit"):
            raise BrokerError(f"ib replace {cid}: a {current.type} order has no stop price")
        ib_order = trade.order
        if qty is not None:
            ib_order.totalQuantity = float(round(qty))
        if limit_price is not None:
            ib_order.lmtPrice = limit_price
        if stop_price is not None:
            ib_order.auxPrice = stop_price
        self._call("replace", lambda: self._ib.placeOrder(trade.contract, ib_order), cid)
        log.info("ib replace %s: modification sent (orderId %s)", cid, ib_order.orderId)
        return self._view(cid, main, take)[0]

    def _replace_exit(self, cid: str, main: Any, take: Any, qty: float | None,
                      limit_price: float | None, stop_price: float | None) -> Order:
        states = sorted({t.orderStatus.status for t in (main, take)})
        if main.orderStatus.status in _CANCELLED | {"Filled"} or \
                take.orderStatus.status in _CANCELLED | {"Filled"}:
            raise BrokerError(f"ib replace {cid}: a leg of this exit has ended "
                              f"({', '.join(states)}); nothing to move")
        legs = []
        stop_order = main.order
        if stop_price is not None and abs(us_tick(stop_price) - stop_order.auxPrice) > 1e-9:
            stop_order.auxPrice = us_tick(stop_price)
            legs.append(main)
        if qty is not None and abs(float(round(qty)) - stop_order.totalQuantity) > 1e-9:
            stop_order.totalQuantity = float(round(qty))
            take.order.totalQuantity = float(round(qty))
            legs = [main, take]
        if limit_price is not None and abs(us_tick(limit_price) - take.order.lmtPrice) > 1e-9:
            take.order.lmtPrice = us_tick(limit_price)
            legs.append(take)
        once = [t for i, t in enumerate(legs) if all(t is not u for u in legs[:i])]
        for trade in once:  # each modified leg once, the stop leg first
            self._call("replace", lambda t=trade: self._ib.placeOrder(t.contract, t.order),
                       cid)
            log.info("ib replace %s: modification of the %s leg sent (orderId %s)", cid,
                     "stop" if trade is main else "take-profit", trade.order.orderId)
        return self._view(cid, main, take)[0]

    def updates(self) -> Iterable[OrderUpdate]:
        if not any(not t.closed for t in self._tracks.values()):
            return []
        self._pump()
        for cid, request in list(self._tp_missing.items()):
            self._ensure_take_profit(cid, request)
        events: list[OrderUpdate] = []
        for cid, track in list(self._tracks.items()):
            if not track.closed:
                events.extend(self._diff(cid, track))
        return events

    def _diff(self, cid: str, track: _Track) -> list[OrderUpdate]:
        main, take = self._legs(cid)
        if main is None and take is None:
            fills = self._ref_fills(cid)
            if not fills:
                return []
            order = self._order_from_fills(cid, fills)
        else:
            order, fills = self._view(cid, main, take)
        now = pd.Timestamp.now(tz="UTC")
        last_log = sorted((e for t in (main, take) if t is not None
                           for e in (getattr(t, "log", None) or [])),
                          key=lambda e: _ts(e.time) or now)
        status_time = (_ts(last_log[-1].time) if last_log else None) or now
        events: list[OrderUpdate] = []
        if not track.announced and order.status not in ("pending", "rejected"):
            events.append(OrderUpdate(order=order, event="new", time=status_time))
            track.announced = True
        held = False
        for fill in fills:
            exec_id = fill.execution.execId
            if exec_id in self._emitted:
                continue
            base = _exec_base(exec_id)
            if base in self._emitted_bases and self._emitted_bases[base] != exec_id:
                self._emitted.add(exec_id)
                log.warning("ib order %s: execution correction %s (of %s, %g @ %g) not "
                            "applied; reconcile the journal and positions by hand", cid,
                            exec_id, self._emitted_bases[base], fill.execution.shares,
                            fill.execution.price)
                continue
            commission = self._commission(fill)
            first = self._first_seen.setdefault(exec_id, self._clock())
            if commission is None:
                if self._clock() - first < self.commission_wait:
                    held = True
                    break  # keep this order's fills in sequence
                log.warning("ib order %s: no commission report for execution %s within %.1fs; "
                            "reporting the fill with commission 0", cid, exec_id,
                            self.commission_wait)
                commission = 0.0
            self._emitted.add(exec_id)
            self._emitted_bases.setdefault(base, exec_id)
            track.reported_qty += float(fill.execution.shares)
            fill_obj = to_fill(cid, order, fill, commission)
            kind = "fill" if order.qty and track.reported_qty >= order.qty - 1e-9 else \
                "partial_fill"
            events.append(OrderUpdate(order=order, event=kind, fill=fill_obj,
                                      time=fill_obj.time))
        if not held:
            if order.status != track.status and order.status in _STATUS_EVENT:
                events.append(OrderUpdate(order=order, event=_STATUS_EVENT[order.status],
                                          time=status_time))
            track.status = order.status
            if order.done and track.reported_qty >= order.filled_qty - 1e-9:
                track.closed = True
        return events

    def close(self) -> None:
        self._unsubscribe()
        if self._connected():
            try:
                self._ib.disconnect()
            except Exception as exc:  # noqa: BLE001 - closing must not fail
                log.warning("ib: disconnect failed: %s", exc)
