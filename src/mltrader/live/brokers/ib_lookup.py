"""What TWS reports about the IB adapter's orders: order errors and commission reports as
they arrive (ib_async's events), and a client order id's trades and executions, found by
orderRef in what ib_async holds (and once per connection asked of TWS with reqExecutions),
and the qualified contract of a symbol.
"""

from __future__ import annotations

import logging
from typing import Any

from mltrader.live.brokers.base import OrderRejected
from mltrader.live.brokers.ib_session import TWSSession
from mltrader.live.brokers.ib_wire import (
    _CANCELLED,
    _LOG_ERROR,
    TP_SUFFIX,
    _exec_base,
    _is_warning,
    _num,
)

log = logging.getLogger("mltrader.live.ib")


class IBLookups(TWSSession):
    """Events and look-ups of `IBBroker`; its `__init__` sets the state below (and
    subscribes the handlers)."""

    _oid_cid: dict[int, str]
    _errors: dict[str, tuple[int, str]]
    _commissions: dict[str, float]
    _exec_cache: dict[str, Any]
    _emitted: set[str]
    _emitted_bases: dict[str, str]
    _late_warned: set[str]
    _subscribed: bool
    _contracts: dict[str, Any]

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

    def _commission(self, fill: Any) -> float | None:
        report = fill.commissionReport
        if report is not None and getattr(report, "execId", ""):
            value = _num(report.commission)
            if value is not None:
                return value
        return self._commissions.get(fill.execution.execId)

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
