"""The trading loops, free of the command line: a paper session folder and the live loop.

`paper_session` replays bars into a session folder (config.yaml, journal.db, broker.db) and
continues where it stopped when it is run again on the same folder: after a crash (SIGKILL
at any point), a Ctrl-C or a finished replay that got more bars. What makes that safe lives
in the runner, the journal and the paper broker: the runner says which bar it completed last
(`Runner.resume_point`), reconciles the journal with the broker before the first bar, and
never sends an order it already journaled; the paper broker keeps its account in its state
file and ignores bars it already processed. This loop only picks the history and the bars
still to replay, and writes nothing per bar beyond what the journal and the broker write.

`live_session` feeds finished bars of a real feed to a runner, only inside the exchange's
market hours, keeping one bar's failure local to that bar (logged, audited, next bar).
"""

from __future__ import annotations

import itertools
import logging
import os
import time as _time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mltrader.config import RunConfig, config_from_dict, dump_config, parse_yaml
from mltrader.data.bars import Bars
from mltrader.data.feeds import BarEvent, Feed, ReplayFeed
from mltrader.errors import ConfigError, MltraderError
from mltrader.live import crashpoints

log = logging.getLogger("mltrader.live.session")

CONFIG_FILE = "config.yaml"
JOURNAL_FILE = "journal.db"
BROKER_FILE = "broker.db"


def journal_url(session_dir: Path) -> str:
    """The SQLite URL of a session folder's journal."""
    return f"sqlite:///{Path(session_dir) / JOURNAL_FILE}"


@dataclass(frozen=True)
class SessionResult:
    """What a paper session holds after a call (totals over the whole run, not this call)."""

    session_dir: Path
    run_id: int
    resumed: bool  # continued an earlier run of the folder
    replayed: int  # bars replayed by this call
    total_bars: int  # out-of-sample bars of the data (first test bar .. last bar)
    completed: int  # of them, the bars the session has completed (all calls together)
    first_bar: pd.Timestamp  # the first walk-forward test bar
    last_bar: pd.Timestamp | None  # the last bar the session completed
    orders: int  # orders journaled by the run
    fills: int  # fills journaled for the run's orders
    cash: float
    equity: float
    initial_cash: float
    reconciled: dict[str, Any] = field(default_factory=dict)

    @property
    def journal_path(self) -> Path:
        return self.session_dir / JOURNAL_FILE


