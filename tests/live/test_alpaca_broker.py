"""AlpacaBroker against a fake Alpaca Trading API on 127.0.0.1.

The REAL alpaca-py `TradingClient` is pointed at the fake with `url_override`. The fake keeps
an in-memory order book (look-up by id and by client order id, partial fills, fills,
cancel, replace) and injects faults per request: 429 (fixture body), 500/502/503, a timeout
(the reply comes after the client's timeout), a dropped connection before or AFTER the
order was recorded, an echo of the request headers (a misbehaving proxy: tests that keys
never leak), and business rejections decided by rules (buying power, shorting, sub-penny).

Response bodies are built from fixtures/alpaca/trading (copied verbatim below; sources in
tests/fixtures/README.md: alpaca-py tests @ bd1fa9ea and alpaca-trade-api-python
tests @ 9f75328, Apache-2.0; alpaca-docs @ 2080c5e0; the buying-power body is the one quoted
in alpacahq/alpaca-py#225). Bodies marked HAND-WRITTEN follow Alpaca's {"code","message"}
shape; no recorded copy was found. Nothing here touches the network (`_no_network`).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import socket
import threading
import time
import traceback
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

pytest.importorskip("alpaca")

from mltrader.live.alpaca_broker import AlpacaBroker  # noqa: E402
from mltrader.live.broker import (  # noqa: E402
    Broker,
    BrokerError,
    OrderRejected,
    OrderRequest,
    TransientBrokerError,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alpaca" / "trading"
# alpaca-py's package import pulls websockets.legacy (its TradingStream): not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated")

# --------------------------------------------------------------------------- fixtures (verbatim)
# get_account.json (alpaca-py mock)
ACCOUNT = {
    "account_blocked": False, "accrued_fees": "0", "account_number": "010203ABCD",
    "buying_power": "262113.632", "cash": "-23140.2", "created_at": "2019-06-12T22:47:07.99658Z",
    "currency": "USD", "daytrade_count": 0, "daytrading_buying_power": "262113.632",
    "equity": "103820.56", "id": "e6fe16f3-64a4-4921-8928-cadf02f92f98",
    "initial_margin": "63480.38", "last_equity": "103529.24",
    "last_maintenance_margin": "38000.832", "non_marginable_buying_power": "98945.02",
    "long_market_value": "126960.76", "maintenance_margin": "38088.228", "multiplier": "4",
    "pattern_day_trader": False, "portfolio_value": "103820.56",
    "regt_buying_power": "80680.36", "short_market_value": "0", "shorting_enabled": True,
    "sma": "0", "status": "ACTIVE", "trade_suspended_by_user": False, "trading_blocked": False,
    "transfers_blocked": False, "options_buying_power": "262113.632",
    "options_approved_level": "1", "options_trading_level": "1"}
# get_positions.json (alpaca-py mock)
_USD = {"avg_entry_price": "100.0", "market_value": "600.0", "cost_basis": "500.0",
        "unrealized_pl": "100.0", "unrealized_plpc": "0.20", "unrealized_intraday_pl": "10.0",
        "unrealized_intraday_plpc": "0.0084", "current_price": "120.0",
        "lastday_price": "119.0", "change_today": "0.0084"}
POSITIONS = [{
    "asset_id": "904837e3-3b76-47ec-b432-046db621571b", "symbol": "AAPL", "exchange": "NASDAQ",
    "asset_class": "us_equity", "avg_entry_price": "100.0", "qty": "5", "side": "long",
    "market_value": "600.0", "cost_basis": "500.0", "unrealized_pl": "100.0",
    "unrealized_plpc": "0.20", "unrealized_intraday_pl": "10.0",
    "unrealized_intraday_plpc": "0.0084", "current_price": "120.0", "lastday_price": "119.0",
    "change_today": "0.0084", "usd": _USD}]
# post_order_limit_accepted_v2_stringnums.json (all numbers as strings, like the real API)
ORDER_STRINGNUMS = {
    "id": "fb61d316-2179-4df2-8b28-eb026c0dd78e",
    "client_order_id": "6de7d1b2-f772-4a0d-8c15-bacea15eb29e",
    "created_at": "2021-04-07T18:25:30.812371Z", "updated_at": "2021-04-07T18:25:30.812371Z",
    "submitted_at": "2021-04-07T18:25:30.803178Z", "filled_at": None, "expired_at": None,
    "canceled_at": None, "failed_at": None, "replaced_at": None, "replaced_by": None,
    "replaces": None, "asset_id": "b28f4066-5c6d-479b-a2af-85dc1a8f16fb", "symbol": "SPY",
    "asset_class": "us_equity", "notional": None, "qty": "1", "filled_qty": "0",
    "filled_avg_price": None, "order_class": "", "order_type": "limit", "type": "limit",
    "side": "buy", "time_in_force": "day", "limit_price": "400", "stop_price": None,
    "status": "accepted", "extended_hours": False, "legs": None, "trail_percent": None,
    "trail_price": None, "hwm": None}
# order_entity_rejected.json (alpaca-docs)
ORDER_REJECTED = {
    "id": "01203a2f-2781-4c70-a119-b2ccfa5d5e4d",
    "client_order_id": "e1d2740c-dace-4d0e-a5d1-5d0bbcca9951",
    "created_at": "2022-03-08T16:51:07.442125Z", "updated_at": "2022-03-08T16:51:07.525039Z",
    "submitted_at": "2022-03-08T16:51:07.438495Z", "filled_at": None, "expired_at": None,
    "canceled_at": None, "failed_at": "2022-03-08T16:51:07.520169Z", "replaced_at": None,
    "replaced_by": None, "replaces": None, "asset_id": "3adcaa1c-367f-4200-b67c-8ce7f8a9c4dd",
    "symbol": "TLSA", "asset_class": "us_equity", "notional": "123.177578017", "qty": None,
    "filled_qty": None, "filled_avg_price": None, "order_class": "", "order_type": "market",
    "type": "market", "side": "buy", "time_in_force": "day", "limit_price": None,
    "stop_price": None, "status": "rejected", "extended_hours": False, "legs": None,
    "trail_percent": None, "trail_price": None, "hwm": None, "subtag": None, "source": None}
# order_entity_filled_market_notional.json (alpaca-docs)
ORDER_FILLED_NOTIONAL = {
    "id": "c29dd94b-eaaf-4681-9d1f-4fd47571804b",
    "client_order_id": "cb2d1ff5-8355-4c92-84d7-dfff43f44cb2",
    "created_at": "2022-03-08T16:51:07.442125Z", "updated_at": "2022-03-08T16:51:07.525039Z",
    "submitted_at": "2022-03-08T16:51:07.438495Z", "filled_at": "2022-03-08T16:51:07.520169Z",
    "expired_at": None, "canceled_at": None, "failed_at": None, "replaced_at": None,
    "replaced_by": None, "replaces": None, "asset_id": "3b64361a-1960-421a-9464-a484544193df",
    "symbol": "SPY", "asset_class": "us_equity", "notional": "30443.177578017", "qty": None,
    "filled_qty": "72.865432211", "filled_avg_price": "417.8", "order_class": "",
    "order_type": "market", "type": "market", "side": "buy", "time_in_force": "day",
    "limit_price": None, "stop_price": None, "status": "filled", "extended_hours": False,
    "legs": None, "trail_percent": None, "trail_price": None, "hwm": None, "subtag": None,
    "source": None}
ERR_BUYING_POWER = {"buying_power": "176531.28", "code": 40310000, "cost_basis": "48640000",
                    "message": "insufficient buying power"}
ERR_NO_SHORT = {"code": 40310000, "message": "account is not allowed to short"}
ERR_SUBPENNY = {"code": 42210000, "message": "invalid limit_price 290.123. sub-penny increment "
                                             "does not fulfill minimum pricing criteria"}
ERR_QTY_INTEGER = {"code": 40010001, "message": "qty must be integer"}
TOO_MANY = "Too Many Requests"  # error_429_body.txt (mock; plain text)
# HAND-WRITTEN (no recorded bodies): Alpaca's {"code","message"} shape
ERR_UNIQUE = {"code": 40010001, "message": "client_order_id must be unique"}  # alpaca-py#260
ERR_NOT_FOUND = {"code": 40410000, "message": "order not found"}
ERR_NOT_OPEN = {"code": 42210000, "message": "order is not open"}
ERR_500 = {"code": 50010000, "message": "internal server error occurred"}
ERR_UNAUTHORIZED = {"code": 40110000, "message": "request is not authorized"}

KEY, SECRET = "PKTESTKEY0123456789AB", "s3cr3t-Value-That-Must-Not-Leak-0042"
OPEN = {"new", "accepted", "partially_filled", "pending_new", "pending_cancel",
        "pending_replace", "held", "accepted_for_bidding", "done_for_day"}


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


# --------------------------------------------------------------------------- the fake server
def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeAlpaca:
    """In-memory Alpaca Trading API (the parts the adapter uses) with fault injection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.orders: dict[str, dict] = {}
        self.log: list[tuple[str, str]] = []
        self.faults: list[tuple[str, str, str]] = []
        self.numeric = False  # True: numbers as JSON numbers (like alpaca-py's mocks)
        self.shorting_enabled = False
        self.buying_power = float(ACCOUNT["buying_power"])
        self.prices = {"AAPL": 120.0, "SPY": 417.8, "TSLA": 250.0, "NVDA": 130.0}
        short = copy.deepcopy(POSITIONS[0])  # derived from the fixture: a short position
        short.update(symbol="TSLA", qty="-3", side="short", avg_entry_price="250.0",
                     market_value="-750.0")
        self.positions = [copy.deepcopy(POSITIONS[0]), short]
        self.reply_delay = 0.8
        self.echoed: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.fake = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- test controls
    def fault(self, method: str, path: str, *kinds: str) -> None:
        self.faults.extend((method, path, k) for k in kinds)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.log if m == method and p == path)

    def by_cid(self, cid: str) -> dict | None:
        return next((o for o in self.orders.values() if o["client_order_id"] == cid), None)

    def _out(self, x: float | None):
        if x is None:
            return None
        if self.numeric:
            return x
        return f"{x:.9f}".rstrip("0").rstrip(".")

    def fill(self, oid: str, qty: float, price: float) -> None:
        with self.lock:
            o = self.orders[oid]
            cum = float(o["filled_qty"] or 0)
            avg = float(o["filled_avg_price"] or 0)
            new_cum = cum + qty
            o["filled_avg_price"] = self._out((cum * avg + qty * price) / new_cum)
            o["filled_qty"] = self._out(new_cum)
            done = new_cum >= float(o["qty"]) - 1e-9
            o["status"] = "filled" if done else "partially_filled"
            o["updated_at"] = _now()
            if done:
                o["filled_at"] = o["updated_at"]

    def set_status(self, oid: str, status: str) -> None:
        with self.lock:
            o = self.orders[oid]
            o["status"] = status
            o["updated_at"] = _now()
            if status == "rejected":
                o["failed_at"] = o["updated_at"]
            if status == "canceled":
                o["canceled_at"] = o["updated_at"]

    def seed(self, body: dict) -> None:
        self.orders[body["id"]] = copy.deepcopy(body)

    # ---- request handling
    def handle(self, h: _Handler, method: str) -> None:
        url = urlparse(h.path)
        path, query = url.path, {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(length) or b"null") if length else None
        with self.lock:
            self.log.append((method, path))
            fault = next((f for f in self.faults if f[0] == method and path == f[1]), None)
            if fault:
                self.faults.remove(fault)
        kind = fault[2] if fault else ""
        if kind == "echo":  # a proxy that echoes the request headers in its error page
            text = "upstream error; request headers: " + json.dumps(dict(h.headers))
            self.echoed.append(text)
            return h.reply(500, text, content_type="text/html")
        if (h.headers.get("APCA-API-KEY-ID"), h.headers.get("APCA-API-SECRET-KEY")) != (
                KEY, SECRET):
            return h.reply(401, ERR_UNAUTHORIZED)
        if kind == "429":
            return h.reply(429, TOO_MANY, content_type="text/plain")
        if kind in ("500", "502", "503"):
            return h.reply(int(kind), ERR_500)
        if kind == "drop":
            return h.drop()
        with self.lock:
            status, payload = self.route(method, path, query, body)
        if kind == "drop_after":
            return h.drop()
        if kind == "timeout":
            time.sleep(self.reply_delay)
        h.reply(status, payload)

    def route(self, method: str, path: str, q: dict, body: dict | None):
        if (method, path) == ("GET", "/v2/account"):
            return 200, {**ACCOUNT, "buying_power": self._out(self.buying_power)}
        if (method, path) == ("GET", "/v2/positions"):
            return 200, self.positions
        if (method, path) == ("GET", "/v2/orders:by_client_order_id"):
            o = self.by_cid(q.get("client_order_id", ""))
            return (200, o) if o else (404, ERR_NOT_FOUND)
        if (method, path) == ("GET", "/v2/orders"):
            status = q.get("status", "open")
            rows = [o for o in self.orders.values() if status == "all"
                    or (o["status"] in OPEN) == (status == "open")]
            return 200, list(reversed(rows))[: int(q.get("limit", 50))]
        if (method, path) == ("POST", "/v2/orders"):
            return self.create(body or {})
        m = re.fullmatch(r"/v2/orders/([0-9a-f-]{36})", path)
        if m:
            o = self.orders.get(m.group(1))
            if o is None:
                return 404, ERR_NOT_FOUND
            if method == "GET":
                return 200, o
            if method == "DELETE":
                if o["status"] not in OPEN:
                    return 422, ERR_NOT_OPEN
                o.update(status="canceled", canceled_at=_now(), updated_at=_now())
                return 204, None
            if method == "PATCH":
                return self.replace(o, body or {})
        return 404, {"code": 40410000, "message": "endpoint not found"}

    def create(self, b: dict):
        if b.get("qty") is None and b.get("notional") is None:
            return 422, {"code": 40010001, "message": "qty or notional is required"}
        cid = b.get("client_order_id") or str(uuid.uuid4())
        if self.by_cid(cid):
            return 422, ERR_UNIQUE
        for field in ("limit_price", "stop_price"):
            p = b.get(field)
            if p is not None and float(p) >= 1 and abs(round(float(p), 2) - float(p)) > 1e-9:
                msg = ERR_SUBPENNY["message"].replace("limit_price 290.123", f"{field} {p}")
                return 422, {**ERR_SUBPENNY, "message": msg}
        qty, symbol, side = float(b["qty"]), b["symbol"], b["side"]
        held = sum(float(p["qty"]) for p in self.positions if p["symbol"] == symbol)
        if side == "sell" and qty > held and not self.shorting_enabled:
            return 403, ERR_NO_SHORT
        price = float(b.get("limit_price") or self.prices.get(symbol, 100.0))
        if side == "buy" and qty * price > self.buying_power:
            return 403, ERR_BUYING_POWER
        now = _now()
        o = copy.deepcopy(ORDER_STRINGNUMS)
        o.update(id=str(uuid.uuid4()), client_order_id=cid, created_at=now, updated_at=now,
                 submitted_at=now, symbol=symbol, qty=self._out(qty),
                 filled_qty=self._out(0.0), type=b["type"], order_type=b["type"], side=side,
                 time_in_force=b["time_in_force"],
                 limit_price=self._out(_f(b.get("limit_price"))),
                 stop_price=self._out(_f(b.get("stop_price"))), status="accepted")
        self.orders[o["id"]] = o
        return 200, o

    def replace(self, old: dict, b: dict):
        if old["status"] not in OPEN:
            return 422, ERR_NOT_OPEN
        if b.get("qty") is not None and float(b["qty"]) != int(float(b["qty"])):
            return 422, ERR_QTY_INTEGER
        cid = b.get("client_order_id") or str(uuid.uuid4())
        if self.by_cid(cid):
            return 422, ERR_UNIQUE
        now = _now()
        new = copy.deepcopy(old)
        new.update(id=str(uuid.uuid4()), client_order_id=cid, created_at=now, updated_at=now,
                   submitted_at=now, filled_qty=self._out(0.0), filled_avg_price=None,
                   replaces=old["id"], status="accepted")
        for field in ("qty", "limit_price", "stop_price"):
            if b.get(field) is not None:
                new[field] = self._out(float(b[field]))
        old.update(status="replaced", replaced_by=new["id"], replaced_at=now, updated_at=now)
        self.orders[new["id"]] = new
        return 200, new


