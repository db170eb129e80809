"""The trading journal: idempotent intents, fill dedup, append-only audit enforced by the
database, WAL, reopen, crash safety under SIGKILL, secret scrubbing, frames.

Every test that takes ``url`` runs on SQLite and on PostgreSQL. For PostgreSQL a throwaway
server is started in a temp folder (initdb + pg_ctl on a free 127.0.0.1 port, as the
``postgres`` user when the tests run as root); without a server binary or psycopg those
cases skip, saying why.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from mltrader.live.brokers.base import Fill, Order, OrderRequest, Position
from mltrader.live.journal import (
    MASK,
    Journal,
    JournalError,
    is_secret_key,
    mask_url,
    t_fills,
)

PG_PASSWORD = "pg-url-pw-7f3a9c"  # the throwaway server trusts everyone; this must never show
T0 = pd.Timestamp("2024-01-02 09:30", tz="America/New_York")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for the whole session (torn down at the end)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install 'psycopg[binary]' to run the "
                    "PostgreSQL journal tests")
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL server binary (initdb/pg_ctl) on this machine: "
                    "PostgreSQL journal tests skipped")
    base = tempfile.mkdtemp(prefix="mltrader-pg-")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        import pwd

        runuser = shutil.which("runuser")
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pw = None
        if runuser is None or pw is None:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip("running as root without a 'postgres' user (or runuser) to start a "
                        "PostgreSQL server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = [runuser, "-u", "postgres", "--"]
    data, logfile = os.path.join(base, "data"), os.path.join(base, "server.log")
    port = _free_port()
    try:
        subprocess.run(prefix + [initdb, "-D", data, "-A", "trust", "-U", "postgres",
                                 "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=60)
        opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -F"
        subprocess.run(prefix + [pg_ctl, "-D", data, "-o", opts, "-l", logfile, "-w",
                                 "-t", "30", "start"],
                       check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start the throwaway PostgreSQL server: {exc.stderr!r}")
    try:
        yield {"host": "127.0.0.1", "port": port}
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh database on the throwaway server; the URL carries a (fake) password."""
    import psycopg

    name = f"journal_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=pg_server["host"], port=pg_server["port"], user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return (f"postgresql+psycopg://postgres:{PG_PASSWORD}@{pg_server['host']}:"
            f"{pg_server['port']}/{name}")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'journal.db'}"


@pytest.fixture
def journal(url):
    j = Journal(url)
    yield j
    j.close()


def _req(cid: str, qty: float = 10.0, side: str = "buy", symbol: str = "AAA") -> OrderRequest:
    return OrderRequest(cid, symbol, side, qty)


def _fill(cid: str, fill_id: str, qty: float = 10.0, price: float = 100.0,
          symbol: str = "AAA", when: pd.Timestamp = T0) -> Fill:
    return Fill(cid, "b-" + cid, fill_id, symbol, "buy", qty, price, 0.5, when)


def _raw_engine(url: str) -> sa.Engine:
    """A plain engine with none of the journal's code in the path."""
    return sa.create_engine(url)


# --------------------------------------------------------------------------- intents, fills


def test_order_intent_is_idempotent(url):
    j = Journal(url)
    run = j.start_run("mom", "paper", "paper", config={"lookback": 20})
    assert j.record_order_intent(_req("c1", 10), run, T0) is True
    assert j.record_order_intent(_req("c1", 99), run, T0) is False  # same id: don't send
    orders = j.orders_frame()
    assert list(orders["client_order_id"]) == ["c1"]
    row = orders.iloc[0]
    assert row["qty"] == 10.0 and row["status"] == "pending" and row["run_id"] == run
    assert row["bar_time"] == T0  # same instant, stored in UTC
    assert str(row["bar_time"].tz) == "UTC"
    actions = list(j.audit_frame(run_id=run)["action"])
    assert actions == ["run_started", "order_intent", "order_intent_duplicate"]
    assert j.known_client_ids() == {"c1"}
    j.close()
    with Journal(url) as again:  # still refused after a restart
        assert again.record_order_intent(_req("c1"), run, T0) is False


