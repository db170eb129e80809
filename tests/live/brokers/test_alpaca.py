"""AlpacaBroker against a fake Alpaca Trading API on 127.0.0.1 (tests/live/fake_alpaca.py).

The REAL alpaca-py `TradingClient` is pointed at the fake with `url_override`. The fake keeps
an in-memory order book (look-up by id and by client order id, partial fills, fills,
cancel, replace, OCO exits with their stop leg) and injects faults per request: 429
(fixture body, with or without Retry-After), 500/502/503, a timeout (the reply comes after
the client's timeout), a dropped connection before or AFTER the order was recorded, an echo
of the request headers (a misbehaving proxy: tests that keys never leak), and business
rejections decided by rules (buying power, shorting, sub-penny). Response bodies come from
fixtures/alpaca/trading (see fake_alpaca.py for the sources). Nothing here touches the
network (`_no_network`).
"""

from __future__ import annotations

import json
import logging
import socket
import traceback

import pytest

pytest.importorskip("alpaca")

from mltrader.live.brokers.alpaca import AlpacaBroker  # noqa: E402
from mltrader.live.brokers.base import (  # noqa: E402
    Broker,
    BrokerError,
    OrderRejected,
    OrderRequest,
    TransientBrokerError,
)
from tests.live.fake_alpaca import (  # noqa: E402
    ACCOUNT,
    BY_CID,
    ERR_BUYING_POWER,
    ERR_INSUFFICIENT_QTY,
    ERR_NO_SHORT,
    ERR_QTY_INTEGER,
    ERR_SUBPENNY,
    FIXTURES,
    KEY,
    ORDER_FILLED_NOTIONAL,
    ORDER_REJECTED,
    ORDER_STRINGNUMS,
    ORDERS,
    POSITIONS,
    SECRET,
    TOO_MANY,
    FakeAlpaca,
)

# alpaca-py's package import pulls websockets.legacy (its TradingStream): not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated")


# --------------------------------------------------------------------------- no network
@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any socket connection to a host other than 127.0.0.1 raises."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if host != "127.0.0.1":
                raise OSError(f"network disabled in tests: connect to {address!r}")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


def test_network_guard_blocks_non_local_hosts():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, \
            pytest.raises(OSError, match="network disabled"):
        sock.connect(("10.255.255.1", 443))


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def fake():
    server = FakeAlpaca()
    yield server
    server.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def broker(fake, sleeps):
    b = AlpacaBroker(KEY, SECRET, url_override=fake.url, sleep=sleeps.append, timeout=0.3)
    yield b
    b.close()


def req(cid: str = "mlt-test-AAPL-0001", symbol: str = "AAPL", side: str = "buy",
        qty: float = 10, **kw) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=side, qty=qty, **kw)


# --------------------------------------------------------------------------- tests
def test_fixture_copies_match_the_recorded_files():
    pairs = {"get_account.json": ACCOUNT, "get_positions.json": POSITIONS,
             "post_order_limit_accepted_v2_stringnums.json": ORDER_STRINGNUMS,
             "order_entity_rejected.json": ORDER_REJECTED,
             "order_entity_filled_market_notional.json": ORDER_FILLED_NOTIONAL,
             "error_403_insufficient_buying_power.json": ERR_BUYING_POWER,
             "error_403_not_allowed_to_short.json": ERR_NO_SHORT,
             "error_403_insufficient_qty.json": ERR_INSUFFICIENT_QTY,
             "error_422_subpenny_limit_price.json": ERR_SUBPENNY,
             "error_422_patch_qty_must_be_integer.json": ERR_QTY_INTEGER}
    for name, body in pairs.items():
        assert json.loads((FIXTURES / name).read_text()) == body, name
    assert (FIXTURES / "error_429_body.txt").read_text().strip() == TOO_MANY


