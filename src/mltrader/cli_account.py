"""The account commands of the `mltrader` command line: status, flatten, parity.

What a journal says about a run (`status`), closing an account's positions (`flatten`, which
asks first) and a paper session checked against its backtest trade by trade (`parity`).
They share the trading commands' options and helpers (cli_live.py) and register on the same
app, in the "Paper and live trading" panel; the facts come from `mltrader.live.status`,
`mltrader.live.session` and `mltrader.parity`.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mltrader.cli_app import _fail, app, guarded, out
from mltrader.cli_live import (
    BROKERS_ALL,
    FLATTEN_REASON,
    PANEL,
    IbClient,
    IbHost,
    IbPort,
    JournalOpt,
    SessionOpt,
    _check_broker,
    _confirm,
    _confirm_live,
    _default_live_journal,
    _journal_lock,
    _journal_url,
    _make_broker,
    _money,
    _no_signal,
    _resume_run,
    _short,
    _when,
    alpaca_keys,
)

if TYPE_CHECKING:
    from mltrader.live.brokers.base import Broker


# ------------------------------------------------------------------------------ status
@app.command(rich_help_panel=PANEL, epilog="Example:  mltrader status --session "
             "runs/crossover-paper")
@guarded
def status(journal: JournalOpt = None, session: SessionOpt = None) -> None:
    """Show the latest run of a journal: state, positions, open orders, audit.

    Strategy, broker, mode, start, last bar, equity and cash (last snapshot), positions,
    open (non-final) orders and the last 10 audit events.
    """
    from mltrader.live.status import open_journal, run_status

    j = open_journal(journal, session)
    try:
        st = run_status(j)
    finally:
        j.close()
    r = st.run
    head = Table(title=f"Run {r['id']} of {st.runs} in {st.url}", title_justify="left",
                 show_header=False)
    head.add_column("what")
    head.add_column("value")
    for label, value in (
            ("strategy", r["strategy"]), ("broker", r["broker"]), ("mode", r["mode"]),
            ("started", str(r["started_at"])),
            ("last bar", str(st.last_bar) if st.last_bar is not None else "none yet"),
            ("equity", _money(st.equity)), ("cash", _money(st.cash)),
            ("orders / fills", f"{st.orders} / {st.fills}")):
        head.add_row(label, str(value))
    out.print(head)
    pos = Table(title="Positions (last snapshot)", title_justify="left")
    for col in ("symbol", "qty", "avg price"):
        pos.add_column(col, justify="left" if col == "symbol" else "right")
    for p in st.positions.itertuples(index=False):
        pos.add_row(str(p.symbol), f"{p.qty:g}", _money(p.avg_price))
    out.print(pos if len(st.positions) else "Positions: none (flat)")
    if len(st.open_orders):
        oo = Table(title="Open orders", title_justify="left")
        cols = ("client_order_id", "symbol", "side", "qty", "type", "status", "filled_qty")
        for col in cols:
            oo.add_column(col)
        for o in st.open_orders.to_dict("records"):
            oo.add_row(*(f"{o[c]:g}" if isinstance(o[c], float) else str(o[c]) for c in cols))
        out.print(oo)
    else:
        out.print("Open orders: none")
    au = Table(title=f"Last {len(st.audit)} audit events", title_justify="left")
    for col in ("time", "actor", "action", "detail"):
        au.add_column(col, overflow="fold")
    for a in st.audit.to_dict("records"):
        detail = ", ".join(f"{k}={_short(v)}" for k, v in (a["detail"] or {}).items()
                           if v not in (None, ""))
        au.add_row(_when(a["time"]), str(a["actor"]), str(a["action"]),
                   escape(detail if len(detail) <= 120 else detail[:119] + "…"))
    out.print(au)


# ------------------------------------------------------------------------------ flatten
@app.command(rich_help_panel=PANEL, epilog="Example:  mltrader flatten --broker paper "
             "--session runs/paper-session --yes")
@guarded
def flatten(
    broker: Annotated[str, typer.Option("--broker", help="paper, alpaca or ib.")],
    session: SessionOpt = None,
    journal: JournalOpt = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="The run config (alpaca / ib; a session folder has its own). "
        "Example: -c configs/live-alpaca.yaml")] = None,
    live_money: Annotated[bool, typer.Option(
        "--live", help="The real-money account at alpaca / ib (default: paper).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    ib_host: IbHost = "127.0.0.1",
    ib_port: IbPort = None,
    ib_client_id: IbClient = 1,
) -> None:
    """Cancel every open order and close every position at a broker.

    Closing orders are market orders, journaled and audited like the runner's. Asks first
    unless --yes (with no terminal, --yes is required).
    """
    from mltrader.config import load_config
    from mltrader.live.journal import Journal
    from mltrader.live.runner import Runner
    from mltrader.live.session import BROKER_FILE, journal_url, session_config, session_lock
    from mltrader.pipeline import load_data
    from mltrader.plan import engine_settings, resolve_fill

    name = _check_broker(broker, BROKERS_ALL)
    if session is not None and journal:
        _fail("give either --session DIR or --journal URL, not both")
    stack = ExitStack()  # the session's / journal's lock, held until the orders are journaled
    try:
        keys = None
        if name == "paper":
            if session is None:
                _fail("flatten --broker paper needs --session DIR: the paper account lives in "
                      "DIR/broker.db")
            assert session is not None
            if not session.is_dir():
                _fail(f"session folder {session} not found; pass the folder `mltrader paper "
                      "--session DIR` wrote")
            if not (session / BROKER_FILE).is_file():
                _fail(f"{session} has no {BROKER_FILE}: no paper account to flatten there")
            if live_money:
                _fail("--live is for alpaca / ib; a paper session holds no real money")
            stack.enter_context(session_lock(session))
            cfg = session_config(session)
            bars, _ = load_data(cfg)
            from mltrader.live.brokers.paper import PaperBroker

            adapter: Broker = PaperBroker(engine_settings(cfg, resolve_fill(cfg, bars)),
                                          bars.close_only, state_path=session / BROKER_FILE)
            url = journal_url(session)
            mode = "paper"
        else:
            if session is not None:
                cfg = session_config(session)
            elif config is not None:
                cfg = load_config(config)
            else:
                _fail(f"flatten --broker {name} needs the run config: -c CONFIG (the one "
                      "`mltrader live` trades)")
            keys = alpaca_keys() if name == "alpaca" else None
            if live_money:
                _confirm_live(name)
            mode = "live" if live_money else "paper"
            url = _journal_url(journal, _default_live_journal(cfg, name, live_money))
            stack.enter_context(_journal_lock(url))
            adapter = _make_broker(name, live_money, keys, ib_host, ib_port, ib_client_id)
            bars = None
        try:
            positions = adapter.positions()
            open_orders = adapter.open_orders()
            if not positions and not open_orders:
                out.print(f"Nothing to flatten at {name}: no positions, no open orders.")
                return
            held = ", ".join(f"{s} {p.qty:g}" for s, p in sorted(positions.items())) or "none"
            question = (f"Cancel {len(open_orders)} open order(s) and close {len(positions)} "
                        f"position(s) ({held}) at {name} with market orders?")
            if not _confirm(question, yes, f"flatten sends market orders closing {len(positions)} "
                            f"position(s) at {name}"):
                out.print("Not confirmed: nothing was sent.")
                raise typer.Exit(1)
            if bars is None:
                bars, _ = load_data(cfg)
            j = Journal(url, secrets=keys or ())
            try:
                run_id = _resume_run(j, cfg, adapter.name, mode)
                history = bars
                if run_id is not None:
                    saved = j.runner_state(run_id)
                    if saved is not None:
                        history = bars.select(None, None, saved[0])
                runner = Runner(cfg, adapter, history, j, signal=_no_signal, mode=mode,
                                run_id=run_id)
                runner.reconcile()
                sent = runner.flatten(FLATTEN_REASON)
                runner.finish()
            finally:
                j.close()
        finally:
            adapter.close()
    finally:
        stack.close()
    table = Table(title=f"Sent to {name}", title_justify="left")
    for col in ("symbol", "side", "qty", "client order id"):
        table.add_column(col)
    for r in sent:
        table.add_row(r.symbol, r.side, f"{r.qty:g}", r.client_order_id)
    out.print(table)
    note = (" The paper broker fills them on the session's next bar." if name == "paper"
            else "")
    out.print(f"Cancelled {len(open_orders)} open order(s), sent {len(sent)} closing "
              f"order(s); journaled in {escape(url)} (run {runner.run_id}).{note}",
              highlight=False)


# ------------------------------------------------------------------------------ parity
@app.command(rich_help_panel=PANEL, epilog="Example:  mltrader parity runs/crossover-paper")
@guarded
def parity(
    run: Annotated[Path, typer.Argument(help="A paper session folder (config.yaml, "
                                        "journal.db).")],
    diff_only: Annotated[bool, typer.Option(
        "--diff-only", help="Show only the trades that differ or are unmatched.")] = False,
    tolerance: Annotated[float, typer.Option(
        help="Relative tolerance for qty, price, commission and final equity.")] = 1e-6,
) -> None:
    """Compare a paper session with the backtest of its config, trade by trade.

    Trades are matched by symbol and fill bar; execution.size_at must be "decision" for a
    share-for-share comparison. Exits 1 when a trade is unmatched or differs.
    """
    from mltrader.parity import parity_report

    rep = parity_report(run, tolerance)
    for note in rep.notes:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    frame = rep.frame if not diff_only else rep.frame[rep.frame["status"] != "match"]
    table = Table(title=f"Backtest vs journal (run {rep.run_id})", title_justify="left")
    heads = ("symbol", "fill bar", "side", "qty bt", "qty journal", "qty diff", "price bt",
             "price journal", "price diff", "comm bt", "comm journal", "comm diff", "status")
    for h in heads:
        table.add_column(h, justify="left" if h in ("symbol", "fill bar", "side", "status")
                         else "right")

    def num(v: float) -> str:
        return "" if v != v else f"{v:.6g}"

    for r in frame.itertuples(index=False):
        style = None if r.status == "match" else "red"
        table.add_row(r.symbol, _when(r.time), r.side, num(r.qty_backtest), num(r.qty_journal),
                      num(r.qty_diff), num(r.price_backtest), num(r.price_journal),
                      num(r.price_diff), num(r.commission_backtest),
                      num(r.commission_journal), num(r.commission_diff), r.status,
                      style=style)
    if len(frame):
        out.print(table)
    else:
        out.print("No trade differs." if diff_only else "No trades to compare.")
    out.print(escape(rep.summary()), highlight=False)
    if not rep.ok:
        raise typer.Exit(1)
