"""IBBroker at ib_async's boundary: a fake `IB` that holds REAL ib_async objects.

`FakeIB` has the methods and events of `ib_async.IB` that the adapter uses (connect,
isConnected, disconnect, managedAccounts, qualifyContracts, placeOrder, cancelOrder, trades,
openTrades, fills, reqExecutions, positions, portfolio, accountValues, accountSummary, sleep,
errorEvent, commissionReportEvent) and returns real `Trade`, `OrderStatus`, `TradeLogEntry`,
`Fill`, `Execution`, `CommissionReport`, `Position`, `PortfolioItem` and `AccountValue`
objects. Its other methods (ack, execute, commission, reject, drop, ...) play TWS plus
ib_async's wrapper: they change those objects the way ib_async does (status and log entries
with error codes, fills appended to `trade.fills`, the commission report updated in place,
and on reconnect a fresh session: new Trade/Fill objects, completed orders without orderId,
executions re-sent; an execution of an order in an OCA group (ocaType 1) cancels the
group's other working orders; `fail_refs` / `reject_refs` lose or refuse the placement of
one orderRef).

Values are modelled on tests' fixtures/ib (printed objects from the ib_async and ib_insync
ordering notebooks, BSD-2-Clause): execIds like '00004466.598e7df4.01.01', permIds,
account DU772802, AAPL conId 265598, NetLiquidation 500009.99 / TotalCashValue 406734.00 /
BuyingPower 1906763.98 with their '-S' and BASE variants, the IWM/AAPL/EURUSD positions.
The error-201 text is modelled on TWS's "Order rejected - reason:" message (hand-written).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

pytest.importorskip("ib_async")

from eventkit import Event  # noqa: E402  (ib_async's event library)
from ib_async import (  # noqa: E402
    AccountValue,
    CommissionReport,
    Execution,
    Fill,
    Forex,
    OrderStatus,
    PortfolioItem,
    Stock,
    Trade,
    TradeLogEntry,
)
from ib_async import Position as IBPosition  # noqa: E402

from mltrader.live.brokers.base import (  # noqa: E402
    Broker,
    BrokerError,
    OrderRejected,
    OrderRequest,
    TransientBrokerError,
    client_order_id,
)
from mltrader.live.brokers.ib import IBBroker  # noqa: E402

T0 = datetime(2019, 12, 31, 17, 19, 7, tzinfo=UTC)
REJECT_201 = ("Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE "
              "DESIRED POSITION YOUR EQUITY WITH LOAN VALUE [406734.00 USD] MUST EXCEED THE "
              "INITIAL MARGIN [2000000.00 USD]")


class FakeIB:
    """The slice of ib_async.IB the adapter uses, over real ib_async objects."""

    def __init__(self, accounts: tuple[str, ...] = ("DU772802",)) -> None:
        self.errorEvent = Event("errorEvent")
        self.commissionReportEvent = Event("commissionReportEvent")
        self.accounts = list(accounts)
        self.connected = False
        self.connect_calls: list[tuple] = []
        self.refuse_connects = 0
        self.client_id = 0
        self.placed: list = []
        self.cancelled: list = []
        self.req_exec_calls = 0
        self.server_executions: list[Fill] = []  # executions only reqExecutions returns
        self.trades_: list[Trade] = []
        self.fills_: list[Fill] = []
        self.positions_: list[IBPosition] = []
        self.portfolio_: list[PortfolioItem] = []
        self.values_: list[AccountValue] = []
        self.now = 0.0
        self.backoffs: list[float] = []
        self.on_sleep: list = []
        self.auto_ack = True
        self.place_fault: str | None = None  # "before" / "after" the order reached TWS
        self.fail_refs: dict[str, int] = {}  # orderRef -> placements lost with the socket
        self.reject_refs: dict[str, tuple[int, str]] = {}  # orderRef -> TWS's refusal
        self.next_order_id = 23
        self.next_perm = 1710981560
        self.known = {"AAPL": 265598, "IWM": 9579970}

    # ----- the ib_async.IB surface ------------------------------------------------
    def connect(self, host, port, clientId, timeout=4, readonly=False, account="", **kw):
        self.connect_calls.append((host, port, clientId, timeout, account))
        if self.refuse_connects:
            self.refuse_connects -= 1
            raise ConnectionRefusedError(111, f"Connect call failed ('{host}', {port})")
        self.client_id = clientId
        self.connected = True
        self._new_session()
        return self

    def isConnected(self):
        return self.connected

    def disconnect(self):
        self.connected = False

    def managedAccounts(self):
        return list(self.accounts)

    def qualifyContracts(self, *contracts):
        out = []
        for c in contracts:
            if c.symbol not in self.known:
                out.append(None)  # ib_async 2.x: None in the slot of an unknown contract
                continue
            c.conId, c.primaryExchange = self.known[c.symbol], "NASDAQ"
            out.append(c)
        return out

    def placeOrder(self, contract, order):
        self._need()
        self.placed.append(order)
        if self.place_fault == "before" or self.fail_refs.get(order.orderRef, 0) > 0:
            if self.place_fault == "before":
                self.place_fault = None
            else:
                self.fail_refs[order.orderRef] -= 1
            self.connected = False
            raise ConnectionError("Not connected")
        for trade in self.trades_:
            if order.orderId and trade.order is order:  # a modification, as in ib_async
                trade.log.append(TradeLogEntry(self._time(), trade.orderStatus.status,
                                               "Modify"))
                return trade
        order.clientId, order.orderId = self.client_id, self.next_order_id
        self.next_order_id += 1
        trade = Trade(contract, order, OrderStatus(orderId=order.orderId,
                                                   status="PendingSubmit"), [],
                      [TradeLogEntry(self._time(), "PendingSubmit", "")])
        self.trades_.append(trade)
        if self.place_fault == "after":  # sent, then the socket died
            self.place_fault, self.connected = None, False
            raise ConnectionError("Socket disconnect")
        if order.orderRef in self.reject_refs:
            code, text = self.reject_refs[order.orderRef]
            self.on_sleep.append(lambda: self.reject(trade, code, text))
        elif self.auto_ack:
            self.on_sleep.append(lambda: self.ack(trade))
        return trade

    def cancelOrder(self, order, manualCancelOrderTime=""):
        self._need()
        self.cancelled.append(order)
        trade = next(t for t in self.trades_ if t.order is order)
        self._status(trade, "PendingCancel")
        self.on_sleep.append(lambda: self.reject(trade, 202, "Order Canceled - reason:"))
        return trade

    def trades(self):
        self._need()
        return list(self.trades_)

    def openTrades(self):
        self._need()
        return [t for t in self.trades_ if t.orderStatus.status not in OrderStatus.DoneStates]

    def fills(self):
        self._need()
        return list(self.fills_)

    def reqExecutions(self, execFilter=None):
        self._need()
        self.req_exec_calls += 1
        return list(self.fills_) + list(self.server_executions)

    def positions(self, account=""):
        self._need()
        return [p for p in self.positions_ if not account or p.account == account]

    def portfolio(self, account=""):
        self._need()
        return [p for p in self.portfolio_ if not account or p.account == account]

    def accountValues(self, account=""):
        self._need()
        return [v for v in self.values_ if not account or v.account == account]

    def accountSummary(self, account=""):
        return self.accountValues(account)

    def sleep(self, secs=0.0):
        self.now += secs
        pending, self.on_sleep = self.on_sleep, []
        for action in pending:
            action()
        return True

    # ----- test helpers: TWS + ib_async's wrapper ---------------------------------
    def clock(self):
        return self.now

    def backoff_sleep(self, secs):
        self.backoffs.append(secs)

    def _need(self):
        if not self.connected:
            raise ConnectionError("Not connected")

    def _time(self):
        return T0 + timedelta(seconds=self.now, microseconds=len(self.fills_) * 1000
                              + sum(len(t.log) for t in self.trades_))

    def drop(self):
        """The socket died (TWS restarted, network): ib_async's client is not ready."""
        self.connected = False

    def _new_session(self):
        """What ib_async holds after (re)connecting: wrapper.reset(), then open orders
        (same orderId for this clientId), completed orders (status only, no orderId, no
        filled qty, no log) and the day's executions re-sent, linked by permId."""
        by_perm = {}
        trades = []
        for old in self.trades_:
            order = copy.copy(old.order)
            if old.orderStatus.status in OrderStatus.DoneStates:
                order.orderId = order.clientId = 0
                status = OrderStatus(status=old.orderStatus.status)
            else:
                status = copy.copy(old.orderStatus)
            trade = Trade(old.contract, order, status, [], [])
            trades.append(trade)
            by_perm[order.permId] = trade
        fills = []
        for old in self.fills_:
            fill = Fill(old.contract, copy.copy(old.execution),
                        CommissionReport(**dataclasses.asdict(old.commissionReport)),
                        old.execution.time)
            fills.append(fill)
            if fill.execution.permId in by_perm:
                by_perm[fill.execution.permId].fills.append(fill)
        self.trades_, self.fills_ = trades, fills

    def trade(self, ref):
        return next(t for t in self.trades_ if t.order.orderRef == ref)

    def ack(self, trade, status="Submitted"):
        if not trade.order.permId:
            trade.order.permId = self.next_perm
            self.next_perm += 1
        self._status(trade, status)

    def _status(self, trade, status):
        st = trade.orderStatus
        filled = sum(f.execution.shares for f in trade.fills)
        value = sum(f.execution.shares * f.execution.price for f in trade.fills)
        st.status, st.permId, st.clientId = status, trade.order.permId, trade.order.clientId
        st.filled, st.remaining = filled, trade.order.totalQuantity - filled
        st.avgFillPrice = value / filled if filled else 0.0
        trade.log.append(TradeLogEntry(self._time(), status, ""))

    def execute(self, trade, shares, price, exec_id, commission=None, link=True):
        """execDetails + orderStatus of a live execution, as ib_async records them."""
        prior = sum(f.execution.shares for f in trade.fills)
        ex = Execution(execId=exec_id, time=self._time(), acctNumber=self.accounts[0],
                       exchange="ISLAND", side="BOT" if trade.order.action == "BUY" else "SLD",
                       shares=float(shares), price=price, permId=trade.order.permId,
                       clientId=trade.order.clientId, orderId=trade.order.orderId,
                       cumQty=prior + shares, avgPrice=price, orderRef=trade.order.orderRef)
        fill = Fill(trade.contract, ex, CommissionReport(), self._time())
        self.fills_.append(fill)
        if link:
            trade.fills.append(fill)
            trade.log.append(TradeLogEntry(self._time(), trade.orderStatus.status,
                                           f"Fill {float(shares)}@{price}"))
            done = prior + shares >= trade.order.totalQuantity
            self._status(trade, "Filled" if done else trade.orderStatus.status)
            group = trade.order.ocaGroup  # ocaType 1: a fill cancels the rest of the group
            for other in self.trades_ if group else []:
                if other is not trade and other.order.ocaGroup == group and \
                        other.orderStatus.status not in OrderStatus.DoneStates:
                    self._status(other, "Cancelled")
        if commission is not None:
            self.commission(exec_id, commission)
        return fill

    def resend(self, fill):
        """The same execution delivered again as a new Fill object (same execId)."""
        again = Fill(fill.contract, copy.copy(fill.execution),
                     CommissionReport(**dataclasses.asdict(fill.commissionReport)), fill.time)
        self.fills_.append(again)
        return again

    def commission(self, exec_id, amount):
        """commissionReport: ib_async updates the fill's report in place, then emits."""
        report = CommissionReport(execId=exec_id, commission=amount, currency="USD")
        fill = next((f for f in self.fills_ if f.execution.execId == exec_id), None)
        trade = None
        if fill is not None:
            for f in self.fills_:
                if f.execution.execId == exec_id:
                    f.commissionReport.execId = exec_id
                    f.commissionReport.commission = amount
                    f.commissionReport.currency = "USD"
            trade = next((t for t in self.trades_
                          if t.order.permId == fill.execution.permId), None)
        self.commissionReportEvent.emit(trade, fill, report)

    def reject(self, trade, code, text):
        """wrapper.error for an order error: status Cancelled, log entry with the code,
        then errorEvent(reqId=orderId, ...)."""
        if trade.orderStatus.status not in OrderStatus.DoneStates:
            trade.orderStatus.status = "Cancelled"
            trade.log.append(TradeLogEntry(self._time(), "Cancelled",
                                           f"Error {code}, reqId {trade.order.orderId}: {text}",
                                           code))
        self.errorEvent.emit(trade.order.orderId, code, text, trade.contract)


