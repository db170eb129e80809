"""The session loops: a paper session folder resumes instead of restarting; the live loop
trades only inside market hours and keeps one bar's failure to that bar."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mltrader.config import config_from_dict
from mltrader.data.feeds import BarEvent
from mltrader.data.files import save_file
from mltrader.errors import ConfigError, MltraderError
from mltrader.live.journal import Journal
from mltrader.live.runner import Runner
from mltrader.live.session import (
    MarketHours,
    journal_url,
    live_session,
    paper_session,
    session_config,
)
from mltrader.pipeline import load_data
from mltrader.testing import synthetic_bars

CONFIG = {
    "name": "sess",
    "strategy": {"name": "crossover", "fast": 3, "slow": 12},
    "walk_forward": {"first_test_year": 2001},
    "execution": {"size_at": "decision", "rebalance_band": 0.0},
    "costs": {"commission_bps": 1, "slippage_bps": 5},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("session")
    path = save_file(synthetic_bars(330, 3, seed=5, ohlc=True, start="2000-01-03"),
                     d / "bars.csv")
    cfg = config_from_dict({**CONFIG, "data": {"source": "file", "path": str(path)}})
    bars, _ = load_data(cfg)
    clean = d / "clean"
    result = paper_session(cfg, bars, clean)
    return cfg, bars, clean, result


def _fills(folder: Path) -> list[tuple]:
    j = Journal(journal_url(folder))
    try:
        f = j.fills_for()
        runs = len(j.runs_frame())
    finally:
        j.close()
    return runs, sorted(zip(f["symbol"], f["side"], f["qty"].round(9), f["price"].round(9),
                            f["commission"].round(9), f["time"].astype(str), strict=True))


def test_a_session_folder_holds_config_journal_and_broker_state(setup):
    cfg, bars, clean, res = setup
    assert {p.name for p in clean.iterdir()} >= {"config.yaml", "journal.db", "broker.db"}
    assert res.replayed == res.total_bars == res.completed > 50 and not res.resumed
    assert res.fills > 10 and res.orders >= res.fills
    assert res.last_bar == bars.index[-1]
    assert session_config(clean).model_dump() == cfg.model_dump()


def test_running_a_finished_session_again_resumes_and_adds_nothing(setup, tmp_path):
    cfg, bars, clean, first = setup
    folder = tmp_path / "again"
    shutil.copytree(clean, folder)
    before = _fills(folder)
    again = paper_session(cfg, bars, folder)
    assert again.resumed and again.run_id == first.run_id and again.replayed == 0
    assert (again.orders, again.fills) == (first.orders, first.fills)
    assert again.cash == pytest.approx(first.cash, rel=1e-12)
    assert again.equity == pytest.approx(first.equity, rel=1e-12)
    assert _fills(folder) == before  # one run, the same fills


@pytest.mark.parametrize("k", [5, 37])
def test_a_session_interrupted_at_bar_k_ends_like_an_uninterrupted_one(setup, tmp_path,
                                                                       monkeypatch, k):
    cfg, bars, clean, want = setup
    real = Runner.on_bar
    calls = {"n": 0}

    def failing(self, time, events):
        calls["n"] += 1
        if calls["n"] == k:
            raise RuntimeError("simulated crash")
        return real(self, time, events)

    folder = tmp_path / "interrupted"
    monkeypatch.setattr(Runner, "on_bar", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        paper_session(cfg, bars, folder)
    monkeypatch.setattr(Runner, "on_bar", real)
    got = paper_session(cfg, bars, folder)
    assert got.resumed and got.replayed == want.replayed - (k - 1)
    assert _fills(folder) == _fills(clean)
    assert got.cash == pytest.approx(want.cash, rel=1e-12)
    assert got.equity == pytest.approx(want.equity, rel=1e-12)
    assert (got.orders, got.fills) == (want.orders, want.fills)


def test_two_processes_on_one_session_are_refused(setup, tmp_path):
    """A second process on a session that is being traded gets a one-line error naming the
    holder's pid; the lock dies with its holder (a crash never leaves it locked)."""
    import subprocess
    import sys
    import time

    cfg, bars, clean, _ = setup
    folder = tmp_path / "busy"
    shutil.copytree(clean, folder)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mltrader.live.lock import hold\n"
         f"with hold({str(folder / '.lock')!r}, 'x'):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MltraderError, match=rf"session .*busy is in use by another "
                                                rf"mltrader process \(pid {holder.pid}\)"):
            paper_session(cfg, bars, folder)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    assert paper_session(cfg, bars, folder).replayed == 0  # the kill released it