def test_intent_and_its_audit_row_commit_together(url, monkeypatch):
    j = Journal(url)
    run = j.start_run("mom", "paper")
    original = Journal._insert_audit

    def failing(self, conn, action, detail, actor="runner", run_id=None):
        if action == "order_intent":
            raise RuntimeError("simulated crash between the two inserts")
        return original(self, conn, action, detail, actor=actor, run_id=run_id)

    monkeypatch.setattr(Journal, "_insert_audit", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        j.record_order_intent(_req("c1"), run, T0)
    monkeypatch.setattr(Journal, "_insert_audit", original)
    assert "c1" not in j.known_client_ids()  # the order row was rolled back with the audit
    assert j.audit_frame(action="order_intent").empty
    assert j.record_order_intent(_req("c1"), run, T0) is True
    j.close()


def test_fill_dedup_and_adoption(journal):
    run = journal.start_run("mom", "paper")
    journal.record_order_intent(_req("c1"), run, T0)
    assert journal.record_fill(_fill("c1", "f1", qty=4, price=100.0)) is True
    assert journal.record_fill(_fill("c1", "f1", qty=4, price=999.0)) is False  # replay
    assert journal.record_fill(_fill("c1", "f2", qty=6, price=101.0)) is True
    fills = journal.fills_for(run)
    assert list(fills["fill_id"]) == ["f1", "f2"]
    assert list(fills["price"]) == [100.0, 101.0]
    assert len(journal.audit_frame(action="fill")) == 2
    # a fill for an order the journal never saw: kept, and the order is adopted for
    # reconciliation rather than the fill being lost
    assert journal.record_fill(_fill("ghost", "f9", symbol="ZZZ")) is True
    pending = {o["client_order_id"]: o for o in journal.pending_orders()}
    assert pending["ghost"]["status"] == "unknown" and pending["ghost"]["run_id"] is None
    assert len(journal.fills_for()) == 3 and len(journal.fills_for(run)) == 2


def test_foreign_keys_enforced(journal):
    with pytest.raises(sa.exc.IntegrityError):
        with journal.engine.begin() as conn:
            conn.execute(t_fills.insert().values(
                fill_id="x", client_order_id="no-such-order", symbol="A", side="buy",
                qty=1.0, price=1.0, commission=0.0, time=T0))


def test_order_updates_and_pending(journal):
    run = journal.start_run("mom", "paper")
    for cid in ("c1", "c2", "c3", "c4"):
        assert journal.record_order_intent(_req(cid), run, T0)
    journal.update_order(Order("c1", "b1", "AAA", "buy", 10, 10, "filled", avg_fill_price=100))
    journal.update_order(Order("c2", "b2", "AAA", "buy", 10, 3, "partially_filled"))
    journal.update_order(Order("c3", "b3", "AAA", "buy", 10, 0, "cancelled", reason="user"))
    # a late "accepted" after "filled" must not reopen the order
    assert journal.update_order(Order("c1", "b1", "AAA", "buy", 10, 0, "accepted")) is True
    pending = [o["client_order_id"] for o in journal.pending_orders()]
    assert pending == ["c2", "c4"]
    orders = journal.orders_frame().set_index("client_order_id")
    assert orders.loc["c1", "status"] == "filled" and orders.loc["c1", "filled_qty"] == 10
    assert orders.loc["c1", "avg_fill_price"] == 100.0
    assert orders.loc["c3", "reason"] == "user" and orders.loc["c2", "broker_id"] == "b2"
    assert len(journal.audit_frame(action="order_update_stale")) == 1
    # an order the broker knows but the journal doesn't: adopted, reported as unknown
    assert journal.update_order(Order("x9", "b9", "BBB", "sell", 5, 0, "accepted")) is False
    assert "x9" in journal.known_client_ids()
    assert list(journal.orders_frame(status="filled")["client_order_id"]) == ["c1"]


# --------------------------------------------------------------------------- audit


def test_audit_is_append_only_in_the_database(url):
    j = Journal(url)
    j.audit("first", {"n": 1})
    j.audit("second", {"n": 2})
    before = j.audit_frame()
    raw = _raw_engine(url)
    statements = ["UPDATE audit SET action = 'forged'", "DELETE FROM audit WHERE id = 1",
                  "DELETE FROM audit"]
    if url.startswith("postgresql"):
        statements.append("TRUNCATE audit")
    for sql in statements:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with raw.begin() as conn:
                conn.execute(sa.text(sql))
    raw.dispose()
    pd.testing.assert_frame_equal(j.audit_frame(), before)
    public = [n for n in dir(Journal) if not n.startswith("_")]
    assert not [n for n in public if "audit" in n
                and re.search("update|delete|remove|purge|clear|truncate|edit", n)]
    j.close()


def test_audit_triggers_are_restored_on_open(url):
    Journal(url).close()
    raw = _raw_engine(url)
    drops = (["DROP TRIGGER audit_no_update", "DROP TRIGGER audit_no_delete"]
             if url.startswith("sqlite") else
             ["DROP TRIGGER audit_no_update_delete ON audit",
              "DROP TRIGGER audit_no_truncate ON audit"])
    with raw.begin() as conn:
        for sql in drops:
            conn.execute(sa.text(sql))
    j = Journal(url)
    j.audit("x", {})
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with raw.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit"))
    raw.dispose()
    j.close()


# --------------------------------------------------------------------------- SQLite specifics


def test_sqlite_wal_and_pragmas(tmp_path):
    path = tmp_path / "sub" / "journal.db"  # parent folder is created
    j = Journal(f"sqlite:///{path}")
    j.audit("x", {})
    with j.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    raw = sqlite3.connect(path)  # WAL is a property of the file: any opener sees it
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    j.close()
    fast = Journal(f"sqlite:///{path}", synchronous="NORMAL")
    with fast.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    fast.close()


def test_locked_database_is_waited_for_and_retried(tmp_path):
    path = tmp_path / "journal.db"
    url = f"sqlite:///{path}"
    patient = Journal(url, busy_timeout_ms=20, lock_retries=6)
    impatient = Journal(url, busy_timeout_ms=20, lock_retries=0)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    timer = threading.Timer(0.4, holder.execute, args=("COMMIT",))
    timer.start()
    start = time.monotonic()
    patient.audit("after_lock", {})
    assert time.monotonic() - start >= 0.3
    timer.join()
    assert list(patient.audit_frame()["action"]) == ["after_lock"]
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(JournalError, match="locked"):
        impatient.audit("never", {})
    holder.execute("ROLLBACK")
    holder.close()
    patient.close()
    impatient.close()


CHILD = r"""
import sys
import pandas as pd
from mltrader.live.brokers.base import Fill, OrderRequest, Position
from mltrader.live.journal import Journal

url, prefix, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
j = Journal(url)
run = j.start_run("child-" + prefix, "paper", "paper")
t0 = pd.Timestamp("2024-01-02 14:30", tz="UTC")
for i in range(limit):
    cid = f"{prefix}{i:06d}"
    bar = t0 + pd.Timedelta(minutes=i)
    if not j.record_order_intent(OrderRequest(cid, "AAA", "buy", 1.0), run, bar):
        raise SystemExit("duplicate " + cid)
    j.record_fill(Fill(cid, "b" + cid, "f" + cid, "AAA", "buy", 1.0, 10.0, 0.01, bar))
    j.snapshot(run, bar, [Position("AAA", float(i + 1), 10.0)], 1000.0 - i, 1000.0)
    print(i, flush=True)
j.close()
"""


def _child(url: str, prefix: str, limit: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, url, prefix, str(limit)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_second_process_writes_concurrently(sqlite_url):
    j = Journal(sqlite_url)
    kids = [_child(sqlite_url, prefix, 150) for prefix in ("a", "b")]
    for i in range(60):  # the parent writes too, while the children do
        j.audit("parent", {"i": i})
    for kid in kids:
        out, err = kid.communicate(timeout=60)
        assert kid.returncode == 0, err
    ids = j.known_client_ids()
    assert ids == {f"{p}{i:06d}" for p in "ab" for i in range(150)}
    assert len(j.audit_frame(action="order_intent")) == 300
    assert len(j.audit_frame(action="parent")) == 60
    assert len(j.fills_for()) == 300
    j.close()


def test_sigkill_mid_writes_leaves_a_consistent_journal(url):
    """Three child processes write intents + fills + snapshots in a loop, one transaction
    each; each is SIGKILLed at a random moment. Reopened, the journal must hold exactly
    what was committed: whole transactions only, every intent with its audit row."""
    j = Journal(url)  # schema exists before the children start
    kids = {f"k{r}": _child(url, f"k{r}", 1_000_000) for r in range(3)}
    deadline = time.monotonic() + 20
    try:
        while True:  # wait until every child is well into its series of writes
            ids = j.known_client_ids()
            if all(sum(i.startswith(p) for i in ids) >= 25 for p in kids):
                break
            dead = [k.stderr.read() for k in kids.values() if k.poll() is not None]
            assert not dead and time.monotonic() < deadline, dead
            time.sleep(0.05)
        for kid in kids.values():
            time.sleep(random.uniform(0.0, 0.005))  # land somewhere inside a transaction
            os.kill(kid.pid, signal.SIGKILL)
    finally:
        for kid in kids.values():
            kid.kill()
    lasts = {}
    for prefix, kid in kids.items():
        out, _ = kid.communicate(timeout=10)
        assert kid.returncode == -signal.SIGKILL
        lasts[prefix] = [int(x) for x in out.split() if x.isdigit()][-1]
    j.close()

    j = Journal(url)
    ids = j.known_client_ids()
    intents = j.audit_frame(action="order_intent")
    assert len(intents) == len(ids)
    assert {d["client_order_id"] for d in intents["detail"]} == ids  # every intent audited
    fills = j.fills_for()
    assert set(fills["client_order_id"]) <= ids
    assert {d["fill_id"] for d in j.audit_frame(action="fill")["detail"]} == set(
        fills["fill_id"])
    for prefix, last in lasts.items():
        mine = {i for i in ids if i.startswith(prefix)}
        n = len(mine)
        # a contiguous prefix: nothing half-written, every write the child saw commit is there
        assert mine == {f"{prefix}{i:06d}" for i in range(n)}
        assert last + 1 <= n <= last + 2
        assert set(fills["client_order_id"]) >= {f"{prefix}{i:06d}" for i in range(last + 1)}
    if url.startswith("sqlite"):
        with j.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
    run = int(intents["run_id"].iloc[0])
    assert j.record_order_intent(_req("k0000000"), run, T0) is False
    assert j.record_order_intent(_req("after-crash"), run, T0) is True
    j.close()


# --------------------------------------------------------------------------- durability


def test_reopen_after_close_keeps_everything(url):
    j = Journal(url)
    run = j.start_run("mom", "alpaca", "live", config_hash="abc123")
    j.record_decision(run, T0, "AAA", {"mom": 0.25, "vol": 0.1}, prediction=0.01,
                      target=0.5, model_artifact_hash="m1")
    j.record_order_intent(_req("c1"), run, T0)
    j.update_order(Order("c1", "b1", "AAA", "buy", 10, 10, "filled", avg_fill_price=100.0))
    j.record_fill(_fill("c1", "f1"))
    j.snapshot(run, T0, {"AAA": Position("AAA", 10, 100.0)}, 9000.0, 10000.0)
    j.audit("note", {"text": "hello"}, actor="operator", run_id=run)
    frames = {name: getattr(j, name)() for name in
              ("orders_frame", "fills_for", "audit_frame", "decisions_frame", "runs_frame")}
    eq, pos = j.equity_frame(run), j.positions_frame(run)
    j.close()
    j.close()  # idempotent
    with pytest.raises(JournalError, match="closed"):
        j.audit("late", {})

    from mltrader.live.journal.schema import SCHEMA_VERSION

    again = Journal(url)
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(getattr(again, name)(), frame, check_dtype=False)
    pd.testing.assert_frame_equal(again.equity_frame(run), eq)
    pd.testing.assert_frame_equal(again.positions_frame(run), pos)
    with again.engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version FROM schema_version")).scalars().all()
        assert versions == [SCHEMA_VERSION]  # reopening records no version again
    new_id = again.audit("after", {})
    assert new_id > frames["audit_frame"]["id"].max()
    again.close()


def test_newer_schema_is_refused(url):
    Journal(url).close()
    raw = _raw_engine(url)
    with raw.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) "
                             "VALUES (99, CURRENT_TIMESTAMP)"))
    raw.dispose()
    with pytest.raises(JournalError, match="newer"):
        Journal(url)