def make(fake: FakeIB | None = None, **kw) -> tuple[IBBroker, FakeIB]:
    fake = fake or FakeIB()
    kw.setdefault("sleep", fake.backoff_sleep)
    return IBBroker(ib=fake, clock=fake.clock, **kw), fake


def req(cid="mlt-test-AAPL-0001", side="buy", qty=100.0, **kw) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=kw.pop("symbol", "AAPL"), side=side,
                        qty=qty, **kw)


def events(broker):
    return [(u.event, u.fill.fill_id if u.fill else None) for u in broker.updates()]


# ----------------------------------------------------------------------- construction
def test_is_a_broker_and_connects_to_paper_port_lazily():
    broker, fake = make()
    assert isinstance(broker, Broker) and broker.name == "ib"
    assert fake.connect_calls == []  # nothing until the first call
    assert broker.open_orders() == []
    assert fake.connect_calls == [("127.0.0.1", 7497, 1, 10.0, "")]


@pytest.mark.parametrize("port", [7496, 4001])
def test_live_port_refused_without_confirmation(port):
    with pytest.raises(BrokerError, match="live_confirmed=True"):
        IBBroker(port=port, ib=FakeIB())
    broker, fake = make(port=port, live_confirmed=True)
    broker.open_orders()
    assert fake.connect_calls[0][1] == port


