"""A fake Alpaca Trading API on 127.0.0.1 that alpaca-py's REAL `TradingClient` talks to
(through `url_override`), for the adapter's tests and the runner's fault tests.

It keeps an in-memory order book (look-up by id and by client order id, partial fills,
fills, cancel, replace, OCO exits with their stop leg, optionally positions and cash booked
from the fills) and injects faults per request, optionally only for one client order id:
429 (fixture body; `429:<s>` adds a Retry-After header), 500/502/503, a timeout (the order
is recorded, the reply comes after the client's timeout), a dropped connection before
(`drop`) or AFTER (`drop_after`) the request was applied, an echo of the request headers
(a misbehaving proxy: tests that keys never leak), and rejections: `reject:403` (buying
power) and `reject:422` (sub-penny), besides rules (buying power, shorting, sub-penny).

Response bodies are built from fixtures/alpaca/trading (copied verbatim below; sources in
tests/fixtures/README.md: alpaca-py tests @ bd1fa9ea and alpaca-trade-api-python
tests @ 9f75328, Apache-2.0; alpaca-docs @ 2080c5e0; the buying-power body is the one quoted
in alpacahq/alpaca-py#225). Bodies marked HAND-WRITTEN follow Alpaca's {"code","message"}
shape; no recorded copy was found.

OCO exits follow Alpaca's documented request (`order_class: oco`, `type: limit`,
`take_profit.limit_price`, `stop_loss.stop_price`): the order is the take-profit limit
order; its stop leg (type stop, status "held", its own id and client order id) is rolled up
under `legs` only when the read asks for `nested=true` (list and GET by id) and in the POST
reply; GET by client order id answers without legs. A fill of one member cancels the
other; cancelling the parent cancels the leg; a PATCH of the leg makes a new leg (the old
one "replaced") that takes its place under the parent. Where Alpaca's exact behaviour is not
documented (the leg's status after a PATCH, a partial fill of one leg) this fake picks the
plausible one; the adapter does not depend on it.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alpaca" / "trading"

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
# error_403_insufficient_qty.json (alpaca-py mock): shares held for other open sell orders
ERR_INSUFFICIENT_QTY = {"available": "0", "code": 40310000, "existing_qty": "1000",
                        "held_for_orders": "1000",
                        "message": "insufficient qty available for order (requested: 1000, "
                                   "available: 0)",
                        "symbol": "SQQQ"}
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

# HAND-WRITTEN: Alpaca's answer to a PATCH that changes nothing (quoted in alpaca-py#412)
ERR_UNCHANGED = {"code": 42210000, "message": "order parameters are not changed"}
# HAND-WRITTEN: OCO validation (the text follows alpaca-py's own validation messages)
ERR_OCO_LEGS = {"code": 42210000,
                "message": "oco orders require take_profit.limit_price and stop_loss.stop_price"}
ERR_OCO_TYPE = {"code": 42210000, "message": "oco orders must be limit orders"}
ERR_OCO_PRICES = {"code": 42210000,
                  "message": "take_profit.limit_price must be > stop_loss.stop_price for sell "
                             "oco orders (< for buy)"}
ORDERS = "/v2/orders"
BY_CID = "/v2/orders:by_client_order_id"
DOMAIN_STATUS = {"new": "new", "accepted": "accepted", "pending_new": "pending",
                 "held": "pending", "partially_filled": "partially_filled",
                 "filled": "filled", "canceled": "cancelled", "expired": "expired",
                 "replaced": "replaced", "rejected": "rejected"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _f(x):
    return None if x is None else float(x)


class FakeAlpaca:
    """In-memory Alpaca Trading API (the parts the adapter uses) with fault injection."""

    def __init__(self, *, book: bool = False, cash: float = 100_000.0) -> None:
        self.lock = threading.Lock()
        self.orders: dict[str, dict] = {}
        self.leg_ids: dict[str, list[str]] = {}  # OCO parent id -> its legs' ids
        self.parent_of: dict[str, str] = {}  # leg id -> parent id
        self.log: list[tuple[str, str]] = []
        self.requests: list[tuple[str, str, dict, dict | None]] = []
        self.faults: list[tuple[str, str, str, str | None]] = []
        self.reached: Counter[str] = Counter()  # client order id -> POSTs that reached the book
        self.numeric = False  # True: numbers as JSON numbers (like alpaca-py's mocks)
        self.shorting_enabled = False
        self.buying_power = float(ACCOUNT["buying_power"])
        self.prices = {"AAPL": 120.0, "SPY": 417.8, "TSLA": 250.0, "NVDA": 130.0}
        short = copy.deepcopy(POSITIONS[0])  # derived from the fixture: a short position
        short.update(symbol="TSLA", qty="-3", side="short", avg_entry_price="250.0",
                     market_value="-750.0")
        self.positions = [copy.deepcopy(POSITIONS[0]), short]
        # book=True: no fixture positions; fills move `held` and `cash` (an account that
        # starts flat with `cash`), the account's equity marks `held` at `prices`, and the
        # shares of a long position that open sell orders cover are held for them (a sell
        # beyond the rest is refused, as Alpaca does: 403 insufficient qty available)
        self.book = book
        self.cash = float(cash)
        self.held: dict[str, list[float]] = {}  # symbol -> [signed qty, avg entry price]
        if book:
            self.positions = []
            self.shorting_enabled = True
            self.buying_power = float("inf")
        self.reply_delay = 0.8
        self.clock: str | None = None  # e.g. "2024-02-16T14:30:00Z": timestamps follow it
        self.echoed: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.fake = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _now(self) -> str:
        """Alpaca's timestamps: the wall clock, or `clock` (a test's market time) when set."""
        return self.clock or _now()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- test controls
    def fault(self, method: str, path: str, *kinds: str, cid: str | None = None) -> None:
        """Faults for the next matching requests; with `cid`, only for requests about a
        client order id that contains it (an id, or a part such as "-S01-")."""
        self.faults.extend((method, path, k, cid) for k in kinds)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.log if m == method and p == path)

    def posts(self, cid: str) -> int:
        """How many POST /v2/orders carried this client order id."""
        return sum(1 for m, p, _, b in self.requests
                   if (m, p) == ("POST", ORDERS) and (b or {}).get("client_order_id") == cid)

    def by_cid(self, cid: str) -> dict | None:
        return next((o for o in self.orders.values() if o["client_order_id"] == cid), None)

    def legs(self, oid: str) -> list[dict]:
        return [self.orders[x] for x in self.leg_ids.get(oid, [])]

    def _out(self, x: float | None):
        if x is None:
            return None
        if self.numeric:
            return x
        return f"{x:.9f}".rstrip("0").rstrip(".")

    def fill(self, oid: str, qty: float, price: float) -> None:
        """An execution of `qty` at `price` (cumulative quantity and average kept as
        Alpaca does); an OCO member that fills cancels the other one."""
        with self.lock:
            o = self.orders[oid]
            cum = float(o["filled_qty"] or 0)
            avg = float(o["filled_avg_price"] or 0)
            new_cum = cum + qty
            o["filled_avg_price"] = self._out((cum * avg + qty * price) / new_cum)
            o["filled_qty"] = self._out(new_cum)
            done = new_cum >= float(o["qty"]) - 1e-9
            o["status"] = "filled" if done else "partially_filled"
            o["updated_at"] = self._now()
            if done:
                o["filled_at"] = o["updated_at"]
            parent = self.parent_of.get(oid, oid)
            for other in [parent, *self.leg_ids.get(parent, [])]:
                sib = self.orders[other]
                if other != oid and sib["status"] in OPEN:
                    sib.update(status="canceled", canceled_at=self._now(),
                               updated_at=self._now())
            if self.book:
                self._book(o["symbol"], qty if o["side"] == "buy" else -qty, price)

    def _book(self, symbol: str, signed: float, price: float) -> None:
        q, avg = self.held.get(symbol, [0.0, 0.0])
        new = q + signed
        if abs(new) < 1e-9:
            self.held.pop(symbol, None)
        else:
            same = q == 0 or (q > 0) == (signed > 0)
            avg = (q * avg + signed * price) / new if same else (avg if (new > 0) == (
                q > 0) else price)
            self.held[symbol] = [new, avg]
        self.cash -= signed * price

    def set_status(self, oid: str, status: str) -> None:
        with self.lock:
            o = self.orders[oid]
            o["status"] = status
            o["updated_at"] = self._now()
            if status == "rejected":
                o["failed_at"] = o["updated_at"]
            if status == "canceled":
                o["canceled_at"] = o["updated_at"]
            if status == "expired":
                o["expired_at"] = o["updated_at"]

    def seed(self, body: dict) -> None:
        self.orders[body["id"]] = copy.deepcopy(body)

    def domain_status(self, oid: str) -> str:
        """The status the adapter should report for an order (an OCO: both members)."""
        o = self.orders[oid]
        members = [o, *self.legs(oid)]
        filled = sum(float(m["filled_qty"] or 0) for m in members)
        if filled >= float(o["qty"]) - 1e-9:
            return "filled"
        live = [m for m in members if m["status"] in OPEN]
        if live:
            return "partially_filled" if filled else (
                "accepted" if live[0]["status"] == "held" else DOMAIN_STATUS[live[0]["status"]])
        ended = next((m for m in members if float(m["filled_qty"] or 0) > 0), o)
        return DOMAIN_STATUS[ended["status"]]

    # ---- positions and account
    def _held_qty(self, symbol: str) -> float:
        if self.book:
            return self.held.get(symbol, [0.0, 0.0])[0]
        return sum(float(p["qty"]) for p in self.positions if p["symbol"] == symbol)

    def _positions(self) -> list[dict]:
        if not self.book:
            return self.positions
        out = []
        for symbol, (q, avg) in sorted(self.held.items()):
            p = copy.deepcopy(POSITIONS[0])
            mark = self.prices.get(symbol, avg)
            p.update(symbol=symbol, qty=self._out(q), side="long" if q > 0 else "short",
                     avg_entry_price=self._out(avg), market_value=self._out(q * mark),
                     cost_basis=self._out(q * avg), current_price=self._out(mark),
                     asset_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, symbol)))
            p.pop("usd", None)
            out.append(p)
        return out

    def _account(self) -> dict:
        if not self.book:
            return {**ACCOUNT, "buying_power": self._out(self.buying_power)}
        value = sum(q * self.prices.get(s, avg) for s, (q, avg) in self.held.items())
        equity = self.cash + value
        return {**ACCOUNT, "cash": self._out(self.cash), "equity": self._out(equity),
                "portfolio_value": self._out(equity), "buying_power": self._out(2 * equity),
                "long_market_value": self._out(max(value, 0.0))}

    # ---- request handling
    def _render(self, o: dict, nested: bool) -> dict:
        out = copy.deepcopy(o)
        if nested and o["id"] in self.leg_ids:
            out["legs"] = [copy.deepcopy(x) for x in self.legs(o["id"])]
        return out

    def handle(self, h: _Handler, method: str) -> None:
        url = urlparse(h.path)
        path, query = url.path, {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(length) or b"null") if length else None
        about = (body or {}).get("client_order_id") or query.get("client_order_id")
        with self.lock:
            self.log.append((method, path))
            self.requests.append((method, path, query, body))
            fault = next((f for f in self.faults if f[0] == method and path == f[1]
                          and (f[3] is None or f[3] in (about or ""))), None)
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
        if kind.startswith("429:"):
            return h.reply(429, TOO_MANY, content_type="text/plain",
                           headers={"Retry-After": kind[4:]})
        if kind in ("500", "502", "503"):
            return h.reply(int(kind), ERR_500)
        if kind == "reject:403":
            return h.reply(403, ERR_BUYING_POWER)
        if kind == "reject:422":
            return h.reply(422, ERR_SUBPENNY)
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
        nested = str(q.get("nested", "")).lower() == "true"
        if (method, path) == ("GET", "/v2/account"):
            return 200, self._account()
        if (method, path) == ("GET", "/v2/positions"):
            return 200, self._positions()
        if (method, path) == ("GET", BY_CID):
            o = self.by_cid(q.get("client_order_id", ""))
            return (200, self._render(o, False)) if o else (404, ERR_NOT_FOUND)
        if (method, path) == ("GET", ORDERS):
            status = q.get("status", "open")
            rows = []
            for o in self.orders.values():
                if nested and o["id"] in self.parent_of:
                    continue  # rolled up under its parent
                members = [o, *self.legs(o["id"])] if nested else [o]
                is_open = any(m["status"] in OPEN for m in members)
                if status == "all" or is_open == (status == "open"):
                    rows.append(self._render(o, nested))
            return 200, list(reversed(rows))[: int(q.get("limit", 50))]
        if (method, path) == ("POST", ORDERS):
            return self.create(body or {})
        m = re.fullmatch(r"/v2/orders/([0-9a-f-]{36})", path)
        if m:
            o = self.orders.get(m.group(1))
            if o is None:
                return 404, ERR_NOT_FOUND
            if method == "GET":
                return 200, self._render(o, nested)
            if method == "DELETE":
                if o["status"] not in OPEN:
                    return 422, ERR_NOT_OPEN
                parent = self.parent_of.get(o["id"], o["id"])
                for x in [parent, *self.leg_ids.get(parent, [])]:
                    if self.orders[x]["status"] in OPEN:
                        self.orders[x].update(status="canceled", canceled_at=self._now(),
                                              updated_at=self._now())
                return 204, None
            if method == "PATCH":
                return self.replace(o, body or {})
        return 404, {"code": 40410000, "message": "endpoint not found"}

    def _new_order(self, b: dict, cid: str, **fields) -> dict:
        now = self._now()
        o = copy.deepcopy(ORDER_STRINGNUMS)
        o.update(id=str(uuid.uuid4()), client_order_id=cid, created_at=now, updated_at=now,
                 submitted_at=now, symbol=b["symbol"], qty=self._out(float(b["qty"])),
                 filled_qty=self._out(0.0), side=b["side"], time_in_force=b["time_in_force"],
                 status="accepted")
        o.update(fields)
        return o

    def create(self, b: dict):
        if b.get("qty") is None and b.get("notional") is None:
            return 422, {"code": 40010001, "message": "qty or notional is required"}
        cid = b.get("client_order_id") or str(uuid.uuid4())
        self.reached[cid] += 1
        if self.by_cid(cid):
            return 422, ERR_UNIQUE
        oco = b.get("order_class") == "oco"
        take = (b.get("take_profit") or {}).get("limit_price")
        stop_leg = (b.get("stop_loss") or {}).get("stop_price")
        if oco and b.get("type") != "limit":
            return 422, ERR_OCO_TYPE
        if oco and (take is None or stop_leg is None):
            return 422, ERR_OCO_LEGS
        prices = {f: b.get(f) for f in ("limit_price", "stop_price")}
        if oco:
            prices.update({"take_profit.limit_price": take, "stop_loss.stop_price": stop_leg})
        for field, p in prices.items():
            if p is not None and float(p) >= 1 and abs(round(float(p), 2) - float(p)) > 1e-9:
                msg = ERR_SUBPENNY["message"].replace("limit_price 290.123", f"{field} {p}")
                return 422, {**ERR_SUBPENNY, "message": msg}
        qty, symbol, side = float(b["qty"]), b["symbol"], b["side"]
        if oco and ((float(take) <= float(stop_leg)) if side == "sell" else (
                float(take) >= float(stop_leg))):
            return 422, ERR_OCO_PRICES
        held = self._held_qty(symbol)
        if side == "sell" and qty > held + 1e-9 and not self.shorting_enabled:
            return 403, ERR_NO_SHORT
        if self.book and side == "sell" and held > 0:
            reserved = sum(float(o["qty"]) - float(o["filled_qty"] or 0)
                           for o in self.orders.values()
                           if o["symbol"] == symbol and o["side"] == "sell"
                           and o["status"] in OPEN and o["id"] not in self.parent_of)
            available = max(0.0, held - reserved)
            if reserved > 0 and qty > available + 1e-9:
                msg = (f"insufficient qty available for order (requested: {self._out(qty)}, "
                       f"available: {self._out(available)})")
                return 403, {**ERR_INSUFFICIENT_QTY, "available": self._out(available),
                             "existing_qty": self._out(held),
                             "held_for_orders": self._out(reserved), "message": msg,
                             "symbol": symbol}
        price = float(b.get("limit_price") or take or self.prices.get(symbol, 100.0))
        if side == "buy" and qty * price > self.buying_power:
            return 403, ERR_BUYING_POWER
        if not oco:
            o = self._new_order(b, cid, type=b["type"], order_type=b["type"],
                                limit_price=self._out(_f(b.get("limit_price"))),
                                stop_price=self._out(_f(b.get("stop_price"))))
            self.orders[o["id"]] = o
            return 200, o
        parent = self._new_order(b, cid, type="limit", order_type="limit",
                                 order_class="oco", limit_price=self._out(float(take)),
                                 stop_price=None, status="new")
        leg = self._new_order(b, str(uuid.uuid4()), type="stop", order_type="stop",
                              order_class="oco", limit_price=None,
                              stop_price=self._out(float(stop_leg)), status="held")
        self.orders[parent["id"]] = parent
        self.orders[leg["id"]] = leg
        self.leg_ids[parent["id"]] = [leg["id"]]
        self.parent_of[leg["id"]] = parent["id"]
        return 200, self._render(parent, True)

    def replace(self, old: dict, b: dict):
        if old["status"] not in OPEN:
            return 422, ERR_NOT_OPEN
        if b.get("qty") is not None and float(b["qty"]) != int(float(b["qty"])):
            return 422, ERR_QTY_INTEGER
        changes = {f: float(b[f]) for f in ("qty", "limit_price", "stop_price")
                   if b.get(f) is not None}
        if changes and all(old[f] is not None and float(old[f]) == v
                           for f, v in changes.items()):
            return 422, ERR_UNCHANGED
        cid = b.get("client_order_id") or str(uuid.uuid4())
        if self.by_cid(cid):
            return 422, ERR_UNIQUE
        now = self._now()
        new = copy.deepcopy(old)
        new.update(id=str(uuid.uuid4()), client_order_id=cid, created_at=now, updated_at=now,
                   submitted_at=now, filled_qty=self._out(0.0), filled_avg_price=None,
                   replaces=old["id"],
                   status="held" if old["status"] == "held" else "accepted")
        for field, v in changes.items():
            new[field] = self._out(v)
        old.update(status="replaced", replaced_by=new["id"], replaced_at=now, updated_at=now)
        self.orders[new["id"]] = new
        parent = self.parent_of.pop(old["id"], None)
        if parent is not None:  # a leg of an OCO: the new leg takes its place
            self.leg_ids[parent] = [new["id"] if x == old["id"] else x
                                    for x in self.leg_ids[parent]]
            self.parent_of[new["id"]] = parent
            self.orders[parent]["updated_at"] = now
        return 200, new


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive + small writes: no 40 ms delayed-ACK stalls

    def log_message(self, *args) -> None:  # quiet
        pass

    def reply(self, status: int, payload, content_type: str = "application/json",
              headers: dict | None = None) -> None:
        data = b"" if payload is None else (
            payload if isinstance(payload, str) else json.dumps(payload)).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
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