# --------------------------------------------------------------------------- secrets


def test_secrets_are_scrubbed(url, monkeypatch, tmp_path):
    secret = "AKIAtest0123456789abcdefSECRET"
    monkeypatch.setenv("MLT_TEST_BROKER_API_KEY", secret)
    monkeypatch.setenv("MLT_TEST_PLAIN_SETTING", "plain-value-123456")
    j = Journal(url)
    run = j.start_run("mom", "paper")
    j.audit("login", {
        "note": secret,  # innocent key, secret value: caught by the environment check
        "header": f"Bearer {secret}",
        "nested": {"password": "hunter2", "items": [secret, {"Authorization": "Basic abc"}],
                   "apiKey": "k", "client_secret": "s"},
        "symbol": "AAPL", "plain": "plain-value-123456", "count": 3,
    }, run_id=run)
    j.record_decision(run, T0, "AAA", {"mom": 0.5, "comment": secret, "secret_token": "zz"},
                      prediction=0.1)
    d = j.audit_frame(action="login")["detail"].iloc[0]
    assert d["note"] == MASK and d["header"] == f"Bearer {MASK}"
    assert d["nested"]["password"] == MASK and d["nested"]["items"][0] == MASK
    assert d["nested"]["items"][1]["Authorization"] == MASK
    assert d["nested"]["apiKey"] == MASK and d["nested"]["client_secret"] == MASK
    assert (d["symbol"], d["plain"], d["count"]) == ("AAPL", "plain-value-123456", 3)
    feats = j.decisions_frame(run)["features"].iloc[0]
    assert feats == {"mom": 0.5, "comment": MASK, "secret_token": MASK}
    with j.engine.connect() as conn:
        stored = conn.execute(sa.text(
            "SELECT CAST(detail AS TEXT) FROM audit UNION ALL "
            "SELECT CAST(features AS TEXT) FROM decisions")).scalars().all()
    assert stored and not any(secret in s or "hunter2" in s for s in stored)
    j.close()
    if url.startswith("sqlite"):  # not even in the raw bytes of the files
        for f in tmp_path.glob("journal.db*"):
            assert secret.encode() not in f.read_bytes(), f


