"""The trading commands of the `mltrader` command line: paper and live, and their helpers.

Registered on `mltrader.cli_app.app` (cli.py imports this module at its end); the account
commands (status, flatten, parity) are in cli_account.py and share the options and helpers
here. The loops live in `mltrader.live.session`; the commands only parse, confirm and print.
Safety rules: a paper account is the default everywhere; real money (`--live`) needs the
word LIVE typed at a terminal; keys come only from the environment or ./.env and are never
printed; `flatten` asks first unless --yes.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import typer
from rich.markup import escape

from mltrader.cli_app import _fail, app, err, guarded, out
from mltrader.cli_options import Overrides, SetOpt, SmokeOpt, load_run_config
from mltrader.errors import MltraderError

if TYPE_CHECKING:
    from mltrader.config import RunConfig
    from mltrader.data.bars import Bars
    from mltrader.data.feeds import Feed
    from mltrader.live.brokers.base import Broker

PANEL = "Paper and live trading"
BROKERS_LIVE = ("alpaca", "ib")
BROKERS_ALL = ("paper", "alpaca", "ib")
ALPACA_KEY_VARS = ("MLTRADER_ALPACA_KEY", "APCA_API_KEY_ID")
ALPACA_SECRET_VARS = ("MLTRADER_ALPACA_SECRET", "APCA_API_SECRET_KEY")
ENV_FILE = Path(".env")
ALPACA_URL: str | None = None  # a trading API URL override (tests point it at a fake)
FLATTEN_REASON = "operator: mltrader flatten"
MAX_STALE_SESSIONS = 3  # a live history may lag the last closed session by this many

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Run config (YAML). Example: -c configs/paper.yaml")]
SessionOpt = Annotated[Path | None, typer.Option(
    "--session", help="A paper session folder (config.yaml, journal.db, broker.db). "
    "Example: --session runs/paper-session")]
JournalOpt = Annotated[str | None, typer.Option(
    "--journal", help="Journal database URL (or a SQLite file path). "
    "Example: --journal sqlite:///runs/crossover-alpaca-paper/journal.db")]
IbHost = Annotated[str, typer.Option("--ib-host", help="TWS / IB Gateway host.")]
IbPort = Annotated[int | None, typer.Option(
    "--ib-port", help="TWS / IB Gateway port (default: 7497 paper, 7496 with --live).")]
IbClient = Annotated[int, typer.Option(
    "--ib-client-id", help="IB API client id of the trading bot (default 1). `mltrader data "
    "fetch --source ib` connects as client 17 (MLTRADER_IB_CLIENT_ID) so the two never "
    "collide; `live --broker ib` fetches its bars over the bot's own connection.")]


# ------------------------------------------------------------------------------ helpers
def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _check_fresh(history: Bars, cfg: RunConfig, calendar: str, allow: bool) -> None:
    """Refuse to trade on a history that ends sessions before today: the features and the
    strategy would run across the gap (a 200-day average spanning years)."""
    from mltrader.live.session import market_hours

    last = history.index[-1]
    gap = market_hours(calendar).sessions_since(last, _now())
    if gap <= MAX_STALE_SESSIONS:
        return
    what = (f"the history ends {last.date()}, {gap} {calendar} sessions before the last "
            "close")
    if allow:
        logging.getLogger("mltrader.live").warning(
            "%s; trading on it anyway (--allow-stale-history)", what)
        return
    raise MltraderError(
        f"{what}: features and signals would span that gap. Use a network data.source "
        f"(ib, alpaca, yahoo) with symbols and a start date so the history is current "
        f"(data.source is {cfg.data.source!r}; see configs/live-alpaca.yaml), or pass "
        "--allow-stale-history")


def _interactive() -> bool:
    """Whether a person can answer a prompt (stdin is a terminal)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _confirm_live(where: str) -> None:
    """Real money: the user must type LIVE at a terminal; no terminal, no live trading."""
    if not _interactive():
        raise MltraderError("--live trades real money and needs the word LIVE typed as "
                            "confirmation: run the command in an interactive terminal "
                            "(no terminal on stdin here)")
    err.print(f"[bold red]LIVE TRADING[/]: orders with real money at {escape(where)}.",
              highlight=False)
    try:
        answer = typer.prompt("Type LIVE to continue", default="", show_default=False,
                              err=True)
    except (typer.Abort, EOFError):
        answer = ""
    if answer.strip() != "LIVE":
        raise MltraderError("live trading not confirmed (LIVE was not typed); nothing was "
                            "sent")


