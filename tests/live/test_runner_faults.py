"""The runner driving AlpacaBroker against the fake Alpaca server, with faults injected at
the HTTP level while bars are fed (tests/live/fake_alpaca.py; alpaca-py's real client).

One scripted session over four synthetic symbols (an SMA 2/4 crossover sized at the
decision close, a SQLite journal): timeouts, 429s with and without Retry-After, a 503, a
proxy error page echoing the key headers, rejections (403 buying power, 422 sub-penny, in
Alpaca's bodies), a partial fill then the rest, a partial fill then the day-end cancel, a
connection dropped AFTER Alpaca accepted the order, retries running out (once with the order
at Alpaca, once without), a failing poll, and a restart (a fresh adapter and runner on the
same run id, `reconcile()`) that finds a fill made while the runner was down. Checked: each
client order id reached the order book once, every fill is journaled once, each fault left
one clear log line naming the order, retries are bounded, the journal's final statuses are
the server's, the restart sends nothing twice, and no key or secret is written anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("alpaca")

from mltrader.config import config_from_dict  # noqa: E402
from mltrader.data.feeds import BarEvent  # noqa: E402
from mltrader.live import runner as runner_module  # noqa: E402
from mltrader.live.brokers.alpaca import AlpacaBroker  # noqa: E402
from mltrader.live.journal import Journal  # noqa: E402
from mltrader.live.runner import Runner  # noqa: E402
from mltrader.testing import synthetic_bars  # noqa: E402
from tests.live.fake_alpaca import BY_CID, KEY, ORDERS, SECRET, FakeAlpaca  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated")

SYMS = ("S00", "S01", "S02", "S03")
HISTORY = synthetic_bars(30, len(SYMS), seed=7, ohlc=True, start="2024-01-01")
MOVE = {"d": 0.99, "u": 1.01, "U": 1.12, "D": 0.88}  # gentle, and jumps that cross SMAs
PLAN = {  # one close move per live bar: a jump up crosses SMA2 over SMA4 (an entry)
    "S00": "ddddUuuDddUuuuDdd",
    "S01": "ddddUuuuDddUuuDdd",
    "S02": "dddddUuuDddUuuuDd",
    "S03": "dddddUuuuDddUuuDd",
}
CFG = config_from_dict({
    "strategy": {"name": "crossover", "fast": 2, "slow": 4},
    "execution": {"size_at": "decision", "rebalance_band": 0.0, "whole_shares": True}})


def _bars() -> list[tuple[pd.Timestamp, dict[str, BarEvent]]]:
    out = []
    last = {s: float(HISTORY.close[-1, j]) for j, s in enumerate(SYMS)}
    t = HISTORY.index[-1]
    for k in range(len(PLAN["S00"])):
        t = t + pd.offsets.BDay(1)
        group = {}
        for s in SYMS:
            o, c = last[s], last[s] * MOVE[PLAN[s][k]]
            group[s] = BarEvent(s, t, o, max(o, c) * 1.002, min(o, c) * 0.998, c, 1e5, "1d")
            last[s] = c
        out.append((t, group))
    return out


BARS = _bars()


class Crash(BaseException):
    """A power cut inside the runner (no Exception: nothing in the runner catches it)."""


@dataclass
class Session:
    path: Path
    fake: FakeAlpaca
    journal: Journal
    sleeps: list[float] = field(default_factory=list)
    runner: Runner | None = None
    history_before: object = None  # the runner's window before the bar being run
    k: int = 0

    def broker(self) -> AlpacaBroker:  # keys from the environment, like the CLI
        return AlpacaBroker(url_override=self.fake.url, sleep=self.sleeps.append,
                            max_retries=2, backoff=0.1, timeout=0.25)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path / 'journal.db'}"

    def ids(self) -> dict[tuple[int, str], str]:
        """(bar, symbol) -> client order id of every journaled order."""
        bar = {t: k for k, (t, _) in enumerate(BARS)}
        frame = self.journal.orders_frame()
        return {(bar[pd.Timestamp(t)], sym): cid for t, sym, cid in
                zip(frame["bar_time"], frame["symbol"], frame["client_order_id"],
                    strict=True)}

    def order(self, k: int, sym: str) -> dict:
        return self.fake.by_cid(self.ids()[(k, sym)])

    def fill(self, k: int, sym: str, share: float, at_bar: int) -> None:
        """Fill `share` of the order's quantity (the rest with share=None) at a bar's open."""
        o = self.order(k, sym)
        left = float(o["qty"]) - float(o["filled_qty"])
        qty = left if share is None else float(o["qty"]) * share // 1
        self.fake.fill(o["id"], qty, BARS[at_bar][1][sym].open)

    def bar(self, hold: tuple[tuple[int, str], ...] = ()) -> list[str]:
        """Feed the next bar; working market orders fill first at its open (but `hold`)."""
        t, group = BARS[self.k]
        self.fake.clock = (t + pd.Timedelta(hours=14, minutes=30)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")  # the session's open: fills at the open are stamped so
        held = {self.ids().get(x) for x in hold}
        for oid, o in list(self.fake.orders.items()):
            if o["type"] == "market" and o["status"] in ("accepted", "new") and \
                    o["client_order_id"] not in held:
                self.fake.fill(oid, float(o["qty"]), group[o["symbol"]].open)
        for sym, e in group.items():
            self.fake.prices[sym] = e.close
        self.history_before = self.runner.history
        sent = self.runner.on_bar(t, group)
        self.k += 1
        return [r.client_order_id for r in sent]


@pytest.fixture
def session(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRADER_ALPACA_KEY", KEY)  # recognisable fake keys
    monkeypatch.setenv("MLTRADER_ALPACA_SECRET", SECRET)
    fake = FakeAlpaca(book=True)
    fake.reply_delay = 0.5
    s = Session(tmp_path, fake, Journal(f"sqlite:///{tmp_path / 'journal.db'}"))
    s.runner = Runner(CFG, s.broker(), HISTORY, journal=s.journal)
    yield s
    s.journal.close()
    fake.stop()


# (bar, symbol) of an order -> the WARNING-or-above lines its faults must leave, each naming
# the order: (text, lines); the INFO lines (a partial fill is news, not a fault); its POSTs
# (more than 1 only where a fault hit before Alpaca recorded the order)
EXPECT = {
    (4, "S00"): ([("(timeout)", 1)], [], 1),  # the reply never came; Alpaca had it
    (4, "S01"): ([("HTTP 429: Too Many Requests (attempt 1", 1)], [("partially filled", 1)],
                 2),  # then the rest
    (5, "S02"): ([("HTTP 429: Too Many Requests (Retry-After 2s)", 1)], [], 2),
    (5, "S03"): ([("HTTP 503", 1), ("canceled at Alpaca with 237 of 475 filled", 1)],
                 [("partially filled", 1)], 2),  # the day ended
    (7, "S00"): ([("connection failed or dropped", 1)], [], 1),  # dropped after accept
    (9, "S03"): ([("HTTP 500: upstream error", 1)], [], 2),  # the proxy page with the keys
    (10, "S00"): ([("insufficient buying power", 1)], [], 1),  # 403
    (11, "S01"): ([("sub-penny", 1)], [], 1),  # 422
    (11, "S02"): ([("(timeout)", 3)], [], 1),  # POST + 2 look-ups: gave up; Alpaca had it
    (12, "S03"): ([("HTTP 503", 3), ("never reached the broker", 1)], [], 1),
}
BACKOFF = [0.1, 0.1, 2.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.1, 0.2]


def test_faults_through_the_runner_and_a_restart(session, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3 included
    s, fake = session, session.fake
    for _ in range(4):
        assert s.bar() == []
    fake.fault("POST", ORDERS, "timeout", cid="-S00-")
    fake.fault("POST", ORDERS, "429", cid="-S01-")
    assert len(s.bar()) == 2  # 4: both entries sent
    s.fill(4, "S01", 0.5, at_bar=5)  # half, the rest at the next bar
    fake.fault("POST", ORDERS, "429:2", cid="-S02-")
    fake.fault("POST", ORDERS, "503", cid="-S03-")
    s.bar(hold=((4, "S01"),))  # 5
    s.fill(4, "S01", None, at_bar=6)
    s.fill(5, "S03", 0.5, at_bar=6)  # half, then the day ends
    fake.fault("GET", ORDERS, "503")  # the poll for order updates fails once
    s.bar(hold=((5, "S03"),))  # 6
    fake.set_status(s.order(5, "S03")["id"], "canceled")  # a day order: Alpaca cancels it
    fake.fault("POST", ORDERS, "drop_after", cid="-S00-")  # the classic duplicate trap
    s.bar()  # 7
    fake.fault("GET", "/v2/account", "timeout")
    s.bar()  # 8
    fake.fault("POST", ORDERS, "echo", cid="-S03-")
    s.bar()  # 9: sells the 237 shares held
    fake.fault("POST", ORDERS, "reject:403", cid="-S00-")
    assert s.bar() == []  # 10: rejected
    fake.fault("POST", ORDERS, "reject:422", cid="-S01-")
    fake.fault("POST", ORDERS, "timeout", cid="-S02-")
    fake.fault("GET", BY_CID, "timeout", "timeout", cid="-S02-")
    assert s.bar() == []  # 11: one rejected, one not confirmed (but at Alpaca)
    fake.fault("POST", ORDERS, "503", cid="-S03-")
    fake.fault("GET", BY_CID, "503", "503", cid="-S03-")
    assert s.bar() == []  # 12: not confirmed (and not at Alpaca)
    s.bar()  # 13
    s.bar()  # 14

    # 15: the runner dies right after Alpaca took the bar's order, before journaling it
    def checkpoint(name: str) -> None:
        if name == "submitted":
            raise Crash(name)

    real = runner_module.checkpoint
    monkeypatch.setattr(runner_module, "checkpoint", checkpoint)
    with pytest.raises(Crash):
        s.bar()
    monkeypatch.setattr(runner_module, "checkpoint", real)
    ids = s.ids()
    down = fake.by_cid(ids[(15, "S02")])
    assert s.journal.order_row(ids[(15, "S02")])["status"] == "pending"
    fake.fill(down["id"], float(down["qty"]), 55.0)  # filled while the runner is down
    posts_before = {cid: fake.posts(cid) for cid in ids.values()}
    run_id = s.runner.run_id
    s.journal.close()
    s.journal = Journal(s.url)  # a new process: a fresh adapter, runner and journal
    s.runner = Runner(CFG, s.broker(), s.history_before, journal=s.journal, run_id=run_id)
    counts = s.runner.reconcile()
    assert counts == {"orders_checked": 1, "fills_recovered": 1, "cancelled": 0,
                      "adopted": 0, "left_for_rerun": 0, "position_mismatches": 0}
    s.k = 15
    assert s.bar() == []  # 15 again: the position is gone, nothing to send
    s.bar()  # 16
    s.runner.finish()

    j = s.journal
    ids = s.ids()
    assert len(ids) == 13
    # each id reached Alpaca's order book once at most; POSTs only as the faults explain
    assert max(fake.reached.values()) == 1
    assert {cid: fake.posts(cid) for cid in ids.values()} == {
        cid: EXPECT.get(key, ([], [], 1))[2] for key, cid in ids.items()}
    assert {cid: fake.posts(cid) for cid in posts_before} == posts_before  # restart: none
    # retries bounded: the backoff sleeps, and the requests of the two that gave up
    assert s.sleeps == BACKOFF
    for key in ((11, "S02"), (12, "S03")):
        about = [r for r in fake.requests if ids[key] in str(r[3] or r[2])]
        assert len(about) == 4  # POST + 2 look-ups (3 attempts), 1 look-up at the next bar
    # no fill twice: the journal's fills are the server's
    fills = j.fills_for()
    assert fills["fill_id"].is_unique
    got = fills.groupby("client_order_id")["qty"].sum().to_dict()
    want = {o["client_order_id"]: float(o["filled_qty"]) for o in fake.orders.values()
            if float(o["filled_qty"] or 0) > 0}
    assert got == want
    assert (fills["client_order_id"] == ids[(4, "S01")]).sum() == 2  # partial + rest
    # final statuses: the journal says what the server says
    orders = j.orders_frame()
    for cid, status, reason in zip(orders["client_order_id"], orders["status"],
                                   orders["reason"], strict=True):
        at = fake.by_cid(cid)
        if at is not None:
            assert status == fake.domain_status(at["id"]), cid
        elif cid in (ids[(10, "S00")], ids[(11, "S01")]):
            assert status == "rejected" and "alpaca rejected" in reason
        else:
            assert cid == ids[(12, "S03")] and status == "cancelled"
            assert reason == "never reached the broker"
    assert set(orders["status"]) == {"filled", "cancelled", "rejected"}
    audit = j.audit_frame()
    failed = audit.loc[audit["action"] == "order_submit_failed", "detail"]
    assert sorted(d["client_order_id"] for d in failed) == sorted(
        [ids[(11, "S02")], ids[(12, "S03")]])
    assert (audit["action"] == "order_rejected").sum() == 2
    held = {p: q for p, (q, _) in fake.held.items()}
    assert held == {}  # everything bought was sold (the rejected re-entries never bought)

    # every fault left one clear line naming the order and the fault, and no more
    lines = [r for r in caplog.records if r.name.startswith("mltrader")]
    for key, cid in ids.items():
        loud, quiet, _ = EXPECT.get(key, ([], [], 1))
        for level, texts in ((logging.WARNING, loud), (logging.INFO, quiet)):
            about = [r.getMessage() for r in lines
                     if cid in r.getMessage() and (r.levelno >= level if level ==
                                                   logging.WARNING else r.levelno == level)]
            for text, n in texts:
                assert sum(text in m for m in about) == n, (key, text, about)
            if level == logging.WARNING:  # and nothing else that loud about it
                assert len(about) == sum(n for _, n in texts), (key, about)
    for text in ("alpaca updates: HTTP 503", "alpaca account: no response"):
        assert sum(text in r.getMessage() for r in lines) == 1

    # no key or secret in any log record, the journal, or any file the session wrote
    assert fake.echoed and SECRET in fake.echoed[0]  # the proxy did send them back
    assert "***" in caplog.text
    for r in caplog.records:
        text = f"{r.getMessage()} {r.args!r} {r.exc_text or ''}"
        assert KEY not in text and SECRET not in text
    j.close()
    files = [p for p in s.path.rglob("*") if p.is_file()]
    assert any(p.name == "journal.db" for p in files)
    for p in files:
        data = p.read_bytes()
        assert KEY.encode() not in data and SECRET.encode() not in data, p


def _exit_cfg(stop_loss: float, take_profit: float, trailing_stop: float):
    return config_from_dict({
        "strategy": {"name": "crossover", "fast": 2, "slow": 4},
        "risk": {"stop_loss": stop_loss, "take_profit": take_profit,
                 "trailing_stop": trailing_stop},
        "execution": {"size_at": "decision", "rebalance_band": 0.0, "whole_shares": True}})


def _trigger_exits(fake: FakeAlpaca, group: dict[str, BarEvent]) -> None:
    """The fake market inside a bar: an OCO's stop leg fills at its stop when the low
    reaches it, its take-profit when the high does."""
    for pid, legs in list(fake.leg_ids.items()):
        parent, leg = fake.orders[pid], fake.orders[legs[-1]]
        e = group[parent["symbol"]]
        if leg["status"] == "held" and e.low <= float(leg["stop_price"]):
            fake.fill(leg["id"], float(leg["qty"]), min(e.open, float(leg["stop_price"])))
        elif parent["status"] == "new" and e.high >= float(parent["limit_price"]):
            fake.fill(pid, float(parent["qty"]), float(parent["limit_price"]))


def test_protective_exits_through_the_runner_are_oco_orders(session):
    """Tight stops: every position leaves through its OCO exit; the trailing stop moves the
    stop leg (PATCH), a restart with OCOs open adopts no leg, fills count once."""
    s, fake = session, session.fake
    cfg = _exit_cfg(0.05, 0.3, 0.04)
    s.runner = Runner(cfg, s.broker(), HISTORY, journal=s.journal)
    for _ in range(7):
        _trigger_exits(fake, BARS[s.k][1])
        s.bar()
    open_exits = [o for o in fake.orders.values()
                  if o.get("order_class") == "oco" and o["status"] == "new"]
    assert len(open_exits) == 4
    run_id = s.runner.run_id  # a restart with the OCOs working: the legs stay theirs
    s.runner = Runner(cfg, s.broker(), s.runner.history, journal=s.journal, run_id=run_id)
    counts = s.runner.reconcile()
    assert (counts["adopted"], counts["position_mismatches"]) == (0, 0)
    assert counts["orders_checked"] == 4
    while s.k < len(BARS):
        _trigger_exits(fake, BARS[s.k][1])
        s.bar()
    s.runner.finish()

    orders = s.journal.orders_frame()
    exits = orders[orders["type"] == "stop"]
    assert len(exits) == 8 and orders["run_id"].notna().all()  # nothing adopted
    for cid, status, stop, take in zip(exits["client_order_id"], exits["status"],
                                       exits["stop_price"], exits["limit_price"],
                                       strict=True):
        parent = fake.by_cid(cid)
        (leg,) = fake.legs(parent["id"])
        assert parent["order_class"] == "oco" and fake.posts(cid) == 1
        assert status == fake.domain_status(parent["id"]) == "filled"
        assert (stop, take) == (float(leg["stop_price"]), float(parent["limit_price"]))
    patches = [p for m, p, _, _ in fake.requests if m == "PATCH"]
    legs = {o["id"] for o in fake.orders.values() if o["type"] == "stop"}
    assert len(patches) >= 8 and {p.rsplit("/", 1)[1] for p in patches} <= legs
    fills = s.journal.fills_for()
    got = fills.groupby("client_order_id")["qty"].sum().to_dict()
    want = {}
    for o in fake.orders.values():
        root = fake.orders[fake.parent_of[o["id"]]] if o["id"] in fake.parent_of else o
        if o["status"] != "replaced" and float(o["filled_qty"]) > 0:
            want[root["client_order_id"]] = want.get(root["client_order_id"], 0.0) + float(
                o["filled_qty"])
    assert got == want and fills["fill_id"].is_unique
    assert fake.held == {}  # every position left through its stop


def test_strategy_exit_of_a_protected_position_closes_it(session):
    """Wide stops: the crossover's exits come before the stops; they must close.
    Regression: the runner sent the closing order while the protective exit still held the
    shares at Alpaca (403 insufficient qty available): the strategy could never exit."""
    s, fake = session, session.fake
    s.runner = Runner(_exit_cfg(0.2, 0.5, 0.15), s.broker(), HISTORY, journal=s.journal)
    while s.k < len(BARS):
        _trigger_exits(fake, BARS[s.k][1])
        s.bar()
    s.runner.finish()
    orders = s.journal.orders_frame()
    assert "rejected" not in set(orders["status"])
    assert fake.held == {}  # the strategy's last word on every symbol was "flat"