def test_secret_key_names():
    for name in ("api_key", "APCA-API-SECRET-KEY", "apiKey", "token", "Authorization",
                 "db_password", "secretkey", "refresh_tokens", "credentials"):
        assert is_secret_key(name), name
    for name in ("symbol", "author", "mom_20", "client_order_id", "qty", "tokenizer_len"):
        assert not is_secret_key(name), name


def test_url_password_is_masked(caplog):
    assert PG_PASSWORD not in mask_url(f"postgresql+psycopg://u:{PG_PASSWORD}@h:5/db")
    assert "***" in mask_url(f"postgresql+psycopg://u:{PG_PASSWORD}@h:5/db")
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    port = _free_port()  # nothing listens there: the open fails, and says nothing secret
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(JournalError) as info:
            Journal(f"postgresql+psycopg://u:{PG_PASSWORD}@127.0.0.1:{port}/db")
    assert PG_PASSWORD not in str(info.value) and PG_PASSWORD not in caplog.text


def test_url_password_masked_on_a_live_server(pg_url, caplog):
    assert PG_PASSWORD in pg_url
    with caplog.at_level(logging.DEBUG, logger="mltrader.live.journal"):
        j = Journal(pg_url)
        j.audit("connected", {"dsn": pg_url})
        detail = j.audit_frame()["detail"].iloc[0]
        j.close()
    assert "journal opened" in caplog.text
    for shown in (repr(j), str(j), j.url, caplog.text, detail["dsn"]):
        assert PG_PASSWORD not in shown
    assert "***" in repr(j)


