"""Alpaca adapter for the `Broker` protocol (alpaca-py's TradingClient underneath).

Safety rules this module keeps:
- Keys come from the arguments or the environment and never appear in a message, a log
  line or a repr (every text that leaves the adapter is scrubbed of them).
- Live trading (`paper=False`) needs `live_confirmed=True` (the CLI asks for it).
- `submit` is idempotent by client order id. After a transient fault (timeout, dropped
  connection, 429, 5xx) the order may already be at Alpaca, so the adapter first looks the
  id up (GET /v2/orders:by_client_order_id) and resends only if Alpaca does not have it.
  A 422 "client_order_id must be unique" also means "already there": that order is returned.
- Retries are the adapter's own (bounded, exponential backoff, injectable sleep); alpaca-py's
  built-in 429/504 retry is switched off and every request gets a timeout (alpaca-py sets
  none, so a stalled socket would block forever).
- `replace` keeps the caller's client order id: the replacement order is sent with the id
  `<id>-r<n>` and everything the adapter returns about it carries the original id.
- A 429 with a Retry-After header waits at least that long (capped at `max_backoff`).
- Logging: one WARNING per failed request that is retried (naming the call, the client
  order id and the fault); what the adapter raises it does not log above INFO (the caller
  reports it), so every fault leaves one line, not two.

Protective exits (`OrderRequest.type == "stop"` with `take_profit`): sent as ONE Alpaca OCO
order (`order_class=oco`: a limit order, the take-profit leg, `take_profit.limit_price`, with
the stop leg `stop_loss.stop_price` under `legs`). Both legs are reported as one domain
`Order` under the caller's client order id (type "stop", `stop_price` of the stop leg,
`limit_price` of the take-profit leg, fills of both legs summed). A stop that cannot trigger
(0 for a sell, >= 1e11 for a buy) carries a take-profit alone: a plain limit order is sent.
`replace(cid, stop_price=...)` of an OCO PATCHes its stop leg (a new quantity cannot be
given to an OCO in place: BrokerError, cancel and place a new one). Multi-leg orders are
always read nested (`nested=true`), so a leg never shows up as an order of its own. Stop
and take-profit prices of exits are rounded to Alpaca's tick ($0.01, $0.0001 below $1).

`updates()` polls: it compares the orders this adapter submitted or has seen with the last
state it saw and emits `OrderUpdate`s (new, partial_fill, fill, canceled, rejected,
expired, replaced). Each newly filled quantity becomes a `Fill` whose `fill_id` is
`<broker order id>:<cumulative filled qty>`, so a replay (e.g. after a restart) produces
the same ids and a journal that dedups on `fill_id` never counts a fill twice. `fills(cid)`
gives the same ids for what an order has filled so far (the runner's `reconcile` uses it).

The request layer (timeouts, fault classification, bounded retries, key scrubbing) is
alpaca_http.py; reading Alpaca's order objects and building its request models,
alpaca_wire.py.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mltrader.live.brokers.alpaca_http import KEY_ENV, SECRET_ENV, AlpacaRequests
from mltrader.live.brokers.alpaca_wire import (
    _OPEN_RAW,
    _f,
    _filled_at,
    _fmt_qty,
    _hint,
    _is_oco,
    _num,
    _raw_status,
    _s,
    _stop_leg,
    _when,
    request_model,
    to_order,
)
from mltrader.live.brokers.base import (
    FINAL_STATUSES,
    Account,
    BrokerError,
    Fill,
    Order,
    OrderRejected,
    OrderRequest,
    OrderUpdate,
    Position,
    us_tick,
)

log = logging.getLogger("mltrader.live.alpaca")

_STATUS_EVENT = {"cancelled": "canceled", "rejected": "rejected", "expired": "expired",
                 "replaced": "replaced"}
_MAX_CID = 128  # Alpaca's limit on client_order_id
_REPLACED_SUFFIX = re.compile(r"^(?P<root>.+)-r(?P<n>\d+)$")
_STOP_LEG_SUFFIX = re.compile(r"-sl(?P<n>\d+)$")


@dataclass
class _Seen:
    status: str
    filled: float
    avg: float | None
    commission: float
    announced: bool


class AlpacaBroker(AlpacaRequests):
    """`Broker` for Alpaca (paper by default). See the module docstring for the rules."""

    name = "alpaca"

    def __init__(self, api_key: str | None = None, secret_key: str | None = None,
                 paper: bool = True, url_override: str | None = None, max_retries: int = 4,
                 backoff: float = 0.5, sleep: Callable[[float], Any] = time.sleep,
                 client: Any = None, *, live_confirmed: bool = False,
                 timeout: float = 10.0, max_backoff: float = 30.0) -> None:
        if not paper and not live_confirmed:
            raise BrokerError("alpaca: live trading (paper=False) needs an explicit "
                              "confirmation (live_confirmed=True; the CLI asks for it); "
                              "use paper=True to trade the paper account")
        if max_retries < 0:
            raise BrokerError(f"alpaca: max_retries must be >= 0, got {max_retries}")
        key = api_key or next((os.environ[v] for v in KEY_ENV if os.environ.get(v)), None)
        secret = secret_key or next((os.environ[v] for v in SECRET_ENV if os.environ.get(v)),
                                    None)
        self._secrets = tuple(s for s in (key, secret) if s)
        self.paper = paper
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self._sleep = sleep
        self._url = url_override
        if client is None:
            missing = [f"{names[0]} (or {names[1]})"
                       for names, value in ((KEY_ENV, key), (SECRET_ENV, secret)) if not value]
            if missing:
                raise BrokerError("alpaca: API credentials missing: set "
                                  + " and ".join(missing) + " (paper keys for paper=True)")
            try:
                from alpaca.trading.client import TradingClient
            except ImportError:
                raise BrokerError("alpaca: the alpaca-py package is not installed "
                                  "(pip install 'alpaca-py>=0.40')") from None
            client = TradingClient(api_key=key, secret_key=secret, paper=paper,
                                   raw_data=True, url_override=url_override)
        self._client = client
        self._harden_client()
        # broker order id -> last state seen; broker id -> the caller's client order id;
        # the caller's client order id -> broker id of its current (latest replacement) order
        self._seen: dict[str, _Seen] = {}
        self._root: dict[str, str] = {}
        self._current: dict[str, str] = {}
        self._legs: dict[str, str] = {}  # broker id of an OCO leg -> its parent's broker id
        self._cancelling: set[str] = set()  # client order ids this adapter asked to cancel

    def __repr__(self) -> str:
        mode = "paper" if self.paper else "LIVE"
        where = f", url={self._scrub(self._url)!r}" if self._url else ""
        return f"AlpacaBroker({mode}{where})"

    # ------------------------------------------------------------------ mapping

    def _root_of(self, raw: Any) -> str:
        bid = _s(_f(raw, "id")) or ""
        if bid in self._root:
            return self._root[bid]
        cid = _s(_f(raw, "client_order_id")) or ""
        match = _REPLACED_SUFFIX.match(cid)
        if match and _f(raw, "replaces"):
            return match.group("root")
        return cid

    def _to_order(self, raw: Any) -> Order:
        return to_order(raw, self._root_of, self._scrub)

    def _remember(self, raw: Any, root: str | None = None) -> Order:
        """Track an order for `updates()` and return its domain view."""
        bid = _s(_f(raw, "id")) or ""
        if root is not None and bid:
            self._root[bid] = root
        for leg in (_f(raw, "legs") or []) if _is_oco(raw) else []:
            leg_id = _s(_f(leg, "id"))
            if leg_id and bid:
                self._legs[leg_id] = bid
        order = self._to_order(raw)
        if bid:
            self._root.setdefault(bid, order.client_order_id)
            if order.status != "replaced":
                self._current[order.client_order_id] = bid
            self._seen.setdefault(bid, _Seen("", 0.0, None, 0.0, announced=False))
        return order

    @staticmethod
    def _nested() -> Any:
        from alpaca.trading.requests import GetOrderByIdRequest

        return GetOrderByIdRequest(nested=True)

    def _by_id(self, bid: str) -> Any:
        """GET /v2/orders/{id} with multi-leg orders rolled up under `legs`."""
        return self._client.get_order_by_id(bid, self._nested())

    def _full(self, raw: Any, op: str, cid: str) -> Any:
        """An OCO read without its legs (by client order id) read again, nested."""
        if raw is None or not _is_oco(raw) or _f(raw, "legs"):
            return raw
        bid = _s(_f(raw, "id")) or ""
        nested = self._call(op, lambda: self._by_id(bid), cid, none_if_missing=True)
        return raw if nested is None else nested

    # ------------------------------------------------------------------ Broker API

    def account(self) -> Account:
        raw = self._call("account", self._client.get_account)
        values = {k: _num(_f(raw, k)) for k in ("cash", "equity", "buying_power")}
        if values["equity"] is None:
            values["equity"] = _num(_f(raw, "portfolio_value"))
        missing = [k for k, v in values.items() if v is None]
        if missing:
            raise BrokerError(f"alpaca account: reply lacks {', '.join(missing)}")
        return Account(cash=values["cash"], equity=values["equity"],  # type: ignore[arg-type]
                       buying_power=values["buying_power"],  # type: ignore[arg-type]
                       currency=_s(_f(raw, "currency")) or "USD")

    def positions(self) -> dict[str, Position]:
        raws = self._call("positions", self._client.get_all_positions) or []
        out: dict[str, Position] = {}
        for raw in raws:
            symbol = _s(_f(raw, "symbol")) or ""
            qty = abs(_num(_f(raw, "qty")) or 0.0)
            if (_s(_f(raw, "side")) or "long").lower() == "short" or (
                    _num(_f(raw, "qty")) or 0.0) < 0:
                qty = -qty
            out[symbol] = Position(symbol=symbol, qty=qty,
                                   avg_price=_num(_f(raw, "avg_entry_price")) or 0.0,
                                   market_value=_num(_f(raw, "market_value")))
        return out

    def open_orders(self) -> list[Order]:
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        query = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500, nested=True)
        raws = self._call("open_orders", lambda: self._client.get_orders(query)) or []
        return [self._remember(raw) for raw in raws
                if (_s(_f(raw, "id")) or "") not in self._legs]  # a leg is its parent's

    def _current_raw(self, cid: str, op: str) -> Any:
        """The broker's latest order for a client order id, following replacements."""
        bid = self._current.get(cid)
        if bid:
            raw = self._call(op, lambda: self._by_id(bid), cid, none_if_missing=True)
        else:
            raw = None
        if raw is None:
            raw = self._call(op, lambda: self._client.get_order_by_client_id(cid), cid,
                             none_if_missing=True)
            raw = self._full(raw, op, cid)
        if raw is not None:
            self._root.setdefault(_s(_f(raw, "id")) or "", cid)
        for _ in range(50):
            if raw is None or _raw_status(raw) != "replaced":
                break
            nxt = _s(_f(raw, "replaced_by"))
            if not nxt:
                break
            raw = self._call(op, lambda n=nxt: self._by_id(n), cid)
            self._root[_s(_f(raw, "id")) or ""] = cid
        return raw

    def get_order(self, client_order_id: str) -> Order | None:
        raw = self._current_raw(client_order_id, "get_order")
        return None if raw is None else self._remember(raw, root=client_order_id)

    def fills(self, client_order_id: str) -> list[Fill]:
        """What the order has filled so far, as the fills `updates()` reports (the same
        `<broker id>:<cumulative qty>` ids), so a journal that missed them (a crash) can
        take them without counting any twice."""
        cid = client_order_id
        raw = self._current_raw(cid, "fills")
        if raw is None:
            return []
        order = self._remember(raw, root=cid)
        if order.filled_qty <= 0:
            return []
        return [Fill(client_order_id=cid, broker_id=order.broker_id,
                     fill_id=f"{order.broker_id}:{_fmt_qty(order.filled_qty)}",
                     symbol=order.symbol, side=order.side, qty=order.filled_qty,
                     price=round(order.avg_fill_price or 0.0, 6),
                     commission=_num(_f(raw, "commission")) or 0.0,
                     time=_filled_at(raw) or _when(raw))]

    def submit(self, request: OrderRequest) -> Order:
        cid = request.client_order_id
        try:
            payload = request_model(request)
            payload_error = ""
        except (ValueError, TypeError) as exc:  # pydantic validation of alpaca-py
            payload = None
            payload_error = self._scrub(exc).splitlines()[0][:200]
        if payload is None:
            log.info("alpaca submit %s: invalid request: %s", cid, payload_error)
            raise OrderRejected(f"alpaca submit {cid}: invalid order ({payload_error})")
        failures = 0
        look_first = False
        while True:
            if look_first:
                raw, fault = self._once(lambda: self._client.get_order_by_client_id(cid))
                if fault is None:
                    log.info("alpaca submit %s: Alpaca already has this order (the failed "
                             "attempt reached it); not sending it again", cid)
                    raw = self._full(raw, "submit (lookup)", cid)
                    return self._checked(request, self._remember(raw, root=cid))
                if fault.kind == "not_found":
                    look_first = False
                elif fault.kind == "transient":
                    failures += 1
                    if not self._retry_wait("submit (lookup)", cid, failures, fault):
                        raise self._give_up("submit", cid, failures, fault)
                    continue
                else:
                    log.info("alpaca submit %s: lookup failed: %s", cid, fault.text)
                    raise self._error("submit", cid, fault)
            raw, fault = self._once(lambda: self._client.submit_order(payload))
            if fault is None:
                return self._remember(self._full(raw, "submit", cid), root=cid)
            if fault.kind == "duplicate":
                log.warning("alpaca submit %s: client order id already used at Alpaca; "
                            "returning that order instead of sending a second one", cid)
                raw = self._call("submit (lookup)", lambda: self._client.get_order_by_client_id(
                    cid), cid, none_if_missing=True)
                if raw is None:
                    raise BrokerError(f"alpaca submit {cid}: Alpaca says the client order id "
                                      "is taken but cannot find it; use a new id")
                raw = self._full(raw, "submit (lookup)", cid)
                return self._checked(request, self._remember(raw, root=cid))
            if fault.kind == "rejected":
                hint = _hint(fault.text)
                log.info("alpaca submit %s: rejected (HTTP %s): %s", cid, fault.status,
                         fault.text)
                raise OrderRejected(f"alpaca rejected {cid} ({request.side} {request.qty:g} "
                                    f"{request.symbol}): {fault.text}; {hint}")
            if fault.kind != "transient":
                log.info("alpaca submit %s: %s", cid, fault.text)
                raise self._error("submit", cid, fault)
            failures += 1
            if not self._retry_wait("submit", cid, failures, fault):
                raise self._give_up("submit", cid, failures, fault)
            look_first = True

    @staticmethod
    def _checked(request: OrderRequest, order: Order) -> Order:
        if (order.symbol, order.side) != (request.symbol, request.side) or (
                order.qty and abs(order.qty - request.qty) > 1e-9):
            log.warning("alpaca submit %s: the order Alpaca holds under this id (%s %g %s) "
                        "differs from the request (%s %g %s)", request.client_order_id,
                        order.side, order.qty, order.symbol, request.side, request.qty,
                        request.symbol)
        return order

    def cancel(self, client_order_id: str) -> None:
        """Cancel an order (an OCO exit: its parent, which takes the stop leg with it)."""
        cid = client_order_id
        raw = self._current_raw(cid, "cancel")
        if raw is None:
            raise BrokerError(f"alpaca cancel {cid}: Alpaca has no order with this client "
                              "order id")
        order = self._remember(raw, root=cid)
        if order.done:
            log.info("alpaca cancel %s: nothing to cancel, order is %s", cid, order.status)
            return
        bid = order.broker_id
        failures = 0
        self._cancelling.add(cid)
        while True:
            _, fault = self._once(lambda: self._client.cancel_order_by_id(bid))
            if fault is None:
                return
            if fault.kind in ("rejected", "not_found") or (
                    fault.kind == "transient" and failures >= self.max_retries):
                # 422 "not cancelable", or unsure: look at the order before deciding
                now = self._call("cancel", lambda: self._by_id(bid), cid)
                state = self._to_order(now)
                if state.done or state.status == "pending":
                    log.info("alpaca cancel %s: order is %s (%s)", cid, state.status,
                             fault.text)
                    return
                if fault.kind != "transient":
                    log.info("alpaca cancel %s: %s", cid, fault.text)
                    raise BrokerError(f"alpaca cancel {cid}: {fault.text}; the order is "
                                      f"still {state.status}")
            elif fault.kind != "transient":
                log.info("alpaca cancel %s: %s", cid, fault.text)
                raise self._error("cancel", cid, fault)
            failures += 1
            if not self._retry_wait("cancel", cid, failures, fault):
                raise self._give_up("cancel", cid, failures, fault)

    def replace(self, client_order_id: str, qty: float | None = None,
                limit_price: float | None = None, stop_price: float | None = None) -> Order:
        from alpaca.trading.requests import ReplaceOrderRequest

        cid = client_order_id
        if qty is None and limit_price is None and stop_price is None:
            raise BrokerError(f"alpaca replace {cid}: give qty, limit_price or stop_price")
        if qty is not None and (qty <= 0 or abs(qty - round(qty)) > 1e-9):
            raise OrderRejected(f"alpaca replace {cid}: qty must be a whole number > 0 "
                                f"(Alpaca replaces whole-share orders only), got {qty:g}")
        raw = self._current_raw(cid, "replace")
        if raw is None:
            raise BrokerError(f"alpaca replace {cid}: Alpaca has no order with this client "
                              "order id")
        current = self._remember(raw, root=cid)
        if current.done:
            raise BrokerError(f"alpaca replace {cid}: the order is {current.status}, "
                              "nothing to replace")
        if _is_oco(raw) and _f(raw, "legs"):
            return self._replace_stop_leg(cid, raw, current, qty, limit_price, stop_price)
        if limit_price is not None and current.type not in ("limit", "stop_limit"):
            raise BrokerError(f"alpaca replace {cid}: a {current.type} order has no limit "
                              "price; cancel it and place a new one")
        if stop_price is not None and current.type not in ("stop", "stop_limit"):
            raise BrokerError(f"alpaca replace {cid}: a {current.type} order has no stop "
                              "price; cancel it and place a new one")
        match = _REPLACED_SUFFIX.match(_s(_f(raw, "client_order_id")) or "")
        n = int(match.group("n")) + 1 if match and _f(raw, "replaces") else 1
        suffix = f"-r{n}"
        new_cid = cid[:_MAX_CID - len(suffix)] + suffix
        body = ReplaceOrderRequest(qty=int(round(qty)) if qty is not None else None,
                                   limit_price=limit_price, stop_price=stop_price,
                                   client_order_id=new_cid)
        bid = current.broker_id
        return self._replaced(bid, self._patch(cid, bid, body, new_cid), cid)

    def _replace_stop_leg(self, cid: str, raw: Any, current: Order, qty: float | None,
                          limit_price: float | None, stop_price: float | None) -> Order:
        """Move the stop of an OCO exit: PATCH its stop_loss leg (the parent stays)."""
        from alpaca.trading.requests import ReplaceOrderRequest

        if limit_price is not None:
            raise BrokerError(f"alpaca replace {cid}: the take-profit of an OCO exit is not "
                              "moved in place; cancel it and place a new one")
        if qty is not None and abs(qty - current.qty) > 1e-9:
            raise BrokerError(f"alpaca replace {cid}: Alpaca cannot resize an OCO exit in "
                              f"place ({current.qty:g} -> {qty:g}); cancel it and place a "
                              "new one")
        leg = _stop_leg(_f(raw, "legs"))
        if leg is None or _raw_status(leg) not in _OPEN_RAW:
            state = _raw_status(leg) if leg is not None else "missing"
            raise BrokerError(f"alpaca replace {cid}: the stop leg of this OCO is {state}; "
                              "nothing to move")
        if stop_price is None or abs(us_tick(stop_price) - (current.stop_price or 0.0)) < 1e-9:
            return current  # unchanged (Alpaca would answer 422 "parameters are not changed")
        match = _STOP_LEG_SUFFIX.search(_s(_f(leg, "client_order_id")) or "")
        suffix = f"-sl{int(match.group('n')) + 1 if match else 1}"
        new_cid = cid[:_MAX_CID - len(suffix)] + suffix
        body = ReplaceOrderRequest(stop_price=us_tick(stop_price), client_order_id=new_cid)
        leg_bid = _s(_f(leg, "id")) or ""
        parent = current.broker_id
        new_leg = self._patch(cid, leg_bid, body, new_cid)
        new_leg_id = _s(_f(new_leg, "id")) or ""
        if new_leg_id:
            self._legs[new_leg_id] = parent
        fresh = self._call("replace", lambda: self._by_id(parent), cid)
        return self._remember(fresh, root=cid)

    def _patch(self, cid: str, bid: str, body: Any, new_cid: str) -> Any:
        """PATCH /v2/orders/{bid}, bounded retries; after a fault, the replacement's own
        client order id is looked up first, so it is never sent twice."""
        failures = 0
        look_first = False
        while True:
            if look_first:
                found, fault = self._once(
                    lambda: self._client.get_order_by_client_id(new_cid))
                if fault is None:
                    log.info("alpaca replace %s: the replacement already reached Alpaca; "
                             "not sending it again", cid)
                    return found
                if fault.kind == "transient":
                    failures += 1
                    if not self._retry_wait("replace (lookup)", cid, failures, fault):
                        raise self._give_up("replace", cid, failures, fault)
                    continue
                if fault.kind != "not_found":
                    raise self._error("replace", cid, fault)
            new, fault = self._once(lambda: self._client.replace_order_by_id(bid, body))
            if fault is None:
                return new
            if fault.kind == "duplicate":
                return self._call("replace", lambda: self._client.get_order_by_client_id(
                    new_cid), cid)
            if fault.kind == "rejected":
                log.info("alpaca replace %s: rejected (HTTP %s): %s", cid, fault.status,
                         fault.text)
                raise OrderRejected(f"alpaca rejected the replacement of {cid}: {fault.text}; "
                                    f"{_hint(fault.text)}")
            if fault.kind != "transient":
                log.info("alpaca replace %s: %s", cid, fault.text)
                raise self._error("replace", cid, fault)
            failures += 1
            if not self._retry_wait("replace", cid, failures, fault):
                raise self._give_up("replace", cid, failures, fault)
            look_first = True

    def _replaced(self, old_bid: str, new_raw: Any, cid: str) -> Order:
        new_bid = _s(_f(new_raw, "id")) or ""
        self._root[new_bid] = cid
        self._current[cid] = new_bid
        return self._remember(new_raw, root=cid)

    def updates(self) -> Iterable[OrderUpdate]:
        """Poll: one list of open orders plus one GET per tracked order that left it."""
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        pending = [bid for bid, seen in self._seen.items()
                   if not seen.announced or seen.status not in FINAL_STATUSES]
        if not pending:
            return []
        query = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500, nested=True)
        raws = self._call("updates", lambda: self._client.get_orders(query)) or []
        open_by_id = {_s(_f(r, "id")): r for r in raws}
        events: list[OrderUpdate] = []
        queue = list(pending)
        done: set[str] = set()
        while queue:
            bid = queue.pop(0)
            if bid in done:
                continue
            done.add(bid)
            raw = open_by_id.get(bid)
            if raw is None:
                raw = self._call("updates", lambda b=bid: self._by_id(b),
                                 self._root.get(bid, ""), none_if_missing=True)
                if raw is None:
                    log.warning("alpaca updates: order %s (%s) no longer found at Alpaca", bid,
                                self._root.get(bid, "?"))
                    self._seen.pop(bid, None)
                    continue
            self._remember(raw)  # legs of an OCO belong to it
            events.extend(self._diff(bid, raw))
            nxt = _s(_f(raw, "replaced_by"))
            if _raw_status(raw) == "replaced" and nxt and nxt not in done:
                root = self._root.get(bid) or self._root_of(raw)
                self._root[nxt] = root
                self._current[root] = nxt
                self._seen.setdefault(nxt, _Seen("", 0.0, None, 0.0, announced=False))
                queue.append(nxt)
        return events

    def _diff(self, bid: str, raw: Any) -> list[OrderUpdate]:
        order = self._to_order(raw)
        prev = self._seen.get(bid) or _Seen("", 0.0, None, 0.0, announced=False)
        when = _when(raw)
        events: list[OrderUpdate] = []
        if not prev.announced and order.status not in ("pending", "rejected"):
            events.append(OrderUpdate(order=order, event="new", time=when))
            prev.announced = True
        commission = _num(_f(raw, "commission")) or 0.0
        if order.filled_qty > prev.filled + 1e-9:
            delta = order.filled_qty - prev.filled
            avg = order.avg_fill_price or 0.0
            price = avg
            if prev.filled > 0 and prev.avg:
                price = (order.filled_qty * avg - prev.filled * prev.avg) / delta
            fill_time = (_filled_at(raw) if order.status == "filled" else None) or when
            fill = Fill(client_order_id=order.client_order_id, broker_id=bid,
                        fill_id=f"{bid}:{_fmt_qty(order.filled_qty)}", symbol=order.symbol,
                        side=order.side, qty=round(delta, 9), price=round(price, 6),
                        commission=round(max(0.0, commission - prev.commission), 6),
                        time=fill_time)
            event = "fill" if order.status == "filled" else "partial_fill"
            if event == "partial_fill":
                log.info("alpaca order %s: partially filled, %s of %s (+%s at %.4f)",
                         order.client_order_id, _fmt_qty(order.filled_qty),
                         _fmt_qty(order.qty), _fmt_qty(delta), price)
            events.append(OrderUpdate(order=order, event=event, fill=fill, time=fill_time))
            prev.filled, prev.avg, prev.commission = order.filled_qty, avg, commission
        if order.status != prev.status and order.status in _STATUS_EVENT:
            events.append(OrderUpdate(order=order, event=_STATUS_EVENT[order.status],
                                      time=when))
            prev.announced = True
            cid = order.client_order_id
            if order.status != "replaced" and cid not in self._cancelling:
                # Alpaca ended it on its own (day end, a rejection after acceptance, ...)
                log.warning("alpaca order %s: %s at Alpaca with %s of %s filled (%s)", cid,
                            _STATUS_EVENT[order.status], _fmt_qty(order.filled_qty),
                            _fmt_qty(order.qty), order.reason or "no reason given")
        prev.status = order.status
        self._seen[bid] = prev
        return events

    def close(self) -> None:
        session = getattr(self._client, "_session", None)
        if session is not None and hasattr(session, "close"):
            session.close()
