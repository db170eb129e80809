"""What the dashboard shows: read-only views of a journal and of a runs/ folder.

The journal is opened READ-ONLY and never written: SQLite through a ``mode=ro`` URI with
``PRAGMA query_only`` (a write raises, the file is untouched), PostgreSQL in READ ONLY
transactions. Every query is one short read transaction (``BEGIN DEFERRED`` on SQLite: WAL
readers never block the runner's writes, and the runner never waits on the dashboard).
The queries are the journal's own (``JournalReads``), so the dashboard shows exactly what
``mltrader status`` shows.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time as _time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pandas as pd
from sqlalchemy import create_engine, event, func, or_, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from mltrader.errors import MltraderError
from mltrader.live.controls import EDITABLE, KINDS
from mltrader.live.journal import (
    driver_message,
    mask_url,
    t_audit,
    t_decisions,
    t_equity,
    t_fills,
    t_orders,
    t_positions,
    t_runs,
)
from mltrader.live.journal.reads import JournalReads
from mltrader.live.journal.reads import _frame as journal_frame
from mltrader.live.logfile import log_beside
from mltrader.live.status import resolve_journal_url

_T = TypeVar("_T")

#: audit actions that are the runner's routine bookkeeping, not risk or health events
ROUTINE = frozenset({"order_intent", "order_status", "fill", "run_started", "run_resumed",
                     "reconciled", "order_adopted"})
#: words in an audit action that make it a risk event (guards, resizes, commands)
RISK_WORDS = ("guard", "block", "resiz", "cap", "limit", "kill", "flatten", "pause",
              "resume", "command", "set", "reject", "halt", "stop")
#: words in an audit action that make it an error for the Health page
ERROR_WORDS = ("fail", "error", "skipped", "stale", "reject", "refused")
#: the parameters a "set" command may change
SETTABLE = tuple(EDITABLE)  # the runner's own whitelist (live/controls.py)
PROTECTIVE_WORDS = ("stop", "target", "take_profit", "trailing", "exit")
COMMAND_KINDS = KINDS


@dataclass(frozen=True)
class Source:
    """What a dashboard shows: a journal (URL), a runs/ folder, or both."""

    journal_url: str | None = None
    runs_dir: Path | None = None
    log_file: Path | None = None  # the session's log (Health shows its tail)

    def __post_init__(self) -> None:
        if self.log_file is None:  # a SQLite journal's session.log beside it
            object.__setattr__(self, "log_file", log_beside(self.journal_url))

    @classmethod
    def resolve(cls, session: Path | None = None, journal: str | None = None,
                runs: Path | None = None, log: Path | None = None) -> Source:
        """From the command line's --session / --journal / --runs / --log (checked: a
        missing folder or journal file is an error naming it, never an empty database
        created)."""
        url = None
        if session is not None or journal:
            url = resolve_journal_url(journal, session)
        if log is not None and Path(log).is_dir():
            raise MltraderError(f"--log {log} is a folder; give the log file (session.log)")
        if runs is not None and not Path(runs).is_dir():
            raise MltraderError(f"runs folder {runs} not found; pass the folder backtests "
                                "write to (default runs/)")
        if url is None and runs is None:
            raise MltraderError("what to show? give --session DIR, --journal URL or "
                                "--runs DIR")
        return cls(url, Path(runs) if runs is not None else None, log)


# ------------------------------------------------------------------------------ journal


class ReadOnlyJournal(JournalReads):
    """A journal's read queries over an engine that cannot write (see the module doc)."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 200, lock_retries: int = 3) -> None:
        self.safe_url = mask_url(url)
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise MltraderError(f"journal URL {self.safe_url!r} is not a database URL") from exc
        self.backend = parsed.get_backend_name()
        self._retries = lock_retries
        if self.backend == "sqlite":
            db = parsed.database or ""
            if db in ("", ":memory:") or not Path(db).expanduser().is_file():
                raise MltraderError(f"no journal at {db or '(memory)'}; the dashboard opens an "
                                    "existing journal read-only")
            self.path: Path | None = Path(db).expanduser().resolve()
            uri = f"file:{quote(str(self.path))}?mode=ro"

            def connect() -> sqlite3.Connection:
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False,
                                       timeout=busy_timeout_ms / 1000)
                conn.isolation_level = None  # SQLAlchemy's BEGIN below, nothing implicit
                conn.execute("PRAGMA query_only = ON")
                return conn

            self._engine: Engine = create_engine("sqlite://", creator=connect,
                                                 poolclass=NullPool)

            @event.listens_for(self._engine, "begin")
            def _begin(conn: Connection) -> None:
                conn.exec_driver_sql("BEGIN DEFERRED")
        elif self.backend == "postgresql":
            self.path = None
            self._engine = create_engine(parsed, pool_pre_ping=True, pool_size=2,
                                         max_overflow=2)

            @event.listens_for(self._engine, "begin")
            def _begin_pg(conn: Connection) -> None:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        else:
            raise MltraderError(f"journal URL {self.safe_url!r}: backend {self.backend!r} "
                                "is not supported")

    @property
    def engine(self) -> Engine:
        return self._engine

    def _run(self, fn: Callable[[Connection], _T], *, read: bool = True) -> _T:
        delay = 0.02
        for attempt in range(self._retries + 1):
            try:
                with self._engine.connect() as conn, conn.begin():
                    return fn(conn)
            except OperationalError as exc:
                if "locked" not in str(exc).lower() or attempt >= self._retries:
                    raise MltraderError(f"journal {self.safe_url}: {driver_message(exc)}"
                                        ) from exc
                _time.sleep(delay)
                delay *= 2
            except DBAPIError as exc:
                raise MltraderError(f"journal {self.safe_url}: {driver_message(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._engine.dispose()

    def has_table(self, name: str) -> bool:
        if self.backend == "sqlite":
            stmt = text("SELECT count(*) FROM sqlite_master WHERE type='table' AND name=:n")
        else:
            stmt = text("SELECT count(*) FROM information_schema.tables WHERE table_name=:n")
        return bool(self._run(lambda c: c.execute(stmt, {"n": name}).scalar()))

    def commands_frame(self, limit: int = 200) -> pd.DataFrame:  # type: ignore[override]
        """The newest commands (the runner's command table), newest first; empty when the
        journal has no command table yet."""
        cols = ["id", "time", "run_id", "actor", "kind", "params", "status", "applied_at",
                "result"]
        if not self.has_table("commands"):
            return pd.DataFrame(columns=cols)
        rows = self._run(lambda c: [dict(r._mapping) for r in c.execute(text(
            "SELECT * FROM commands ORDER BY id DESC LIMIT :n"), {"n": int(limit)})])
        df = pd.DataFrame.from_records(rows)
        if df.empty:
            return pd.DataFrame(columns=cols)
        for col in ("params", "result"):
            if col in df.columns:
                df[col] = [_json_field(v) for v in df[col]]
        for col in ("time", "applied_at"):
            if col in df.columns:
                df[col] = pd.to_datetime(df[col], utc=True, errors="coerce")
        return df

    # the pages' reads: newest first and LIMITed in SQL (a page re-renders on every change;
    # reading whole tables made each render cost ~100 ms on a year of bars)
    def audit_where(self, *conds: Any, limit: int) -> pd.DataFrame:
        """The newest ``limit`` audit events matching ``conds``, newest first."""
        stmt = select(t_audit).where(*conds).order_by(t_audit.c.id.desc()).limit(int(limit))
        return journal_frame(self._rows(stmt), [c.name for c in t_audit.c], times=["time"])

    def decisions_where(self, run_id: int, symbol: str | None, start: pd.Timestamp | None,
                        end: pd.Timestamp | None, limit: int) -> pd.DataFrame:
        """The run's newest ``limit`` decisions (filtered), newest bar first."""
        c = t_decisions.c
        stmt = select(t_decisions).where(c.run_id == run_id)
        if symbol:
            stmt = stmt.where(c.symbol == symbol)
        if start is not None:
            stmt = stmt.where(c.bar_time >= start)
        if end is not None:
            stmt = stmt.where(c.bar_time <= end)
        stmt = stmt.order_by(c.bar_time.desc(), c.symbol.desc(), c.id.desc()).limit(int(limit))
        return journal_frame(self._rows(stmt), [x.name for x in t_decisions.c],
                             times=["bar_time", "created_at"], floats=["prediction", "target"])

    def orders_between(self, run_id: int, first: Any, last: Any) -> pd.DataFrame:
        """The run's orders decided on bars in [first, last], oldest first."""
        c = t_orders.c
        stmt = (select(t_orders).where(c.run_id == run_id, c.bar_time >= first,
                                       c.bar_time <= last)
                .order_by(c.created_at, c.client_order_id))
        return journal_frame(self._rows(stmt), [x.name for x in t_orders.c],
                             times=["bar_time", "created_at", "updated_at"],
                             floats=["qty", "limit_price", "stop_price", "filled_qty",
                                     "avg_fill_price"])

    def positions_at(self, run_id: int, time: Any) -> pd.DataFrame:
        c = t_positions.c
        stmt = (select(c.time, c.symbol, c.qty, c.avg_price)
                .where(c.run_id == run_id, c.time == time).order_by(c.symbol))
        return journal_frame(self._rows(stmt), ["time", "symbol", "qty", "avg_price"],
                             times=["time"], floats=["qty", "avg_price"])

    def newest_fills(self, run_id: int | None, limit: int) -> pd.DataFrame:
        """The newest ``limit`` fills (of one run), newest first."""
        stmt = (select(*t_fills.c, t_orders.c.run_id)
                .join(t_orders, t_fills.c.client_order_id == t_orders.c.client_order_id)
                .order_by(t_fills.c.time.desc(), t_fills.c.fill_id.desc()).limit(int(limit)))
        if run_id is not None:
            stmt = stmt.where(t_orders.c.run_id == run_id)
        return journal_frame(self._rows(stmt), [c.name for c in t_fills.c] + ["run_id"],
                             times=["time"], floats=["qty", "price", "commission"])

    def last_snapshot_time(self, run_id: int) -> pd.Timestamp | None:
        """The bar time of the run's newest equity (and positions) snapshot."""
        value = self._run(lambda c: c.execute(select(func.max(t_equity.c.time))
                                              .where(t_equity.c.run_id == run_id)).scalar())
        return None if value is None else pd.Timestamp(value).tz_convert("UTC")

    def last_bar_written(self, run_id: int) -> pd.Timestamp | None:
        """When (wall clock, UTC) the run last wrote a bar's decisions: the runner got
        through a whole bar, the broker's account and orders included."""
        value = self._run(lambda c: c.execute(select(func.max(t_decisions.c.created_at))
                                              .where(t_decisions.c.run_id == run_id)).scalar())
        return None if value is None else pd.Timestamp(value).tz_convert("UTC")

    def marks(self) -> dict[str, Any]:
        """The journal's change marks: max ids / times per table (one read transaction);
        the poller compares them to tell the pages what changed."""
        def read(conn: Connection) -> dict[str, Any]:
            one = lambda stmt: conn.execute(stmt).scalar()  # noqa: E731
            out = {
                "runs": one(select(func.max(t_runs.c.id))),
                "equity": one(select(func.max(t_equity.c.id))),
                "positions": one(select(func.max(t_positions.c.id))),
                "decisions": one(select(func.max(t_decisions.c.id))),
                "audit": one(select(func.max(t_audit.c.id))),
                "fills": one(select(func.count()).select_from(t_fills)),
                "orders": one(select(func.max(t_orders.c.updated_at))),
            }
            if has_commands:
                row = conn.execute(text("SELECT max(id), count(applied_at) FROM commands")
                                   ).first()
                out["commands"] = f"{row[0]}:{row[1]}" if row else None
            return {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                    for k, v in out.items()}

        has_commands = self.has_table("commands")
        return self._run(read)


def _broker_error(action: str, detail: Any) -> bool:
    """An audit row that says the broker did not answer or refused."""
    if action == "order_submit_failed":
        return True
    error = str(detail.get("error", "")) if isinstance(detail, Mapping) else ""
    return action == "bar_failed" and any(w in error.split(":")[0] for w in (
        "Broker", "Rejected", "Connection", "Timeout"))


def _json_field(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# ------------------------------------------------------------------------------ helpers


def jsonable(value: Any) -> Any:
    """A value fit for JSON: timestamps ISO text, NaN / NA None, numpy scalars Python's."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [jsonable(r) for r in df.to_dict("records")]


def _any_word(words: Iterable[str]) -> Any:
    """SQL: the audit action contains one of ``words`` (as `_matches`, in the database)."""
    action = func.lower(t_audit.c.action)
    return or_(*[action.like(f"%{w}%") for w in words])


def _matches(action: str, words: Iterable[str]) -> bool:
    a = str(action).lower()
    return any(w in a for w in words)


def win_rate(fills: pd.DataFrame) -> tuple[float | None, int]:
    """Share of closing trades with a profit (average cost per symbol, commissions
    included) and the number of closing trades."""
    pos: dict[str, tuple[float, float]] = {}  # symbol: (qty, average cost)
    wins = closes = 0
    for f in fills.sort_values("time").itertuples(index=False):
        qty, avg = pos.get(f.symbol, (0.0, 0.0))
        signed = float(f.qty) if f.side == "buy" else -float(f.qty)
        if qty != 0 and (qty > 0) != (signed > 0):  # reduces or flips the position
            closed = min(abs(signed), abs(qty))
            pnl = (float(f.price) - avg) * closed * (1 if qty > 0 else -1) - float(f.commission)
            closes += 1
            wins += pnl > 0
            rest = qty + signed
            if abs(signed) > abs(qty):
                pos[f.symbol] = (rest, float(f.price))
            else:
                pos[f.symbol] = (rest, avg if rest != 0 else 0.0)
        else:
            new = qty + signed
            cost = (abs(qty) * avg + abs(signed) * float(f.price)) / abs(new) if new else 0.0
            pos[f.symbol] = (new, cost)
    return (wins / closes if closes else None), closes


def equity_stats(eq: pd.DataFrame, now: pd.Timestamp | None = None) -> dict[str, Any]:
    """ROI total / today, drawdown, Sharpe so far, cash, exposure and bar lag of an equity
    frame (``equity_frame``: cash, equity indexed by time)."""
    if eq.empty:
        return {"equity": None, "cash": None, "roi_total": None, "roi_today": None,
                "max_drawdown": None, "drawdown": None, "sharpe": None, "exposure": None,
                "last_bar": None, "lag_seconds": None, "bars": 0}
    e = eq["equity"]
    last_t = eq.index[-1]
    day = last_t.normalize()
    before = e[e.index < day]
    prev = float(before.iloc[-1]) if len(before) else float(e.iloc[0])
    dd = e / e.cummax() - 1
    daily = e.groupby(e.index.normalize()).last().pct_change().dropna()
    sharpe = (float(daily.mean() / daily.std() * math.sqrt(252))
              if len(daily) > 2 and daily.std() > 0 else None)
    equity, cash = float(e.iloc[-1]), float(eq["cash"].iloc[-1])
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    return {"equity": equity, "cash": cash,
            "roi_total": equity / float(e.iloc[0]) - 1 if e.iloc[0] else None,
            "roi_today": equity / prev - 1 if prev else None,
            "max_drawdown": float(dd.min()), "drawdown": float(dd.iloc[-1]),
            "sharpe": sharpe,
            "exposure": (equity - cash) / equity if equity else None,
            "last_bar": last_t.isoformat(),
            "lag_seconds": max(0.0, (now - last_t).total_seconds()),
            "bars": len(eq)}


# ------------------------------------------------------------------------------ views


def _growth(values: list[float | None] | None) -> float | None:
    """last / first - 1 over the known values (None when fewer than one is known)."""
    known = [v for v in values or [] if v is not None]
    return known[-1] / known[0] - 1 if known and known[0] else None


class JournalViews:
    """The dashboard's questions to one journal, answered as JSON-ready dicts."""

    def __init__(self, journal: ReadOnlyJournal) -> None:
        self.j = journal

    def run(self) -> dict[str, Any] | None:
        runs = self.j.runs_frame()
        return jsonable(runs.iloc[-1].to_dict()) if len(runs) else None

    def run_id(self) -> int | None:
        run = self.run()
        return int(run["id"]) if run else None

    def overview(self) -> dict[str, Any]:
        run = self.run()
        rid = int(run["id"]) if run else None
        eq = self.j.equity_frame(rid) if rid is not None else pd.DataFrame(
            columns=["cash", "equity"])
        stats = equity_stats(eq)
        fills = self.j.fills_for(rid) if rid is not None else pd.DataFrame()
        rate, closes = win_rate(fills) if len(fills) else (None, 0)
        curve = [{"time": t.isoformat(), "equity": float(v),
                  "drawdown": float(d)}
                 for t, v, d in zip(eq.index, eq["equity"],
                                    (eq["equity"] / eq["equity"].cummax() - 1), strict=True)]
        bh = None
        if rid is not None and len(eq) and self.j.has_table("benchmark"):
            series = self.j.benchmark_series(rid)
            series = series[~series.index.duplicated(keep="last")]
            if len(series):
                aligned = series.reindex(eq.index, method="ffill")
                bh = [None if pd.isna(v) else float(v) for v in aligned]
        return {"run": run, **stats, "win_rate": rate, "closed_trades": closes,
                "fills": len(fills), "curve": curve, "buy_and_hold": bh,
                "roi_buy_and_hold": _growth(bh)}

    def last_bar(self) -> dict[str, Any]:
        """The newest run's last bar and how late it is (the Health page: one row read)."""
        rid = self.run_id()
        last = self.j.last_snapshot_time(rid) if rid is not None else None
        if last is None:
            return {"last_bar": None, "lag_seconds": None}
        lag = (pd.Timestamp.now(tz="UTC") - last).total_seconds()
        return {"last_bar": last.isoformat(), "lag_seconds": max(0.0, lag)}

    def positions(self) -> list[dict[str, Any]]:
        rid = self.run_id()
        if rid is None:
            return []
        # the newest snapshot is the equity row's: a flat book writes no position rows, so
        # the newest position rows may be an older snapshot's (not what is held now)
        last = self.j.last_snapshot_time(rid)
        if last is None:
            return []
        pos = self.j.positions_at(rid, last)
        return records(pos[pos["qty"] != 0])

    def orders(self, open_only: bool = False) -> list[dict[str, Any]]:
        df = pd.DataFrame(self.j.pending_orders()) if open_only else self.j.orders_frame(
            self.run_id())
        if df.empty:
            return []
        df = df.copy()
        df["protective"] = [str(t).startswith("stop") or _matches(r, PROTECTIVE_WORDS)
                            for t, r in zip(df["type"], df["reason"], strict=True)]
        return records(df)

    def fills(self, limit: int = 500) -> list[dict[str, Any]]:
        return records(self.j.newest_fills(self.run_id(), limit))

    def decisions(self, symbol: str | None = None, start: str | None = None,
                  end: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        rid = self.run_id()
        if rid is None:
            return []
        df = self.j.decisions_where(rid, symbol or None, _when(start) if start else None,
                                    _when(end, end=True) if end else None, limit)
        if df.empty:
            return []
        orders = self.j.orders_between(rid, df["bar_time"].min(), df["bar_time"].max())
        keyed: dict[tuple[str, str], dict[str, Any]] = {}
        for o in orders.to_dict("records"):
            if o["bar_time"] is not None and not pd.isna(o["bar_time"]):
                keyed.setdefault((o["bar_time"].isoformat(), o["symbol"]), o)
        out = []
        for d in df.to_dict("records"):
            o = keyed.get((d["bar_time"].isoformat(), d["symbol"]))
            d["order"] = (None if o is None else
                          {k: o[k] for k in ("client_order_id", "side", "qty", "type",
                                             "status")})
            out.append(jsonable(d))
        return out

    def audit(self, limit: int = 500) -> list[dict[str, Any]]:
        return records(self.j.audit_where(limit=limit))

    def risk(self, limit: int = 500) -> list[dict[str, Any]]:
        return records(self.j.audit_where(t_audit.c.action.not_in(sorted(ROUTINE)),
                                          _any_word(RISK_WORDS), limit=limit))

    def errors(self, limit: int = 50) -> list[dict[str, Any]]:
        return records(self.j.audit_where(_any_word(ERROR_WORDS), limit=limit))

    def broker(self) -> dict[str, Any]:
        """The broker of the newest run: answering (a bar was written after its last error)
        or failing since its last error (a refused submission, a bar that failed on it)."""
        run = self.run()
        if run is None:
            return {"name": None, "mode": None, "status": "no run yet", "last_ok": None,
                    "last_error": None}
        rid = int(run["id"])
        last_ok = self.j.last_bar_written(rid)
        audit = self.j.audit_where(t_audit.c.run_id == rid, t_audit.c.action.in_(
            ["order_submit_failed", "bar_failed"]), limit=500)
        errs = audit[[_broker_error(a, d) for a, d in zip(audit["action"], audit["detail"],
                                                         strict=True)]] if len(audit) else audit
        last_err = records(errs.head(1))[0] if len(errs) else None
        if last_err is not None and (last_ok is None
                                     or pd.Timestamp(last_err["time"]) > last_ok):
            status = "failing"
        elif last_ok is None:
            status = "no bar yet"
        else:
            status = "answering"
        return {"name": run.get("broker"), "mode": run.get("mode"), "status": status,
                "last_ok": last_ok.isoformat() if last_ok is not None else None,
                "last_error": last_err}

    def commands(self, limit: int = 200) -> list[dict[str, Any]]:
        return records(self.j.commands_frame(limit))

    def counts(self) -> dict[str, Any]:
        """What /metrics exposes besides equity: open orders, rejections, guard trips."""
        orders = self.j.orders_frame()
        audit = self.j.audit_frame()
        return {
            "open_orders": len(self.j.pending_orders()),
            "rejections": int((orders["status"] == "rejected").sum()) if len(orders) else 0,
            "guard_trips": int(sum(_matches(a, ("guard_tripped", "kill"))
                                   for a in audit["action"])) if len(audit) else 0,
        }


def _when(value: str, end: bool = False) -> pd.Timestamp:
    try:
        t = pd.Timestamp(value)
    except ValueError as exc:
        raise MltraderError(f"not a date: {value!r} (use YYYY-MM-DD)") from exc
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    if end and len(value) <= 10:
        t = t + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    return t


# ------------------------------------------------------------------------------ runs/


def backtest_dir(runs_dir: Path, name: str) -> Path:
    """A run folder directly under ``runs_dir`` (no path tricks); MltraderError if none."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise MltraderError(f"no run {name!r}")
    path = runs_dir / name
    if not path.is_dir() or path.resolve().parent != runs_dir.resolve():
        raise MltraderError(f"no run {name!r} in {runs_dir}")
    return path


def list_backtests(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run folder with a metrics.json: its name, the strategy's headline metrics and
    buy-and-hold's, whether it has a report and an equity curve."""
    out = []
    for d in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        mfile = d / "metrics.json"
        if not mfile.is_file():
            continue
        try:
            m = json.loads(mfile.read_text())
        except (OSError, ValueError):
            continue
        strat = m.get("strategy") if isinstance(m.get("strategy"), dict) else {}
        bh = m.get("buy_and_hold") if isinstance(m.get("buy_and_hold"), dict) else {}

        def num(src: Mapping[str, Any], key: str) -> float | None:
            v = src.get(key)
            return float(v) if isinstance(v, int | float) and math.isfinite(v) else None

        out.append({"name": d.name,
                    "total_return": num(strat, "total_return"), "cagr": num(strat, "cagr"),
                    "sharpe": num(strat, "sharpe"), "max_drawdown": num(strat, "max_drawdown"),
                    "bh_total_return": num(bh, "total_return"), "bh_sharpe": num(bh, "sharpe"),
                    "has_report": (d / "report.html").is_file(),
                    "has_equity": (d / "equity.parquet").is_file()})
    return out


def backtest_equity(runs_dir: Path, name: str) -> dict[str, Any]:
    """A run's equity curve (and buy-and-hold's) as lists."""
    path = backtest_dir(runs_dir, name) / "equity.parquet"
    if not path.is_file():
        raise MltraderError(f"run {name!r} has no equity.parquet")
    df = pd.read_parquet(path)
    col = "strategy" if "strategy" in df.columns else df.columns[0]
    return {"name": name, "time": [t.isoformat() for t in pd.to_datetime(df.index)],
            "equity": [jsonable(v) for v in df[col]],
            "buy_and_hold": ([jsonable(v) for v in df["buy_and_hold"]]
                             if "buy_and_hold" in df.columns else None)}