def test_is_a_broker_and_account_positions(broker):
    assert isinstance(broker, Broker) and broker.name == "alpaca"
    acct = broker.account()
    assert (acct.cash, acct.equity, acct.buying_power, acct.currency) == (
        -23140.2, 103820.56, 262113.632, "USD")
    pos = broker.positions()
    assert set(pos) == {"AAPL", "TSLA"}
    assert (pos["AAPL"].qty, pos["AAPL"].avg_price, pos["AAPL"].market_value) == (5, 100, 600)
    assert pos["TSLA"].qty == -3 and pos["TSLA"].avg_price == 250


def test_short_position_signed_when_qty_arrives_unsigned(fake, broker):
    fake.positions[1]["qty"] = "3"  # side "short" with an unsigned qty: still negative
    assert broker.positions()["TSLA"].qty == -3


@pytest.mark.parametrize("numeric", [False, True], ids=["string-numbers", "json-numbers"])
def test_submit_fill_and_updates(fake, broker, numeric):
    fake.numeric = numeric
    mkt = broker.submit(req("mlt-mkt", "AAPL", "buy", 10))
    lim = broker.submit(req("mlt-lim", "SPY", "buy", 5, type="limit", limit_price=400.0))
    assert (mkt.client_order_id, mkt.symbol, mkt.side, mkt.qty, mkt.filled_qty) == (
        "mlt-mkt", "AAPL", "buy", 10, 0)
    assert mkt.status == "accepted" and mkt.broker_id in fake.orders and not mkt.done
    assert (lim.type, lim.limit_price, lim.qty) == ("limit", 400.0, 5)
    assert len(fake.orders) == 2

    ups = list(broker.updates())
    assert sorted((u.event, u.order.client_order_id) for u in ups) == [
        ("new", "mlt-lim"), ("new", "mlt-mkt")]
    assert list(broker.updates()) == []  # nothing changed

    fake.fill(mkt.broker_id, 4, 120.0)
    (up,) = broker.updates()
    assert up.event == "partial_fill" and up.order.status == "partially_filled"
    assert (up.fill.qty, up.fill.price, up.fill.side, up.fill.symbol) == (4, 120.0, "buy",
                                                                          "AAPL")
    assert up.fill.client_order_id == "mlt-mkt" and up.fill.broker_id == mkt.broker_id

    fake.fill(mkt.broker_id, 6, 121.0)
    fake.fill(lim.broker_id, 5, 399.5)
    ups = {u.order.client_order_id: u for u in broker.updates()}
    assert ups["mlt-mkt"].event == "fill" and ups["mlt-mkt"].order.status == "filled"
    assert ups["mlt-mkt"].fill.qty == 6
    assert ups["mlt-mkt"].fill.price == pytest.approx(121.0)  # not the average (120.6)
    assert ups["mlt-mkt"].order.avg_fill_price == pytest.approx(120.6)
    assert (ups["mlt-lim"].fill.qty, ups["mlt-lim"].fill.price) == (5, 399.5)
    assert ups["mlt-mkt"].fill.fill_id != up.fill.fill_id
    assert list(broker.updates()) == []
    assert broker.get_order("mlt-mkt").done


def test_replayed_updates_reuse_fill_ids(fake, broker, sleeps):
    o = broker.submit(req("mlt-replay", qty=10))
    fake.fill(o.broker_id, 4, 120.0)
    fake.fill(o.broker_id, 6, 121.0)
    first = [u.fill.fill_id for u in broker.updates() if u.fill]
    assert first == [f"{o.broker_id}:10"]  # both fills landed between two polls: one event
    # a restarted runner: a new adapter instance learns the order again and replays it
    again = AlpacaBroker(KEY, SECRET, url_override=fake.url, sleep=sleeps.append, timeout=0.3)
    assert again.get_order("mlt-replay").filled_qty == 10
    replay = list(again.updates())
    assert [u.event for u in replay] == ["new", "fill"]
    assert replay[1].fill.fill_id == first[0] and replay[1].fill.qty == 10


