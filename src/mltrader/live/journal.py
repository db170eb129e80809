"""The trading journal: every run, decision, order, fill, snapshot and audit event, durably.

One SQL database (SQLite by default, PostgreSQL via ``postgresql+psycopg://...``) written
through SQLAlchemy Core. The runner's contract with it:

* **Intent before send.** ``record_order_intent`` inserts the order row (status
  ``"pending"``) *and* its ``order_intent`` audit row in one transaction before the order
  goes to the broker. It returns False when the client order id is already journaled: the
  runner must then not send it again (the id is deterministic, see ``broker.client_order_id``).
  A crash leaves either both rows or neither, never one without the other.
* **Every write is one transaction.** A process killed mid-write (SIGKILL, power cut) leaves
  the database at the last commit. SQLite runs in WAL mode with ``synchronous=FULL`` by
  default: WAL + NORMAL already survives a *process* crash, but a power loss or kernel panic
  may then drop the last commits, and a lost intent row for an order that was already sent
  is exactly what the journal exists to prevent. The journal writes a few rows per bar, so
  the extra fsync per commit (about 1 ms) costs nothing; pass ``synchronous="NORMAL"`` to
  trade that guarantee for speed. Write transactions start with ``BEGIN IMMEDIATE`` so two
  processes never deadlock upgrading a read lock; a busy database is waited on
  (``busy_timeout``) and the whole transaction is retried a few times on "database is
  locked" before a ``JournalError``.
* **The audit table is append-only, enforced by the database**: triggers reject UPDATE and
  DELETE (and TRUNCATE on PostgreSQL) whoever issues them; this class has no method that
  modifies or removes audit rows. (A user who can DROP the table or the triggers can of
  course still do so; the triggers are re-created on every open.)
* **Fills are deduplicated** by the broker's ``fill_id`` (``record_fill`` returns False for
  a replay); an order update never moves a final status (filled, cancelled, ...) back to an
  open one (late, out-of-order broker events are audited and ignored).

Secrets never land in the journal: ``audit()`` details, ``record_decision()`` features and
``start_run(config=...)`` are scrubbed before they are written:

1. the value under any key that *looks* secret is replaced by ``"***"`` (key names split on
   ``_``/``-``/camelCase; a part equal to key, secret, token, password, passwd, pwd,
   passphrase, apikey, authorization, auth, credential(s), or a name ending in "key",
   "secret", "token" or "password"), in nested dicts and lists;
2. any string that contains the value of an environment variable whose NAME contains KEY,
   SECRET, TOKEN, PASSWORD or PASSWD (values of 6+ characters), the password of the
   database URL, or a value passed in ``secrets=``, has that value replaced by ``"***"``,
   whatever the field is called: an API key pasted under ``"note"`` is still masked.

The database URL's password is masked in ``repr``/``str`` and in log lines.

Times are stored in UTC and come back as tz-aware UTC timestamps (microsecond precision).
Open one ``Journal`` per process; several processes may share one SQLite file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import time as _time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from mltrader.errors import MltraderError
from mltrader.live.broker import FINAL_STATUSES, Fill, Order, OrderRequest, Position

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MASK = "***"
_MIN_SECRET_LEN = 6
_PG_LOCK_KEY = 0x6D6C7472  # "mltr": serialises schema creation between processes
_T = TypeVar("_T")


class JournalError(MltraderError):
    """The journal cannot be opened or written (closed, locked, newer schema, bad URL)."""


# --------------------------------------------------------------------------- types


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC: tz-aware in, tz-aware UTC out (naive input is UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        ts = pd.Timestamp(value)
        if ts is pd.NaT:
            return None
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        dt = ts.to_pydatetime(warn=False)
        # SQLite has no time zones: store naive UTC (its text format sorts correctly)
        return dt.replace(tzinfo=None) if dialect.name == "sqlite" else dt

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# --------------------------------------------------------------------------- schema

metadata = MetaData()

t_schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UTCDateTime, nullable=False),
)

t_runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("config_hash", String(128), nullable=False),
    Column("strategy", String(200), nullable=False),
    Column("broker", String(100), nullable=False),
    Column("mode", String(8), nullable=False),
    CheckConstraint("mode IN ('paper', 'live')", name="ck_runs_mode"),
    sqlite_autoincrement=True,
)

t_decisions = Table(
    "decisions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("bar_time", UTCDateTime, nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("features", JSON, nullable=False),
    Column("prediction", Float),
    Column("target", Float),
    Column("model_artifact_hash", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_decisions_run_bar", "run_id", "bar_time", "symbol"),
    sqlite_autoincrement=True,
)

t_orders = Table(
    "orders", metadata,
    Column("client_order_id", String(64), primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id")),  # NULL: adopted, not sent by a run
    Column("bar_time", UTCDateTime),
    Column("symbol", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("qty", Float, nullable=False),
    Column("type", String(16), nullable=False),
    Column("limit_price", Float),
    Column("stop_price", Float),
    Column("status", String(24), nullable=False),
    Column("broker_id", String(128)),
    Column("filled_qty", Float, nullable=False),
    Column("avg_fill_price", Float),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("side IN ('buy', 'sell')", name="ck_orders_side"),
    Index("ix_orders_status", "status"),
    Index("ix_orders_run", "run_id"),
)

t_fills = Table(
    "fills", metadata,
    Column("fill_id", String(128), primary_key=True),
    Column("client_order_id", String(64), ForeignKey("orders.client_order_id"),
           nullable=False),
    Column("broker_id", String(128)),
    Column("symbol", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("qty", Float, nullable=False),
    Column("price", Float, nullable=False),
    Column("commission", Float, nullable=False),
    Column("time", UTCDateTime, nullable=False),
    CheckConstraint("side IN ('buy', 'sell')", name="ck_fills_side"),
    Index("ix_fills_order", "client_order_id"),
)

t_positions = Table(
    "positions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("qty", Float, nullable=False),
    Column("avg_price", Float),
    Index("ix_positions_run_time", "run_id", "time"),
    sqlite_autoincrement=True,
)

t_equity = Table(
    "equity", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("cash", Float, nullable=False),
    Column("equity", Float, nullable=False),
    Index("ix_equity_run_time", "run_id", "time"),
    sqlite_autoincrement=True,
)

t_runner_state = Table(
    "runner_state", metadata,  # what a restarted runner needs: guard counters, exit levels
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("state", JSON, nullable=False),
    Index("ix_runner_state_run", "run_id", "id"),
    sqlite_autoincrement=True,
)

t_audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", UTCDateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id")),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("detail", JSON, nullable=False),
    Index("ix_audit_run", "run_id"),
    sqlite_autoincrement=True,  # ids are never reused
)

_SQLITE_AUDIT_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit is append-only: DELETE refused'); END",
)
_PG_AUDIT_FUNCTION = (
    "CREATE OR REPLACE FUNCTION mltrader_audit_append_only() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION USING MESSAGE = 'audit is append-only: ' || TG_OP || ' refused', "
    "ERRCODE = 'insufficient_privilege'; "
    "END $$"
)
_PG_AUDIT_TRIGGERS = {
    "audit_no_update_delete": "CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE "
                              "ON audit FOR EACH ROW EXECUTE FUNCTION "
                              "mltrader_audit_append_only()",
    "audit_no_truncate": "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
                         "FOR EACH STATEMENT EXECUTE FUNCTION mltrader_audit_append_only()",
}

# --------------------------------------------------------------------------- scrubbing

_SECRET_PARTS = frozenset({
    "key", "secret", "token", "password", "passwd", "pwd", "passphrase", "apikey",
    "authorization", "auth", "credential", "credentials",
})
_SECRET_SUFFIXES = ("key", "keys", "secret", "secrets", "token", "tokens", "password")
_SECRET_ENV_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD", re.IGNORECASE)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")


def is_secret_key(name: object) -> bool:
    """Whether a field name looks like it holds a credential (see the module docstring)."""
    return _is_secret_name(str(name))


@functools.lru_cache(maxsize=4096)
def _is_secret_name(raw: str) -> bool:
    parts = [p for p in re.split(r"[^a-z0-9]+", _CAMEL.sub(r"\1_\2", raw).lower()) if p]
    if any(p in _SECRET_PARTS for p in parts):
        return True
    flat = "".join(parts)
    return bool(flat) and flat.endswith(_SECRET_SUFFIXES)


def env_secret_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values (6+ chars) of environment variables whose name contains KEY/SECRET/TOKEN/
    PASSWORD/PASSWD: masked wherever they appear in journaled text."""
    env = os.environ if environ is None else environ
    return {v for k, v in env.items() if _SECRET_ENV_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}