def _confirm(question: str, yes: bool, what: str) -> bool:
    """--yes, or a yes at a terminal; with no terminal and no --yes: refuse (one line)."""
    if yes:
        return True
    if not _interactive():
        raise MltraderError(f"{what}: pass --yes to confirm (no terminal on stdin to ask)")
    try:
        return bool(typer.confirm(question, default=False, err=True))
    except (typer.Abort, EOFError):
        return False


def _dotenv(path: Path = ENV_FILE) -> dict[str, str]:
    """KEY=VALUE lines of a .env file: comments, `export`, quotes, a ` # comment` after an
    unquoted value, a UTF-8 byte-order mark (Windows editors). An unterminated quote is a
    one-line error naming the line (never a key with a stray quote in it)."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if value[:1] in ("'", '"'):
            end = value.find(value[0], 1)
            if end < 0:
                raise MltraderError(f"{path}, line {number}: {key.strip()}'s value opens a "
                                    f"quote ({value[0]}) it never closes; close it")
            value = value[1:end]
        else:
            value = value.split(" #", 1)[0].split("\t#", 1)[0].strip()
        values[key.strip()] = value
    return values


def alpaca_keys() -> tuple[str, str]:
    """Alpaca keys from the environment, else ./.env; a one-line error naming the variables
    when either is missing. The values are never printed."""
    env_file = _dotenv()

    def pick(names: tuple[str, ...]) -> str | None:
        for source in (os.environ, env_file):
            for name in names:
                if source.get(name):
                    return source[name]
        return None

    key, secret = pick(ALPACA_KEY_VARS), pick(ALPACA_SECRET_VARS)
    missing = [f"{a} (or {b})" for (a, b), v in ((ALPACA_KEY_VARS, key),
                                                 (ALPACA_SECRET_VARS, secret)) if not v]
    if missing:
        raise MltraderError("alpaca: no API credentials: set " + " and ".join(missing)
                            + " in the environment or in ./.env (paper keys for the paper "
                            "account, from https://app.alpaca.markets)")
    return key, secret  # type: ignore[return-value]


def _check_broker(name: str, allowed: tuple[str, ...]) -> str:
    b = name.strip().lower()
    if b not in allowed:
        raise MltraderError(f"--broker {name!r} is not supported here; use one of "
                            f"{', '.join(allowed)}")
    return b


def _make_broker(name: str, live: bool, keys: tuple[str, str] | None, ib_host: str,
                 ib_port: int | None, ib_client_id: int) -> Broker:
    """An Alpaca or IB adapter, paper account unless `live` (already confirmed)."""
    if name == "alpaca":
        from mltrader.live.brokers.alpaca import AlpacaBroker

        key, secret = keys if keys is not None else alpaca_keys()
        return AlpacaBroker(key, secret, paper=not live, live_confirmed=live,
                            url_override=ALPACA_URL)
    from mltrader.live.brokers.ib import IBBroker

    port = ib_port if ib_port is not None else (7496 if live else 7497)
    if not 1 <= port <= 65535:
        raise MltraderError(f"--ib-port {port} is not a TCP port (1-65535); TWS listens on "
                            "7497 (paper) / 7496 (live), IB Gateway on 4002 / 4001")
    if not ib_host or any(c.isspace() for c in ib_host):
        raise MltraderError(f"--ib-host {ib_host!r} is not a host name or address; e.g. "
                            "--ib-host 127.0.0.1")
    return IBBroker(ib_host, port, ib_client_id, live_confirmed=live)


def _make_feed(broker: str, cfg: RunConfig, symbols: list[str],
               keys: tuple[str, str] | None, adapter: Broker | None = None) -> Feed:
    """Alpaca's minute-bar stream for alpaca with 1m bars; otherwise a PollingFeed on the
    config's network source, or on the broker's own market data when the config's data is
    no network source (Alpaca's bars for alpaca; IB's historical bars over the adapter's
    connection for ib)."""
    from mltrader.data.feeds import AlpacaStreamFeed, PollingFeed
    from mltrader.data.fetch import NETWORK_SOURCES, make_source

    d = cfg.data
    if broker == "alpaca" and d.bar_interval == "1m":
        key, secret = keys or (None, None)
        return AlpacaStreamFeed(symbols, key, secret)
    name = d.source if d.source in NETWORK_SOURCES else broker
    kwargs: dict[str, Any] = {}
    if name == "alpaca" and keys is not None:
        kwargs = {"api_key": keys[0], "secret_key": keys[1]}
    if name == "ib" and broker == "ib" and adapter is not None:
        client = getattr(adapter, "client", None)
        if client is not None:  # one connection for orders and bars
            kwargs = {"ib": client, "ensure_connected": adapter.connect}  # type: ignore[attr-defined]
    poll = 300.0 if d.bar_interval == "1d" else 15.0
    return PollingFeed(make_source(name, **kwargs), symbols, d.bar_interval, poll_seconds=poll,
                       adjusted=d.adjusted, settle_seconds=2.0)


def _default_live_journal(cfg: RunConfig, broker: str, live: bool) -> str:
    folder = Path(cfg.output_dir) / f"{cfg.name}-{broker}-{'live' if live else 'paper'}"
    return f"sqlite:///{folder / 'journal.db'}"


def _journal_url(journal: str | None, default: str) -> str:
    if not journal:
        return default
    return journal if "://" in journal else f"sqlite:///{journal}"


def _session_config_file(session: Path | None) -> Path:
    """The config `paper` runs without -c: the session folder's own, the default one
    without --session; a one-line error for a session that cannot say which."""
    from mltrader.live.session import BROKER_FILE, CONFIG_FILE, JOURNAL_FILE

    if session is None:
        return Path("configs/default.yaml")
    stored = session / CONFIG_FILE
    if stored.is_file():
        return stored
    if (session / JOURNAL_FILE).exists() or (session / BROKER_FILE).exists():
        raise MltraderError(f"session {session} has no {CONFIG_FILE}: restore it, or pass -c "
                            "with the config the session was started with")
    raise MltraderError(f"a new session needs its config: pass -c CONFIG (e.g. mltrader paper "
                        f"-c configs/paper.yaml --session {session})")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a service manager's stop, `kill`) stops like Ctrl-C: at a clean point, with
    the message saying how to continue."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _journal_lock(url: str) -> Any:
    """An exclusive lock next to a SQLite journal file (one bot per journal); a server
    journal (PostgreSQL) is not locked here."""
    from contextlib import nullcontext

    from sqlalchemy.engine import make_url

    from mltrader.live.lock import hold

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - a bad URL: Journal() says what is wrong with it
        return nullcontext()
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return nullcontext()
    path = Path(db)
    return hold(path.with_name(path.name + ".lock"), f"journal {path}")


def _no_signal(window: Bars) -> pd.Series:
    """Flatten needs no prediction: a signal that says nothing (no model training)."""
    import numpy as np

    return pd.Series(np.nan, index=list(window.symbols))


@contextmanager
def _log_to_stderr() -> Iterator[None]:
    """The live loop's log lines (market closed, a failed bar, ...) on stderr while it runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    # the journal's open / close lines are noise here; its warnings are not
    handler.addFilter(lambda r: r.name != "mltrader.live.journal" or r.levelno >= logging.WARNING)
    logger = logging.getLogger("mltrader.live")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _short(v: Any) -> str:
    """An audit value, compact: floats to 6 significant digits."""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _when(t: Any) -> str:
    """A UTC time: the date alone for a daily bar stamp (midnight), else to the second."""
    ts = pd.Timestamp(t)
    if ts is pd.NaT:
        return ""
    if ts == ts.normalize():
        return str(ts.date())
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def _money(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:,.2f}"