def test_partial_fill_ids_are_cumulative_and_stable(fake, broker, sleeps):
    o = broker.submit(req("mlt-cum", qty=10))
    fake.fill(o.broker_id, 4, 120.0)
    ids = [u.fill.fill_id for u in broker.updates() if u.fill]
    fake.fill(o.broker_id, 6, 121.0)
    ids += [u.fill.fill_id for u in broker.updates() if u.fill]
    assert ids == [f"{o.broker_id}:4", f"{o.broker_id}:10"]


def test_cancel_and_replace(fake, broker):
    o = broker.submit(req("mlt-rep", "SPY", "buy", 5, type="limit", limit_price=400.0))
    broker.updates()
    new = broker.replace("mlt-rep", qty=6, limit_price=401.0)
    assert new.client_order_id == "mlt-rep" and new.broker_id != o.broker_id
    assert (new.qty, new.limit_price) == (6, 401.0)
    assert fake.orders[o.broker_id]["status"] == "replaced"
    assert fake.orders[new.broker_id]["client_order_id"] == "mlt-rep-r1"
    assert len(fake.orders) == 2
    got = broker.get_order("mlt-rep")
    assert (got.broker_id, got.client_order_id, got.limit_price) == (
        new.broker_id, "mlt-rep", 401.0)
    ups = [(u.event, u.order.broker_id) for u in broker.updates()]
    assert ("replaced", o.broker_id) in ups and ("new", new.broker_id) in ups
    # a second replace follows the chain
    newer = broker.replace("mlt-rep", limit_price=402.0)
    assert fake.orders[newer.broker_id]["client_order_id"] == "mlt-rep-r2"
    assert [x.client_order_id for x in broker.open_orders()] == ["mlt-rep"]
    broker.cancel("mlt-rep")
    assert fake.orders[newer.broker_id]["status"] == "canceled"
    assert fake.orders[new.broker_id]["status"] == "replaced"
    ups = [(u.event, u.order.client_order_id, u.order.status) for u in broker.updates()]
    assert ("canceled", "mlt-rep", "cancelled") in ups
    assert broker.open_orders() == []
    broker.cancel("mlt-rep")  # already cancelled: nothing to do, no error
    assert fake.count("DELETE", f"{ORDERS}/{newer.broker_id}") == 1


def test_replace_with_fractional_qty_refused(fake, broker):
    broker.submit(req("mlt-frac", "SPY", "buy", 5, type="limit", limit_price=400.0))
    with pytest.raises(OrderRejected, match="whole number"):
        broker.replace("mlt-frac", qty=1.5)
    assert fake.count("PATCH", ORDERS) == 0 and len(fake.orders) == 1


def test_replace_dropped_after_accept_is_not_sent_twice(fake, broker, sleeps):
    o = broker.submit(req("mlt-rdrop", "SPY", "buy", 5, type="limit", limit_price=400.0))
    fake.fault("PATCH", f"{ORDERS}/{o.broker_id}", "drop_after")
    new = broker.replace("mlt-rdrop", limit_price=401.0)
    assert len(fake.orders) == 2 and new.limit_price == 401.0
    assert fake.count("PATCH", f"{ORDERS}/{o.broker_id}") == 1
    assert sleeps == [0.5]


def test_cancel_unknown_and_get_unknown(broker):
    assert broker.get_order("mlt-nope") is None
    with pytest.raises(BrokerError, match="no order"):
        broker.cancel("mlt-nope")


def test_rejected_after_acceptance_is_reported(fake, broker):
    o = broker.submit(req("mlt-rej", qty=1))
    broker.updates()
    fake.set_status(o.broker_id, "rejected")
    (up,) = broker.updates()
    assert up.event == "rejected" and up.order.status == "rejected" and up.order.done
    assert "rejected" in up.order.reason and up.fill is None


