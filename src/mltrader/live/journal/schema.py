"""The journal's tables in the database: the UTC timestamp type, the tables, the
database-enforced append-only audit triggers and the schema version.

Times are stored in UTC and come back as tz-aware UTC timestamps (microsecond precision).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from mltrader.live.journal.errors import JournalError

SCHEMA_VERSION = 3  # 2: the operator command table (`commands`); 3: `benchmark`
_PG_LOCK_KEY = 0x6D6C7472  # "mltr": serialises schema creation between processes


def utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


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

# the run's buy-and-hold comparison: its first bar's equity spread equally over the
# universe at that bar's closes, marked at each bar's closes (no costs; the dashboard's line)
t_benchmark = Table(
    "benchmark", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("equity", Float, nullable=False),
    Index("ix_benchmark_run_time", "run_id", "time"),
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

t_commands = Table(
    "commands", metadata,  # operator controls for a runner (pause, flatten, kill, set, ...)
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", UTCDateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id")),  # NULL: the first run that reads it
    Column("actor", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("params", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("applied_at", UTCDateTime),
    Column("result", JSON),
    CheckConstraint("status IN ('pending', 'applied', 'refused')", name="ck_commands_status"),
    Index("ix_commands_status", "status", "id"),
    sqlite_autoincrement=True,
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


def create_schema(conn: Connection, backend: str, safe_url: str) -> None:
    """Create what is missing (tables, audit triggers) and record the schema version, in
    the caller's transaction; JournalError when the database has a newer schema."""
    if backend == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    metadata.create_all(conn)
    if backend == "sqlite":
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
                                                    applied_at=utc_now()))
    elif current > SCHEMA_VERSION:
        raise JournalError(
            f"journal {safe_url} has schema version {current}, newer than "
            f"this mltrader's {SCHEMA_VERSION}: upgrade mltrader to read it")