# --------------------------------------------------------------------------- frames


def test_frames(journal):
    r1 = journal.start_run("mom", "paper")
    r2 = journal.start_run("mr", "paper")
    t1 = T0 + pd.Timedelta(minutes=1)
    journal.record_order_intent(OrderRequest("a1", "AAA", "buy", 10, type="limit",
                                             limit_price=99.5), r1, T0)
    journal.record_order_intent(_req("b1", symbol="BBB"), r2, T0)
    journal.record_fill(_fill("a1", "fa1", qty=10, price=99.5))
    journal.record_fill(_fill("b1", "fb1", qty=10, price=50.0, symbol="BBB", when=t1))
    journal.snapshot(r1, T0, [], 1000.0, 1000.0)
    journal.snapshot(r1, t1, [Position("AAA", 10, 99.5)], 5.0, 1000.0)
    journal.record_decision(r1, T0, "AAA", {"f": 1.0}, prediction=float("nan"))

    fills = journal.fills_for(r1)
    assert list(fills.columns) == ["fill_id", "client_order_id", "broker_id", "symbol",
                                   "side", "qty", "price", "commission", "time", "run_id"]
    assert list(fills["fill_id"]) == ["fa1"] and fills["price"].iloc[0] == 99.5
    assert list(journal.fills_for()["fill_id"]) == ["fa1", "fb1"]
    assert str(fills["time"].dt.tz) == "UTC"

    orders = journal.orders_frame(run_id=r1)
    assert list(orders["client_order_id"]) == ["a1"]
    assert orders["limit_price"].iloc[0] == 99.5 and pd.isna(orders["stop_price"].iloc[0])
    assert orders["type"].iloc[0] == "limit"

    eq = journal.equity_frame(r1)
    assert list(eq.columns) == ["cash", "equity"]
    assert isinstance(eq.index, pd.DatetimeIndex) and str(eq.index.tz) == "UTC"
    assert list(eq["cash"]) == [1000.0, 5.0] and eq.index[1] == t1
    assert journal.equity_frame(r2).empty

    pos = journal.positions_frame(r1)
    assert list(pos["symbol"]) == ["AAA"] and pos["qty"].iloc[0] == 10.0

    dec = journal.decisions_frame(r1)
    assert pd.isna(dec["prediction"].iloc[0]) and dec["features"].iloc[0] == {"f": 1.0}

    audit = journal.audit_frame()
    assert list(audit.columns) == ["id", "time", "run_id", "actor", "action", "detail"]
    assert audit["id"].is_monotonic_increasing
    assert set(journal.audit_frame(run_id=r2)["action"]) == {"run_started", "order_intent"}
    assert list(journal.runs_frame()["strategy"]) == ["mom", "mr"]