def test_fixture_orders_map_to_domain(fake, broker):
    fake.seed(ORDER_REJECTED)
    fake.seed(ORDER_FILLED_NOTIONAL)
    rej = broker.get_order(ORDER_REJECTED["client_order_id"])
    assert rej.status == "rejected" and rej.filled_qty == 0 and rej.avg_fill_price is None
    assert "2022-03-08T16:51:07.520169Z" in rej.reason
    filled = broker.get_order(ORDER_FILLED_NOTIONAL["client_order_id"])
    assert (filled.status, filled.filled_qty, filled.avg_fill_price, filled.qty) == (
        "filled", 72.865432211, 417.8, 72.865432211)
    assert str(filled.submitted_at) == "2022-03-08 16:51:07.438495+00:00"
    ups = {u.order.client_order_id: u for u in broker.updates() if u.fill}
    f = ups[ORDER_FILLED_NOTIONAL["client_order_id"]].fill
    assert (f.qty, f.price) == (72.865432211, 417.8)


# ---- faults
FAULTS = ["429", "500", "502", "503", "timeout", "drop"]


@pytest.mark.parametrize("kind", FAULTS)
def test_reads_retry_each_fault_class(fake, broker, sleeps, kind):
    fake.fault("GET", "/v2/account", kind)
    assert broker.account().equity == 103820.56
    assert fake.count("GET", "/v2/account") == 2 and sleeps == [0.5]


@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "drop"])
def test_submit_fault_before_accept_resends_once(fake, broker, sleeps, kind):
    """Fault before the order was recorded: look-up finds nothing, so it is sent again.
    (The fake's timeout records the order first: it is in the next test.)"""
    fake.fault("POST", ORDERS, kind)
    o = broker.submit(req("mlt-f1"))
    assert len(fake.orders) == 1 and o.broker_id in fake.orders
    assert fake.count("POST", ORDERS) == 2 and fake.count("GET", BY_CID) == 1
    assert sleeps == [0.5]


@pytest.mark.parametrize("kind", ["drop_after", "timeout"])
def test_submit_fault_after_accept_makes_exactly_one_order(fake, broker, sleeps, caplog, kind):
    """The nasty case: Alpaca has the order but the client saw an error."""
    caplog.set_level(logging.INFO, logger="mltrader.live.alpaca")
    fake.fault("POST", ORDERS, kind)
    o = broker.submit(req("mlt-nasty"))
    assert len(fake.orders) == 1 and o.broker_id in fake.orders
    assert fake.count("POST", ORDERS) == 1  # never resent
    assert fake.count("GET", BY_CID) == 1
    assert o.client_order_id == "mlt-nasty" and sleeps == [0.5]
    faults = [r for r in caplog.records if r.name == "mltrader.live.alpaca"]
    assert faults and all("mlt-nasty" in r.getMessage() for r in faults)


def test_submit_lookup_also_fails_then_recovers(fake, broker, sleeps):
    fake.fault("POST", ORDERS, "drop_after")
    fake.fault("GET", BY_CID, "503", "429")
    o = broker.submit(req("mlt-look"))
    assert len(fake.orders) == 1 and fake.count("POST", ORDERS) == 1
    assert fake.count("GET", BY_CID) == 3 and o.broker_id in fake.orders
    assert sleeps == [0.5, 1.0, 2.0]


def test_duplicate_submit_returns_the_same_order(fake, broker, caplog):
    caplog.set_level(logging.WARNING, logger="mltrader.live.alpaca")
    first = broker.submit(req("mlt-dup"))
    second = broker.submit(req("mlt-dup"))
    assert second.broker_id == first.broker_id and len(fake.orders) == 1
    assert fake.count("POST", ORDERS) == 2  # the second one got 422 "must be unique"
    assert "already used" in caplog.text and "mlt-dup" in caplog.text