def _resume_run(journal: Any, cfg: RunConfig, broker: str, mode: str) -> int | None:
    """The journaled run to continue: same config and broker, and the same mode (a paper
    run is never continued with real money, nor the other way round)."""
    from mltrader.live.runner import Runner

    point = Runner.resume_point(journal, cfg, broker)
    if point is None:
        return None
    runs = journal.runs_frame()
    row = runs[runs["id"] == point[0]]
    if len(row) and str(row["mode"].iloc[-1]) != mode:
        return None
    return int(point[0])


# ------------------------------------------------------------------------------ paper
@app.command(rich_help_panel=PANEL, epilog="Example:  mltrader paper -c configs/paper.yaml "
             "--session runs/paper-session   (run it again to continue where it stopped)")
@guarded
def paper(
    config: ConfigOpt = None,
    replay: Annotated[Path | None, typer.Option(
        help="Bars to replay (CSV / Parquet); default: the config's data. The bars before "
        "the config's first test year are the history the model trains on.")] = None,
    speed: Annotated[float, typer.Option(
        help="Replay speed: 0 = as fast as possible, 60 = a minute of bars per second.")] = 0.0,
    session: Annotated[Path | None, typer.Option(
        "--session", help="Session folder to resume (created if missing): a crash, Ctrl-C "
        "or a rerun continues from the last completed bar. Without it: a new folder under "
        "-o. Example: --session runs/paper-session")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o", help="Where a new session folder goes (default: the "
        "config's output_dir, runs/).")] = None,
    set_: SetOpt = None,
    smoke: SmokeOpt = False,
) -> None:
    """Paper-trade a config on replayed bars, resumably, journaled.

    The runner decides on each finished bar, the paper broker fills with the engine's costs,
    everything is journaled (SQLite). A session folder holds config.yaml, journal.db and
    broker.db (the paper account); run the same command again to continue it.
    """
    from mltrader.live.logfile import LOG_NAME, session_log
    from mltrader.live.session import paper_session
    from mltrader.pipeline import load_data
    from mltrader.plan import judged_start
    from mltrader.runs import check_writable, new_run_dir

    if session is not None and output_dir is not None:
        _fail("give either --session DIR (resume or start that folder) or -o DIR (a new "
              "folder under DIR), not both")
    if session is not None and session.exists() and not session.is_dir():
        _fail(f"--session {session} is a file, not a folder; give a folder path")
    if not (speed >= 0 and math.isfinite(speed)):
        _fail(f"--speed must be 0 (as fast as possible) or a positive factor of real time "
              f"(60 = a minute of bars per second), got {speed}")
    ov = Overrides()
    if replay is not None:
        ov.set("data.source", "file", f"--replay {replay}")
        ov.set("data.path", str(replay.resolve()), f"--replay {replay}")
    if output_dir is not None:
        ov.set("output_dir", str(output_dir), f"--output-dir {output_dir}")
    ov.common(sets=set_)
    if config is None:
        config = _session_config_file(session)
    cfg = load_run_config(config, ov, smoke)
    bars, _ = load_data(cfg)
    if session is None:
        check_writable(Path(cfg.output_dir))
        folder = new_run_dir(Path(cfg.output_dir), f"{cfg.name}-paper")
    else:
        check_writable(session, "--session folder")  # a read-only journal: Journal says so
        folder = session
    start = judged_start(bars, cfg)
    position = {t: i for i, t in enumerate(bars.index[start:], start=1)}
    from mltrader.cli_app import _progress

    with _progress("paper", len(bars) - start, transient=True) as advance:
        state: dict[str, Any] = {"done": 0, "last": None}

        def on_bar(t: pd.Timestamp) -> None:
            k = position.get(t, state["done"] + 1)
            for _ in range(max(k - state["done"], 1)):
                advance("")
            state["done"] = k
            state["last"] = t

        try:
            with _sigterm_as_interrupt(), session_log(Path(folder) / LOG_NAME):
                res = paper_session(cfg, bars, folder, speed=speed, progress=on_bar)
        except KeyboardInterrupt:
            last = state.get("last")
            where = f"after the bar of {_when(last)}" if last is not None else "before a bar"
            err.print(f"Stopped {where} ({state['done']} of {len(bars) - start} "
                      f"out-of-sample bars done); run the same command to continue: "
                      f"mltrader paper --session {escape(str(folder))}", highlight=False)
            raise typer.Exit(130) from None
    span = (f"{res.first_bar.date()} .. {res.last_bar.date()}" if res.last_bar is not None
            else "no bar yet")
    if res.resumed:
        what = (f"Resumed run {res.run_id}: replayed {res.replayed} more bar(s)"
                + (" (nothing new: the session is up to date)" if not res.replayed else ""))
    else:
        what = f"Run {res.run_id}: replayed {res.replayed} bar(s)"
    what += f"; {res.completed} of {res.total_bars} out-of-sample bars done ({span})"
    ret = res.equity / res.initial_cash - 1.0
    out.print(f"{what}; {res.orders} orders, "
              f"{res.fills} fills; equity {_money(res.equity)} ({ret:+.2%} vs the initial "
              f"{_money(res.initial_cash)}), cash {_money(res.cash)}. Journal: "
              f"[bold]{escape(str(res.journal_path))}[/] (see it: mltrader status --session "
              f"{escape(str(folder))}).", highlight=False)