def test_live_account_behind_a_paper_port_is_refused():
    broker, fake = make(FakeIB(accounts=("U1234567",)))
    with pytest.raises(BrokerError, match="LIVE account U1234567"):
        broker.positions()
    assert not fake.connected
    ok, _ = make(FakeIB(accounts=("U1234567",)), live_confirmed=True, port=7496)
    assert ok.positions() == {}


def test_several_accounts_need_an_account_argument():
    broker, _ = make(FakeIB(accounts=("DU1", "DU2")))
    with pytest.raises(BrokerError, match="several accounts"):
        broker.positions()
    chosen, _ = make(FakeIB(accounts=("DU1", "DU2")), account="DU2")
    assert chosen.positions() == {}


def test_creates_a_real_ib_client_without_connecting():
    import ib_async

    broker = IBBroker(port=4002, timeout=3)
    assert isinstance(broker._ib, ib_async.IB) and not broker._ib.isConnected()
    assert broker._ib.RequestTimeout == 3  # blocking requests cannot hang forever
    handlers = len(broker._ib.errorEvent)
    broker.close()
    assert len(broker._ib.errorEvent) == handlers - 1  # our errorEvent handler is gone


def test_missing_ib_async_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ib_async", None)
    with pytest.raises(BrokerError, match=r'pip install "mltrader\[live\]"'):
        IBBroker()


# ----------------------------------------------------------------------- submit
def test_submit_places_order_with_order_ref_and_maps_it():
    broker, fake = make()
    cid = client_order_id("momo", pd.Timestamp("2024-01-02", tz="UTC"), "AAPL", "open")
    order = broker.submit(req(cid, qty=100, type="limit", limit_price=187.12,
                              time_in_force="gtc"))
    assert len(fake.placed) == 1
    placed = fake.placed[0]
    assert (placed.orderRef, placed.action, placed.totalQuantity, placed.orderType,
            placed.lmtPrice, placed.tif, placed.account) == (cid, "BUY", 100.0, "LMT",
                                                            187.12, "GTC", "DU772802")
    contract = fake.trade(cid).contract
    assert (contract.symbol, contract.secType, contract.exchange, contract.currency,
            contract.conId) == ("AAPL", "STK", "SMART", "USD", 265598)
    assert order.client_order_id == cid and order.status == "new"
    assert order.broker_id == "1710981560"  # permId once TWS acknowledged
    assert (order.type, order.limit_price, order.stop_price, order.filled_qty) == (
        "limit", 187.12, None, 0.0)
    assert order.submitted_at == pd.Timestamp(T0)