def test_bad_inputs_are_refused(journal, sqlite_url):
    with pytest.raises(JournalError, match="paper"):
        journal.start_run("mom", "paper", mode="real")
    with pytest.raises(JournalError, match="backend"):
        Journal("mysql://u@h/db")
    with pytest.raises(JournalError, match="synchronous"):
        Journal(sqlite_url, synchronous="OFF")


# --------------------------------------------------------------------------- bad journals
# Regression: each of these escaped as a raw SQLAlchemy error over two lines ("... database
# disk image is malformed" + "(Background on this error at: https://sqlalche.me/...)"),
# which the CLI printed as an "internal error".


def _assert_one_line(err: JournalError, *needles: str) -> str:
    msg = str(err)
    assert "\n" not in msg, msg
    for junk in ("Background on this error", "sqlalche.me", "[SQL", "parameters", "INSERT",
                 "SELECT"):
        assert junk not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def _valid_journal(path) -> bytes:
    j = Journal(f"sqlite:///{path}")
    j.start_run("mom", "paper")
    j.close()
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["garbage", "truncated", "csv"])
def test_corrupt_or_foreign_sqlite_file_is_a_one_line_journal_error(tmp_path, kind):
    path = tmp_path / ("prices.csv" if kind == "csv" else "journal.db")
    if kind == "garbage":
        path.write_text("garbage" * 100)
    elif kind == "truncated":
        data = _valid_journal(tmp_path / "good.db")
        path.write_bytes(data[:100])
    else:
        path.write_text("date,AAA\n" + "2024-01-02,10.5\n" * 50)
    before = path.read_bytes()
    url = f"sqlite:///{path}"
    with pytest.raises(JournalError) as info:
        Journal(url)
    reason = "database disk image is malformed" if kind == "truncated" else \
        "file is not a database"
    _assert_one_line(info.value, f"journal {url} is not a readable database ({reason})",
                     "restore it from a backup", "--journal / --session")
    assert path.read_bytes() == before  # the failed open wrote nothing into it


