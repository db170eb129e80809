"""Interactive Brokers' objects and ours: ib_async trades and executions read into domain
`Order`s and `Fill`s, account values and positions read, and `OrderRequest`s built into
ib_async orders (an OCA exit's legs told apart by orderRef). Functions without state: the
adapter passes in what it tracks (the request, the account id, how to find an order's error).

How IB's model maps onto ours (the rest of it: ib.py):
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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pandas as pd

from mltrader.live.brokers.base import (
    Fill,
    Order,
    OrderRejected,
    OrderRequest,
    Position,
    exit_kind,
    us_tick,
)

log = logging.getLogger("mltrader.live.ib")

_UNSET = 1e300  # ib_async marks unset doubles with sys.float_info.max
# ib_async order states that mean "sent, not acknowledged yet"
_WAITING = frozenset({"PendingSubmit", "ApiPending", ""})
_CANCELLED = frozenset({"Cancelled", "ApiCancelled", "Inactive"})
# error codes ib_async treats as warnings (the order stays live), plus 2100-2199
_WARNING_CODES = frozenset({105, 110, 165, 321, 329, 399, 404, 434, 492, 10167})
# errors that go with a cancel (ours or IB's), not with a refused order
_CANCEL_CODES = frozenset({202, 10147, 10148, 161})
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


def _broker_id(perm_id: Any, order_id: Any) -> str:
    return str(perm_id) if perm_id else f"oid:{order_id}"


def to_order(cid: str, trade: Any, fills: list[Any],
             order_error: Callable[[str, Any], tuple[int, str] | None]) -> Order:
    """The domain view of one IB order (`fills`: its executions, corrections left
    out); `order_error` gives the IB error that came with it, asked only when it ended
    cancelled or inactive."""
    ib_order, state = trade.order, trade.orderStatus
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
        error = order_error(cid, trade)
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
        broker_id=_broker_id(ib_order.permId, ib_order.orderId),
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


def order_from_fills(cid: str, fills: list[Any], request: OrderRequest | None) -> Order:
    """An order TWS no longer lists but whose executions carry its orderRef."""
    first = fills[0].execution
    filled = sum(float(f.execution.shares) for f in fills)
    avg = sum(float(f.execution.shares) * float(f.execution.price) for f in fills) / filled
    qty = request.qty if request is not None else filled
    return Order(
        client_order_id=cid,
        broker_id=_broker_id(first.permId, first.orderId),
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


def to_fill(cid: str, order: Order, fill: Any, commission: float) -> Fill:
    ex = fill.execution
    when = _ts(ex.time) or _ts(fill.time) or pd.Timestamp.now(tz="UTC")
    return Fill(
        client_order_id=cid,
        broker_id=_broker_id(ex.permId, ex.orderId) if ex.permId else order.broker_id,
        fill_id=ex.execId,
        symbol=order.symbol or fill.contract.symbol,
        side="sell" if ex.side.upper() in ("SLD", "SELL") else "buy",
        qty=float(ex.shares),
        price=float(ex.price),
        commission=round(commission, 6),
        time=when,
    )


def to_ib_order(request: OrderRequest, leg: str = "", account: str = "") -> Any:
    """The ib_async order for a request; an OCA exit's `leg` is "stop" or "take_profit"."""
    from ib_async import LimitOrder, MarketOrder, StopLimitOrder, StopOrder

    action = "BUY" if request.side == "buy" else "SELL"
    qty = float(round(request.qty))
    cid = request.client_order_id
    common: dict[str, Any] = dict(orderRef=cid, tif=request.time_in_force.upper(),
                                  transmit=True)
    if account:
        common["account"] = account
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


def account_tags(values: list[Any], account_id: str) -> dict[str, tuple[float, str]]:
    """NetLiquidation / TotalCashValue / BuyingPower: USD first, else a real currency
    (never 'BASE' or the '-S' segment variants)."""
    out: dict[str, tuple[float, str]] = {}
    for want_usd in (True, False):
        for v in values:
            if v.tag not in ("NetLiquidation", "TotalCashValue", "BuyingPower"):
                continue
            if account_id and v.account and v.account != account_id:
                continue
            cur = v.currency or ""
            if (cur == "USD") != want_usd or cur in ("", "BASE"):
                continue
            number = _num(v.value)
            if number is not None and v.tag not in out:
                out[v.tag] = (number, cur)
    return out


def to_positions(raws: list[Any], values: dict[int, float],
                 account_id: str) -> dict[str, Position]:
    """Stock positions from ib_async's Position objects (other accounts' and flat ones
    left out); `values`: market values by conId, from the portfolio."""
    out: dict[str, Position] = {}
    for raw in raws:
        contract = raw.contract
        if account_id and raw.account and raw.account != account_id:
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