@pytest.mark.parametrize(("kw", "ib_type", "lmt", "aux"), [
    ({"type": "market"}, "MKT", None, None),
    ({"type": "stop", "stop_price": 150.0}, "STP", None, 150.0),
    ({"type": "stop_limit", "stop_price": 150.0, "limit_price": 149.5}, "STP LMT", 149.5,
     150.0),
])
def test_submit_order_types(kw, ib_type, lmt, aux):
    broker, fake = make()
    order = broker.submit(req(side="sell", qty=5, **kw))
    placed = fake.placed[0]
    assert (placed.orderType, placed.action) == (ib_type, "SELL")
    assert (placed.lmtPrice if lmt else None) == lmt
    assert (placed.auxPrice if aux else None) == aux
    assert (order.type, order.side, order.limit_price, order.stop_price) == (
        kw["type"], "sell", lmt, aux)


def test_unacknowledged_order_is_pending_and_announced_later():
    broker, fake = make()
    fake.auto_ack = False
    order = broker.submit(req())
    assert order.status == "pending" and order.broker_id == "oid:23"
    assert fake.now == pytest.approx(2.0)  # waited ack_timeout, polling ib.sleep
    assert events(broker) == []
    fake.ack(fake.trade(req().client_order_id), "PreSubmitted")
    updates = list(broker.updates())
    assert [(u.event, u.order.status) for u in updates] == [("new", "accepted")]


def test_fractional_and_unknown_symbol_rejected_before_sending():
    broker, fake = make()
    with pytest.raises(OrderRejected, match="whole shares"):
        broker.submit(req(qty=1.5))
    with pytest.raises(OrderRejected, match="'ZZZZ'"):
        broker.submit(req(symbol="ZZZZ"))
    assert fake.placed == []


# ----------------------------------------------------------------------- lifecycle
def test_submit_partial_fill_then_filled():
    broker, fake = make()
    cid = "mlt-life-AAPL"
    broker.submit(req(cid, qty=100))
    assert events(broker) == [("new", None)]
    assert events(broker) == []
    trade = fake.trade(cid)
    fake.execute(trade, 40, 155.47, "00004466.598e7df4.01.01", commission=1.0)
    [update] = broker.updates()
    assert update.event == "partial_fill"
    assert update.order.status == "partially_filled" and update.order.filled_qty == 40
    fill = update.fill
    assert (fill.fill_id, fill.client_order_id, fill.broker_id, fill.symbol, fill.side,
            fill.qty, fill.price, fill.commission) == (
        "00004466.598e7df4.01.01", cid, "1710981560", "AAPL", "buy", 40.0, 155.47, 1.0)
    assert fill.time == pd.Timestamp(trade.fills[0].execution.time)
    assert str(fill.time.tz) == "UTC"
    fake.execute(trade, 60, 155.50, "00004466.598e7df5.01.01", commission=1.5)
    [update] = broker.updates()
    assert update.event == "fill" and update.fill.qty == 60 and update.fill.commission == 1.5
    order = broker.get_order(cid)
    assert order.status == "filled" and order.filled_qty == 100
    assert order.avg_fill_price == pytest.approx((40 * 155.47 + 60 * 155.50) / 100)
    assert events(broker) == []


def test_rejection_201_raises_with_reason_and_hint():
    broker, fake = make()
    fake.auto_ack = False
    cid = "mlt-big-AAPL"
    fake.on_sleep.append(lambda: fake.reject(fake.trade(cid), 201, REJECT_201))
    with pytest.raises(OrderRejected, match="EQUITY WITH LOAN") as err:
        broker.submit(req(cid, qty=10_000))
    assert "buying power" in str(err.value)
    order = broker.get_order(cid)
    assert order.status == "rejected" and order.reason.startswith("IB error 201: Order rejected")
    assert events(broker) == []  # submit already said so
    # the same id again: IB knows it, nothing is sent a second time
    assert broker.submit(req(cid, qty=10_000)).status == "rejected"
    assert len(fake.placed) == 1


def test_late_rejection_comes_as_update_from_trade_log():
    broker, fake = make()
    fake.auto_ack = False
    cid = "mlt-late-AAPL"
    assert broker.submit(req(cid)).status == "pending"
    trade = fake.trade(cid)
    # only the trade log has it (the errorEvent fired before this adapter subscribed)
    trade.orderStatus.status = "Cancelled"
    trade.log.append(TradeLogEntry(T0, "Cancelled", f"Error 201, reqId {trade.order.orderId}: "
                                   f"{REJECT_201}", 201))
    [update] = broker.updates()
    assert update.event == "rejected" and update.order.status == "rejected"
    assert "YOUR ORDER IS NOT ACCEPTED" in update.order.reason