# ------------------------------------------------------------------------------ live
@app.command(rich_help_panel=PANEL, epilog="Example:  mltrader live --broker alpaca -c "
             "configs/live-alpaca.yaml   (the paper account; --live for real money)")
@guarded
def live(
    broker: Annotated[str, typer.Option("--broker", help="alpaca or ib.")],
    config: ConfigOpt = None,
    live_money: Annotated[bool, typer.Option(
        "--live", help="Trade the REAL-money account (default: the paper account). Asks you "
        "to type LIVE.")] = False,
    journal: JournalOpt = None,
    ib_host: IbHost = "127.0.0.1",
    ib_port: IbPort = None,
    ib_client_id: IbClient = 1,
    max_bars: Annotated[int | None, typer.Option(
        "--max-bars", help="Stop after N bar times (default: until Ctrl-C).")] = None,
    calendar: Annotated[str | None, typer.Option(
        help="Calendar for market hours: an exchange (XNYS, XNAS, XLON, ...), \"24/7\" "
        "(crypto) or \"24/5\" (FX). Default: the config's data.calendar, else by the "
        "symbols' suffix, as in a backtest.")] = None,
    allow_stale_history: Annotated[bool, typer.Option(
        "--allow-stale-history", help=f"Trade even when the config's history ends more "
        f"than {MAX_STALE_SESSIONS} sessions before the last close (it is refused by "
        "default: indicators would span the gap).")] = False,
) -> None:
    """Trade a config at a broker on live bars, inside market hours, journaled.

    Keys come from the environment or ./.env only (MLTRADER_ALPACA_KEY /
    MLTRADER_ALPACA_SECRET, or APCA_API_KEY_ID / APCA_API_SECRET_KEY). The model's history is
    the config's data; a restart with the same config continues the journaled run after
    reconciling journal and broker. Ctrl-C stops cleanly.
    """
    from mltrader.config import load_config
    from mltrader.live.journal import Journal
    from mltrader.live.logfile import log_beside, session_log
    from mltrader.live.runner import Runner
    from mltrader.live.session import live_session
    from mltrader.pipeline import load_data

    name = _check_broker(broker, BROKERS_LIVE)
    if max_bars is not None and max_bars < 0:
        _fail(f"--max-bars must be >= 0, got {max_bars}")
    given = {"data.calendar": calendar} if calendar else {}  # the runner's sessions follow it
    cfg = load_config(config or Path("configs/default.yaml"), given,
                      {"data.calendar": f"--calendar {calendar}"})
    keys = alpaca_keys() if name == "alpaca" else None
    if live_money:
        _confirm_live(name)
    mode = "live" if live_money else "paper"
    history, _ = load_data(cfg)  # refused before anything is opened when it is stale
    from mltrader.data.calendars import resolve_calendar

    calendar = resolve_calendar(cfg.data.calendar, history.symbols).name
    _check_fresh(history, cfg, calendar, allow_stale_history)
    adapter = _make_broker(name, live_money, keys, ib_host, ib_port, ib_client_id)
    try:
        url = _journal_url(journal, _default_live_journal(cfg, name, live_money))
        with _journal_lock(url):  # one bot per journal
            j = Journal(url, secrets=keys or ())
            try:
                feed = _make_feed(name, cfg, list(history.symbols), keys, adapter)
                run_id = _resume_run(j, cfg, adapter.name, mode)
                runner = Runner(cfg, adapter, history, j, mode=mode, run_id=run_id)
                counts = runner.reconcile()
            except BaseException:
                j.close()
                raise
            acct = adapter.account()
            account = "LIVE, real money" if live_money else "paper account"
            out.print(f"{'Continuing' if run_id else 'Started'} run {runner.run_id}: "
                      f"{cfg.strategy.name} on {name} ({account}), "
                      f"equity {_money(acct.equity)}, cash {_money(acct.cash)}; reconciled: "
                      + ", ".join(f"{k} {v}" for k, v in counts.items())
                      + f". Journal: {escape(j.url)}. Ctrl-C stops.", highlight=False)
            with _log_to_stderr(), session_log(log_beside(url)):
                from mltrader.news_inputs import live_news

                stop_news = live_news(cfg, list(history.symbols))  # news_*: the news stream
                try:
                    with _sigterm_as_interrupt():
                        res = live_session(runner, feed, calendar, max_bars=max_bars)
                finally:
                    stop_news()
            acct = adapter.account()
    finally:
        adapter.close()
    stop = "interrupted" if res.interrupted else "stopped"
    out.print(f"Live session {stop}: {res.traded} bar(s) traded, {res.skipped} outside market "
              f"hours, {res.failed} failed; {res.orders} order(s) sent; equity "
              f"{_money(acct.equity)}, cash {_money(acct.cash)}.", highlight=False)
