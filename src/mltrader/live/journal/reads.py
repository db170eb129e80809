"""The journal's read queries: order rows, fill totals, runner state and the frames of
runs, decisions, orders, fills, positions, equity and audit events.

``JournalReads`` is a mixin of ``Journal``: its queries run through the journal's own
``_run(fn, read=True)`` (one read transaction each, retried while the database is locked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection

from mltrader.live.brokers.base import FINAL_STATUSES
from mltrader.live.journal.schema import (
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
)

_T = TypeVar("_T")


class JournalReads:
    """The read side of ``Journal`` (see the module docstring)."""

    if TYPE_CHECKING:
        def _run(self, fn: Callable[[Connection], _T], *, read: bool = False) -> _T: ...

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

    def benchmark_series(self, run_id: int) -> pd.Series:
        """The run's buy-and-hold equity by time (UTC); empty for runs before schema 3."""
        stmt = (select(t_benchmark.c.time, t_benchmark.c.equity)
                .where(t_benchmark.c.run_id == run_id)
                .order_by(t_benchmark.c.time, t_benchmark.c.id))
        df = _frame(self._rows(stmt), ["time", "equity"], times=["time"], floats=["equity"])
        return df.set_index("time")["equity"].rename("buy_and_hold")

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

    def pending_commands(self, run_id: int | None = None) -> list[dict[str, Any]]:
        """Pending operator commands, oldest first, as dicts of the commands columns: those
        addressed to ``run_id`` and those addressed to no run (None: every pending one)."""
        c = t_commands.c
        stmt = select(t_commands).where(c.status == "pending").order_by(c.id)
        if run_id is not None:
            stmt = stmt.where(or_(c.run_id == run_id, c.run_id.is_(None)))
        return self._rows(stmt)

    def command_row(self, command_id: int) -> dict[str, Any] | None:
        """One operator command as a dict of its columns, or None."""
        rows = self._rows(select(t_commands).where(t_commands.c.id == command_id))
        return rows[0] if rows else None

    def commands_frame(self, limit: int = 200) -> pd.DataFrame:
        """The newest ``limit`` operator commands, oldest first (``params`` and ``result``
        are dicts; ``result`` is None while pending)."""
        stmt = select(t_commands).order_by(t_commands.c.id.desc()).limit(int(limit))
        rows = self._rows(stmt)[::-1]
        return _frame(rows, [c.name for c in t_commands.c], times=["time", "applied_at"])


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