def test_rejection_reason_survives_a_reconnect():
    """After a reconnect the completed order has no log: the errorEvent's text is kept."""
    broker, fake = make()
    fake.auto_ack = False
    cid = "mlt-rej-reconn"
    broker.submit(req(cid))
    fake.reject(fake.trade(cid), 201, REJECT_201)
    fake.drop()
    order = broker.get_order(cid)
    assert len(fake.connect_calls) == 2 and fake.trade(cid).log == []
    assert order.status == "rejected" and "201" in order.reason


def test_inactive_is_rejected():
    broker, fake = make()
    broker.submit(req("mlt-inactive"))
    fake.ack(fake.trade("mlt-inactive"), "Inactive")
    # never seen working by updates(): no "new", only the rejection
    assert [(u.event, u.order.status) for u in broker.updates()] == [("rejected", "rejected")]


def test_cancel():
    broker, fake = make()
    cid = "mlt-cancel-AAPL"
    broker.submit(req(cid, type="limit", limit_price=0.10))
    assert events(broker) == [("new", None)]
    broker.cancel(cid)
    assert fake.cancelled == [fake.trade(cid).order]
    [update] = broker.updates()  # TWS: error 202 "Order Canceled", status Cancelled
    assert update.event == "canceled" and update.order.status == "cancelled"
    assert "202" in update.order.reason
    broker.cancel(cid)  # already cancelled: nothing sent
    assert len(fake.cancelled) == 1
    with pytest.raises(BrokerError, match="no order"):
        broker.cancel("mlt-never-sent")


def test_partial_fill_then_cancel_is_cancelled_not_rejected():
    broker, fake = make()
    cid = "mlt-pc"
    broker.submit(req(cid, qty=100, type="limit", limit_price=155.0))
    fake.execute(fake.trade(cid), 30, 155.0, "0001.aa.01.01", commission=1.0)
    broker.cancel(cid)
    fake.sleep(0)
    got = [(u.event, u.order.status) for u in broker.updates()]
    assert got == [("new", "cancelled"), ("partial_fill", "cancelled"),
                   ("canceled", "cancelled")]


def test_replace_modifies_in_place_keeping_the_id():
    broker, fake = make()
    cid = "mlt-repl"
    broker.submit(req(cid, type="limit", limit_price=0.05))
    order = broker.replace(cid, limit_price=0.10, qty=200)
    assert len(fake.placed) == 2 and fake.placed[1] is fake.placed[0]  # same order object
    assert fake.trade(cid).log[-1].message == "Modify"
    assert (order.client_order_id, order.limit_price, order.qty) == (cid, 0.10, 200)
    with pytest.raises(BrokerError, match="no stop price"):
        broker.replace(cid, stop_price=1.0)


# ----------------------------------------------------------------------- idempotency
def test_duplicate_submit_returns_the_known_order():
    broker, fake = make()
    cid = "mlt-dup-AAPL"
    first = broker.submit(req(cid))
    again = broker.submit(req(cid))
    assert len(fake.placed) == 1
    assert again.broker_id == first.broker_id and again.status == "new"
    # a restarted process (new adapter, new session) finds it by orderRef too
    fake.drop()
    restarted, _ = make(fake)
    assert restarted.submit(req(cid)).broker_id == first.broker_id
    assert len(fake.placed) == 1


def test_completed_order_known_only_from_executions_is_not_resent():
    fake = FakeIB()
    broker, _ = make(fake)
    cid = "mlt-done-yesterday"
    broker.submit(req(cid, qty=100))
    fake.execute(fake.trade(cid), 100, 155.47, "00004466.598e7df4.01.01", commission=1.0)
    # TWS no longer lists the order; ib_async has no fills; only reqExecutions knows
    fake.server_executions = list(fake.fills_)
    fake.trades_, fake.fills_ = [], []
    fake.req_exec_calls = 0
    fresh, _ = make(fake)
    order = fresh.submit(req(cid, qty=100))
    assert len(fake.placed) == 1 and fake.req_exec_calls == 1
    assert (order.status, order.filled_qty, order.avg_fill_price) == ("filled", 100, 155.47)


def test_order_reached_tws_before_connection_dropped_is_not_resent():
    broker, fake = make()
    broker.open_orders()
    fake.place_fault = "after"
    cid = "mlt-drop-after"
    order = broker.submit(req(cid))
    assert len(fake.placed) == 1 and len(fake.connect_calls) == 2
    assert order.client_order_id == cid


def test_order_lost_with_connection_is_sent_again_once():
    broker, fake = make()
    broker.open_orders()
    fake.place_fault = "before"
    order = broker.submit(req("mlt-drop-before"))
    assert len(fake.placed) == 2 and len(fake.trades_) == 1
    assert fake.placed[0] is not fake.placed[1]  # a fresh ib_async Order per attempt
    assert order.status == "new"


# ----------------------------------------------------------------------- fills
def test_execution_resent_counts_once():
    broker, fake = make()
    cid = "mlt-resend"
    broker.submit(req(cid, qty=100))
    fill = fake.execute(fake.trade(cid), 100, 155.47, "00004466.598e7df4.01.01",
                        commission=1.0)
    fake.resend(fill)
    fake.resend(fill)
    got = events(broker)
    assert got == [("new", None), ("fill", "00004466.598e7df4.01.01")]
    assert broker.get_order(cid).filled_qty == 100
    fake.resend(fill)
    assert events(broker) == []