def scrub(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """A JSON-ready copy of ``obj`` with secret-looking keys' values and every occurrence of
    the given secret strings replaced by ``"***"`` (nested dicts/lists included)."""
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (MASK if is_secret_key(k) and v is not None else walk(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            for secret in ordered:
                if secret in value:
                    value = value.replace(secret, MASK)
            return value
        return value

    return walk(to_jsonable(obj))


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, NaN/inf -> None, times -> ISO."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if obj is pd.NaT:
        return None
    if isinstance(obj, datetime | date | pd.Timestamp):
        return obj.isoformat()
    if isinstance(obj, pd.Timedelta):
        return obj.isoformat()
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    return str(obj)


def hash_config(config: Mapping[str, Any]) -> str:
    """sha256 of a config's canonical JSON: how a restarted runner finds its run."""
    canonical = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def mask_url(url: str) -> str:
    """The database URL with its password (if any) replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparsable: show nothing that could be a credential
        return re.sub(r"//[^@/]*@", "//***@", str(url))


def _num(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _truthy(value: Any) -> bool:
    if isinstance(value, tuple):
        value = value[-1] if value else None
    return str(value).lower() in ("1", "true", "yes", "on")


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _is_locked(exc: OperationalError) -> bool:
    msg = str(getattr(exc, "orig", exc)).lower()
    return "locked" in msg or "busy" in msg


def driver_message(exc: BaseException) -> str:
    """The database driver's own message of a SQLAlchemy error, on one line: no SQL
    statement, no parameters, no "(Background on this error at: ...)" link."""
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc)
    text_ = re.sub(r"\s*\(Background on this error at:[^)]*\)", "", text_)
    text_ = re.split(r"\n\s*\[SQL:", text_, maxsplit=1)[0]
    lines = [ln.strip() for ln in text_.splitlines() if ln.strip()]
    return lines[0] if lines else type(orig if orig is not None else exc).__name__


# (substring of the driver's message, what it means, the fix): SQLite's wording
_SQLITE_PROBLEMS = (
    (("file is not a database", "malformed", "not a database", "corrupt"),
     "is not a readable database",
     "restore it from a backup or point --journal / --session at another one"),
    (("readonly", "read-only"),
     "is read-only", "make the file and its folder writable"),
    (("unable to open",),
     "cannot be opened",
     "check that the path names a file (not a folder) and that the file and its folder "
     "exist and are readable and writable"),
    (("disk is full", "database or disk is full"),
     "cannot be written: the disk is full", "free some disk space"),
    (("disk i/o error",),
     "cannot be read or written (disk I/O error)",
     "check the disk and the file's permissions, or point --journal / --session at "
     "another journal"),
)


# --------------------------------------------------------------------------- journal


class Journal:
    """The run journal (see the module docstring). Use as a context manager or call close().

    ``url``: ``sqlite:///path.db`` (default ``sqlite:///journal.db``; parent folders are
    created) or ``postgresql+psycopg://user:pw@host:port/db``. ``synchronous``: SQLite's
    FULL (default, durable across power loss) or NORMAL. ``busy_timeout_ms``: how long one
    SQLite statement waits for another process's lock; ``lock_retries``: how many more
    times a whole transaction is tried after "database is locked". ``secrets``: extra
    strings to mask in scrubbed fields.
    """

    def __init__(self, url: str = "sqlite:///journal.db", *, synchronous: str = "FULL",
                 busy_timeout_ms: int = 5000, lock_retries: int = 5,
                 secrets: Iterable[str] = ()) -> None:
        self._safe_url = mask_url(url)
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise JournalError(f"journal URL {self._safe_url!r} is not a database URL: use "
                               "sqlite:///path.db or postgresql+psycopg://user@host/db") from exc
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise JournalError(f"journal URL {self._safe_url!r}: backend {backend!r} is not "
                               "supported; use sqlite:///path.db or postgresql+psycopg://...")
        sync = str(synchronous).upper()
        if sync not in ("FULL", "NORMAL", "EXTRA"):
            raise JournalError(f"journal synchronous={synchronous!r}: use 'FULL' or 'NORMAL'")
        self.backend = backend
        self._lock_retries = max(0, int(lock_retries))
        self._extra_secrets = {str(s) for s in secrets if s}
        if parsed.password and len(str(parsed.password)) >= _MIN_SECRET_LEN:
            self._extra_secrets.add(str(parsed.password))
        self._closed = False
        self._batch: Connection | None = None
        self._batch_secrets: set[str] | None = None

        kwargs: dict[str, Any] = {}
        self._memory = False
        if backend == "sqlite":
            database = parsed.database or ""
            self._memory = database in ("", ":memory:") or database.startswith("file::memory:")
            if self._memory:
                kwargs.update(poolclass=StaticPool,
                              connect_args={"check_same_thread": False})
            elif not _truthy(parsed.query.get("uri")):  # a file: URI names no folder
                folder = Path(database).expanduser().parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise JournalError(
                        f"journal {self._safe_url}: cannot create its folder {folder} "
                        f"({exc.strerror or exc}): create it, or point --journal / --session "
                        "at a writable place") from exc
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self._engine: Engine = create_engine(parsed, **kwargs)
        except ImportError as exc:
            raise JournalError(
                f"journal {self._safe_url}: its database driver is not installed ({exc}): "
                "pip install 'psycopg[binary]' for postgresql+psycopg://, or use "
                "sqlite:///path.db") from exc
        except SQLAlchemyError as exc:
            raise JournalError(f"journal URL {self._safe_url!r}: {driver_message(exc)}; use "
                               "sqlite:///path.db or postgresql+psycopg://user@host/db"
                               ) from exc
        if backend == "sqlite":
            self._install_sqlite_events(sync, int(busy_timeout_ms))
        self._insert = sqlite_insert if backend == "sqlite" else pg_insert
        try:
            self._init_schema()
        except Exception:
            self._engine.dispose()
            raise
        log.info("journal opened: %s", self._safe_url)

    # ---------------------------------------------------------------- plumbing

    def _install_sqlite_events(self, sync: str, busy_timeout_ms: int) -> None:
        memory = self._memory

        @event.listens_for(self._engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # SQLAlchemy emits BEGIN itself (below), so pysqlite must not
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
                mode = str(cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
                if mode != "wal" and not memory:
                    raise JournalError(f"journal {self._safe_url}: SQLite refused WAL mode "
                                       f"(got {mode!r}); put the file on a local disk")
                cur.execute(f"PRAGMA synchronous = {sync}")
                cur.execute("PRAGMA foreign_keys = ON")
            finally:
                cur.close()

        @event.listens_for(self._engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # writers take the write lock up front: no read->write upgrade deadlocks, and
            # busy_timeout applies to the BEGIN itself
            read = conn.get_execution_options().get("journal_read", False)
            conn.exec_driver_sql("BEGIN DEFERRED" if read else "BEGIN IMMEDIATE")

    def _db_error(self, exc: BaseException) -> JournalError:
        """A driver / SQLAlchemy error as ONE line naming the journal (password masked),
        the driver's message (no SQL, no parameters) and the fix."""
        msg = driver_message(exc)
        for secret in sorted(self._extra_secrets, key=len, reverse=True):
            msg = msg.replace(secret, MASK)
        low = msg.lower()
        where = f"journal {self._safe_url}"
        if self.backend == "sqlite":
            for needles, what, fix in _SQLITE_PROBLEMS:
                if any(n in low for n in needles):
                    return JournalError(f"{where} {what} ({msg}): {fix}")
            return JournalError(f"{where}: database error ({msg}): check the file, or point "
                                "--journal / --session at another journal")
        if "permission denied" in low or "must be owner" in low:
            return JournalError(f"{where}: permission denied ({msg}): grant the database user "
                                "rights to create and write tables, or use another user")
        if isinstance(exc, OperationalError) and (
                getattr(exc, "statement", None) is None or "connect" in low
                or "server closed" in low or getattr(exc, "connection_invalidated", False)):
            return JournalError(f"{where}: cannot connect ({msg}): start the server or fix "
                                "the URL")
        return JournalError(f"{where}: database error ({msg}): check the database and the "
                            "user's rights")

    def _check_open(self) -> None:
        if self._closed:
            raise JournalError(f"journal {self._safe_url} is closed: open a new Journal")

    def _run(self, fn: Callable[[Connection], _T], *, read: bool = False) -> _T:
        """Run ``fn`` in one transaction (committed on return, rolled back on error),
        retrying the whole transaction on "database is locked"."""
        self._check_open()
        if self._batch is not None:  # inside `batch()`: part of its one transaction
            try:
                return fn(self._batch)
            except IntegrityError:
                raise  # a constraint the journal's own code broke: a bug, not the database
            except DBAPIError as exc:
                raise self._db_error(exc) from exc
        delay = 0.05
        for attempt in range(self._lock_retries + 1):
            try:
                with self._engine.connect() as conn:
                    if read:
                        conn = conn.execution_options(journal_read=True)
                    with conn.begin():
                        return fn(conn)
            except IntegrityError:
                raise  # a constraint the journal's own code broke: a bug, not the database
            except OperationalError as exc:
                if self.backend != "sqlite" or not _is_locked(exc):
                    raise self._db_error(exc) from exc
                if attempt >= self._lock_retries:
                    raise JournalError(
                        f"journal {self._safe_url}: database still locked after "
                        f"{attempt + 1} tries; another process holds a long write "
                        "transaction") from exc
                log.warning("journal %s busy; retry %d/%d in %.2fs", self._safe_url,
                            attempt + 1, self._lock_retries, delay)
                _time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except DBAPIError as exc:  # corrupt file, not a database, permissions, ...
                raise self._db_error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _secrets(self) -> set[str]:
        if self._batch is not None and self._batch_secrets is not None:
            return self._batch_secrets  # read once per batch: the environment is the same
        found = env_secret_values() | self._extra_secrets
        if self._batch is not None:
            self._batch_secrets = found
        return found

    def _scrub(self, obj: Any) -> Any:
        return scrub(obj, self._secrets())

    def _init_schema(self) -> None:
        def create(conn: Connection) -> None:
            if self.backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            metadata.create_all(conn)
            if self.backend == "sqlite":
                for ddl in _SQLITE_AUDIT_TRIGGERS:
                    conn.exec_driver_sql(ddl)
            else:
                conn.exec_driver_sql(_PG_AUDIT_FUNCTION)
                have = set(conn.execute(text(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass('audit') "
                    "AND NOT tgisinternal")).scalars())
                for name, ddl in _PG_AUDIT_TRIGGERS.items():
                    if name not in have:
                        conn.exec_driver_sql(ddl)
            current = conn.execute(select(func.max(t_schema_version.c.version))).scalar()
            if current is None or current < SCHEMA_VERSION:
                conn.execute(t_schema_version.insert().values(version=SCHEMA_VERSION,
                                                            applied_at=_now()))
            elif current > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self._safe_url} has schema version {current}, newer than "
                    f"this mltrader's {SCHEMA_VERSION}: upgrade mltrader to read it")

        self._run(create)

    def _insert_audit(self, conn: Connection, action: str, detail: Mapping[str, Any],
                      actor: str = "runner", run_id: int | None = None) -> int:
        result = conn.execute(t_audit.insert().values(
            time=_now(), run_id=run_id, actor=str(actor), action=str(action),
            detail=self._scrub(dict(detail))))
        return int(result.inserted_primary_key[0])

    # ---------------------------------------------------------------- public API

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for ad-hoc read queries)."""
        return self._engine

    @property
    def url(self) -> str:
        """The URL with its password masked."""
        return self._safe_url

    def __repr__(self) -> str:
        return f"Journal({self._safe_url!r})"

    __str__ = __repr__

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every connection. Idempotent; later calls raise JournalError."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()
            log.info("journal closed: %s", self._safe_url)

    def start_run(self, strategy: str, broker: str, mode: str = "paper",
                  config_hash: str = "", *, config: Mapping[str, Any] | None = None,
                  started_at: Any = None) -> int:
        """A new run; returns its id. ``config`` (optional) is hashed when no
        ``config_hash`` is given (sha256 of its canonical JSON)."""
        if mode not in ("paper", "live"):
            raise JournalError(f"run mode {mode!r}: use 'paper' or 'live'")
        if not config_hash and config is not None:
            config_hash = hash_config(config)
        when = _now() if started_at is None else started_at

        def write(conn: Connection) -> int:
            run_id = int(conn.execute(t_runs.insert().values(
                started_at=when, config_hash=config_hash, strategy=strategy, broker=broker,
                mode=mode)).inserted_primary_key[0])
            self._insert_audit(conn, "run_started", {"strategy": strategy, "broker": broker,
                                                     "mode": mode, "config_hash": config_hash},
                               run_id=run_id)
            return run_id

        return self._run(write)

    def record_decision(self, run_id: int, bar_time: Any, symbol: str,
                        features: Mapping[str, Any], prediction: float | None,
                        target: float | None = None, model_artifact_hash: str = "",
                        created_at: Any = None) -> None:
        """One model decision for (run, bar, symbol). ``features`` is scrubbed."""
        row = dict(run_id=run_id, bar_time=bar_time, symbol=symbol,
                   features=self._scrub(dict(features)), prediction=_num(prediction),
                   target=_num(target), model_artifact_hash=model_artifact_hash or "",
                   created_at=_now() if created_at is None else created_at)
        self._run(lambda conn: conn.execute(t_decisions.insert().values(**row)))

    def record_decisions(self, run_id: int, bar_time: Any,
                         rows: Iterable[tuple[str, Mapping[str, Any], float | None,
                                              float | None]],
                         model_artifact_hash: str = "") -> None:
        """Several decisions of one bar, (symbol, features, prediction, target) each, in one
        statement; features scrubbed as in `record_decision`."""
        now = _now()
        values = [dict(run_id=run_id, bar_time=bar_time, symbol=sym,
                       features=self._scrub(dict(feats)), prediction=_num(pred),
                       target=_num(target), model_artifact_hash=model_artifact_hash or "",
                       created_at=now) for sym, feats, pred, target in rows]
        if values:
            self._run(lambda conn: conn.execute(t_decisions.insert(), values))

    def record_order_intent(self, request: OrderRequest, run_id: int, bar_time: Any,
                            actor: str = "runner") -> bool:
        """Journal an order BEFORE it is sent (status "pending"), with its audit row, in one
        transaction. False when the client order id is already journaled: do not send."""
        now = _now()
        detail = {"client_order_id": request.client_order_id, "symbol": request.symbol,
                  "side": request.side, "qty": request.qty, "type": request.type,
                  "time_in_force": request.time_in_force, "limit_price": request.limit_price,
                  "stop_price": request.stop_price, "bar_time": to_jsonable(bar_time)}

        def write(conn: Connection) -> bool:
            stmt = self._insert(t_orders).values(
                client_order_id=request.client_order_id, run_id=run_id, bar_time=bar_time,
                symbol=request.symbol, side=request.side, qty=float(request.qty),
                type=request.type, limit_price=_num(request.limit_price),
                stop_price=_num(request.stop_price), status="pending", broker_id=None,
                filled_qty=0.0, avg_fill_price=None, reason="", created_at=now,
                updated_at=now,
            ).on_conflict_do_nothing(index_elements=["client_order_id"]
                                     ).returning(t_orders.c.client_order_id)
            inserted = conn.execute(stmt).first() is not None  # no row back: a duplicate
            self._insert_audit(conn, "order_intent" if inserted else "order_intent_duplicate",
                               detail, actor=actor, run_id=run_id)
            return inserted

        return self._run(write)

    def update_order(self, order: Order, actor: str = "runner") -> bool:
        """Apply the broker's view of an order. Returns False when the order was not in the
        journal (it is then adopted with run_id NULL and audited). A final status is never
        replaced by an open one (a late event); status/fill changes are audited."""

        def write(conn: Connection) -> bool:
            now = _now()
            cid = order.client_order_id
            current = conn.execute(select(t_orders.c.status, t_orders.c.filled_qty).where(
                t_orders.c.client_order_id == cid)).first()
            values = dict(status=order.status, broker_id=order.broker_id,
                          qty=float(order.qty), filled_qty=float(order.filled_qty or 0.0),
                          avg_fill_price=_num(order.avg_fill_price),
                          limit_price=_num(order.limit_price),
                          stop_price=_num(order.stop_price), reason=order.reason or "",
                          updated_at=now)
            detail = {"client_order_id": cid, "broker_id": order.broker_id,
                      "status": order.status, "filled_qty": order.filled_qty,
                      "avg_fill_price": order.avg_fill_price, "reason": order.reason}
            if current is None:
                conn.execute(t_orders.insert().values(
                    client_order_id=cid, run_id=None, bar_time=None, symbol=order.symbol,
                    side=order.side, type=order.type, created_at=now, **values))
                self._insert_audit(conn, "order_adopted", detail, actor=actor)
                return False
            if current.status in FINAL_STATUSES and order.status not in FINAL_STATUSES:
                self._insert_audit(conn, "order_update_stale",
                                   {**detail, "journal_status": current.status}, actor=actor)
                return True
            conn.execute(update(t_orders).where(t_orders.c.client_order_id == cid)
                         .values(**values))
            if (current.status != order.status
                    or float(current.filled_qty) != float(order.filled_qty or 0.0)):
                self._insert_audit(conn, "order_status",
                                   {**detail, "previous_status": current.status}, actor=actor)
            return True

        return self._run(write)

    def record_fill(self, fill: Fill, actor: str = "runner") -> bool:
        """Journal one execution; False when its fill_id is already recorded (a replay).
        A fill for an order the journal doesn't know adopts that order (status "unknown",
        so ``pending_orders`` lists it for reconciliation). The order's filled_qty and
        average price come from ``update_order`` (the broker's totals), not from here."""

        def write(conn: Connection) -> bool:
            now = _now()
            known = conn.execute(select(t_orders.c.client_order_id).where(
                t_orders.c.client_order_id == fill.client_order_id)).first()
            if known is None:
                conn.execute(t_orders.insert().values(
                    client_order_id=fill.client_order_id, run_id=None, bar_time=None,
                    symbol=fill.symbol, side=fill.side, qty=float(fill.qty), type="unknown",
                    status="unknown", broker_id=fill.broker_id, filled_qty=0.0,
                    reason="adopted from a fill: order not in the journal", created_at=now,
                    updated_at=now))
                self._insert_audit(conn, "order_adopted",
                                   {"client_order_id": fill.client_order_id,
                                    "from_fill": fill.fill_id}, actor=actor)
            stmt = self._insert(t_fills).values(
                fill_id=fill.fill_id, client_order_id=fill.client_order_id,
                broker_id=fill.broker_id, symbol=fill.symbol, side=fill.side,
                qty=float(fill.qty), price=float(fill.price),
                commission=float(fill.commission or 0.0), time=fill.time,
            ).on_conflict_do_nothing(index_elements=["fill_id"]).returning(t_fills.c.fill_id)
            inserted = conn.execute(stmt).first() is not None
            if inserted:
                self._insert_audit(conn, "fill", {
                    "fill_id": fill.fill_id, "client_order_id": fill.client_order_id,
                    "symbol": fill.symbol, "side": fill.side, "qty": fill.qty,
                    "price": fill.price, "commission": fill.commission}, actor=actor)
            return inserted

        return self._run(write)

    def snapshot(self, run_id: int, time: Any,
                 positions: Mapping[str, Position] | Iterable[Position],
                 cash: float, equity: float) -> None:
        """Positions and equity at ``time``, in one transaction."""
        items = list(positions.values() if isinstance(positions, Mapping) else positions)
        rows = [dict(run_id=run_id, time=time, symbol=p.symbol, qty=float(p.qty),
                     avg_price=_num(p.avg_price)) for p in items]

        def write(conn: Connection) -> None:
            if rows:
                conn.execute(t_positions.insert(), rows)
            conn.execute(t_equity.insert().values(
                run_id=run_id, time=time, cash=float(cash), equity=float(equity)))

        self._run(write)

    def audit(self, action: str, detail: Mapping[str, Any] | None = None,
              actor: str = "runner", run_id: int | None = None) -> int:
        """Append one audit event (``detail`` scrubbed); returns its id. Audit rows can
        never be changed or deleted."""
        return self._run(lambda conn: self._insert_audit(conn, action, detail or {},
                                                         actor=actor, run_id=run_id))

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write inside goes into ONE transaction (one commit, one fsync): the runner
        journals a bar's fills, order updates, decisions and snapshot together. All or
        nothing: an exception (or a crash) inside leaves none of them. A batch inside a
        batch is part of the outer one."""
        self._check_open()
        if self._batch is not None:
            yield
            return
        delay = 0.05
        for attempt in range(self._lock_retries + 1):
            try:
                conn = self._engine.connect()
                tx = conn.begin()
                break
            except OperationalError as exc:
                if self.backend != "sqlite" or not _is_locked(exc):
                    raise self._db_error(exc) from exc
                if attempt >= self._lock_retries:
                    raise JournalError(f"journal {self._safe_url}: cannot start a write "
                                       f"transaction ({driver_message(exc)}); another "
                                       "process holds a long write transaction") from exc
                _time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except DBAPIError as exc:
                raise self._db_error(exc) from exc
        self._batch = conn
        try:
            yield
            try:
                tx.commit()
            except IntegrityError:
                raise
            except DBAPIError as exc:
                raise self._db_error(exc) from exc
        except BaseException:
            try:
                tx.rollback()
            except DBAPIError as exc:  # the connection is gone: the error above says why
                log.warning("journal %s: rollback failed: %s", self._safe_url,
                            driver_message(exc))
            raise
        finally:
            self._batch = None
            self._batch_secrets = None
            conn.close()

    def record_order_intents(self, requests: Iterable[OrderRequest], run_id: int,
                             bar_time: Any, actor: str = "runner") -> list[bool]:
        """`record_order_intent` for several orders in one transaction (one fsync before any
        of them is sent); True for each newly journaled one."""
        reqs = list(requests)
        if not reqs:
            return []
        with self.batch():
            return [self.record_order_intent(r, run_id, bar_time, actor) for r in reqs]

    def order_row(self, client_order_id: str) -> dict[str, Any] | None:
        """The journal's row of one order, or None."""
        rows = self._rows(select(t_orders).where(
            t_orders.c.client_order_id == client_order_id))
        return rows[0] if rows else None

    def filled_totals(self, client_order_id: str) -> tuple[float, float, float]:
        """(quantity, notional, commission) of the journaled fills of one order."""
        stmt = select(func.coalesce(func.sum(t_fills.c.qty), 0.0),
                      func.coalesce(func.sum(t_fills.c.qty * t_fills.c.price), 0.0),
                      func.coalesce(func.sum(t_fills.c.commission), 0.0)).where(
            t_fills.c.client_order_id == client_order_id)
        row = self._run(lambda conn: conn.execute(stmt).first(), read=True)
        return float(row[0]), float(row[1]), float(row[2])

    def save_runner_state(self, run_id: int, time: Any, state: Mapping[str, Any]) -> None:
        """The runner's own state after a bar (guard counters, exit levels, ...)."""
        data = to_jsonable(dict(state))
        self._run(lambda conn: conn.execute(t_runner_state.insert().values(
            run_id=run_id, time=time, state=data)))

    def runner_state(self, run_id: int) -> tuple[pd.Timestamp, dict[str, Any]] | None:
        """The newest saved runner state of a run: (bar time, state), or None."""
        stmt = (select(t_runner_state.c.time, t_runner_state.c.state)
                .where(t_runner_state.c.run_id == run_id)
                .order_by(t_runner_state.c.id.desc()).limit(1))
        rows = self._rows(stmt)
        if not rows:
            return None
        return pd.Timestamp(rows[0]["time"]), dict(rows[0]["state"])

    def find_run(self, config_hash: str, broker: str) -> int | None:
        """The newest run with this config hash at this broker (what a restart continues)."""
        stmt = (select(t_runs.c.id).where(t_runs.c.config_hash == config_hash,
                                          t_runs.c.broker == broker)
                .order_by(t_runs.c.id.desc()).limit(1))
        rows = self._rows(stmt)
        return int(rows[0]["id"]) if rows else None

    # ---------------------------------------------------------------- reads

    def _rows(self, stmt: Any) -> list[dict[str, Any]]:
        return self._run(lambda conn: [dict(r._mapping) for r in conn.execute(stmt)],
                         read=True)

    def pending_orders(self) -> list[dict[str, Any]]:
        """Orders not in a final status (pending, new, accepted, partially_filled, unknown),
        oldest first, as dicts of the orders columns: what a restart must reconcile."""
        stmt = (select(t_orders).where(t_orders.c.status.not_in(sorted(FINAL_STATUSES)))
                .order_by(t_orders.c.created_at, t_orders.c.client_order_id))
        return self._rows(stmt)

    def known_client_ids(self) -> set[str]:
        return {r["client_order_id"] for r in self._rows(select(t_orders.c.client_order_id))}

    def fills_for(self, run_id: int | None = None) -> pd.DataFrame:
        """Fills (of one run, or all), oldest first, with the order's run_id."""
        stmt = (select(*t_fills.c, t_orders.c.run_id)
                .join(t_orders, t_fills.c.client_order_id == t_orders.c.client_order_id)
                .order_by(t_fills.c.time, t_fills.c.fill_id))
        if run_id is not None:
            stmt = stmt.where(t_orders.c.run_id == run_id)
        cols = [c.name for c in t_fills.c] + ["run_id"]
        return _frame(self._rows(stmt), cols, times=["time"],
                      floats=["qty", "price", "commission"])

    def orders_frame(self, run_id: int | None = None,
                     status: str | Iterable[str] | None = None) -> pd.DataFrame:
        stmt = select(t_orders).order_by(t_orders.c.created_at, t_orders.c.client_order_id)
        if run_id is not None:
            stmt = stmt.where(t_orders.c.run_id == run_id)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            stmt = stmt.where(t_orders.c.status.in_(wanted))
        return _frame(self._rows(stmt), [c.name for c in t_orders.c],
                      times=["bar_time", "created_at", "updated_at"],
                      floats=["qty", "limit_price", "stop_price", "filled_qty",
                              "avg_fill_price"])

    def equity_frame(self, run_id: int) -> pd.DataFrame:
        """cash and equity of a run, indexed by time (UTC)."""
        stmt = (select(t_equity.c.time, t_equity.c.cash, t_equity.c.equity)
                .where(t_equity.c.run_id == run_id).order_by(t_equity.c.time, t_equity.c.id))
        df = _frame(self._rows(stmt), ["time", "cash", "equity"], times=["time"],
                    floats=["cash", "equity"])
        return df.set_index("time")

    def positions_frame(self, run_id: int) -> pd.DataFrame:
        stmt = (select(t_positions.c.time, t_positions.c.symbol, t_positions.c.qty,
                       t_positions.c.avg_price)
                .where(t_positions.c.run_id == run_id)
                .order_by(t_positions.c.time, t_positions.c.symbol))
        return _frame(self._rows(stmt), ["time", "symbol", "qty", "avg_price"],
                      times=["time"], floats=["qty", "avg_price"])

    def decisions_frame(self, run_id: int | None = None) -> pd.DataFrame:
        stmt = select(t_decisions).order_by(t_decisions.c.bar_time, t_decisions.c.symbol,
                                            t_decisions.c.id)
        if run_id is not None:
            stmt = stmt.where(t_decisions.c.run_id == run_id)
        return _frame(self._rows(stmt), [c.name for c in t_decisions.c],
                      times=["bar_time", "created_at"], floats=["prediction", "target"])

    def runs_frame(self) -> pd.DataFrame:
        return _frame(self._rows(select(t_runs).order_by(t_runs.c.id)),
                      [c.name for c in t_runs.c], times=["started_at"])

    def audit_frame(self, run_id: int | None = None,
                    action: str | None = None) -> pd.DataFrame:
        """Audit events in insertion order; ``detail`` is a dict."""
        stmt = select(t_audit).order_by(t_audit.c.id)
        if run_id is not None:
            stmt = stmt.where(t_audit.c.run_id == run_id)
        if action is not None:
            stmt = stmt.where(t_audit.c.action == action)
        return _frame(self._rows(stmt), [c.name for c in t_audit.c], times=["time"])


def _frame(rows: list[dict[str, Any]], columns: list[str], times: Iterable[str] = (),
           floats: Iterable[str] = ()) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=columns)
    for col in ("id", "run_id"):  # nullable integers stay integers
        if col in df.columns:
            df[col] = df[col].astype("Int64")
    for col in times:
        df[col] = pd.to_datetime(df[col], utc=True)
    for col in floats:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df