@pytest.mark.parametrize("lost", ["broker.db", "journal.db"])
@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_session_missing_its_account_or_journal_is_refused(setup, tmp_path, lost, how):
    """A lost broker.db would restart the account at its initial cash under the old run; a
    lost journal would replay the whole history into the finished account."""
    cfg, bars, clean, _ = setup
    folder = tmp_path / "lost"
    shutil.copytree(clean, folder)
    for suffix in ("", "-wal", "-shm"):
        (folder / f"{lost}{suffix}").unlink(missing_ok=True)
    if how == "emptied":
        (folder / lost).write_bytes(b"")
    state = "missing" if how == "deleted" else "empty"
    with pytest.raises(MltraderError, match=rf"{lost.replace('.', '[.]')}.* is {state}"):
        paper_session(cfg, bars, folder)


def test_an_edited_session_config_and_a_shortened_replay_are_refused(setup, tmp_path):
    cfg, bars, clean, _ = setup
    folder = tmp_path / "edited"
    shutil.copytree(clean, folder)
    text = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(text.replace("fast: 3", "fast: 5"))
    with pytest.raises(ConfigError, match="holds run 1, started with another config"):
        paper_session(session_config(folder), bars, folder)
    shutil.rmtree(folder)
    shutil.copytree(clean, folder)
    short = bars.select(None, None, bars.index[-40])
    with pytest.raises(MltraderError, match="before the session's last completed bar"):
        paper_session(cfg, short, folder)


def test_a_session_started_with_another_config_is_refused(setup, tmp_path):
    cfg, bars, clean, _ = setup
    folder = tmp_path / "other"
    shutil.copytree(clean, folder)
    other = cfg.model_copy(update={"seed": 7})
    with pytest.raises(ConfigError, match="seed"):
        paper_session(other, bars, folder)
    with pytest.raises(MltraderError, match="already holds"):
        paper_session(cfg, bars, folder, resume=False)
    # where new folders would go is not part of a session
    moved = cfg.model_copy(update={"output_dir": tmp_path / "elsewhere"})
    assert paper_session(moved, bars, folder).replayed == 0


# ----------------------------------------------------------------------------- live loop
def ev(sym: str, t: str, interval: str = "1m", close: float = 10.0) -> BarEvent:
    return BarEvent(sym, pd.Timestamp(t, tz="UTC"), close, close, close, close, 100.0,
                    interval)


class FakeJournal:
    def __init__(self) -> None:
        self.audits: list[tuple[str, dict]] = []
        self.closed = False

    def audit(self, action, detail=None, actor="runner", run_id=None):
        self.audits.append((action, dict(detail or {})))
        return len(self.audits)

    def close(self) -> None:
        self.closed = True


class FakeRunner:
    def __init__(self, symbols=("A", "B"), fail_at=()) -> None:
        self.history = type("H", (), {"symbols": tuple(symbols)})()
        self.journal = FakeJournal()
        self.run_id = 3
        self.seen: list[tuple[pd.Timestamp, list[str]]] = []
        self.fail_at = {pd.Timestamp(t, tz="UTC") for t in fail_at}
        self.finished = False

    def on_bar(self, time, bars):
        if time in self.fail_at:
            raise ValueError("bad bar")
        self.seen.append((time, sorted(bars)))
        return ["order"]

    def finish(self) -> None:
        self.finished = True


class FakeFeed:
    """Yields events; moves the fake clock to each bar's end as it does (real time)."""

    def __init__(self, events, clock, interval="1m", then=None) -> None:
        self.events, self.clock, self.interval, self.then = events, clock, interval, then
        self.closed = False

    def bars(self):
        for e in self.events:
            self.clock.now = max(self.clock.now, e.end + pd.Timedelta(seconds=1))
            yield e
        if self.then is not None:
            raise self.then

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self, t: str) -> None:
        self.now = pd.Timestamp(t, tz="UTC")
        self.slept: list[float] = []

    def __call__(self) -> pd.Timestamp:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += pd.Timedelta(seconds=s)