def test_execution_correction_is_not_a_second_fill(caplog):
    broker, fake = make()
    cid = "mlt-corr"
    broker.submit(req(cid, qty=200))
    trade = fake.trade(cid)
    fake.execute(trade, 100, 155.47, "00004466.598e7df4.01.01", commission=1.0)
    assert ("partial_fill", "00004466.598e7df4.01.01") in events(broker)
    fake.execute(trade, 100, 155.40, "00004466.598e7df4.01.02", commission=1.0, link=False)
    with caplog.at_level(logging.WARNING, logger="mltrader.live.ib"):
        assert events(broker) == []
    assert "correction" in caplog.text


def test_fill_waits_for_its_commission_report():
    broker, fake = make()
    cid = "mlt-comm-after"
    broker.submit(req(cid, qty=100))
    events(broker)
    fake.execute(fake.trade(cid), 100, 155.47, "00004466.598e7df4.01.01")  # no report yet
    assert events(broker) == []  # held, also the order's status events
    fake.now += 1.0
    fake.commission("00004466.598e7df4.01.01", 1.0)
    [update] = broker.updates()
    assert update.event == "fill" and update.fill.commission == 1.0


def test_cancel_event_waits_for_the_fill_before_it():
    broker, fake = make()
    cid = "mlt-comm-cancel"
    broker.submit(req(cid, qty=100, type="limit", limit_price=155.0))
    events(broker)
    fake.execute(fake.trade(cid), 30, 155.0, "0002.bb.01.01")  # commission not yet there
    broker.cancel(cid)
    fake.sleep(0)
    assert events(broker) == []
    fake.commission("0002.bb.01.01", 1.0)
    assert events(broker) == [("partial_fill", "0002.bb.01.01"), ("canceled", None)]


def test_filled_status_before_the_execution_still_reports_the_fill():
    broker, fake = make()
    cid = "mlt-status-first"
    broker.submit(req(cid, qty=100))
    trade = fake.trade(cid)
    st = trade.orderStatus  # orderStatus Filled arrives before execDetails
    st.status, st.filled, st.remaining, st.avgFillPrice = "Filled", 100.0, 0.0, 155.47
    assert events(broker) == [("new", None)]
    fake.execute(trade, 100, 155.47, "00004466.598e7df4.01.01", commission=1.0)
    assert events(broker) == [("fill", "00004466.598e7df4.01.01")]


def test_commission_report_before_the_fill_is_used():
    broker, fake = make()
    cid = "mlt-comm-first"
    broker.submit(req(cid, qty=100))
    events(broker)
    fake.commission("00004466.598e7df4.01.01", 1.25)  # arrives before its execution
    fake.execute(fake.trade(cid), 100, 155.47, "00004466.598e7df4.01.01")
    fake.fills_[-1].commissionReport.execId = ""  # the fill itself has no report
    [update] = broker.updates()
    assert update.fill.commission == 1.25


def test_missing_commission_gives_up_after_the_wait(caplog):
    broker, fake = make(commission_wait=5.0)
    cid = "mlt-comm-never"
    broker.submit(req(cid, qty=100))
    events(broker)
    fake.execute(fake.trade(cid), 100, 155.47, "0009.ff.01.01")
    assert events(broker) == []
    fake.now += 5.0
    with caplog.at_level(logging.WARNING, logger="mltrader.live.ib"):
        [update] = broker.updates()
        assert update.fill.commission == 0.0
        fake.commission("0009.ff.01.01", 1.0)
    assert "arrived after its fill" in caplog.text


# ----------------------------------------------------------------------- connection
def test_disconnect_and_reconnect_resyncs_without_double_counting():
    broker, fake = make()
    cid = "mlt-reconn"
    broker.submit(req(cid, qty=100))
    trade = fake.trade(cid)
    fake.execute(trade, 40, 155.47, "00004466.598e7df4.01.01", commission=1.0)
    assert [e for e, _ in events(broker)] == ["new", "partial_fill"]
    fake.drop()
    fake.execute(trade, 60, 155.50, "00004466.598e7df5.01.01", commission=1.5)  # meanwhile
    got = events(broker)  # reconnects: new session, executions re-sent as new objects
    assert len(fake.connect_calls) == 2
    assert got == [("fill", "00004466.598e7df5.01.01")]
    assert fake.trade(cid) is not trade and fake.trade(cid).order.orderId == 0
    order = broker.get_order(cid)
    assert (order.status, order.filled_qty) == ("filled", 100)
    assert order.avg_fill_price == pytest.approx(155.488)
    assert events(broker) == []


def test_reconnect_attempts_are_bounded():
    broker, fake = make(max_reconnects=2, backoff=0.5)
    fake.refuse_connects = 10
    with pytest.raises(TransientBrokerError, match="cannot reach TWS/IB Gateway"):
        broker.positions()
    assert len(fake.connect_calls) == 3
    assert fake.backoffs == [0.5, 1.0]
    fake.refuse_connects = 1
    assert broker.positions() == {}  # one refusal, then connected