REJECTIONS = [
    (dict(qty=10_000), "insufficient buying power", "reduce the quantity"),
    (dict(symbol="NVDA", side="sell", qty=5), "not allowed to short", "may not short"),
    (dict(symbol="SPY", qty=1, type="limit", limit_price=290.123), "sub-penny",
     "round the price"),
]


@pytest.mark.parametrize("kw,reason,hint", REJECTIONS, ids=["buying-power", "short", "subpenny"])
def test_business_rejection_is_not_retried(fake, broker, sleeps, caplog, kw, reason, hint):
    caplog.set_level(logging.INFO, logger="mltrader.live.alpaca")
    with pytest.raises(OrderRejected) as info:
        broker.submit(req("mlt-no", **kw))
    assert reason in str(info.value) and hint in str(info.value)
    assert "mlt-no" in str(info.value)
    assert fake.count("POST", ORDERS) == 1 and sleeps == [] and fake.orders == {}
    # raised, so not logged as a warning too (the caller reports it: one line per fault)
    assert "mlt-no" in caplog.text and reason in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_shorting_allowed_when_enabled(fake, broker):
    fake.shorting_enabled = True
    assert broker.submit(req("mlt-short", "NVDA", "sell", 5)).side == "sell"


def test_retries_exhausted_raise_transient_error(fake, broker, sleeps):
    fake.fault("POST", ORDERS, "503")
    fake.fault("GET", BY_CID, *["503"] * 10)
    with pytest.raises(TransientBrokerError, match="failed 5 times") as info:
        broker.submit(req("mlt-down"))
    assert "mlt-down" in str(info.value) and "safe" in str(info.value)
    assert sleeps == [0.5, 1.0, 2.0, 4.0]  # max_retries=4: 5 attempts, bounded backoff
    assert fake.count("POST", ORDERS) + fake.count("GET", BY_CID) == 5
    assert fake.orders == {}


def test_read_retries_exhausted(fake, sleeps):
    b = AlpacaBroker(KEY, SECRET, url_override=fake.url, sleep=sleeps.append, timeout=0.3,
                     max_retries=2, backoff=0.1)
    fake.fault("GET", "/v2/positions", "429", "429", "429", "429")
    with pytest.raises(TransientBrokerError, match="429"):
        b.positions()
    assert fake.count("GET", "/v2/positions") == 3 and sleeps == [0.1, 0.2]


def test_unauthorized_is_not_retried(fake, sleeps):
    b = AlpacaBroker(KEY, "wrong-secret", url_override=fake.url, sleep=sleeps.append)
    with pytest.raises(BrokerError, match="MLTRADER_ALPACA_KEY") as info:
        b.account()
    assert not isinstance(info.value, TransientBrokerError)
    assert fake.count("GET", "/v2/account") == 1 and sleeps == []


# ---- configuration and secrets
def test_live_needs_confirmation(fake, sleeps):
    with pytest.raises(BrokerError, match="live_confirmed"):
        AlpacaBroker(KEY, SECRET, paper=False, url_override=fake.url)
    live = AlpacaBroker(KEY, SECRET, paper=False, url_override=fake.url, live_confirmed=True,
                        sleep=sleeps.append)
    assert live.account().equity == 103820.56 and "LIVE" in repr(live)