def test_live_loop_trades_market_hours_only_and_survives_a_bad_bar(caplog):
    clock = Clock("2024-03-15 12:00")  # Friday, before the 13:30 UTC open
    events = [ev(s, t) for t in ("2024-03-15 13:29", "2024-03-15 13:30", "2024-03-15 13:31",
                                 "2024-03-15 13:32", "2024-03-15 20:00") for s in ("A", "B")]
    events += [ev("A", "2024-03-16 14:00"), ev("B", "2024-03-16 14:00")]  # a Saturday
    events += [ev("A", "2024-03-18 13:30")]  # Monday: B never comes; the feed ends
    runner = FakeRunner(fail_at=["2024-03-15 13:31"])
    feed = FakeFeed(events, clock)
    with caplog.at_level(logging.INFO, logger="mltrader.live.session"):
        res = live_session(runner, feed, "XNYS", clock=clock, sleep=clock.sleep)
    assert [str(t) for t, _ in runner.seen] == [
        "2024-03-15 13:30:00+00:00", "2024-03-15 13:32:00+00:00", "2024-03-18 13:30:00+00:00"]
    assert runner.seen[-1][1] == ["A"]  # an incomplete last group is still traded
    assert (res.traded, res.skipped, res.failed, res.orders) == (3, 3, 1, 3)
    # waited for the open before the first bar and after the close until Monday
    assert sum(clock.slept) > 0 and max(clock.slept) <= 300
    closed = [r.getMessage() for r in caplog.records if "market closed until" in r.getMessage()]
    assert any("2024-03-15 13:30" in m for m in closed)
    assert any("2024-03-18 13:30" in m for m in closed)
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert failed and "2024-03-15 13:31" in failed[0].getMessage() and "A, B" in \
        failed[0].getMessage()
    assert runner.journal.audits == [("bar_failed", {
        "bar_time": "2024-03-15T13:31:00+00:00", "symbols": ["A", "B"],
        "error": "ValueError: bad bar"})]
    assert runner.finished and runner.journal.closed and feed.closed


def test_live_loop_daily_bars_trade_sessions_and_stop_after_max_bars():
    clock = Clock("2024-03-15 21:00")
    days = ("2024-03-15", "2024-03-16", "2024-03-18", "2024-03-19")  # Fri, Sat, Mon, Tue
    events = [ev(s, d, "1d") for d in days for s in ("A", "B")]
    runner = FakeRunner()
    res = live_session(runner, FakeFeed(events, clock, "1d"), clock=clock,
                       sleep=clock.sleep, max_bars=3)
    assert [str(t.date()) for t, _ in runner.seen] == ["2024-03-15", "2024-03-18"]
    assert (res.traded, res.skipped) == (2, 1) and clock.slept == []
    assert runner.finished


def test_ctrl_c_stops_cleanly():
    clock = Clock("2024-03-15 14:00")
    runner = FakeRunner()
    feed = FakeFeed([ev("A", "2024-03-15 14:00"), ev("B", "2024-03-15 14:00")], clock,
                    then=KeyboardInterrupt())
    res = live_session(runner, feed, clock=clock, sleep=clock.sleep)
    assert res.interrupted and res.traded == 1
    assert runner.finished and runner.journal.closed and feed.closed


def test_max_bars_zero_takes_nothing_and_an_unknown_calendar_is_a_user_error():
    runner = FakeRunner()
    clock = Clock("2024-03-15 14:00")
    feed = FakeFeed([ev("A", "2024-03-15 14:00")], clock)
    assert live_session(runner, feed, clock=clock, sleep=clock.sleep, max_bars=0).bars == 0
    assert runner.seen == [] and runner.finished
    with pytest.raises(ConfigError, match="XNYS"):
        MarketHours("NOPE")


def test_market_hours_rules():
    h = MarketHours("XNYS")
    assert h.in_hours(pd.Timestamp("2024-03-15 13:30", tz="UTC"), "1m")
    assert not h.in_hours(pd.Timestamp("2024-03-15 20:00", tz="UTC"), "1m")  # the close
    assert h.in_hours(pd.Timestamp("2024-03-15 19:59", tz="UTC"), "1m")
    assert not h.in_hours(pd.Timestamp("2024-11-29 18:00", tz="UTC"), "1m")  # early close
    assert h.in_hours(pd.Timestamp("2024-03-15", tz="UTC"), "1d")
    assert not h.in_hours(pd.Timestamp("2024-12-25", tz="UTC"), "1d")


def test_sessions_since_counts_closed_exchange_sessions():
    h = MarketHours("XNYS")

    def behind(last: str, now: str) -> int:
        return h.sessions_since(pd.Timestamp(last, tz="UTC"), pd.Timestamp(now, tz="UTC"))

    assert behind("2025-12-24", "2025-12-24 22:00") == 0
    assert behind("2025-12-24", "2025-12-29 22:00") == 2  # 26th and 29th; the 25th is closed
    assert behind("2025-12-24", "2025-12-29 15:00") == 1  # the 29th still trading
    assert behind("2025-12-26", "2025-12-28 12:00") == 0  # a weekend
    assert behind("1999-12-31", "2000-01-05 22:00") == 3  # before the calendar: weekdays
    assert behind("2020-01-02", "2025-01-02 22:00") > 1_000