def _write_atomic(path: Path, text: str) -> None:
    """Write a file so a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _absolute_data(cfg: RunConfig) -> RunConfig:
    """The config with its data file as an absolute path: the folder's config.yaml must
    find the same data from wherever `mltrader parity` or a resume is run."""
    path = cfg.data.path
    if path is None or Path(path).is_absolute():
        return cfg
    data = cfg.data.model_copy(update={"path": Path(path).resolve()})
    return cfg.model_copy(update={"data": data})


def _comparable(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.model_dump(mode="json")
    d.pop("output_dir", None)  # where new folders go does not change a session
    return d


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return prefix.rstrip(".") or "(top level)"


def session_config(session_dir: Path, cfg: RunConfig | None = None) -> RunConfig:
    """The config of a session folder. With `cfg`: a new folder gets it (config.yaml,
    written once); an existing folder must have been started with the same config (else a
    ConfigError naming the first key that differs), and its stored config is returned so
    the runner finds its run again (same config hash)."""
    path = Path(session_dir) / CONFIG_FILE
    if path.is_file():
        raw = parse_yaml(path)
        if raw is None:
            raise ConfigError(f"{path} is empty: restore the config the session was started "
                              "with (or start a new session folder)")
        stored = config_from_dict(raw, str(path))
        if cfg is not None:
            new = _comparable(_absolute_data(cfg))
            old = _comparable(stored)
            if new != old:
                key = _first_difference(old, new)
                raise ConfigError(
                    f"session {session_dir} was started with a different config ({key} "
                    f"differs from its {CONFIG_FILE}); resume it with the same config (or "
                    "no -c), or use a new --session folder")
        return stored
    if cfg is None:
        raise ConfigError(f"{session_dir} has no {CONFIG_FILE}: not a session folder; pass "
                          "-c CONFIG to start one there")
    cfg = _absolute_data(cfg)
    Path(session_dir).mkdir(parents=True, exist_ok=True)
    _write_atomic(path, dump_config(cfg))
    return cfg


def paper_session(cfg: RunConfig, bars: Bars, session_dir: str | Path, speed: float = 0.0,
                  progress: Callable[[pd.Timestamp], None] | None = None,
                  resume: bool = True) -> SessionResult:
    """Paper-trade `cfg` on `bars` into `session_dir`, continuing the folder's run if it has
    one. The model (if any) trains on the bars before the first walk-forward test bar; the
    test bars are replayed (`speed` 0: as fast as possible, s: s x real time), each into the
    paper broker, then the runner. `progress(t)` is called after each bar. resume=False
    refuses a folder that already holds a session instead of continuing it."""
    from mltrader.plan import judged_start

    folder = Path(session_dir)
    if not resume and ((folder / JOURNAL_FILE).exists() or (folder / BROKER_FILE).exists()):
        raise MltraderError(f"{folder} already holds a paper session; resume it (--session) "
                            "or choose a new folder")
    cfg = session_config(folder, cfg)
    start = judged_start(bars, cfg)
    with session_lock(folder):
        return _replay(cfg, bars, folder, start, speed, progress)


@contextmanager
def session_lock(folder: Path) -> Iterator[None]:
    """What anything that trades a session folder holds: the folder's lock (one process at
    a time) and the check that its journal and paper account still belong together."""
    from mltrader.live.lock import LOCK_FILE, hold

    with hold(Path(folder) / LOCK_FILE, f"session {folder}"):
        _check_session_files(Path(folder))
        yield


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _check_session_files(folder: Path) -> None:
    """Refuse a session whose journal and paper account no longer belong together: a run
    journaled with its account file gone (or emptied) would restart the account at its
    initial cash under the old run; an account without its journal would replay the whole
    history against it. Either way trades would be lost: say which file is missing."""
    from mltrader.live.journal import Journal

    jsize, bsize = _size(folder / JOURNAL_FILE), _size(folder / BROKER_FILE)
    if bsize > 0 and jsize <= 0:
        state = "missing" if jsize < 0 else "empty"
        raise MltraderError(f"session {folder}: {JOURNAL_FILE} is {state} but {BROKER_FILE} "
                            "holds a paper account: restore the journal from a backup, or "
                            "start a new session folder (replaying into this account would "
                            "trade the history again on top of it)")
    if jsize > 0 and bsize <= 0:
        journal = Journal(journal_url(folder))
        try:
            runs = journal.runs_frame()
        finally:
            journal.close()
        if len(runs):
            state = "missing" if bsize < 0 else "empty"
            raise MltraderError(f"session {folder}: {BROKER_FILE} (the paper account) is "
                                f"{state} but {JOURNAL_FILE} holds run "
                                f"{int(runs['id'].iloc[-1])}: restore {BROKER_FILE} from a "
                                "backup, or start a new session folder (a fresh account would "
                                "silently drop the run's positions and cash)")


def _check_same_bars(bars: Bars, start: int, last: pd.Timestamp, digest: str) -> None:
    """The bars a resumed session replays up to its last completed bar must be the ones it
    traded: a file edited since (a price, a dropped day) would make the account and the
    journal tell another history than the data. Compared through the runner's digest."""
    from mltrader.live.runner import chain_digest

    got = ""
    feed = ReplayFeed(bars.select(None, None, last), start=bars.index[start])
    for t, events in group_events(feed.bars()):
        got = chain_digest(got, t, events)
    if got != digest:
        raise MltraderError(
            f"the bars up to the session's last completed bar ({last.date()}) differ from "
            "the ones it traded (the replay file was edited or another file was given): "
            "replay the file the session was started with, or start a new session folder")


