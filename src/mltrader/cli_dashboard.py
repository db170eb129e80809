"""`mltrader dashboard`: the web dashboard over a session's journal and/or a runs/ folder.

Registers on `mltrader.cli_app.app`; the app itself is `mltrader.dashboard.create_app`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mltrader.cli_app import app, guarded, out

PANEL = "Paper and live trading"


@app.command(rich_help_panel=PANEL, epilog="Example:  mltrader dashboard --session "
             "runs/paper-session   (then open http://127.0.0.1:8050)")
@guarded
def dashboard(
    session: Annotated[Path | None, typer.Option(
        "--session", help="A paper session folder (its journal.db).")] = None,
    journal: Annotated[str | None, typer.Option(
        "--journal", help="A journal URL: sqlite:///path.db or postgresql+psycopg://...")] = None,
    runs: Annotated[Path | None, typer.Option(
        "--runs", help="A runs/ folder: its backtests as a table, reports, equity overlay.")
    ] = None,
    log: Annotated[Path | None, typer.Option(
        "--log", help="The session's log file for the Health page (default: session.log "
        "beside a SQLite journal).")] = None,
    host: Annotated[str, typer.Option(
        "--host", help="Address to bind; anything but 127.0.0.1 needs "
        "MLTRADER_DASHBOARD_TOKEN set.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8050,
    nice: Annotated[int, typer.Option(
        "--nice", min=0, max=19, help="Lower the dashboard's CPU priority by N so a bot on "
        "the same machine never waits for a core because of it (20 open pages on 2 cores "
        "otherwise cost its bar-to-order p99 ~1.8x, bench/RESULTS_live.md); 0 keeps the "
        "normal priority.")] = 19,
    token_env: Annotated[bool, typer.Option(
        "--token-env", help="Require MLTRADER_DASHBOARD_TOKEN to be set (never generate "
        "one).")] = False,
) -> None:
    """Serve the trader's dashboard: overview, positions, decisions, risk, health, backtests.

    The journal is opened read-only; controls (pause, resume, flatten, kill, set) go to the
    journal's command table and need the token (MLTRADER_DASHBOARD_TOKEN, else one is
    generated and printed here).
    """
    from mltrader.dashboard import Source
    from mltrader.dashboard.security import TOKEN_ENV, check_bind, resolve_token
    from mltrader.errors import MltraderError

    token, from_env = resolve_token()
    if token_env and not from_env:
        raise MltraderError(f"--token-env: {TOKEN_ENV} is not set; export it or drop "
                            "--token-env")
    check_bind(host, from_env)  # before anything is opened
    source = Source.resolve(session, journal, runs, log)
    import uvicorn

    from mltrader.dashboard import create_app

    web = create_app(source, token=token, host=host, token_from_env=from_env)
    if nice and hasattr(os, "nice"):
        os.nice(nice)  # pages may wait a little; the bot beside it must not
    shown = f"[{host}]" if ":" in host else host
    out.print(f"mltrader dashboard on http://{shown}:{port}", highlight=False)
    if not from_env:
        out.print(f"token (controls; reads from other machines): {token}\n"
                  f"open with the token: http://{shown}:{port}/login?token={token}",
                  highlight=False, soft_wrap=True)
    uvicorn.run(web, host=host, port=port, log_level=os.environ.get(
        "MLTRADER_DASHBOARD_LOG", "warning"), timeout_graceful_shutdown=2)
