"""Alpaca's wire objects and ours: raw orders (JSON dicts or alpaca-py models) read into
domain `Order`s, an OCO's two legs as one order, and `OrderRequest`s built into alpaca-py's
request models. Apart from `to_order`'s two callbacks (the adapter's client order id
bookkeeping and key scrubbing), nothing here holds state or talks to Alpaca.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any

import pandas as pd

from mltrader.live.brokers.base import (
    Order,
    OrderRejected,
    OrderRequest,
    exit_kind,
    merge_exit_legs,
    us_tick,
)

log = logging.getLogger("mltrader.live.alpaca")

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
_OPEN_RAW = frozenset({"new", "accepted", "accepted_for_bidding", "pending_new", "held",
                       "partially_filled", "pending_cancel", "pending_replace", "suspended",
                       "pending_review", "done_for_day", "calculated", "stopped"})


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


def _is_oco(raw: Any) -> bool:
    return (_s(_f(raw, "order_class")) or "").lower() == "oco"


def _raw_status(raw: Any) -> str:
    return (_s(_f(raw, "status")) or "").lower()


def _stop_leg(legs: Iterable[Any]) -> Any:
    """The working stop leg of an OCO (a replaced leg is history), else the last one."""
    legs = list(legs or [])
    stops = [leg for leg in legs
             if (_s(_f(leg, "type")) or _s(_f(leg, "order_type")) or "").lower()
             in ("stop", "stop_limit")] or legs
    live = [leg for leg in stops if _raw_status(leg) != "replaced"]
    return (live or stops)[-1] if stops else None


def _times(raw: Any, field: str) -> list[pd.Timestamp]:
    out = [_ts(_f(raw, field))]
    out += [_ts(_f(leg, field)) for leg in (_f(raw, "legs") or [])]
    return [t for t in out if t is not None]


def _when(raw: Any) -> pd.Timestamp:
    """When the order (or a leg of it) last changed."""
    times = _times(raw, "updated_at") or _times(raw, "filled_at")
    return max(times) if times else pd.Timestamp.now(tz="UTC")


def _filled_at(raw: Any) -> pd.Timestamp | None:
    times = _times(raw, "filled_at")
    return max(times) if times else None


def to_order(raw: Any, root_of: Callable[[Any], str],
             scrub: Callable[[Any], str]) -> Order:
    """The domain view of a raw order (an OCO with its legs: one order); `root_of`
    gives its client order id, `scrub` cleans the texts it carries."""
    legs = _f(raw, "legs") or []
    if _is_oco(raw) and legs:
        return _oco_order(raw, legs, root_of, scrub)
    return _plain_order(raw, root_of, scrub)


def _oco_order(raw: Any, legs: list[Any], root_of: Callable[[Any], str],
               scrub: Callable[[Any], str]) -> Order:
    """An OCO (the take-profit limit order with its stop leg) as ONE domain order."""
    tp = _plain_order(raw, root_of, scrub)
    leg_raw = _stop_leg(legs)
    sl = _plain_order(leg_raw, root_of, scrub)
    order = merge_exit_legs(tp.client_order_id, sl, tp, lead="take")
    if not order.done and tp.done and _raw_status(leg_raw) == "held":
        # the stop leg alone still works: Alpaca holds it until it can trigger
        order = dataclasses.replace(
            order, status="partially_filled" if order.filled_qty > 0 else "accepted")
    return order


def _plain_order(raw: Any, root_of: Callable[[Any], str],
                 scrub: Callable[[Any], str]) -> Order:
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
            reason = scrub(_f(raw, field))
            break
    if not reason and status in ("rejected", "cancelled", "expired"):
        when = _f(raw, {"rejected": "failed_at", "cancelled": "canceled_at",
                        "expired": "expired_at"}[status])
        reason = f"{raw_status} by Alpaca" + (f" at {when}" if when else "")
    return Order(
        client_order_id=root_of(raw),
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


def request_model(request: OrderRequest) -> Any:
    """The alpaca-py request model of an order (an exit with a take-profit: an OCO)."""
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