# ----------------------------------------------------------------------- account
def test_account_and_positions_mapping():
    broker, fake = make()
    acct = "DU772802"
    for tag, value, cur in [
        ("NetLiquidation-S", "1.00", "USD"), ("TotalCashValue-S", "2.00", "USD"),
        ("NetLiquidation", "500009.99", "USD"), ("TotalCashValue", "406734.00", "USD"),
        ("BuyingPower", "1906763.98", "USD"), ("NetLiquidationByCurrency", "500010", "BASE"),
        ("TotalCashValue", "9.00", "BASE"), ("Cushion", "0.953363", ""),
    ]:
        fake.values_.append(AccountValue(acct, tag, value, cur, ""))
    fake.values_.append(AccountValue("DU999", "NetLiquidation", "7", "USD", ""))
    account = broker.account()
    assert (account.equity, account.cash, account.buying_power, account.currency) == (
        500009.99, 406734.00, 1906763.98, "USD")
    aapl = Stock(conId=265598, symbol="AAPL", exchange="NASDAQ", currency="USD",
                 localSymbol="AAPL", tradingClass="NMS")
    iwm = Stock(conId=9579970, symbol="IWM", exchange="ARCA", currency="USD",
                localSymbol="IWM", tradingClass="IWM")
    fake.positions_ = [
        IBPosition(acct, iwm, -600.0, 149.368),
        IBPosition(acct, Forex("EURUSD", conId=12087792), 165700.0, 1.1247148664589277),
        IBPosition(acct, aapl, 2551.0, 187.1202698),
        IBPosition(acct, Stock(conId=1, symbol="MSFT"), 0.0, 0.0),
    ]
    fake.portfolio_ = [PortfolioItem(aapl, 2551.0, 155.45999145, 396578.44, 187.1202698,
                                     0.0, 0.0, acct)]
    positions = broker.positions()
    assert set(positions) == {"AAPL", "IWM"}
    assert (positions["AAPL"].qty, positions["AAPL"].avg_price,
            positions["AAPL"].market_value) == (2551.0, 187.1202698, 396578.44)
    assert (positions["IWM"].qty, positions["IWM"].market_value) == (-600.0, None)


def test_account_in_a_non_usd_base_currency():
    broker, fake = make()
    for tag, value in [("NetLiquidation", "1000"), ("TotalCashValue", "400"),
                       ("BuyingPower", "4000")]:
        fake.values_.append(AccountValue("DU772802", tag, "1", "BASE", ""))
        fake.values_.append(AccountValue("DU772802", tag, value, "EUR", ""))
    account = broker.account()
    assert (account.equity, account.cash, account.buying_power, account.currency) == (
        1000.0, 400.0, 4000.0, "EUR")


def test_account_without_values_is_an_error():
    broker, _ = make()
    with pytest.raises(BrokerError, match="NetLiquidation"):
        broker.account()


# ----------------------------------------------------------------------- protective exits
def exit_req(cid="mlt-exit-AAPL", side="sell", qty=100.0, stop=150.0, take=170.0):
    return OrderRequest(client_order_id=cid, symbol="AAPL", side=side, qty=qty, type="stop",
                        time_in_force="gtc", stop_price=stop, take_profit=take)


def test_stop_with_take_profit_is_an_oca_pair_reported_as_one_order():
    broker, fake = make()
    cid = "mlt-exit-AAPL"
    order = broker.submit(exit_req(cid))
    stop, take = fake.placed
    assert (stop.orderType, stop.action, stop.totalQuantity, stop.auxPrice, stop.orderRef,
            stop.ocaGroup, stop.ocaType, stop.tif) == (
        "STP", "SELL", 100.0, 150.0, cid, cid, 1, "GTC")
    assert (take.orderType, take.action, take.totalQuantity, take.lmtPrice, take.orderRef,
            take.ocaGroup, take.ocaType, take.tif) == (
        "LMT", "SELL", 100.0, 170.0, f"{cid}-tp", cid, 1, "GTC")
    assert (order.client_order_id, order.type, order.stop_price, order.limit_price,
            order.qty, order.status) == (cid, "stop", 150.0, 170.0, 100.0, "new")
    assert order.broker_id == str(fake.trade(cid).order.permId)
    assert [(o.client_order_id, o.limit_price) for o in broker.open_orders()] == [(cid, 170.0)]
    assert events(broker) == [("new", None)]
    # a restarted process finds both legs by orderRef: nothing is placed again
    fake.drop()
    again, _ = make(fake)
    assert again.submit(exit_req(cid)).limit_price == 170.0 and len(fake.placed) == 2
    assert [o.client_order_id for o in again.open_orders()] == [cid]


def test_take_profit_leg_fills_in_parts_under_the_exit_id():
    broker, fake = make()
    cid = "mlt-exit-AAPL"
    broker.submit(exit_req(cid))
    events(broker)
    take = fake.trade(f"{cid}-tp")
    fake.execute(take, 40, 170.0, "00004466.598e7df4.01.01", commission=1.0)
    assert fake.trade(cid).orderStatus.status == "Cancelled"  # OCA: the stop leg is gone
    [update] = broker.updates()
    assert (update.event, update.order.status, update.order.filled_qty) == (
        "partial_fill", "partially_filled", 40)
    assert (update.fill.client_order_id, update.fill.qty, update.fill.price,
            update.fill.side) == (cid, 40, 170.0, "sell")
    fake.execute(take, 60, 170.1, "00004466.598e7df5.01.01", commission=1.0)
    [update] = broker.updates()
    assert (update.event, update.order.status, update.fill.qty) == ("fill", "filled", 60)
    order = broker.get_order(cid)
    assert order.avg_fill_price == pytest.approx(170.06) and order.done
    assert [f.fill_id for f in broker.fills(cid)] == ["00004466.598e7df4.01.01",
                                                      "00004466.598e7df5.01.01"]
    assert events(broker) == []