def test_missing_keys_name_the_variables(monkeypatch):
    for var in ("MLTRADER_ALPACA_KEY", "MLTRADER_ALPACA_SECRET", "APCA_API_KEY_ID",
                "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(BrokerError) as info:
        AlpacaBroker()
    assert "MLTRADER_ALPACA_KEY" in str(info.value)
    assert "MLTRADER_ALPACA_SECRET" in str(info.value)
    monkeypatch.setenv("MLTRADER_ALPACA_KEY", KEY)
    with pytest.raises(BrokerError) as info:
        AlpacaBroker()
    assert "MLTRADER_ALPACA_SECRET" in str(info.value)
    assert "MLTRADER_ALPACA_KEY " not in str(info.value)


def test_keys_from_environment(fake, monkeypatch):
    for var in ("MLTRADER_ALPACA_KEY", "MLTRADER_ALPACA_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)  # the fallback names
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    assert AlpacaBroker(url_override=fake.url).account().cash == -23140.2
    monkeypatch.setenv("MLTRADER_ALPACA_SECRET", "other")  # the project's names win
    with pytest.raises(BrokerError, match="not authorized"):
        AlpacaBroker(url_override=fake.url).account()


def test_secrets_never_in_messages_or_logs(fake, sleeps, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3 included
    b = AlpacaBroker(KEY, SECRET, url_override=fake.url, sleep=sleeps.append, timeout=0.3,
                     max_retries=1)
    texts = [repr(b), str(b)]

    def run(call):
        with pytest.raises(BrokerError) as info:
            call()
        exc = info.value
        texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])

    fake.fault("GET", "/v2/account", "echo", "echo")  # error page echoing the key headers
    run(b.account)
    fake.fault("POST", ORDERS, "echo", "timeout")
    fake.fault("GET", BY_CID, "drop")
    run(lambda: b.submit(req("mlt-leak")))
    run(lambda: b.submit(req("mlt-leak2", qty=10_000)))  # rejection
    run(lambda: AlpacaBroker(KEY, "bad", url_override=fake.url, sleep=sleeps.append).account())
    run(lambda: AlpacaBroker(KEY, SECRET, paper=False))
    assert fake.echoed and SECRET in fake.echoed[0]  # the server did leak them to the client
    texts.append(caplog.text)
    texts.extend(str(r.args) for r in caplog.records)
    blob = "\n".join(texts)
    assert "***" in blob  # the echoed headers reached a message, scrubbed
    assert KEY not in blob and SECRET not in blob
    assert "mlt-leak" in caplog.text  # faults are logged, with the client order id


# ---- protective exits: OCO (take-profit limit + stop leg), take-profit alone, plain stop
def exit_req(cid="mlt-exit", side="sell", qty=5, stop=110.0, take=130.0, symbol="AAPL"):
    return OrderRequest(client_order_id=cid, symbol=symbol, side=side, qty=qty, type="stop",
                        time_in_force="gtc", stop_price=stop, take_profit=take)


def posted(fake, cid):
    return [b for m, p, _, b in fake.requests if (m, p) == ("POST", ORDERS)
            and b.get("client_order_id") == cid]


def test_stop_with_take_profit_goes_as_one_oco_order(fake, broker):
    order = broker.submit(exit_req())
    (body,) = posted(fake, "mlt-exit")
    assert body["order_class"] == "oco" and body["type"] == "limit"
    assert body["take_profit"] == {"limit_price": 130.0}
    assert body["stop_loss"] == {"stop_price": 110.0}
    assert "stop_price" not in body and "limit_price" not in body  # Alpaca's documented shape
    assert (body["side"], body["qty"], body["time_in_force"]) == ("sell", 5.0, "gtc")
    parent = fake.by_cid("mlt-exit")
    (leg,) = fake.legs(parent["id"])
    assert (leg["type"], leg["stop_price"], leg["status"]) == ("stop", "110", "held")
    assert (order.client_order_id, order.broker_id, order.type, order.stop_price,
            order.limit_price, order.qty, order.status) == (
        "mlt-exit", parent["id"], "stop", 110.0, 130.0, 5, "new")
    # one order under one id everywhere: the leg never shows up on its own
    assert [(o.client_order_id, o.stop_price) for o in broker.open_orders()] == [
        ("mlt-exit", 110.0)]
    fresh = AlpacaBroker(KEY, SECRET, url_override=fake.url, timeout=0.3)
    assert [o.client_order_id for o in fresh.open_orders()] == ["mlt-exit"]
    got = fresh.get_order("mlt-exit")  # by client order id (no legs there), then nested
    assert (got.type, got.stop_price, got.limit_price, got.broker_id) == (
        "stop", 110.0, 130.0, parent["id"])
    assert [u.event for u in broker.updates()] == ["new"]


def test_stop_leg_fills_in_two_parts_as_one_order(fake, broker):
    fake.positions[0]["qty"] = "10"
    order = broker.submit(exit_req(qty=10))
    broker.updates()
    (leg,) = fake.legs(order.broker_id)
    fake.fill(leg["id"], 4, 109.9)  # the stop triggered: the take-profit is cancelled
    assert fake.orders[order.broker_id]["status"] == "canceled"
    (up,) = broker.updates()
    assert (up.event, up.order.status, up.order.filled_qty) == (
        "partial_fill", "partially_filled", 4)
    assert (up.fill.client_order_id, up.fill.qty, up.fill.price, up.fill.side,
            up.fill.fill_id) == ("mlt-exit", 4, 109.9, "sell", f"{order.broker_id}:4")
    fake.fill(leg["id"], 6, 109.8)
    (up,) = broker.updates()
    assert (up.event, up.order.status, up.fill.qty, up.fill.fill_id) == (
        "fill", "filled", 6, f"{order.broker_id}:10")
    assert up.fill.price == pytest.approx(109.8)
    assert up.order.avg_fill_price == pytest.approx(109.84)
    assert broker.fills("mlt-exit")[0].fill_id == f"{order.broker_id}:10"  # same ids
    assert list(broker.updates()) == [] and broker.get_order("mlt-exit").done


def test_take_profit_leg_fill_ends_the_oco(fake, broker):
    order = broker.submit(exit_req())
    fake.fill(order.broker_id, 5, 130.0)
    (leg,) = fake.legs(order.broker_id)
    assert leg["status"] == "canceled"
    got = [(u.event, u.order.status) for u in broker.updates()]
    assert got == [("new", "filled"), ("fill", "filled")]
    assert broker.get_order("mlt-exit").avg_fill_price == 130.0


def test_replace_moves_the_stop_leg_only(fake, broker, sleeps):
    order = broker.submit(exit_req())
    (leg,) = fake.legs(order.broker_id)
    moved = broker.replace("mlt-exit", qty=5, stop_price=115.004)
    assert fake.count("PATCH", f"{ORDERS}/{leg['id']}") == 1
    assert fake.count("PATCH", f"{ORDERS}/{order.broker_id}") == 0  # the take-profit stays
    patch = next(b for m, p, _, b in fake.requests if m == "PATCH")
    assert patch == {"stop_price": 115.0, "client_order_id": "mlt-exit-sl1"}
    assert leg["status"] == "replaced"
    (new_leg,) = fake.legs(order.broker_id)
    assert new_leg["stop_price"] == "115" and new_leg["replaces"] == leg["id"]
    assert (moved.client_order_id, moved.broker_id, moved.stop_price, moved.limit_price) == (
        "mlt-exit", order.broker_id, 115.0, 130.0)
    again = broker.replace("mlt-exit", qty=5, stop_price=118.0)  # the next leg: -sl2
    assert fake.legs(order.broker_id)[0]["client_order_id"] == "mlt-exit-sl2"
    assert again.stop_price == 118.0
    assert [o.client_order_id for o in broker.open_orders()] == ["mlt-exit"]
    n = fake.count("PATCH", f"{ORDERS}/{new_leg['id']}")
    assert broker.replace("mlt-exit", qty=5, stop_price=118.0).stop_price == 118.0
    assert fake.count("PATCH", f"{ORDERS}/{new_leg['id']}") == n  # unchanged: not sent
    with pytest.raises(BrokerError, match="cannot resize an OCO"):
        broker.replace("mlt-exit", qty=7, stop_price=119.0)
    assert sum(1 for m, *_ in fake.requests if m == "PATCH") == 2 and sleeps == []


def test_stop_leg_replace_dropped_after_accept_is_not_sent_twice(fake, broker, sleeps):
    order = broker.submit(exit_req())
    (leg,) = fake.legs(order.broker_id)
    fake.fault("PATCH", f"{ORDERS}/{leg['id']}", "drop_after")
    moved = broker.replace("mlt-exit", stop_price=112.0)
    assert fake.count("PATCH", f"{ORDERS}/{leg['id']}") == 1 and sleeps == [0.5]
    assert moved.stop_price == 112.0 and len(fake.orders) == 3  # parent, old and new leg


def test_cancel_oco_cancels_both_legs(fake, broker):
    order = broker.submit(exit_req())
    broker.updates()
    broker.cancel("mlt-exit")
    assert fake.count("DELETE", f"{ORDERS}/{order.broker_id}") == 1
    assert {o["status"] for o in fake.orders.values()} == {"canceled"}
    assert [(u.event, u.order.status) for u in broker.updates()] == [("canceled",
                                                                      "cancelled")]
    assert broker.open_orders() == []


def test_oco_dropped_after_accept_is_found_not_resent(fake, broker, sleeps):
    fake.fault("POST", ORDERS, "drop_after")
    order = broker.submit(exit_req())
    assert fake.posts("mlt-exit") == 1 and len(fake.orders) == 2  # parent + leg, once
    assert (order.type, order.stop_price, order.limit_price) == ("stop", 110.0, 130.0)
    assert sleeps == [0.5]


@pytest.mark.parametrize("side,stop,take", [("sell", 0.0, 130.0), ("buy", 1e12, 90.0)],
                         ids=["long", "short"])
def test_take_profit_alone_is_a_plain_limit_order(fake, broker, side, stop, take):
    fake.shorting_enabled = True
    order = broker.submit(exit_req(side=side, stop=stop, take=take))
    (body,) = posted(fake, "mlt-exit")
    assert (body["type"], body["limit_price"], body["side"]) == ("limit", take, side)
    assert not {"order_class", "stop_price", "take_profit", "stop_loss"} & set(body)
    assert (order.type, order.limit_price, order.stop_price) == ("limit", take, None)
    with pytest.raises(BrokerError, match="no stop price"):  # the runner then re-places
        broker.replace("mlt-exit", stop_price=100.0)
    assert fake.count("PATCH", f"{ORDERS}/{order.broker_id}") == 0


def test_plain_stop_stays_a_stop_and_exit_prices_are_on_the_tick(fake, broker):
    order = broker.submit(OrderRequest("mlt-stop", "AAPL", "sell", 5, "stop", "gtc",
                                       stop_price=109.876))
    (body,) = posted(fake, "mlt-stop")
    assert (body["type"], body["stop_price"]) == ("stop", 109.88)
    assert "order_class" not in body and order.type == "stop"
    broker.submit(exit_req("mlt-tick", stop=95.123, take=130.4567))
    (body,) = posted(fake, "mlt-tick")
    assert body["stop_loss"] == {"stop_price": 95.12}
    assert body["take_profit"] == {"limit_price": 130.46}


def test_take_profit_on_the_wrong_side_is_refused_before_sending(fake, broker):
    with pytest.raises(OrderRejected, match="must lie above the stop"):
        broker.submit(exit_req(stop=110.0, take=100.0))
    assert fake.count("POST", ORDERS) == 0


@pytest.mark.parametrize("header,slept", [("2", 2.0), ("120", 30.0)],
                         ids=["honoured", "capped"])
def test_retry_after_is_honoured(fake, broker, sleeps, caplog, header, slept):
    caplog.set_level(logging.WARNING, logger="mltrader.live.alpaca")
    fake.fault("GET", "/v2/account", f"429:{header}")
    assert broker.account().equity == 103820.56
    assert sleeps == [slept] and fake.count("GET", "/v2/account") == 2
    (line,) = caplog.records
    assert "429" in line.getMessage() and f"Retry-After {header}s" in line.getMessage()