def _f(x):
    return None if x is None else float(x)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive + small writes: no 40 ms delayed-ACK stalls

    def log_message(self, *args) -> None:  # quiet
        pass

    def reply(self, status: int, payload, content_type: str = "application/json") -> None:
        data = b"" if payload is None else (
            payload if isinstance(payload, str) else json.dumps(payload)).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout test)
            self.close_connection = True

    def drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _go(self) -> None:
        self.server.fake.handle(self, self.command)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PATCH = do_DELETE = _go


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


ORDERS = "/v2/orders"
BY_CID = "/v2/orders:by_client_order_id"


# --------------------------------------------------------------------------- tests
def test_fixture_copies_match_the_recorded_files():
    pairs = {"get_account.json": ACCOUNT, "get_positions.json": POSITIONS,
             "post_order_limit_accepted_v2_stringnums.json": ORDER_STRINGNUMS,
             "order_entity_rejected.json": ORDER_REJECTED,
             "order_entity_filled_market_notional.json": ORDER_FILLED_NOTIONAL,
             "error_403_insufficient_buying_power.json": ERR_BUYING_POWER,
             "error_403_not_allowed_to_short.json": ERR_NO_SHORT,
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
    caplog.set_level(logging.ERROR, logger="mltrader.live.alpaca")
    with pytest.raises(OrderRejected) as info:
        broker.submit(req("mlt-no", **kw))
    assert reason in str(info.value) and hint in str(info.value)
    assert "mlt-no" in str(info.value)
    assert fake.count("POST", ORDERS) == 1 and sleeps == [] and fake.orders == {}
    assert "mlt-no" in caplog.text and reason in caplog.text


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
