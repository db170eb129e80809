"""Interactive Brokers adapter for the `Broker` protocol (ib_async's synchronous API).

Connects to a running TWS or IB Gateway: paper ports 7497 (TWS) / 4002 (Gateway) by default.
The live ports 7496 / 4001 need `live_confirmed=True` (the CLI asks for a typed
confirmation); without it, a connection whose account is not a paper account (paper account
ids start with "D": DU..., DF...) is closed again at once, whatever the port.

How IB's model maps onto ours:
- IB's `orderId` is per session and client; the deterministic client order id travels in
  `Order.orderRef`, which TWS keeps on open orders, completed orders and executions. Every
  look-up goes by orderRef, so a reconnect or a restarted process finds its orders again.
- `submit` is idempotent: before placing, it looks for a trade with that orderRef
  (`trades()`, which after a connect holds the open and the completed orders of the day) and
  for executions with it (`fills()`, and once per connection `reqExecutions()`), and returns
  that order instead of placing a second one. After a dropped connection during
  `placeOrder` it reconnects and looks again before resending.
- `broker_id` is IB's permId (stable across sessions); before TWS assigns one it is
  `oid:<orderId>`.
- OrderStatus.status: PendingSubmit/ApiPending/PendingCancel -> pending, PreSubmitted ->
  accepted, Submitted/ApiUpdate/ValidationError -> new (partially_filled once something
  filled), Filled -> filled, Cancelled/ApiCancelled -> cancelled, or rejected when an order
  error (e.g. 201 "Order rejected - reason: ...") came with it and nothing filled,
  Inactive -> rejected (cancelled when partly filled). Errors come from `errorEvent` and
  from `trade.log` (ib_async records order errors there with their code).
- Fills: one per IB execution, `fill_id` = execId, qty = shares, price, the execution time,
  commission from the CommissionReport (which IB sends separately).

`updates()` diffs the trades and fills ib_async keeps (after `ib.sleep(0)` lets it process
what arrived) against what this adapter already reported, for the orders it submitted or
has seen. Fills are deduplicated by execId (IB re-sends executions, e.g. after every
reconnect). A fill is held back until its commission report is there (it may come before or
after the execution) or `commission_wait` seconds have passed; then it is reported with
commission 0 and a warning. An execution *correction* (same execId up to the last ".")
is not counted a second time: it is logged for manual reconciliation.

Connection loss: every call checks the connection and reconnects, at most `max_reconnects`
attempts with exponential backoff, then raises TransientBrokerError. No ib_async exception
type ever leaves the adapter.

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
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from mltrader.live.broker import (
    Account,
    BrokerError,
    Fill,
    Order,
    OrderRejected,
    OrderRequest,
    OrderUpdate,
    Position,
    TransientBrokerError,
    exit_kind,
    merge_exit_legs,
    us_tick,
)

log = logging.getLogger("mltrader.live.ib")

PAPER_PORTS = frozenset({7497, 4002})  # TWS paper, IB Gateway paper
LIVE_PORTS = frozenset({7496, 4001})  # TWS live, IB Gateway live
INSTALL_HINT = 'pip install "mltrader[live]"'

_UNSET = 1e300  # ib_async marks unset doubles with sys.float_info.max
# ib_async order states that mean "sent, not acknowledged yet"
_WAITING = frozenset({"PendingSubmit", "ApiPending", ""})
_CANCELLED = frozenset({"Cancelled", "ApiCancelled", "Inactive"})
# error codes ib_async treats as warnings (the order stays live), plus 2100-2199
_WARNING_CODES = frozenset({105, 110, 165, 321, 329, 399, 404, 434, 492, 10167})
# errors that go with a cancel (ours or IB's), not with a refused order
_CANCEL_CODES = frozenset({202, 10147, 10148, 161})
_STATUS_EVENT = {"cancelled": "canceled", "rejected": "rejected", "expired": "expired"}
_FINAL = frozenset({"filled", "cancelled", "rejected", "expired", "replaced"})
TP_SUFFIX = "-tp"  # orderRef of an OCA exit's take-profit leg: <client order id>-tp
_ORDER_TYPES = {"MKT": "market", "LMT": "limit", "STP": "stop", "STP LMT": "stop_limit"}
_LOG_ERROR = re.compile(r"^(?:Error|Warning) (-?\d+), reqId -?\d+: (.*?)(?:, contract: .*)?$",
                        re.DOTALL)
# Substring of IB's message (lower case) -> what to do about it (first match wins).
_HINTS: tuple[tuple[str, str], ...] = (
    ("margin", "not enough equity/buying power: reduce the quantity or free buying power"),
    ("equity with loan", "not enough equity/buying power: reduce the quantity or free "
                         "buying power"),
    ("short", "the shares cannot be shorted now (no locate or no permission): sell at most "
              "the shares held"),
    ("security definition", "IB does not know this symbol as a US stock on SMART: check it"),
    ("price variation", "round the price to the contract's tick size ($0.01 above $1)"),
    ("permission", "the account lacks trading permission for this product or exchange"),
    ("precautionary", "IB's precautionary settings refused it (size/value limits): change "
                      "them in TWS (Global Configuration > Presets) or send less"),
)


@dataclass
class _Track:
    """What `updates()` already reported about one client order id."""

    status: str = ""
    announced: bool = False
    reported_qty: float = 0.0
    closed: bool = False
    request: OrderRequest | None = None


def _num(value: Any) -> float | None:
    """A number from ib_async, None when absent or 'unset' (float max)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    if out != out or abs(out) >= _UNSET:
        return None
    return out