def test_a_held_symbol_that_stops_trading_is_warned_about_once(setup, tmp_path, caplog):
    """A delisting or a feed gap: the position is valued at its last close and cannot trade;
    the runner says so (log and audit) after STALE_BARS bars without a bar, once."""
    from mltrader.data.bars import Bars
    from mltrader.live.runner import STALE_BARS

    cfg, bars, clean, res = setup
    j = Journal(journal_url(clean))
    try:
        pos = j.positions_frame(res.run_id)
    finally:
        j.close()
    pos = pos[pos["qty"].abs() > 0]
    times = pd.to_datetime(pos["time"], utc=True)
    window = (times >= bars.index[-120]) & (times <= bars.index[-20])
    cut = times[window].iloc[0]  # a bar where the uninterrupted run holds something
    sym = str(pos[window]["symbol"].iloc[0])
    k = list(bars.symbols).index(sym)
    after = bars.index > cut

    def gone(a):
        if a is None:
            return None
        a = a.copy()
        a[after, k] = float("nan")
        return a

    delisted = Bars(index=bars.index, symbols=bars.symbols, close=gone(bars.close),
                    open=gone(bars.open), high=gone(bars.high), low=gone(bars.low),
                    volume=gone(bars.volume))
    with caplog.at_level("WARNING", logger="mltrader.live.runner"):
        paper_session(cfg, delisted, tmp_path / "delisted")
    warned = [r for r in caplog.records if f"{sym}: no bar for {STALE_BARS} bars" in
              r.getMessage()]
    assert len(warned) == 1
    j = Journal(journal_url(tmp_path / "delisted"))
    try:
        audit = j.audit_frame(action="stale_symbol")
    finally:
        j.close()
    assert len(audit) == 1 and audit["detail"].iloc[0]["symbol"] == sym


def test_an_empty_or_broken_session_config_is_one_clear_error(setup, tmp_path):
    _, _, clean, _ = setup
    folder = tmp_path / "cfg"
    shutil.copytree(clean, folder)
    (folder / "config.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="config.yaml is empty: restore"):
        session_config(folder)
    (folder / "config.yaml").write_text("strategy: {name: crossover, fast: 3\nslow: [\n")
    with pytest.raises(ConfigError, match="invalid YAML at line") as info:
        session_config(folder)
    assert "\n" not in str(info.value)


def test_a_replay_edited_under_a_session_is_refused_and_a_longer_one_is_not(setup, tmp_path):
    """One traded close changed (or a traded day dropped) makes the account's history differ
    from the data: refused. Bars added after the last completed one are new: replayed."""
    from mltrader.data.bars import Bars

    cfg, bars, clean, res = setup
    k = len(bars) - 30  # a bar the session traded

    def edited(scale: float) -> Bars:
        close = bars.close.copy()
        close[k, 0] *= scale
        high = None if bars.high is None else bars.high.copy()
        if high is not None:
            high[k, 0] = max(high[k, 0], close[k, 0])
        return Bars(index=bars.index, symbols=bars.symbols, close=close, open=bars.open,
                    high=high, low=bars.low, volume=bars.volume)

    folder = tmp_path / "edited"
    shutil.copytree(clean, folder)
    with pytest.raises(MltraderError, match="differ from the ones it traded"):
        paper_session(cfg, edited(1.01), folder)
    dropped = bars.select(None, None, bars.index[k - 1])
    rest = bars.select(None, bars.index[k + 1], None)
    gap = Bars(index=dropped.index.append(rest.index), symbols=bars.symbols,
               close=np.vstack([dropped.close, rest.close]),
               open=np.vstack([dropped.open, rest.open]),
               high=np.vstack([dropped.high, rest.high]),
               low=np.vstack([dropped.low, rest.low]),
               volume=np.vstack([dropped.volume, rest.volume]))
    with pytest.raises(MltraderError, match="differ from the ones it traded"):
        paper_session(cfg, gap, folder)
    assert paper_session(cfg, bars, folder).replayed == 0  # the same file: fine
    # a session stopped early, then resumed on the full file: the new bars are replayed
    part = tmp_path / "part"
    short = bars.select(None, None, bars.index[k])
    paper_session(cfg, short, part)
    longer = paper_session(cfg, bars, part)
    assert longer.resumed and longer.replayed == len(bars) - 1 - k
    assert longer.equity == pytest.approx(res.equity, rel=1e-12)
