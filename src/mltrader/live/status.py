"""What a journal says about its latest run: the facts `mltrader status` shows.

Opening a journal is checked first (`open_journal`): a missing session folder or SQLite file
is an error naming it, never a new empty database created by the look-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import make_url

from mltrader.errors import MltraderError
from mltrader.live.journal import Journal
from mltrader.live.session import JOURNAL_FILE, journal_url


def resolve_journal_url(journal: str | None = None, session: Path | None = None) -> str:
    """The journal URL of `--journal URL` (a plain path means a SQLite file) or of
    `--session DIR`; MltraderError when neither, both, or a missing folder / file."""
    if journal and session is not None:
        raise MltraderError("give either --session DIR or --journal URL, not both")
    if session is not None:
        folder = Path(session)
        if not folder.is_dir():
            raise MltraderError(f"session folder {folder} not found; pass the folder "
                                "`mltrader paper --session DIR` wrote")
        if not (folder / JOURNAL_FILE).is_file():
            raise MltraderError(f"{folder} has no {JOURNAL_FILE}: not a session folder; pass "
                                "the folder `mltrader paper --session DIR` wrote")
        return journal_url(folder)
    if not journal:
        raise MltraderError("which journal? give --session DIR (a paper session folder) or "
                            "--journal URL (e.g. sqlite:///runs/live/journal.db)")
    url = journal if "://" in journal else f"sqlite:///{journal}"
    try:
        parsed = make_url(url)
    except Exception:
        raise MltraderError(f"--journal {journal!r} is not a database URL; use "
                            "sqlite:///path.db or postgresql+psycopg://user@host/db") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if db in ("", ":memory:"):
            raise MltraderError("--journal: an in-memory SQLite journal holds nothing; give "
                                "the file, e.g. sqlite:///runs/live/journal.db")
        if not Path(db).expanduser().is_file():
            raise MltraderError(f"no journal at {db}; check the --journal URL (or give "
                                "--session DIR)")
    return url


def open_journal(journal: str | None = None, session: Path | None = None) -> Journal:
    """An existing journal (see `resolve_journal_url`)."""
    return Journal(resolve_journal_url(journal, session))


@dataclass(frozen=True)
class RunStatus:
    """The latest run of a journal and the state it left."""

    url: str
    runs: int
    run: dict[str, Any]
    last_bar: pd.Timestamp | None
    cash: float | None
    equity: float | None
    positions: pd.DataFrame  # symbol, qty, avg_price at the last snapshot
    open_orders: pd.DataFrame  # orders not in a final status (every run, adopted ones too)
    audit: pd.DataFrame  # the newest audit events, oldest first
    orders: int
    fills: int


def run_status(journal: Journal, run_id: int | None = None, audit_rows: int = 10
               ) -> RunStatus:
    """The status of `run_id` (default: the newest run); MltraderError if there is none."""
    runs = journal.runs_frame()
    if runs.empty:
        raise MltraderError(f"journal {journal.url} has no runs yet; start one with "
                            "`mltrader paper --session DIR` or `mltrader live`")
    if run_id is None:
        row = runs.iloc[-1]
    else:
        hit = runs[runs["id"] == run_id]
        if hit.empty:
            raise MltraderError(f"journal {journal.url} has no run {run_id}; it has runs "
                                f"{', '.join(str(i) for i in runs['id'])}")
        row = hit.iloc[-1]
    rid = int(row["id"])
    eq = journal.equity_frame(rid)
    last = eq.index[-1] if len(eq) else None
    pos = journal.positions_frame(rid)
    if last is not None:
        pos = pos[pos["time"] == last]
    else:
        pos = pos.iloc[0:0]
    pos = pos[pos["qty"] != 0][["symbol", "qty", "avg_price"]].reset_index(drop=True)
    pending = pd.DataFrame(journal.pending_orders())
    audit = journal.audit_frame().tail(audit_rows).reset_index(drop=True)
    return RunStatus(
        url=journal.url, runs=len(runs), run=row.to_dict(), last_bar=last,
        cash=float(eq["cash"].iloc[-1]) if len(eq) else None,
        equity=float(eq["equity"].iloc[-1]) if len(eq) else None,
        positions=pos, open_orders=pending, audit=audit,
        orders=len(journal.orders_frame(rid)), fills=len(journal.fills_for(rid)))