def _ts(value: Any) -> pd.Timestamp | None:
    """A UTC timestamp from an ib_async datetime; None for missing or the 1970 'unset'."""
    if not isinstance(value, datetime):
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts if ts.year > 1970 else None


def _hint(message: str) -> str:
    low = message.lower()
    for needle, hint in _HINTS:
        if needle in low:
            return hint
    return "check the order in TWS (Orders > Trade log) and the account's permissions"


def _exec_base(exec_id: str) -> str:
    """An execId without its last part: IB's corrections differ only there."""
    return exec_id.rsplit(".", 1)[0] if exec_id.count(".") >= 2 else exec_id


def _is_warning(code: int) -> bool:
    return code in _WARNING_CODES or 2100 <= code < 2200


def _exit_kind(request: OrderRequest) -> str:
    """plain | oca (stop + take-profit) | take_profit (a take-profit alone)."""
    kind = exit_kind(request)
    return "oca" if kind == "bracket" else kind


class IBBroker:
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

    # ------------------------------------------------------------------ events

    def _subscribe(self) -> None:
        for name, handler in (("errorEvent", self._on_error),
                              ("commissionReportEvent", self._on_commission)):
            event = getattr(self._ib, name, None)
            if event is not None:
                event += handler
        self._subscribed = True

    def _unsubscribe(self) -> None:
        if not self._subscribed:
            return
        for name, handler in (("errorEvent", self._on_error),
                              ("commissionReportEvent", self._on_commission)):
            event = getattr(self._ib, name, None)
            if event is not None:
                try:
                    event -= handler
                except (ValueError, KeyError):  # pragma: no cover - already gone
                    pass
        self._subscribed = False

    def _on_error(self, req_id: int, code: int, text: str, contract: Any = None) -> None:
        """ib_async's errorEvent: order errors carry the orderId as reqId."""
        cid = self._oid_cid.get(req_id)
        if cid is None and req_id not in (-1, 0, None):
            for trade in self._safe_trades():
                if trade.order.orderId == req_id and trade.order.orderRef:
                    cid = trade.order.orderRef
                    break
        if cid is None:
            if code in (1100, 1300):
                log.warning("ib: TWS reports: %s (code %s)", text, code)
            else:
                log.debug("ib: message %s (reqId %s): %s", code, req_id, text)
            return
        if _is_warning(int(code)):
            log.warning("ib order %s: warning %s: %s", cid, code, text)
            return
        log.error("ib order %s: error %s: %s", cid, code, text)
        self._errors[cid] = (int(code), str(text))

    def _on_commission(self, trade: Any, fill: Any, report: Any) -> None:
        """ib_async's commissionReportEvent; also covers a report seen before its fill."""
        exec_id = getattr(report, "execId", "")
        commission = _num(getattr(report, "commission", None))
        if exec_id and commission is not None:
            self._commissions[exec_id] = commission
            if exec_id in self._emitted and exec_id not in self._late_warned:
                self._late_warned.add(exec_id)
                log.warning("ib: commission %.4f for execution %s arrived after its fill "
                            "was reported (with commission 0); reconcile it by hand",
                            commission, exec_id)

    # ------------------------------------------------------------------ connection

    def connect(self) -> None:
        """Connect (or reconnect) now; every call does this on its own when needed."""
        self._ensure()

    @property
    def client(self) -> Any:
        """The ib_async `IB` this adapter talks through (the IB data source shares it)."""
        return self._ib

    def _connected(self) -> bool:
        try:
            return bool(self._ib.isConnected())
        except Exception:  # noqa: BLE001 - a broken client counts as disconnected
            return False

    def _ensure(self) -> None:
        if self._connected():
            return
        if self._ever_connected:
            log.warning("ib: connection to %s:%d lost; reconnecting", self.host, self.port)
        self._reconnect()

    def _reconnect(self) -> None:
        last = ""
        for attempt in range(1, self.max_reconnects + 2):
            try:
                if self._ever_connected:
                    self._ib.disconnect()  # clear the dead session's state first
                self._ib.connect(self.host, self.port, clientId=self.client_id,
                                 timeout=self.timeout, account=self._account or "")
                ok = self._connected()
                last = "" if ok else "connected but the session is not ready"
            except BrokerError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below, never leaked
                ok = False
                last = f"{type(exc).__name__}: {str(exc)[:200]}"
            if ok:
                self._after_connect()
                return
            if attempt <= self.max_reconnects:
                delay = self.backoff * (2 ** (attempt - 1))
                log.warning("ib: connect to %s:%d failed (%s), attempt %d of %d; retrying in "
                            "%.1fs", self.host, self.port, last, attempt,
                            self.max_reconnects + 1, delay)
                self._sleep(delay)
        log.error("ib: giving up connecting to %s:%d after %d attempts (last: %s)", self.host,
                  self.port, self.max_reconnects + 1, last)
        raise TransientBrokerError(
            f"ib: cannot reach TWS/IB Gateway at {self.host}:{self.port} (client id "
            f"{self.client_id}) after {self.max_reconnects + 1} attempts (last: {last}); start "
            "TWS or IB Gateway and log in, enable the API (Configure > API > Settings: "
            "'Enable ActiveX and Socket Clients'), check the port, and use a client id no "
            "other program is using")

    def _after_connect(self) -> None:
        first = not self._ever_connected
        self._ever_connected = True
        self._exec_synced = False
        accounts: list[str] = []
        getter = getattr(self._ib, "managedAccounts", None)
        if getter is not None:
            try:
                accounts = [str(a) for a in getter() or []]
            except Exception:  # noqa: BLE001
                accounts = []
        if accounts:
            if self._account and self._account not in accounts:
                self._ib.disconnect()
                raise BrokerError(f"ib: account {self._account} is not managed by this login "
                                  f"(accounts: {', '.join(accounts)}); pass one of them")
            if not self._account:
                if len(accounts) > 1:
                    self._ib.disconnect()
                    raise BrokerError("ib: this login manages several accounts ("
                                      f"{', '.join(accounts)}); pass account=<one of them>")
                self._account_id = accounts[0]
            live = [a for a in ([self._account] if self._account else accounts)
                    if not a.upper().startswith("D")]
            if live and not self.live_confirmed:
                self._ib.disconnect()
                raise BrokerError(f"ib: port {self.port} leads to the LIVE account "
                                  f"{', '.join(live)} (paper accounts start with 'D'); live "
                                  "trading needs live_confirmed=True (the CLI asks for it)")
        log.info("ib: %s to %s:%d as client %d (account %s)",
                 "connected" if first else "reconnected", self.host, self.port,
                 self.client_id, self._account_id or "?")

    def _call(self, op: str, fn: Callable[[], Any], cid: str = "") -> Any:
        """An idempotent ib_async call: reconnect (bounded) and retry on a dropped connection;
        any other failure becomes a BrokerError."""
        who = f" {cid}" if cid else ""
        failures = 0
        while True:
            self._ensure()
            result, fault, transient = self._once(fn)
            if fault is None:
                return result
            if not transient:
                log.error("ib %s%s: %s", op, who, fault)
                raise BrokerError(f"ib {op}{who}: {fault}")
            failures += 1
            log.warning("ib %s%s: %s (attempt %d)", op, who, fault, failures)
            if failures > self.max_reconnects:
                raise TransientBrokerError(f"ib {op}{who}: connection to TWS/IB Gateway kept "
                                           f"failing ({fault}); try again later")

    @staticmethod
    def _once(fn: Callable[[], Any]) -> tuple[Any, str | None, bool]:
        """One call; a failure comes back as (None, text, transient)."""
        try:
            return fn(), None, False
        except (ConnectionError, TimeoutError, OSError, EOFError) as exc:
            return None, f"connection failed ({type(exc).__name__}: {str(exc)[:200]})", True
        except BrokerError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified, never leaked
            return None, f"{type(exc).__name__}: {str(exc)[:300]}", False

    def _pump(self) -> None:
        """Let ib_async process what TWS sent (the sync API only does so while it waits)."""
        sleeper = getattr(self._ib, "sleep", None)
        if sleeper is not None:
            self._call("sleep", lambda: sleeper(0))

    # ------------------------------------------------------------------ look-ups

    def _safe_trades(self) -> list[Any]:
        try:
            return list(self._ib.trades())
        except Exception:  # noqa: BLE001
            return []

    def _find_trade(self, cid: str) -> Any:
        """The ib_async Trade with this orderRef: a working one first, else the latest."""
        trades = [t for t in self._call("trades", self._ib.trades, cid) or []
                  if getattr(t.order, "orderRef", "") == cid]
        if not trades:
            return None
        working = [t for t in trades if t.orderStatus.status not in _CANCELLED
                   and t.orderStatus.status != "Filled"]
        trade = (working or trades)[-1]
        oid = getattr(trade.order, "orderId", 0)
        if oid:
            self._oid_cid[oid] = cid
        return trade

    def _fills_for(self, cid: str, trade: Any) -> list[Any]:
        """Executions of one order, one per execId, in arrival order."""
        perm = getattr(trade.order, "permId", 0) if trade is not None else 0
        candidates = list(trade.fills) if trade is not None else []
        candidates += list(self._call("fills", self._ib.fills, cid) or [])
        candidates += list(self._exec_cache.values())
        out: dict[str, Any] = {}
        for fill in candidates:
            ex = fill.execution
            if ex.orderRef == cid or (perm and ex.permId == perm):
                out.setdefault(ex.execId, fill)
        return list(out.values())

    def _ref_fills(self, cid: str) -> list[Any]:
        """Executions of a client order id (both legs of an OCA exit) known to ib_async or
        found by reqExecutions, one per execId, in arrival order."""
        refs = (cid, cid + TP_SUFFIX)
        out: dict[str, Any] = {}
        for fill in (list(self._call("fills", self._ib.fills, cid) or [])
                     + list(self._exec_cache.values())):
            if fill.execution.orderRef in refs:
                out.setdefault(fill.execution.execId, fill)
        return list(out.values())

    def _executions_lookup(self, cid: str) -> list[Any]:
        """Fills with this orderRef known to ib_async, else (once per connection) asked of
        TWS with reqExecutions: an order completed before this session may only be there."""
        fills = self._ref_fills(cid)
        if fills or self._exec_synced:
            return fills
        found = self._call("executions", self._ib.reqExecutions, cid) or []
        self._exec_synced = True
        for fill in found:
            self._exec_cache.setdefault(fill.execution.execId, fill)
        return self._ref_fills(cid)

    def _unique_fills(self, fills: list[Any]) -> list[Any]:
        """Drop execution corrections (a second execId with an already-seen base)."""
        bases: dict[str, str] = {}
        out = []
        for fill in fills:
            exec_id = fill.execution.execId
            base = _exec_base(exec_id)
            first = self._emitted_bases.get(base) or bases.get(base)
            if first is not None and first != exec_id:
                continue
            bases[base] = exec_id
            out.append(fill)
        return out

    def _order_error(self, cid: str, trade: Any) -> tuple[int, str] | None:
        if cid in self._errors:
            return self._errors[cid]
        for entry in reversed(list(getattr(trade, "log", None) or [])):
            code = int(getattr(entry, "errorCode", 0) or 0)
            message = str(getattr(entry, "message", "") or "")
            match = _LOG_ERROR.match(message)
            if not code and match:
                code = int(match.group(1))
            if code and not _is_warning(code):
                text = match.group(2) if match else message
                self._errors[cid] = (code, text)
                return code, text
        return None

    # ------------------------------------------------------------------ mapping

    def _commission(self, fill: Any) -> float | None:
        report = fill.commissionReport
        if report is not None and getattr(report, "execId", ""):
            value = _num(report.commission)
            if value is not None:
                return value
        return self._commissions.get(fill.execution.execId)

    def _to_order(self, cid: str, trade: Any, fills: list[Any]) -> Order:
        ib_order, state = trade.order, trade.orderStatus
        fills = self._unique_fills(fills)
        fill_qty = sum(float(f.execution.shares) for f in fills)
        filled = max(_num(state.filled) or 0.0, fill_qty,
                     _num(getattr(ib_order, "filledQuantity", None)) or 0.0)
        qty = _num(ib_order.totalQuantity) or filled
        avg = _num(state.avgFillPrice) if (_num(state.filled) or 0) > 0 else None
        if not avg and fill_qty > 0:
            avg = sum(float(f.execution.shares) * float(f.execution.price)
                      for f in fills) / fill_qty
        raw = state.status or ""
        reason = ""
        if raw == "Filled" or (qty and filled >= qty - 1e-9):
            status = "filled"
        elif raw in _CANCELLED:
            error = self._order_error(cid, trade)
            refused = raw == "Inactive" or (error is not None and error[0] not in _CANCEL_CODES)
            status = "rejected" if refused and filled <= 0 else "cancelled"
            if error is not None:
                reason = f"IB error {error[0]}: {error[1]}"
            elif raw == "Inactive":
                reason = "order inactive at IB (not working; see TWS)"
            else:
                reason = f"{raw} at IB"
        elif raw in ("PendingSubmit", "ApiPending", "PendingCancel", ""):
            status = "pending"
        elif raw == "PreSubmitted":
            status = "partially_filled" if filled > 0 else "accepted"
        elif raw in ("Submitted", "ApiUpdate", "ValidationError"):
            status = "partially_filled" if filled > 0 else "new"
        else:
            log.warning("ib order %s: unknown order status %r, treated as pending", cid, raw)
            status = "pending"
        if not reason and getattr(state, "whyHeld", ""):
            reason = f"held: {state.whyHeld}"
        order_type = _ORDER_TYPES.get(ib_order.orderType, (ib_order.orderType or "").lower())
        limit = _num(ib_order.lmtPrice) if order_type in ("limit", "stop_limit") else None
        stop = _num(ib_order.auxPrice) if order_type in ("stop", "stop_limit") else None
        log_entries = list(getattr(trade, "log", None) or [])
        return Order(
            client_order_id=cid,
            broker_id=self._broker_id(ib_order.permId, ib_order.orderId),
            symbol=trade.contract.symbol,
            side="sell" if ib_order.action.upper() in ("SELL", "SSHORT") else "buy",
            qty=qty,
            filled_qty=filled,
            status=status,
            type=order_type or "market",
            avg_fill_price=round(avg, 6) if avg and filled > 0 else None,
            limit_price=limit,
            stop_price=stop,
            submitted_at=_ts(log_entries[0].time) if log_entries else None,
            reason=reason,
        )

    def _order_from_fills(self, cid: str, fills: list[Any]) -> Order:
        """An order TWS no longer lists but whose executions carry its orderRef."""
        fills = self._unique_fills(fills)
        first = fills[0].execution
        filled = sum(float(f.execution.shares) for f in fills)
        avg = sum(float(f.execution.shares) * float(f.execution.price) for f in fills) / filled
        request = self._tracks[cid].request if cid in self._tracks else None
        qty = request.qty if request is not None else filled
        return Order(
            client_order_id=cid,
            broker_id=self._broker_id(first.permId, first.orderId),
            symbol=fills[0].contract.symbol,
            side="sell" if first.side.upper() in ("SLD", "SELL") else "buy",
            qty=qty,
            filled_qty=filled,
            status="filled" if filled >= qty - 1e-9 else "partially_filled",
            type=request.type if request is not None else "market",
            avg_fill_price=round(avg, 6),
            limit_price=request.limit_price if request is not None else None,
            stop_price=request.stop_price if request is not None else None,
            submitted_at=None,
            reason="known from IB executions only (TWS no longer lists the order)",
        )

    @staticmethod
    def _broker_id(perm_id: Any, order_id: Any) -> str:
        return str(perm_id) if perm_id else f"oid:{order_id}"

    def _to_fill(self, cid: str, order: Order, fill: Any, commission: float) -> Fill:
        ex = fill.execution
        when = _ts(ex.time) or _ts(fill.time) or pd.Timestamp.now(tz="UTC")
        return Fill(
            client_order_id=cid,
            broker_id=self._broker_id(ex.permId, ex.orderId) if ex.permId else order.broker_id,
            fill_id=ex.execId,
            symbol=order.symbol or fill.contract.symbol,
            side="sell" if ex.side.upper() in ("SLD", "SELL") else "buy",
            qty=float(ex.shares),
            price=float(ex.price),
            commission=round(commission, 6),
            time=when,
        )

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

    def _contract(self, symbol: str) -> Any:
        if symbol in self._contracts:
            return self._contracts[symbol]
        from ib_async import Stock

        contract = Stock(symbol, "SMART", "USD")
        qualify = getattr(self._ib, "qualifyContracts", None)
        if qualify is not None:
            result = self._call("qualify", lambda: qualify(contract), symbol) or []
            if not result or result[0] is None or not getattr(contract, "conId", 0):
                raise OrderRejected(f"ib: {symbol!r} is not a unique US stock at IB (SMART, "
                                    "USD): unknown or ambiguous symbol; check it")
        self._contracts[symbol] = contract
        return contract

    def _ib_order(self, request: OrderRequest, leg: str = "") -> Any:
        """The ib_async order for a request; an OCA exit's `leg` is "stop" or "take_profit"."""
        from ib_async import LimitOrder, MarketOrder, StopLimitOrder, StopOrder

        action = "BUY" if request.side == "buy" else "SELL"
        qty = float(round(request.qty))
        cid = request.client_order_id
        common: dict[str, Any] = dict(orderRef=cid, tif=request.time_in_force.upper(),
                                      transmit=True)
        if self._account_id:
            common["account"] = self._account_id
        if request.type == "market":
            return MarketOrder(action, qty, **common)
        if request.type == "limit":
            return LimitOrder(action, qty, request.limit_price, **common)
        if request.type == "stop":
            kind = _exit_kind(request)
            if kind == "take_profit":  # the stop cannot trigger: the take-profit alone
                return LimitOrder(action, qty, us_tick(request.take_profit), **common)
            if kind == "oca":
                common.update(ocaGroup=cid, ocaType=1)  # 1: cancel the others, with block
                if leg == "take_profit":
                    common["orderRef"] = cid + TP_SUFFIX
                    return LimitOrder(action, qty, us_tick(request.take_profit), **common)
            return StopOrder(action, qty, us_tick(request.stop_price), **common)
        if request.type == "stop_limit":
            return StopLimitOrder(action, qty, request.limit_price, request.stop_price,
                                  **common)
        raise OrderRejected(f"ib submit {request.client_order_id}: order type "
                            f"{request.type!r} not supported")

    # ------------------------------------------------------------------ Broker API

    def account(self) -> Account:
        values = list(self._call("account", lambda: self._ib.accountValues(self._account_id))
                      or [])
        picked = self._account_tags(values)
        if len(picked) < 3 and hasattr(self._ib, "accountSummary"):
            summary = self._call("account", lambda: self._ib.accountSummary(self._account_id))
            picked = {**self._account_tags(list(summary or [])), **picked}
        missing = [t for t in ("NetLiquidation", "TotalCashValue", "BuyingPower")
                   if t not in picked]
        if missing:
            raise BrokerError(f"ib account: TWS sent no {', '.join(missing)} for account "
                              f"{self._account_id or '?'}; wait for the account update after "
                              "connecting, or check the account id")
        currency = picked["NetLiquidation"][1]
        return Account(cash=picked["TotalCashValue"][0], equity=picked["NetLiquidation"][0],
                       buying_power=picked["BuyingPower"][0], currency=currency)

    def _account_tags(self, values: list[Any]) -> dict[str, tuple[float, str]]:
        """NetLiquidation / TotalCashValue / BuyingPower: USD first, else a real currency
        (never 'BASE' or the '-S' segment variants)."""
        out: dict[str, tuple[float, str]] = {}
        for want_usd in (True, False):
            for v in values:
                if v.tag not in ("NetLiquidation", "TotalCashValue", "BuyingPower"):
                    continue
                if self._account_id and v.account and v.account != self._account_id:
                    continue
                cur = v.currency or ""
                if (cur == "USD") != want_usd or cur in ("", "BASE"):
                    continue
                number = _num(v.value)
                if number is not None and v.tag not in out:
                    out[v.tag] = (number, cur)
        return out

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
        out: dict[str, Position] = {}
        for raw in raws:
            contract = raw.contract
            if self._account_id and raw.account and raw.account != self._account_id:
                continue
            if contract.secType not in ("STK", ""):
                log.debug("ib positions: skipped %s %s (not a stock)", contract.secType,
                          contract.localSymbol or contract.symbol)
                continue
            qty = _num(raw.position) or 0.0
            if qty == 0:
                continue
            symbol = contract.symbol
            out[symbol] = Position(symbol=symbol, qty=qty, avg_price=_num(raw.avgCost) or 0.0,
                                   market_value=values.get(contract.conId))
        return out

    def open_orders(self) -> list[Order]:
        out = []
        roots: set[str] = set()
        for trade in self._call("open_orders", self._ib.openTrades) or []:
            ref = trade.order.orderRef or ""
            root = ref[:-len(TP_SUFFIX)] if ref.endswith(TP_SUFFIX) else ref  # a TP leg: its exit
            if not root:
                bid = self._broker_id(trade.order.permId, trade.order.orderId)
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
        return [self._to_fill(cid, order, f, self._commission(f) or 0.0)
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
                trade = self._place(cid, ref, lambda lg=leg: self._ib_order(request, lg),
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
            trade = self._place(cid, ref, lambda: self._ib_order(leg_request, "take_profit"),
                                main.contract)
        except BrokerError as e:
            self._tp_missing[cid] = request
            log.warning("ib order %s: the take-profit leg is still not placed (%s)", cid, e)
            return
        self._tp_missing.pop(cid, None)
        if trade is not None:
            log.info("ib order %s: take-profit leg placed (orderId %s)", cid,
                     trade.order.orderId)

    def _await_ack(self, trade: Any) -> None:
        """Give TWS a moment to acknowledge (or reject) a new order."""
        sleeper = getattr(self._ib, "sleep", None)
        if sleeper is None:
            return
        deadline = self._clock() + self.ack_timeout
        while trade.orderStatus.status in _WAITING and self._clock() < deadline:
            _, fault, _ = self._once(lambda: sleeper(self.poll_interval))
            if fault is not None or not self._connected():
                return

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
            fill_obj = self._to_fill(cid, order, fill, commission)
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