def test_stop_leg_fill_cancels_the_take_profit():
    broker, fake = make()
    cid = "mlt-exit-AAPL"
    broker.submit(exit_req(cid))
    fake.execute(fake.trade(cid), 100, 149.9, "0003.cc.01.01", commission=1.0)
    assert fake.trade(f"{cid}-tp").orderStatus.status == "Cancelled"
    assert [(e, u.order.status) for e, u in
            ((u.event, u) for u in broker.updates())] == [("new", "filled"),
                                                          ("fill", "filled")]
    assert broker.get_order(cid).avg_fill_price == 149.9


def test_replace_moves_the_stop_leg_and_resizes_both():
    broker, fake = make()
    cid = "mlt-exit-AAPL"
    broker.submit(exit_req(cid))
    stop, take = fake.placed
    moved = broker.replace(cid, qty=100, stop_price=152.004)
    assert len(fake.placed) == 3 and fake.placed[2] is stop  # the stop leg, in place
    assert stop.auxPrice == 152.0 and take.lmtPrice == 170.0
    assert (moved.stop_price, moved.limit_price, moved.qty) == (152.0, 170.0, 100.0)
    resized = broker.replace(cid, qty=80, stop_price=152.0)
    assert fake.placed[3:] == [stop, take]  # both legs keep one size
    assert (stop.totalQuantity, take.totalQuantity, resized.qty) == (80.0, 80.0, 80.0)
    assert fake.trade(cid).log[-1].message == "Modify"
    broker.replace(cid, qty=80, stop_price=152.0)
    assert len(fake.placed) == 5  # nothing changed: nothing sent


def test_cancel_exit_cancels_both_legs():
    broker, fake = make()
    cid = "mlt-exit-AAPL"
    broker.submit(exit_req(cid))
    events(broker)
    broker.cancel(cid)
    assert fake.cancelled == [fake.trade(cid).order, fake.trade(f"{cid}-tp").order]
    assert [(u.event, u.order.status) for u in broker.updates()] == [("canceled",
                                                                      "cancelled")]
    broker.cancel(cid)
    assert len(fake.cancelled) == 2


@pytest.mark.parametrize("side,stop,take,action", [("sell", 0.0, 170.0, "SELL"),
                                                    ("buy", 1e12, 140.0, "BUY")],
                         ids=["long", "short"])
def test_take_profit_alone_is_one_limit_order(side, stop, take, action):
    broker, fake = make()
    cid = "mlt-tp-only"
    order = broker.submit(exit_req(cid, side=side, stop=stop, take=take))
    (placed,) = fake.placed
    assert (placed.orderType, placed.action, placed.lmtPrice, placed.orderRef,
            placed.ocaGroup) == ("LMT", action, take, cid, "")
    assert (order.type, order.limit_price, order.stop_price) == ("limit", take, None)
    with pytest.raises(BrokerError, match="no stop price"):
        broker.replace(cid, stop_price=150.0)


def test_exit_prices_on_the_tick_and_plain_stop_stays_single():
    broker, fake = make()
    broker.submit(req("mlt-stop", side="sell", qty=5, type="stop", stop_price=150.126))
    broker.submit(exit_req("mlt-tick", stop=150.123, take=170.4567))
    plain, stop, take = fake.placed
    assert (plain.orderType, plain.auxPrice, plain.ocaGroup) == ("STP", 150.13, "")
    assert (stop.auxPrice, take.lmtPrice) == (150.12, 170.46)
    with pytest.raises(OrderRejected, match="must lie above the stop"):
        broker.submit(exit_req("mlt-wrong", stop=150.0, take=140.0))
    assert len(fake.placed) == 3


def test_lost_take_profit_leg_is_placed_at_the_next_updates(caplog):
    broker, fake = make(max_reconnects=1)
    cid = "mlt-exit-AAPL"
    fake.fail_refs[f"{cid}-tp"] = 2  # the connection dies twice while placing it
    with caplog.at_level(logging.ERROR, logger="mltrader.live.ib"):
        order = broker.submit(exit_req(cid))
    assert "take-profit leg was not placed" in caplog.text
    assert (order.type, order.stop_price, order.limit_price) == ("stop", 150.0, None)
    assert [o.orderRef for o in fake.placed] == [cid, f"{cid}-tp", f"{cid}-tp"]
    assert [u.event for u in broker.updates()] == ["new"]  # ... and the leg is placed now
    assert [o.orderRef for o in fake.placed][-1] == f"{cid}-tp"
    assert broker.get_order(cid).limit_price == 170.0
    broker.updates()
    assert len(fake.placed) == 4  # once


def test_refused_stop_leg_cancels_the_take_profit_and_raises():
    broker, fake = make()
    cid = "mlt-exit-AAPL"
    fake.reject_refs[cid] = (201, REJECT_201)
    with pytest.raises(OrderRejected, match="stop leg: IB error 201"):
        broker.submit(exit_req(cid))
    assert fake.cancelled == [fake.trade(f"{cid}-tp").order]
    fake.sleep(0)
    order = broker.get_order(cid)
    assert order.status == "rejected" and "201" in order.reason