def test_read_only_journal_reads_and_refuses_writes_in_one_line(tmp_path):
    """A journal SQLite opens read-only (``mode=ro``: the same error a chmod 444 file gives a
    non-root user): reads work, each write is one line without the SQL or its parameters."""
    path = tmp_path / "journal.db"
    _valid_journal(path)
    j = Journal(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        assert list(j.runs_frame()["strategy"]) == ["mom"]
        with pytest.raises(JournalError) as info:
            j.start_run("secret-strategy-name", "paper")
        msg = _assert_one_line(info.value, "is read-only (attempt to write a readonly "
                               "database)", "make the file and its folder writable")
        assert "secret-strategy-name" not in msg
        with pytest.raises(JournalError, match="is read-only"):
            with j.batch():
                j.audit("inside_a_batch", {"qty": 1})
    finally:
        j.close()


def test_sqlite_uri_url_creates_no_folder(tmp_path, monkeypatch):
    """Regression: ``sqlite:///file:x/journal.db?uri=true`` made a folder named "file:x"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    _valid_journal(tmp_path / "x" / "journal.db")
    Journal("sqlite:///file:x/journal.db?mode=ro&uri=true").close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 444")
def test_chmod_read_only_journal_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "journal.db"
    _valid_journal(path)
    for leftover in folder.glob("journal.db-*"):
        leftover.unlink()
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        with pytest.raises(JournalError) as info:
            j = Journal(f"sqlite:///{path}")
            try:
                j.start_run("mom", "paper")
            finally:
                j.close()
        _assert_one_line(info.value, f"journal sqlite:///{path}")
        assert "read-only" in str(info.value) or "cannot be opened" in str(info.value)
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)


def test_journal_path_that_is_a_folder_or_under_a_file(tmp_path):
    with pytest.raises(JournalError) as info:
        Journal(f"sqlite:///{tmp_path}")
    _assert_one_line(info.value, "cannot be opened (unable to open database file)",
                     "not a folder")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(JournalError) as info:
        Journal(f"sqlite:///{blocker / 'sub' / 'journal.db'}")
    _assert_one_line(info.value, f"cannot create its folder {blocker / 'sub'}")


def test_unreachable_postgresql_is_one_line_without_the_password():
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    port = _free_port()  # nothing listens there
    url = f"postgresql+psycopg://u:{PG_PASSWORD}@127.0.0.1:{port}/x"
    with pytest.raises(JournalError) as info:
        Journal(url)
    msg = _assert_one_line(info.value, f"journal postgresql+psycopg://u:***@127.0.0.1:{port}/x: "
                           "cannot connect (", "start the server or fix the URL")
    assert PG_PASSWORD not in msg and "Is the server running" not in msg


def test_missing_postgresql_database_is_one_line(pg_server):
    url = (f"postgresql+psycopg://postgres:{PG_PASSWORD}@{pg_server['host']}:"
           f"{pg_server['port']}/no_such_db_{uuid.uuid4().hex[:8]}")
    with pytest.raises(JournalError) as info:
        Journal(url)
    msg = _assert_one_line(info.value, "cannot connect (", "does not exist",
                           "start the server or fix the URL")
    assert PG_PASSWORD not in msg


def test_missing_database_driver_is_one_line():
    with pytest.raises(JournalError) as info:
        Journal("postgresql+nosuchdriver://u@h/db")
    _assert_one_line(info.value, "postgresql+nosuchdriver", "sqlite:///path.db")


def test_integrity_errors_still_surface_as_bugs(journal):
    """Only the database's state becomes a JournalError; a constraint the journal's own
    code breaks stays an IntegrityError (a bug to report, not a user's mistake)."""
    with pytest.raises(sa.exc.IntegrityError):
        journal._run(lambda conn: conn.execute(t_fills.insert().values(
            fill_id="x", client_order_id="no-such-order", symbol="A", side="buy", qty=1.0,
            price=1.0, commission=0.0, time=T0)))
