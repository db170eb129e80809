"""The paper broker's durable state: one SQLite file, one transaction per broker call.

Rows, not snapshots: each commit writes the one-row account state and upserts only the
orders, working orders, positions and marks that the call changed, appends its new events
and fills, and deletes consumed events, so a call costs a few small writes however long the
history. WAL with ``synchronous=FULL``: a process killed at any instant (or a power cut)
leaves the file at the last commit. One process per file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from mltrader.live.brokers.base import BrokerError, Fill, Order, OrderRequest, OrderUpdate

SCHEMA = 1
KIND = "mltrader-paper-state"
_TS_FIELDS = frozenset({"submitted_at", "time"})
_T = TypeVar("_T")

_ORDER_COLS = [f.name for f in dataclasses.fields(Order)]
_REQUEST_COLS = [f.name for f in dataclasses.fields(OrderRequest)]
_FILL_COLS = [f.name for f in dataclasses.fields(Fill)]


def _q(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _upsert(table: str, cols: Sequence[str], key: str) -> str:
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in cols if c != key)
    marks = ", ".join("?" * len(cols))
    return (f"INSERT INTO {table} ({_q(cols)}) VALUES ({marks}) "
            f'ON CONFLICT("{key}") DO UPDATE SET {sets}')


_SQL_ORDER = _upsert("orders", _ORDER_COLS, "client_order_id")
_SQL_WORKING = _upsert("working", _REQUEST_COLS, "client_order_id")
_SQL_FILL = f"INSERT INTO fills ({_q(_FILL_COLS)}) VALUES ({', '.join('?' * len(_FILL_COLS))})"
_SQL_POS = _upsert("positions", ["symbol", "qty", "cost", "opened"], "symbol")
_SQL_MARK = _upsert("marks", ["symbol", "price"], "symbol")

_DDL = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), cash REAL NOT NULL,
    n INTEGER NOT NULL, time TEXT, last_bar TEXT, borrow_paid REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS positions (symbol TEXT PRIMARY KEY, qty, cost, opened TEXT);
CREATE TABLE IF NOT EXISTS marks (symbol TEXT PRIMARY KEY, price);
CREATE TABLE IF NOT EXISTS orders ({_q(_ORDER_COLS)}, PRIMARY KEY ("client_order_id"));
CREATE TABLE IF NOT EXISTS working ({_q(_REQUEST_COLS)}, PRIMARY KEY ("client_order_id"));
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fills (seq INTEGER PRIMARY KEY, {_q(_FILL_COLS)});
"""


def enc_ts(ts: pd.Timestamp | None) -> str | None:
    """A timestamp as text that decodes to the same instant and time zone."""
    if ts is None:
        return None
    ts = pd.Timestamp(ts)
    return ts.isoformat() + (f"|{ts.tz}" if ts.tz is not None else "")


def dec_ts(text: str | None) -> pd.Timestamp | None:
    if text is None:
        return None
    iso, _, tz = text.partition("|")
    ts = pd.Timestamp(iso)
    if tz:
        try:
            ts = ts.tz_convert(tz)
        except Exception:  # an offset-only zone: the ISO offset already holds the instant
            pass
    return ts