def _replay(cfg: RunConfig, bars: Bars, folder: Path, start: int, speed: float,
            progress: Callable[[pd.Timestamp], None] | None) -> SessionResult:
    from mltrader.data.calendars import periods_per_year, resolve_calendar
    from mltrader.live.brokers.paper import PaperBroker
    from mltrader.live.journal import Journal
    from mltrader.live.runner import Runner
    from mltrader.plan import engine_settings, resolve_fill

    journal = Journal(journal_url(folder))
    broker = None
    try:
        # the backtest's bars a year (pipeline.run_clock): the per-bar borrow rate on shorts
        ppy = periods_per_year(bars.index, resolve_calendar(cfg.data.calendar, bars.symbols))
        market: dict[str, Any] = {}
        if cfg.market != "us":  # the market's per-bar rules: limits, taxes, payouts
            if cfg.data.adjust != "none":
                raise ConfigError(f"paper trading market {cfg.market}: the paper broker fills "
                                  "the prices it is fed, so they must be the real ones; set "
                                  "data.adjust: none (the backtest may use qfq)")
            from mltrader.plan import execution

            fill_bars, arrays = execution(cfg, bars)
            market = {"market_arrays": arrays, "market_index": fill_bars.index,
                      "market_symbols": fill_bars.symbols}
        broker = PaperBroker(engine_settings(cfg, resolve_fill(cfg, bars), ppy),
                             bars.close_only, state_path=folder / BROKER_FILE, **market)
        point = Runner.resume_point(journal, cfg, broker.name)
        run_id, last = (point if point is not None else (None, None))
        if last is not None and pd.isna(last):
            last = None
        if point is None:
            runs = journal.runs_frame()
            if len(runs):  # the folder's config.yaml no longer matches its run
                raise ConfigError(
                    f"session {folder} holds run {int(runs['id'].iloc[-1])}, started with "
                    f"another config than its {CONFIG_FILE} now ({CONFIG_FILE} was edited?): "
                    f"restore {CONFIG_FILE}, or start a new session folder for the new "
                    "config")
        if last is not None and bars.index[-1] < pd.Timestamp(last):
            raise MltraderError(
                f"the bars end {bars.index[-1].date()}, before the session's last completed "
                f"bar {pd.Timestamp(last).date()}: replay the same file the session was "
                "started with (or a longer one)")
        history_end = bars.index[start - 1]
        if last is not None and pd.Timestamp(last) > history_end:
            history_end = pd.Timestamp(last)
        first = int(bars.index.searchsorted(history_end, side="right"))
        runner = Runner(cfg, broker, bars.select(None, None, history_end), journal,
                        mode="paper", run_id=run_id)
        if last is not None and runner.bars_digest:
            _check_same_bars(bars, start, pd.Timestamp(last), runner.bars_digest)
        reconciled = runner.reconcile()
        replayed = 0
        done: pd.Timestamp | None = pd.Timestamp(last) if last is not None else None
        if first < len(bars):
            feed = ReplayFeed(bars, speed=speed or None, start=bars.index[first])
            for t, events in group_events(feed.bars()):
                broker.on_bar(t, events)
                crashpoints.checkpoint("session:broker_bar")
                runner.on_bar(t, events)
                replayed += 1
                done = t
                if progress is not None:
                    progress(t)
        runner.finish()
        acct = broker.account()
        rid = int(runner.run_id)  # type: ignore[arg-type]
        return SessionResult(
            session_dir=folder, run_id=rid, resumed=run_id is not None, replayed=replayed,
            total_bars=len(bars) - start,
            completed=0 if done is None else int(
                bars.index.searchsorted(done, side="right")) - start,
            first_bar=bars.index[start], last_bar=done,
            orders=len(journal.orders_frame(rid)), fills=len(journal.fills_for(rid)),
            cash=acct.cash, equity=acct.equity, initial_cash=cfg.initial_cash,
            reconciled=dict(reconciled or {}))
    finally:
        if broker is not None:
            broker.close()
        journal.close()


# ============================================================================ live


def _calendar(calendar: Any) -> Any:
    if not isinstance(calendar, str):
        return calendar
    import exchange_calendars as xcals

    try:
        with warnings.catch_warnings():  # its pandas-4 deprecations are not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            return xcals.get_calendar(calendar)
    except xcals.errors.InvalidCalendarName:
        raise ConfigError(f"unknown exchange calendar {calendar!r}; use an exchange_calendars "
                          "code such as XNYS (NYSE), XNAS, XLON, XTKS") from None


