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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any

import pandas as pd

from mltrader.live.broker import (
    FINAL_STATUSES,
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

log = logging.getLogger("mltrader.live.alpaca")

KEY_ENV = ("MLTRADER_ALPACA_KEY", "APCA_API_KEY_ID")
SECRET_ENV = ("MLTRADER_ALPACA_SECRET", "APCA_API_SECRET_KEY")

# Alpaca order status -> domain status. None: derive from the filled quantity.
_STATUS: dict[str, str | None] = {
    "new": "new",
    "accepted": "accepted",
    "accepted_for_bidding": "accepted",
    "pending_new": "pending",
    "pending_review": "pending",
    "pending_cancel": "pending",
    "pending_replace": "pending",
    "held": "pending",
    "suspended": "pending",
    "partially_filled": "partially_filled",
    "filled": "filled",
    "canceled": "cancelled",
    "cancelled": "cancelled",
    "expired": "expired",
    "replaced": "replaced",
    "rejected": "rejected",
    "done_for_day": None,
    "calculated": None,
    "stopped": None,
}
_STATUS_EVENT = {"cancelled": "canceled", "rejected": "rejected", "expired": "expired",
                 "replaced": "replaced"}

# Substring of the broker's message -> what to do about it (first match wins).
_HINTS: tuple[tuple[str, str], ...] = (
    ("buying power", "reduce the quantity or free buying power (cancel open orders, close "
                     "positions)"),
    ("not allowed to short", "the account may not short: sell at most the shares held, or "
                             "enable shorting for the account"),
    ("insufficient qty", "the shares are not held or are reserved by other open orders: "
                         "cancel those or sell less"),
    ("sub-penny", "round the price to $0.01 (prices >= $1) or $0.0001 (prices < $1)"),
    ("not shortable", "this symbol cannot be shorted at Alpaca now"),
    ("not tradable", "this symbol is not tradable at Alpaca"),
    ("qty", "check the quantity: > 0, whole shares except for market/day orders"),
    ("notional", "send either qty or notional, not both"),
)
_MAX_CID = 128  # Alpaca's limit on client_order_id
_REPLACED_SUFFIX = re.compile(r"^(?P<root>.+)-r(?P<n>\d+)$")
_STOP_LEG_SUFFIX = re.compile(r"-sl(?P<n>\d+)$")
_OPEN_RAW = frozenset({"new", "accepted", "accepted_for_bidding", "pending_new", "held",
                       "partially_filled", "pending_cancel", "pending_replace", "suspended",
                       "pending_review", "done_for_day", "calculated", "stopped"})


@dataclass(frozen=True)
class _Fault:
    kind: str  # transient | not_found | duplicate | rejected | auth | other
    text: str
    status: int | None = None
    retry_after: float | None = None  # seconds, from a Retry-After header


@dataclass
class _Seen:
    status: str
    filled: float
    avg: float | None
    commission: float
    announced: bool


def _f(obj: Any, name: str, default: Any = None) -> Any:
    """A field of a raw dict or of an alpaca-py model."""
    if isinstance(obj, Mapping):
        value = obj.get(name, default)
    else:
        value = getattr(obj, name, default)
    return default if value is None else value


def _s(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _num(value: Any) -> float | None:
    """Alpaca sends numbers as strings (the real API) or numbers (some mocks): both work."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _ts(value: Any) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _fmt_qty(qty: float) -> str:
    text = f"{qty:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def _hint(message: str) -> str:
    low = message.lower()
    for needle, hint in _HINTS:
        if needle in low:
            return hint
    return "check the order against Alpaca's rules (symbol, side, qty, price, time in force)"


def _exit_kind(request: OrderRequest) -> str:
    """plain | oco (stop + take-profit) | take_profit (a take-profit alone)."""
    kind = exit_kind(request)
    return "oco" if kind == "bracket" else kind


def _retry_after(response: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), else None."""
    headers = getattr(response, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, (pd.Timestamp(when) - pd.Timestamp.now(tz="UTC")).total_seconds())


def _is_oco(raw: Any) -> bool:
    return (_s(_f(raw, "order_class")) or "").lower() == "oco"


def _raw_status(raw: Any) -> str:
    return (_s(_f(raw, "status")) or "").lower()


class AlpacaBroker:
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

    # ------------------------------------------------------------------ plumbing

    def _harden_client(self) -> None:
        """Per-request timeout and no hidden retries inside alpaca-py (both private API of
        alpaca-py's RESTClient; an injected test double may lack them)."""
        session = getattr(self._client, "_session", None)
        if session is not None and hasattr(session, "request"):
            original = session.request
            timeout = self.timeout

            def request_with_timeout(method: str, url: str, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", timeout)
                return original(method, url, **kwargs)

            session.request = request_with_timeout
        elif not isinstance(self._client, Mapping):
            log.warning("alpaca: client has no requests session; requests run without the "
                        "adapter's %.1fs timeout", self.timeout)
        if hasattr(self._client, "_retry"):
            self._client._retry = 0  # alpaca-py would sleep 3 s per 429/504 on its own

    def _scrub(self, text: Any) -> str:
        out = str(text)
        for secret in self._secrets:
            out = out.replace(secret, "***")
        return out

    def _delay(self, failures: int) -> float:
        return min(self.max_backoff, self.backoff * (2 ** (failures - 1)))

    def _classify(self, exc: BaseException) -> _Fault:
        import requests
        from alpaca.common.exceptions import APIError

        if isinstance(exc, APIError):
            status = exc.status_code
            body = self._scrub(getattr(exc, "_error", None) or str(exc))
            message = body.strip()
            try:
                parsed = json.loads(body)
                if isinstance(parsed, dict) and parsed.get("message"):
                    message = str(parsed["message"])
            except (TypeError, ValueError):
                pass
            message = message[:300]
            text = f"HTTP {status}: {message}" if status else message
            if status is None or status in (408, 429) or status >= 500:
                wait = _retry_after(getattr(exc, "response", None)) if status else None
                if wait is not None:
                    text += f" (Retry-After {wait:g}s)"
                return _Fault("transient", text, status, wait)
            if "client_order_id must be unique" in message.lower():
                return _Fault("duplicate", text, status)
            if status == 404:
                return _Fault("not_found", text, status)
            if status == 401:
                return _Fault("auth", text, status)
            if status in (400, 403, 422):
                return _Fault("rejected", message, status)
            return _Fault("other", text, status)
        if isinstance(exc, requests.exceptions.JSONDecodeError):
            return _Fault("transient", "unreadable response body (truncated or not JSON)")
        if isinstance(exc, requests.Timeout):
            return _Fault("transient", f"no response within {self.timeout:g}s (timeout)")
        if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
            return _Fault("transient", f"connection failed or dropped ({type(exc).__name__})")
        if isinstance(exc, requests.RequestException):
            return _Fault("other", f"request failed ({type(exc).__name__}: "
                                   f"{self._scrub(exc)[:200]})")
        return _Fault("other", f"unexpected reply ({type(exc).__name__}: "
                               f"{self._scrub(exc)[:200]})")

    def _once(self, fn: Callable[[], Any]) -> tuple[Any, _Fault | None]:
        """One request; a fault comes back as a value so errors are raised outside any
        `except` block (no library exception, and no text of it, rides along as context)."""
        try:
            return fn(), None
        except Exception as exc:  # noqa: BLE001 - classified, never swallowed
            return None, self._classify(exc)

    def _error(self, op: str, cid: str, fault: _Fault) -> BrokerError:
        who = f" {cid}" if cid else ""
        if fault.kind == "auth":
            return BrokerError(f"alpaca {op}{who}: not authorized ({fault.text}); check "
                               f"{KEY_ENV[0]}/{SECRET_ENV[0]} and that paper keys go with "
                               "paper=True and live keys with live")
        return BrokerError(f"alpaca {op}{who}: {fault.text}")

    def _give_up(self, op: str, cid: str, failures: int, fault: _Fault) -> TransientBrokerError:
        who = f" {cid}" if cid else ""
        extra = (" The order may or may not be at Alpaca; submitting the same client order id "
                 "again is safe (it is looked up first)." if op == "submit" else "")
        # the caller reports what is raised: INFO here keeps it to one line per fault
        log.info("alpaca %s%s: giving up after %d failed attempts (last: %s)", op, who,
                 failures, fault.text)
        return TransientBrokerError(f"alpaca {op}{who}: failed {failures} times in a row "
                                    f"(last: {fault.text}); Alpaca unreachable or overloaded, "
                                    f"try again later.{extra}")

    def _retry_wait(self, op: str, cid: str, failures: int, fault: _Fault) -> bool:
        """Log the fault; sleep before the next attempt. False when retries are used up."""
        who = f" {cid}" if cid else ""
        if failures > self.max_retries:
            return False
        delay = self._delay(failures)
        if fault.retry_after is not None:  # the server said how long: at least that
            delay = min(self.max_backoff, max(delay, fault.retry_after))
        log.warning("alpaca %s%s: %s (attempt %d of %d); retrying in %.2fs", op, who,
                    fault.text, failures, self.max_retries + 1, delay)
        self._sleep(delay)
        return True

    def _call(self, op: str, fn: Callable[[], Any], cid: str = "",
              none_if_missing: bool = False) -> Any:
        """An idempotent request with bounded retries of transient faults."""
        failures = 0
        while True:
            result, fault = self._once(fn)
            if fault is None:
                return result
            if fault.kind == "not_found" and none_if_missing:
                return None
            if fault.kind != "transient":
                log.info("alpaca %s%s: %s", op, f" {cid}" if cid else "", fault.text)
                raise self._error(op, cid, fault)
            failures += 1
            if not self._retry_wait(op, cid, failures, fault):
                raise self._give_up(op, cid, failures, fault)

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
        legs = _f(raw, "legs") or []
        if _is_oco(raw) and legs:
            return self._oco_order(raw, legs)
        return self._plain_order(raw)

    @staticmethod
    def _stop_leg(legs: Iterable[Any]) -> Any:
        """The working stop leg of an OCO (a replaced leg is history), else the last one."""
        legs = list(legs or [])
        stops = [leg for leg in legs
                 if (_s(_f(leg, "type")) or _s(_f(leg, "order_type")) or "").lower()
                 in ("stop", "stop_limit")] or legs
        live = [leg for leg in stops if _raw_status(leg) != "replaced"]
        return (live or stops)[-1] if stops else None

    def _oco_order(self, raw: Any, legs: list[Any]) -> Order:
        """An OCO (the take-profit limit order with its stop leg) as ONE domain order."""
        tp = self._plain_order(raw)
        leg_raw = self._stop_leg(legs)
        sl = self._plain_order(leg_raw)
        order = merge_exit_legs(tp.client_order_id, sl, tp, lead="take")
        if not order.done and tp.done and _raw_status(leg_raw) == "held":
            # the stop leg alone still works: Alpaca holds it until it can trigger
            order = dataclasses.replace(
                order, status="partially_filled" if order.filled_qty > 0 else "accepted")
        return order

    def _plain_order(self, raw: Any) -> Order:
        qty = _num(_f(raw, "qty"))
        filled = _num(_f(raw, "filled_qty")) or 0.0
        raw_status = (_s(_f(raw, "status")) or "").lower()
        if raw_status in _STATUS:
            status = _STATUS[raw_status]
        else:
            log.warning("alpaca: unknown order status %r, treated as pending", raw_status)
            status = "pending"
        if status is None:
            if qty and filled >= qty:
                status = "filled"
            else:
                status = "partially_filled" if filled > 0 else "accepted"
        avg = _num(_f(raw, "filled_avg_price"))
        reason = ""
        for field in ("reject_reason", "reason", "status_message"):
            if _f(raw, field):
                reason = self._scrub(_f(raw, field))
                break
        if not reason and status in ("rejected", "cancelled", "expired"):
            when = _f(raw, {"rejected": "failed_at", "cancelled": "canceled_at",
                            "expired": "expired_at"}[status])
            reason = f"{raw_status} by Alpaca" + (f" at {when}" if when else "")
        return Order(
            client_order_id=self._root_of(raw),
            broker_id=_s(_f(raw, "id")) or "",
            symbol=_s(_f(raw, "symbol")) or "",
            side=(_s(_f(raw, "side")) or "buy").lower(),  # type: ignore[arg-type]
            qty=qty if qty is not None else filled,
            filled_qty=filled,
            status=status,
            type=(_s(_f(raw, "type")) or _s(_f(raw, "order_type")) or "market").lower(),
            avg_fill_price=avg if avg and filled > 0 else None,
            limit_price=_num(_f(raw, "limit_price")),
            stop_price=_num(_f(raw, "stop_price")),
            submitted_at=_ts(_f(raw, "submitted_at")),
            reason=reason,
        )

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

    def _request_model(self, request: OrderRequest) -> Any:
        from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
        from alpaca.trading.requests import (
            LimitOrderRequest,
            MarketOrderRequest,
            StopLimitOrderRequest,
            StopLossRequest,
            StopOrderRequest,
            TakeProfitRequest,
        )

        common = dict(symbol=request.symbol, qty=request.qty,
                      side=OrderSide(request.side),
                      time_in_force=TimeInForce(request.time_in_force),
                      client_order_id=request.client_order_id)
        if request.type == "market":
            return MarketOrderRequest(**common)
        if request.type == "limit":
            return LimitOrderRequest(**common, limit_price=request.limit_price)
        if request.type == "stop":
            kind = _exit_kind(request)
            if kind == "take_profit":  # the stop cannot trigger: the take-profit alone
                return LimitOrderRequest(**common, limit_price=us_tick(request.take_profit))
            stop = us_tick(request.stop_price)  # type: ignore[arg-type]
            if kind == "plain":
                return StopOrderRequest(**common, stop_price=stop)
            take = us_tick(request.take_profit)  # type: ignore[arg-type]
            if (take <= stop) if request.side == "sell" else (take >= stop):
                where = "above" if request.side == "sell" else "below"
                raise ValueError(f"the take-profit {take:g} must lie {where} the stop {stop:g} "
                                 f"of a {request.side} exit")
            # Alpaca's OCO: a limit order (the take-profit leg) plus the stop-loss leg
            return LimitOrderRequest(**common, order_class=OrderClass.OCO,
                                     take_profit=TakeProfitRequest(limit_price=take),
                                     stop_loss=StopLossRequest(stop_price=stop))
        if request.type == "stop_limit":
            return StopLimitOrderRequest(**common, limit_price=request.limit_price,
                                         stop_price=request.stop_price)
        raise OrderRejected(f"alpaca submit {request.client_order_id}: order type "
                            f"{request.type!r} not supported")

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
                     time=self._filled_at(raw) or self._when(raw))]

    def submit(self, request: OrderRequest) -> Order:
        cid = request.client_order_id
        try:
            payload = self._request_model(request)
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
        leg = self._stop_leg(_f(raw, "legs"))
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

    @staticmethod
    def _times(raw: Any, field: str) -> list[pd.Timestamp]:
        out = [_ts(_f(raw, field))]
        out += [_ts(_f(leg, field)) for leg in (_f(raw, "legs") or [])]
        return [t for t in out if t is not None]

    def _when(self, raw: Any) -> pd.Timestamp:
        """When the order (or a leg of it) last changed."""
        times = self._times(raw, "updated_at") or self._times(raw, "filled_at")
        return max(times) if times else pd.Timestamp.now(tz="UTC")

    def _filled_at(self, raw: Any) -> pd.Timestamp | None:
        times = self._times(raw, "filled_at")
        return max(times) if times else None

    def _diff(self, bid: str, raw: Any) -> list[OrderUpdate]:
        order = self._to_order(raw)
        prev = self._seen.get(bid) or _Seen("", 0.0, None, 0.0, announced=False)
        when = self._when(raw)
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
            fill_time = (self._filled_at(raw) if order.status == "filled" else None) or when
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