def _val(v: Any) -> Any:
    if isinstance(v, pd.Timestamp):
        return enc_ts(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _row(obj: Any, cols: Sequence[str]) -> tuple[Any, ...]:
    return tuple(_val(getattr(obj, c)) for c in cols)


def _obj(cls: type[_T], cols: Sequence[str], row: Sequence[Any]) -> _T:
    kw = {c: (dec_ts(v) if c in _TS_FIELDS else v) for c, v in zip(cols, row, strict=True)}
    return cls(**kw)


def _enc_update(u: OrderUpdate) -> str:
    return json.dumps({
        "order": dict(zip(_ORDER_COLS, _row(u.order, _ORDER_COLS), strict=True)),
        "event": u.event,
        "fill": None if u.fill is None else dict(zip(_FILL_COLS, _row(u.fill, _FILL_COLS),
                                                     strict=True)),
        "time": enc_ts(u.time)})


def _dec_update(text: str) -> OrderUpdate:
    d = json.loads(text)
    order = _obj(Order, _ORDER_COLS, [d["order"][c] for c in _ORDER_COLS])
    fill = None if d["fill"] is None else _obj(Fill, _FILL_COLS,
                                               [d["fill"][c] for c in _FILL_COLS])
    return OrderUpdate(order, d["event"], fill, time=dec_ts(d["time"]))


@dataclasses.dataclass
class Snapshot:
    """Everything a broker restores from the file."""

    cash: float
    n: int
    time: pd.Timestamp | None
    last_bar: pd.Timestamp | None
    borrow_paid: float  # borrow fees charged so far (already out of cash)
    positions: dict[str, tuple[float, float, pd.Timestamp | None]]  # qty, cost, opened
    marks: dict[str, float]
    orders: list[Order]
    working: list[OrderRequest]
    events: list[OrderUpdate]
    fills: list[Fill]


class PaperStore:
    """The SQLite file behind a durable `PaperBroker`."""

    def __init__(self, path: str | os.PathLike[str], settings: Mapping[str, Any]) -> None:
        self.path = os.fspath(path)
        self.closed = False
        try:
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            tables = {r[0] for r in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as e:
            raise BrokerError(f"paper broker: cannot open state file {self.path} ({e}); "
                              "pass a writable state_path or delete the damaged file") from e
        try:
            self._check(tables, json.loads(json.dumps(dict(settings), default=str)))
        except BaseException:
            self.close()
            raise

    def _check(self, tables: set[str], settings: dict[str, Any]) -> None:
        """Create a new file's tables, or check that the file is this account's."""
        if tables and "meta" not in tables:
            raise BrokerError(f"paper broker: {self.path} is a database but not a paper "
                              "broker state file; pass another state_path")
        if not tables:
            with self._tx() as db:
                for stmt in _DDL.strip().split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                    ("kind", KIND), ("schema", str(SCHEMA)),
                    ("settings", json.dumps(settings, sort_keys=True))])
            return
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        if meta.get("kind") != KIND or meta.get("schema") != str(SCHEMA):
            raise BrokerError(f"paper broker: {self.path} is not a paper broker state file "
                              f"of schema {SCHEMA}; pass another state_path")
        old = json.loads(meta.get("settings", "{}"))
        diff = [k for k in sorted(old.keys() & settings.keys()) if old[k] != settings[k]]
        if "initial_cash" not in old:
            diff.insert(0, "initial_cash")
        if diff:
            what = ", ".join(f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in diff[:4])
            raise BrokerError(f"paper broker: state file {self.path} was written with other "
                              f"settings ({what}); delete it to start a fresh account, or "
                              "run with the settings it was made with")
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(state)")}
        if "borrow_paid" not in cols:  # a file from before borrow fees were charged
            with self._tx() as db:
                db.execute("ALTER TABLE state ADD COLUMN borrow_paid REAL NOT NULL DEFAULT 0")

    def _tx(self) -> _Tx:
        if self.closed:
            raise BrokerError(f"paper broker: state file {self.path} is closed; create a new "
                              "PaperBroker to continue")
        return _Tx(self._db)

    def load(self) -> Snapshot | None:
        """The committed state, None for a new file."""
        try:
            return self._load()
        except sqlite3.Error as e:
            raise BrokerError(f"paper broker: reading state file {self.path} failed ({e}); "
                              "restore it from a backup or delete it to start fresh") from e

    def _load(self) -> Snapshot | None:
        db = self._db
        row = db.execute("SELECT cash, n, time, last_bar, borrow_paid FROM state WHERE id = 1"
                         ).fetchone()
        if row is None:
            return None
        return Snapshot(
            cash=row[0], n=row[1], time=dec_ts(row[2]), last_bar=dec_ts(row[3]),
            borrow_paid=row[4],
            positions={s: (q, c, dec_ts(o)) for s, q, c, o in db.execute(
                "SELECT symbol, qty, cost, opened FROM positions ORDER BY rowid")},
            marks=dict(db.execute("SELECT symbol, price FROM marks ORDER BY rowid")),
            orders=[_obj(Order, _ORDER_COLS, r) for r in db.execute(
                f"SELECT {_q(_ORDER_COLS)} FROM orders ORDER BY rowid")],
            working=[_obj(OrderRequest, _REQUEST_COLS, r) for r in db.execute(
                f"SELECT {_q(_REQUEST_COLS)} FROM working ORDER BY rowid")],
            events=[_dec_update(r[0]) for r in db.execute(
                "SELECT data FROM events ORDER BY seq")],
            fills=[_obj(Fill, _FILL_COLS, r) for r in db.execute(
                f"SELECT {_q(_FILL_COLS)} FROM fills ORDER BY seq")])

    def commit(self, *, cash: float, n: int, time: pd.Timestamp | None,
               last_bar: pd.Timestamp | None, borrow_paid: float,
               positions: Mapping[str, tuple[float, float, pd.Timestamp | None]],
               marks: Mapping[str, float], orders: Iterable[Order],
               working: Iterable[OrderRequest], unworked: Iterable[str],
               events_cleared: bool, events: Sequence[OrderUpdate],
               fills: Sequence[Fill]) -> None:
        """Write one call's changes in one transaction."""
        try:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO state (id, cash, n, time, last_bar, "
                           "borrow_paid) VALUES (1, ?, ?, ?, ?, ?)",
                           (float(cash), int(n), enc_ts(time), enc_ts(last_bar),
                            float(borrow_paid)))
                if positions:
                    db.executemany(_SQL_POS, [(s, _val(q), _val(c), enc_ts(o))
                                              for s, (q, c, o) in positions.items()])
                if marks:
                    db.executemany(_SQL_MARK, [(s, _val(p)) for s, p in marks.items()])
                db.executemany(_SQL_ORDER, [_row(o, _ORDER_COLS) for o in orders])
                db.executemany(_SQL_WORKING, [_row(r, _REQUEST_COLS) for r in working])
                db.executemany("DELETE FROM working WHERE client_order_id = ?",
                               [(c,) for c in unworked])
                if events_cleared:
                    db.execute("DELETE FROM events")
                if events:
                    db.executemany("INSERT INTO events (data) VALUES (?)",
                                   [(_enc_update(u),) for u in events])
                if fills:
                    db.executemany(_SQL_FILL, [_row(f, _FILL_COLS) for f in fills])
        except sqlite3.Error as e:
            raise BrokerError(f"paper broker: writing state file {self.path} failed ({e}); "
                              "check the disk and the file's permissions") from e

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._db.close()


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        else:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