def market_hours(calendar: Any = "XNYS") -> Any:
    """The hours of a run's calendar: an exchange's (`MarketHours`), or round the clock for
    "24/7" and "24/5" (`hours.ContinuousHours`)."""
    from mltrader.data.calendars import CONTINUOUS

    if isinstance(calendar, str) and calendar in CONTINUOUS:
        from mltrader.live.hours import ContinuousHours

        return ContinuousHours(calendar)
    return MarketHours(calendar)


class MarketHours:
    """Whether a bar falls inside the exchange's hours, and when the market opens next."""

    def __init__(self, calendar: Any = "XNYS") -> None:
        self.cal = _calendar(calendar)
        self._warned = False

    def _bounded(self, fn: Callable[[], bool]) -> bool:
        try:
            with warnings.catch_warnings():  # exchange_calendars' pandas-4 deprecations
                warnings.simplefilter("ignore", DeprecationWarning)
                return fn()
        except ValueError as e:  # DateOutOfBounds: beyond the calendar's range, let it pass
            if not self._warned:
                log.warning("market hours unknown (%s); treating bars as in session", e)
                self._warned = True
            return True

    def is_session(self, day: pd.Timestamp) -> bool:
        return self._bounded(lambda: bool(self.cal.is_session(
            pd.Timestamp(day.tz_convert("UTC").date()))))

    def in_hours(self, t: pd.Timestamp, interval: str) -> bool:
        """Daily bars: the date is a trading session. Intraday: open <= t < close."""
        t = pd.Timestamp(t).tz_convert("UTC")
        if interval == "1d":
            return self.is_session(t)

        def check() -> bool:
            day = pd.Timestamp(t.tz_convert(self.cal.tz).date())  # the exchange's date
            if not self.cal.is_session(day):
                return False
            return bool(self.cal.session_open(day) <= t < self.cal.session_close(day))

        return self._bounded(check)

    def is_open(self, now: pd.Timestamp) -> bool:
        return self._bounded(lambda: bool(self.cal.is_open_on_minute(
            pd.Timestamp(now).tz_convert("UTC").floor("min"))))

    def sessions_since(self, last_bar: pd.Timestamp, now: pd.Timestamp) -> int:
        """How many sessions after `last_bar`'s date have closed by `now`: how far a
        history that ends at `last_bar` is behind (0 = current)."""
        first = pd.Timestamp(pd.Timestamp(last_bar).tz_convert("UTC").date()) + pd.Timedelta(
            days=1)
        now = pd.Timestamp(now).tz_convert("UTC")
        last_day = pd.Timestamp(now.tz_convert(self.cal.tz).date())
        if first > last_day:
            return 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cal = self.cal
            lo, hi = pd.Timestamp(cal.first_session), pd.Timestamp(cal.last_session)
            if first < lo or last_day > hi:  # beyond the default ~20 years: a wider one
                import exchange_calendars as xcals

                cal = xcals.get_calendar(cal.name, start=min(first, lo), end=max(last_day, hi))
            a = max(first, pd.Timestamp(cal.first_session))  # calendars start on a session
            b = min(last_day, pd.Timestamp(cal.last_session))
            if a > b:
                return 0
            sessions = cal.sessions_in_range(a, b)
            n = len(sessions)
            if n and cal.session_close(sessions[-1]) > now:
                n -= 1  # today's session has not closed yet
        return n

    def next_open(self, now: pd.Timestamp) -> pd.Timestamp | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return pd.Timestamp(self.cal.next_open(pd.Timestamp(now).tz_convert("UTC")
                                                       .floor("min")))
        except ValueError:
            return None


@dataclass
class LiveResult:
    """What a live loop did: bar times acted on, skipped (market closed), failed."""

    traded: int = 0
    skipped: int = 0
    failed: int = 0
    orders: int = 0
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def bars(self) -> int:
        return self.traded + self.skipped + self.failed


