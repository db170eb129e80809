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
``start_run(config=...)`` are scrubbed before they are written (see ``journal.redact``), and
the database URL's password is masked in ``repr``/``str`` and in log lines.

Times are stored in UTC and come back as tz-aware UTC timestamps (microsecond precision).
Open one ``Journal`` per process; several processes may share one SQLite file.
"""

from __future__ import annotations

import logging
import math
import time as _time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import and_, create_engine, event, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from mltrader.live.brokers.base import FINAL_STATUSES, Fill, Order, OrderRequest, Position
from mltrader.live.journal.errors import JournalError, db_error, driver_message, is_locked
from mltrader.live.journal.reads import JournalReads
from mltrader.live.journal.redact import (
    MIN_SECRET_LEN,
    env_secret_values,
    hash_config,
    mask_url,
    scrub,
    to_jsonable,
)
from mltrader.live.journal.schema import (
    create_schema,
    t_audit,
    t_benchmark,
    t_commands,
    t_decisions,
    t_equity,
    t_fills,
    t_orders,
    t_positions,
    t_runner_state,
    t_runs,
    utc_now,
)

log = logging.getLogger("mltrader.live.journal")  # the name the CLI's log filter knows

_T = TypeVar("_T")


def _num(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _truthy(value: Any) -> bool:
    if isinstance(value, tuple):
        value = value[-1] if value else None
    return str(value).lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- journal


class Journal(JournalReads):
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
        if parsed.password and len(str(parsed.password)) >= MIN_SECRET_LEN:
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
        return db_error(exc, self.backend, self._safe_url, self._extra_secrets)

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
                if self.backend != "sqlite" or not is_locked(exc):
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
        self._run(lambda conn: create_schema(conn, self.backend, self._safe_url))

    def _insert_audit(self, conn: Connection, action: str, detail: Mapping[str, Any],
                      actor: str = "runner", run_id: int | None = None) -> int:
        result = conn.execute(t_audit.insert().values(
            time=utc_now(), run_id=run_id, actor=str(actor), action=str(action),
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
        when = utc_now() if started_at is None else started_at

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
                   created_at=utc_now() if created_at is None else created_at)
        self._run(lambda conn: conn.execute(t_decisions.insert().values(**row)))

    def record_decisions(self, run_id: int, bar_time: Any,
                         rows: Iterable[tuple[str, Mapping[str, Any], float | None,
                                              float | None]],
                         model_artifact_hash: str = "") -> None:
        """Several decisions of one bar, (symbol, features, prediction, target) each, in one
        statement; features scrubbed as in `record_decision`."""
        now = utc_now()
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
        now = utc_now()
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
            now = utc_now()
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
            now = utc_now()
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
                 cash: float, equity: float, benchmark: float | None = None) -> None:
        """Positions and equity at ``time`` (and the run's buy-and-hold value when given),
        in one transaction."""
        items = list(positions.values() if isinstance(positions, Mapping) else positions)
        rows = [dict(run_id=run_id, time=time, symbol=p.symbol, qty=float(p.qty),
                     avg_price=_num(p.avg_price)) for p in items]

        def write(conn: Connection) -> None:
            if rows:
                conn.execute(t_positions.insert(), rows)
            conn.execute(t_equity.insert().values(
                run_id=run_id, time=time, cash=float(cash), equity=float(equity)))
            if benchmark is not None and math.isfinite(benchmark):
                conn.execute(t_benchmark.insert().values(
                    run_id=run_id, time=time, equity=float(benchmark)))

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
                if self.backend != "sqlite" or not is_locked(exc):
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

    def save_runner_state(self, run_id: int, time: Any, state: Mapping[str, Any]) -> None:
        """The runner's own state after a bar (guard counters, exit levels, ...)."""
        data = to_jsonable(dict(state))
        self._run(lambda conn: conn.execute(t_runner_state.insert().values(
            run_id=run_id, time=time, state=data)))

    # ---------------------------------------------------------------- operator commands

    def add_command(self, kind: str, params: Mapping[str, Any] | None = None,
                    actor: str = "dashboard", run_id: int | None = None) -> int:
        """Queue an operator command (status "pending") for run ``run_id`` (None: whichever
        run reads it first) with its ``command_requested`` audit row, in one transaction;
        returns its id. The runner applies it between bars (see ``live.controls``)."""
        kind = str(kind)
        data = self._scrub(to_jsonable(dict(params or {})))
        now = utc_now()

        def write(conn: Connection) -> int:
            cid = int(conn.execute(t_commands.insert().values(
                time=now, run_id=run_id, actor=str(actor), kind=kind, params=data,
                status="pending", applied_at=None, result=None)).inserted_primary_key[0])
            self._insert_audit(conn, "command_requested",
                               {"command_id": cid, "kind": kind, "params": data},
                               actor=actor, run_id=run_id)
            return cid

        return self._run(write)

    def claim_command(self, command_id: int, run_id: int) -> bool:
        """Address a pending command that names no run to ``run_id``; False when another
        run claimed it first (or it is no longer pending). A command already addressed to
        ``run_id`` is claimed already (True)."""
        c = t_commands.c

        def write(conn: Connection) -> bool:
            conn.execute(update(t_commands).where(
                c.id == command_id, c.status == "pending", c.run_id.is_(None)
            ).values(run_id=run_id))
            row = conn.execute(select(c.run_id, c.status).where(c.id == command_id)).first()
            return row is not None and row.status == "pending" and row.run_id == run_id

        return self._run(write)

    def finish_command(self, command_id: int, status: str, result: Mapping[str, Any],
                       run_id: int | None = None) -> None:
        """Mark a pending command "applied" or "refused" with its ``result`` (what changed:
        ``old`` -> ``new``, or the ``reason`` of a refusal) and audit it
        (``command_applied`` / ``command_refused``, actor: who asked for it). ``run_id``:
        the run that handled it (kept when the command already names one). JournalError
        when the command is unknown or not pending any more."""
        if status not in ("applied", "refused"):
            raise JournalError(f"command status {status!r}: use 'applied' or 'refused'")
        data = self._scrub(to_jsonable(dict(result)))
        c = t_commands.c

        def write(conn: Connection) -> None:
            row = conn.execute(select(c.run_id, c.actor, c.kind, c.params, c.status)
                               .where(c.id == command_id)).first()
            if row is None or row.status != "pending":
                state = "unknown" if row is None else f"already {row.status}"
                raise JournalError(f"command {command_id} is {state}: nothing to finish")
            rid = row.run_id if row.run_id is not None else run_id
            conn.execute(update(t_commands).where(and_(c.id == command_id,
                                                       c.status == "pending"))
                         .values(status=status, applied_at=utc_now(), result=data,
                                 run_id=rid))
            self._insert_audit(conn, f"command_{status}",
                               {"command_id": command_id, "kind": row.kind,
                                "params": row.params, "result": data},
                               actor=row.actor, run_id=rid)

        self._run(write)