def _now_utc() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def live_session(runner: Any, feed: Feed, calendar: Any = "XNYS",
                 clock: Callable[[], pd.Timestamp] = _now_utc,
                 sleep: Callable[[float], None] = _time.sleep,
                 max_bars: int | None = None, *, symbols: Sequence[str] | None = None,
                 interval: str | None = None, max_wait: float = 300.0) -> LiveResult:
    """Trade finished bars from `feed` with `runner` until the feed ends, `max_bars` bar
    times were taken, or Ctrl-C. Events are grouped per bar time (a group is complete when
    every symbol of the runner's history has its bar, or a later bar arrives). Only bars
    inside market hours are traded (daily: a session day; intraday: open <= bar time <
    close); while the market is closed (intraday feeds) the loop logs one line "market
    closed until ..." and sleeps (in steps of at most `max_wait` s) until the next open.
    An exception from one bar is logged with the bar's time and symbols, audited in the
    journal (action "bar_failed") and the loop goes on. On the way out (end, Ctrl-C, a
    feed error) the feed is closed, `runner.finish()` runs and the runner's journal is
    closed; the broker stays open for the caller."""
    hours = market_hours(calendar)
    interval = interval or getattr(feed, "interval", None) or "1d"
    wanted = set(symbols if symbols is not None else runner.history.symbols)
    result = LiveResult()
    closed_logged = False

    def wait_for_open() -> None:
        if interval == "1d":
            return  # a daily bar arrives after the close: trade it at once
        now = clock()
        if hours.is_open(now):
            return
        nxt = hours.next_open(now)
        if nxt is None:
            return
        log.info("market closed until %s", nxt)
        while True:
            left = (nxt - clock()).total_seconds()
            if left <= 0:
                return
            sleep(min(left, max_wait))

    def act(t: pd.Timestamp, events: Mapping[str, BarEvent]) -> None:
        nonlocal closed_logged
        if not hours.in_hours(t, interval):
            result.skipped += 1
            if not closed_logged:
                nxt = hours.next_open(t)
                log.info("market closed until %s: bars outside market hours are skipped "
                         "(first: %s)", nxt if nxt is not None else "unknown", t)
                closed_logged = True
            return
        closed_logged = False
        try:
            sent = runner.on_bar(t, events)
        except Exception as e:
            result.failed += 1
            what = f"{type(e).__name__}: {e}"
            result.errors.append(f"{t}: {what}")
            log.error("bar %s (%s) failed, going on with the next bar: %s", t,
                      ", ".join(sorted(events)), what, exc_info=True)
            journal = getattr(runner, "journal", None)
            if journal is not None:
                try:
                    journal.audit("bar_failed", {"bar_time": t.isoformat(),
                                                 "symbols": sorted(events), "error": what},
                                  run_id=getattr(runner, "run_id", None))
                except Exception as audit_error:  # the journal itself may be what failed
                    log.error("could not audit the failed bar: %s", audit_error)
            return
        result.traded += 1
        result.orders += len(sent or ())

    def done() -> bool:
        return max_bars is not None and result.bars >= max_bars

    try:
        if not done():
            wait_for_open()
            t_cur: pd.Timestamp | None = None
            group: dict[str, BarEvent] = {}
            for ev in feed.bars():
                if t_cur is not None and ev.time < t_cur:
                    log.warning("late bar dropped: %s %s (already at %s)", ev.symbol,
                                ev.time, t_cur)
                    continue
                if t_cur is not None and ev.time > t_cur:  # the earlier bar is finished
                    act(t_cur, group)
                    t_cur, group = None, {}
                    if done():
                        break
                t_cur = ev.time
                group[ev.symbol] = ev
                if wanted and wanted <= set(group):
                    act(t_cur, group)
                    t_cur, group = None, {}
                    if done():
                        break
                    wait_for_open()
            else:
                if t_cur is not None and group:
                    act(t_cur, group)
    except KeyboardInterrupt:
        result.interrupted = True
        log.info("interrupted: stopping after %d bar(s)", result.bars)
    finally:
        _close_quietly(feed.close, "feed")
        _close_quietly(runner.finish, "runner")
        journal = getattr(runner, "journal", None)
        if journal is not None:
            _close_quietly(journal.close, "journal")
    return result


def _close_quietly(fn: Callable[[], Any], what: str) -> None:
    try:
        fn()
    except Exception as e:
        log.error("closing the %s failed: %s: %s", what, type(e).__name__, e)


def group_events(events: Iterable[BarEvent]) -> Iterable[tuple[pd.Timestamp,
                                                               dict[str, BarEvent]]]:
    """Consecutive events of one bar time as (time, {symbol: event})."""
    for t, group in itertools.groupby(events, key=lambda e: e.time):
        yield t, {e.symbol: e for e in group}
