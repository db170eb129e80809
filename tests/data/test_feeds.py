"""Feeds: replay, polling (fake clock: a forming bar is held back) and the Alpaca stream.

The Alpaca stream test runs the REAL alpaca-py `StockDataStream` (url_override) against a
local websocket server on 127.0.0.1 that speaks the v2 market-data protocol (msgpack, as
alpaca-py asks for) with the frames recorded in fixtures/alpaca/stream (copied below).
Nothing here touches the network (see `_no_network`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mltrader.data.bars import Bars
from mltrader.data.feeds import (
    AlpacaStreamFeed,
    BarEvent,
    Feed,
    PollingFeed,
    ReplayFeed,
    bar_end,
    bar_event_from_alpaca,
    collect,
    infer_interval,
)
from mltrader.data.sources.base import COLUMNS, SourceError
from mltrader.errors import ConfigError, DataError

KEY, SECRET = "test-key-id", "test-secret-value"



def ts(s):
    return pd.Timestamp(s, tz="UTC")


# =========================================================================== BarEvent, bar_end
def test_bar_end_intraday_and_daily_close_in_new_york():
    assert bar_end(ts("2024-07-24 13:30"), "1m") == ts("2024-07-24 13:31")
    assert bar_end(ts("2024-07-24 13:30"), "15m") == ts("2024-07-24 13:45")
    assert bar_end(ts("2024-07-24 13:00"), "1h") == ts("2024-07-24 14:00")
    assert bar_end(ts("2024-07-24"), "1d") == ts("2024-07-24 20:00")  # 16:00 EDT
    assert bar_end(ts("2024-01-02"), "1d") == ts("2024-01-02 21:00")  # 16:00 EST
    idx = pd.DatetimeIndex([ts("2024-01-02"), ts("2024-07-24")])
    assert list(bar_end(idx, "1d")) == [ts("2024-01-02 21:00"), ts("2024-07-24 20:00")]


def test_bar_event_is_utc_and_rejects_naive_times():
    e = BarEvent("AAPL", pd.Timestamp("2024-07-24 09:30", tz="America/New_York"), 1, 2, 0.5,
                 1.5, 10, "1m")
    assert e.time == ts("2024-07-24 13:30") and str(e.time.tz) == "UTC"
    assert e.end == ts("2024-07-24 13:31") and isinstance(e.open, float)
    with pytest.raises(DataError, match="no timezone"):
        BarEvent("AAPL", pd.Timestamp("2024-07-24 09:30"), 1, 2, 0.5, 1.5, 10, "1m")


# =========================================================================== replay
def _panel(n=3, symbols=("AAPL", "MSFT"), freq="D", start="2024-01-02", close_only=False):
    idx = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    c = 100.0 + np.arange(n * len(symbols), dtype=float).reshape(n, len(symbols))
    if close_only:
        return Bars(idx, symbols, close=c)
    return Bars(idx, symbols, close=c, open=c - 0.5, high=c + 1, low=c - 1,
                volume=np.full(c.shape, 1000.0))


def test_replay_emits_each_timestamp_symbol_by_symbol_and_skips_nan():
    b = _panel()
    close = b.close.copy()
    close[1, 0] = np.nan  # AAPL did not trade on the second day
    b = Bars(b.index, b.symbols, close=close, open=np.where(np.isnan(close), np.nan, b.open),
             high=np.where(np.isnan(close), np.nan, b.high),
             low=np.where(np.isnan(close), np.nan, b.low), volume=b.volume)
    feed = ReplayFeed(b)
    assert isinstance(feed, Feed)
    events = list(feed.bars())
    assert [(e.symbol, e.time) for e in events] == [
        ("AAPL", ts("2024-01-02")), ("MSFT", ts("2024-01-02")),
        ("MSFT", ts("2024-01-03")),
        ("AAPL", ts("2024-01-04")), ("MSFT", ts("2024-01-04"))]
    e = events[2]
    assert (e.open, e.high, e.low, e.close, e.volume, e.interval) == (102.5, 104.0, 102.0, 103.0,
                                                                      1000.0, "1d")


def test_replay_close_only_data_and_range():
    events = list(ReplayFeed(_panel(5, close_only=True), start="2024-01-03", end="2024-01-04"))
    assert [e.time for e in events] == [ts("2024-01-03")] * 2 + [ts("2024-01-04")] * 2
    e = events[0]
    assert e.open == e.high == e.low == e.close == 102.0 and np.isnan(e.volume)


def test_replay_speed_sleeps_the_gap_divided_by_speed():
    sleeps = []
    b = _panel(3, freq="5min", start="2024-01-02 14:30")
    events = list(ReplayFeed(b, speed=60.0, sleep=sleeps.append))
    assert sleeps == [5.0, 5.0]  # 300 s of data / 60, between the 3 timestamps
    assert events[0].interval == "5m"
    fast = []
    list(ReplayFeed(b, sleep=fast.append))
    assert fast == []
    with pytest.raises(ConfigError, match="speed"):
        ReplayFeed(b, speed=0)


def test_replay_close_stops_the_iteration():
    feed = ReplayFeed(_panel(10))
    out = []
    for e in feed.bars():
        out.append(e)
        if len(out) == 3:
            feed.close()
    assert len(out) == 3


def test_interval_inference():
    assert infer_interval(pd.date_range("2024-01-02 14:30", periods=3, freq="1min",
                                        tz="UTC")) == "1m"
    assert infer_interval(pd.date_range("2024-01-02 14:00", periods=3, freq="h",
                                        tz="UTC")) == "1h"
    assert infer_interval(pd.bdate_range("2024-01-05", periods=3, tz="UTC")) == "1d"
    with pytest.raises(DataError, match="interval"):
        infer_interval(pd.date_range("2024-01-02", periods=3, freq="7min", tz="UTC"))


# =========================================================================== polling
class Clock:
    def __init__(self, now):
        self.now = ts(now)

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += pd.Timedelta(seconds=seconds)


class NaiveSource:
    """Returns every bar that has STARTED by `end`, the forming one included (what a
    careless provider might do); can fail on chosen calls."""

    name = "fake"

    def __init__(self, frames, fail=lambda symbol, n: None):
        self.frames, self.fail, self.calls = frames, fail, []

    def fetch(self, symbol, start, end, interval, adjusted=True):
        self.calls.append((symbol, start, end, interval, adjusted))
        err = self.fail(symbol, len(self.calls))
        if err is not None:
            raise err
        f = self.frames[symbol]
        return f[(f.index >= start) & (f.index <= end)]


def minute_frame(start="2024-07-24 13:50", n=20, base=100.0):
    idx = pd.date_range(start, periods=n, freq="1min", tz="UTC")
    c = base + np.arange(n, dtype=float)
    return pd.DataFrame({"open": c, "high": c + 1, "low": c - 1, "close": c,
                         "volume": np.full(n, 10.0)}, index=idx)


def test_a_forming_bar_is_held_back_and_emitted_once_complete():
    clock = Clock("2024-07-24 13:58:30")  # the feed starts mid-bar 13:58
    src = NaiveSource({"AAPL": minute_frame()})
    feed = PollingFeed(src, ["AAPL"], "1m", 15, clock=clock, sleep=clock.sleep)
    clock.now = ts("2024-07-24 14:00:30")
    first = feed.poll()
    # 13:58 and 13:59 are complete; 14:00 was returned by the source but is still forming
    assert [e.time for e in first] == [ts("2024-07-24 13:58"), ts("2024-07-24 13:59")]
    assert src.calls[-1][2] == clock.now
    clock.now = ts("2024-07-24 14:00:59.999")
    assert feed.poll() == []  # 14:00 ends at 14:01:00
    clock.now = ts("2024-07-24 14:01:00")
    again = feed.poll()
    assert [e.time for e in again] == [ts("2024-07-24 14:00")]
    assert again[0].close == 110.0 and again[0].open == 110.0 and again[0].high == 111.0
    assert feed.poll() == []  # never twice


def test_bars_loop_never_emits_a_bar_before_it_ends_nor_twice():
    clock = Clock("2024-07-24 13:50:10")
    src = NaiveSource({"AAPL": minute_frame(), "MSFT": minute_frame(base=300.0)})
    feed = PollingFeed(src, ["MSFT", "AAPL"], "1m", poll_seconds=20, clock=clock,
                       sleep=clock.sleep, max_polls=30)  # 10 minutes of polls
    seen = [(e, clock.now) for e in feed.bars()]
    keys = [(e.symbol, e.time) for e, _ in seen]
    assert len(keys) == len(set(keys))
    assert all(e.end <= emitted_at for e, emitted_at in seen)
    # 13:50 .. 13:58 are complete by the last poll at 13:59:50; 13:59 is not
    times = sorted({e.time for e, _ in seen})
    assert times == list(pd.date_range("2024-07-24 13:50", "2024-07-24 13:58", freq="1min",
                                       tz="UTC"))
    # time order, then the feed's symbol order
    assert keys == sorted(keys, key=lambda k: (k[1], ["MSFT", "AAPL"].index(k[0])))
    assert keys[:2] == [("MSFT", ts("2024-07-24 13:50")), ("AAPL", ts("2024-07-24 13:50"))]


def test_start_backfills_from_a_given_time():
    clock = Clock("2024-07-24 13:55:30")
    feed = PollingFeed(NaiveSource({"AAPL": minute_frame()}), ["AAPL"], "1m",
                       start=ts("2024-07-24 13:52"), clock=clock)
    assert [e.time.minute for e in feed.poll()] == [52, 53, 54]


def test_daily_bar_waits_for_the_new_york_close_plus_settle():
    idx = pd.DatetimeIndex([ts("2024-01-02"), ts("2024-01-03")])
    frame = pd.DataFrame({"open": [10.0, 11.0], "high": [12.0, 12.0], "low": [9.0, 10.0],
                          "close": [11.0, 11.5], "volume": [5.0, 6.0]}, index=idx)
    clock = Clock("2024-01-02 14:30")
    feed = PollingFeed(NaiveSource({"SPY": frame}), ["SPY"], "1d", 60, settle_seconds=30,
                       clock=clock)
    clock.now = ts("2024-01-02 21:00:29")  # 16:00:29 EST
    assert feed.poll() == []
    clock.now = ts("2024-01-02 21:00:30")
    (e,) = feed.poll()
    assert e.time == ts("2024-01-02") and e.close == 11.0 and e.interval == "1d"


def test_a_source_error_is_retried_at_the_next_poll():
    clock = Clock("2024-07-24 13:50:30")
    src = NaiveSource({"AAPL": minute_frame(), "MSFT": minute_frame(base=300.0)},
                      fail=lambda s, n: SourceError("fake: MSFT: timeout") if n == 2 else None)
    feed = PollingFeed(src, ["AAPL", "MSFT"], "1m", clock=clock)
    clock.now = ts("2024-07-24 13:52:00")
    assert [(e.symbol, e.time.minute) for e in feed.poll()] == [("AAPL", 50), ("AAPL", 51)]
    clock.now = ts("2024-07-24 13:52:05")
    assert [(e.symbol, e.time.minute) for e in feed.poll()] == [("MSFT", 50), ("MSFT", 51)]


def test_consecutive_failures_are_bounded():
    clock = Clock("2024-07-24 13:50:30")
    src = NaiveSource({}, fail=lambda s, n: ConnectionError("connection reset"))
    feed = PollingFeed(src, ["AAPL"], "1m", 5, max_failures=3, clock=clock,
                       sleep=clock.sleep)
    with pytest.raises(SourceError, match="failed 3 times in a row.*connection reset"):
        list(feed.bars())
    assert len(src.calls) == 3


def test_a_success_resets_the_failure_count():
    clock = Clock("2024-07-24 13:50:30")
    src = NaiveSource({"AAPL": minute_frame()},
                      fail=lambda s, n: None if n % 2 == 0 else SourceError("flaky"))
    feed = PollingFeed(src, ["AAPL"], "1m", 5, max_failures=2, clock=clock,
                       sleep=clock.sleep, max_polls=8)
    assert len(list(feed.bars())) > 0 and len(src.calls) == 8


def test_polling_arguments_are_checked():
    src = NaiveSource({})
    with pytest.raises(ConfigError):
        PollingFeed(src, [], "1m")
    with pytest.raises(ConfigError):
        PollingFeed(src, ["AAPL"], "1m", poll_seconds=0)
    with pytest.raises(SourceError, match="interval"):
        PollingFeed(src, ["AAPL"], "2m")


def test_collect_closes_the_feed():
    feed = ReplayFeed(_panel(4))
    assert len(collect(feed, 3)) == 3
    assert list(feed.bars()) == []


# =========================================================================== alpaca stream
pytest.importorskip("alpaca")
msgpack = pytest.importorskip("msgpack")
from websockets.asyncio.server import serve  # noqa: E402 (after the skip)

STREAM_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alpaca" / "stream"
# marketdata_v2_test_stream_session_server_frames.jsonl (wss://.../v2/test, docs transcript)
SESSION = """\
[{"T":"success","msg":"connected"}]
[{"T":"success","msg":"authenticated"}]
[{"T":"subscription","trades":[],"quotes":["FAKEPACA"],"bars":["FAKEPACA"]}]
[{"T":"q","S":"FAKEPACA","bx":"O","bp":133.85,"bs":4,"ax":"R","ap":135.77,"as":5,"c":["R"],"z":"A","t":"2024-07-24T07:56:53.639713735Z"}]
[{"T":"q","S":"FAKEPACA","bx":"O","bp":133.85,"bs":4,"ax":"R","ap":135.77,"as":5,"c":["R"],"z":"A","t":"2024-07-24T07:56:58.641207127Z"}]
[{"T":"b","S":"FAKEPACA","o":132.65,"h":136,"l":132.12,"c":134.65,"v":205,"t":"2024-07-24T07:56:00Z","n":16,"vw":133.7}]
"""  # noqa: E501
# marketdata_v2_test_stream_session_client_frames.jsonl
CLIENT = """\
{"action":"auth","key":"<YOUR API KEY>","secret":"<YOUR API SECRET>"}
{"action":"subscribe","bars":["FAKEPACA"],"quotes":["FAKEPACA"]}
"""
# marketdata_v2_datapoint_examples.json: the bar and the daily bar (older docs: no n/vw)
DOC_BAR = {"T": "b", "S": "SPY", "o": 388.985, "h": 389.13, "l": 388.975, "c": 389.12,
           "v": 49378, "t": "2021-02-22T19:15:00Z"}
DOC_DAILY = {"T": "d", "S": "SPY", "o": 388.985, "h": 389.13, "l": 388.975, "c": 389.12,
             "v": 749378, "t": "2021-02-16T04:00:00Z"}
# marketdata_v2_control_and_error_frames.jsonl
AUTH_FAILED = [{"T": "error", "code": 402, "msg": "auth failed"}]

SERVER_FRAMES = [json.loads(line) for line in SESSION.splitlines()]
CLIENT_FRAMES = [json.loads(line) for line in CLIENT.splitlines()]


def to_wire(frame):
    """A JSON frame as Alpaca sends it to msgpack clients: "t" as a msgpack Timestamp."""
    out = []
    for msg in frame:
        msg = dict(msg)
        if isinstance(msg.get("t"), str):
            msg["t"] = msgpack.Timestamp.from_unix_nano(pd.Timestamp(msg["t"]).value)
        out.append(msg)
    return msgpack.packb(out)


class MockStream:
    """A local Alpaca v2 market-data websocket: connected -> auth -> subscribe -> frames."""

    def __init__(self, data_frames, key=KEY, secret=SECRET):
        self.data_frames, self.key, self.secret = data_frames, key, secret
        self.received, self.headers, self.connections = [], None, 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(5), "mock websocket server did not start"
        self.url = f"ws://127.0.0.1:{self.port}"

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)

        async def start():
            self.server = await serve(self._handler, "127.0.0.1", 0, compression=None)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _recv(self, ws):
        msg = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5))
        self.received.append(msg)
        return msg

    async def _handler(self, ws):
        self.connections += 1
        self.headers = ws.request.headers  # case-insensitive
        await ws.send(to_wire(SERVER_FRAMES[0]))  # connected
        auth = await self._recv(ws)
        if auth.get("key") != self.key or auth.get("secret") != self.secret:
            await ws.send(msgpack.packb(AUTH_FAILED))
            await ws.close()
            return
        await ws.send(to_wire(SERVER_FRAMES[1]))  # authenticated
        sub = await self._recv(ws)
        await ws.send(msgpack.packb([{"T": "subscription", "trades": sub.get("trades", []),
                                      "quotes": sub.get("quotes", []),
                                      "bars": sub.get("bars", [])}]))
        for frame in self.data_frames:
            await ws.send(to_wire(frame))
        try:
            while True:
                await self._recv(ws)
        except Exception:  # closed by the client (or 5 s of silence)
            pass

    def close(self):
        async def stop():
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), 3)

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()


@pytest.fixture
def mock_stream():
    servers = []

    def start(frames, **kw):
        servers.append(MockStream(frames, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def take(feed, n, idle=5.0):
    out = []
    for e in feed.bars(idle_timeout=idle):
        out.append(e)
        if len(out) == n:
            break
    return out


def test_alpaca_stream_bars_arrive_as_bar_events(mock_stream):
    # a doc bar without n/vw and a daily bar (not subscribed) in one frame, then the
    # recorded session: two quotes (not subscribed) and the FAKEPACA minute bar
    server = mock_stream([[DOC_BAR, DOC_DAILY], *SERVER_FRAMES[3:], SERVER_FRAMES[5]])
    feed = AlpacaStreamFeed(["FAKEPACA", "SPY"], api_key=KEY, secret_key=SECRET,
                            url_override=server.url)
    assert isinstance(feed, Feed)
    t0 = time.monotonic()
    try:
        events = take(feed, 2)
    finally:
        feed.close()
    assert time.monotonic() - t0 < 8
    assert events == [
        BarEvent("SPY", ts("2021-02-22 19:15"), 388.985, 389.13, 388.975, 389.12, 49378.0, "1m"),
        BarEvent("FAKEPACA", ts("2024-07-24 07:56"), 132.65, 136.0, 132.12, 134.65, 205.0,
                 "1m")]
    # what the client sent: the recorded frames' shape, with our keys and bar channel only
    assert server.received[0] == {**CLIENT_FRAMES[0], "key": KEY, "secret": SECRET}
    assert server.received[1] == {"action": "subscribe", "bars": ["FAKEPACA", "SPY"]}
    assert server.headers["Content-Type"] == "application/msgpack"
    assert not feed._thread.is_alive()  # close() stopped the stream


def test_alpaca_stream_drops_a_repeated_bar_and_close_ends_iteration(mock_stream):
    server = mock_stream([SERVER_FRAMES[5], SERVER_FRAMES[5]])
    feed = AlpacaStreamFeed(["FAKEPACA"], api_key=KEY, secret_key=SECRET,
                            url_override=server.url)
    got = []

    def consume():
        got.extend(feed.bars(idle_timeout=8))

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # time for the repeated frame to arrive (and be dropped)
    feed.close()
    reader.join(5)
    assert not reader.is_alive()  # bars() returned after close()
    assert [(e.symbol, e.time) for e in got] == [("FAKEPACA", ts("2024-07-24 07:56"))]


def test_alpaca_stream_rejected_keys_raise_instead_of_reconnecting(mock_stream):
    server = mock_stream([SERVER_FRAMES[5]], key="other-key")
    feed = AlpacaStreamFeed(["FAKEPACA"], api_key=KEY, secret_key=SECRET,
                            url_override=server.url)
    try:  # the login error itself surfaces (not the idle timeout), after ONE connection
        with pytest.raises(SourceError, match="auth failed.*MLTRADER_ALPACA_KEY"):
            take(feed, 1, idle=30)
    finally:
        feed.close()
    assert server.connections == 1  # no reconnect loop (a wall-clock bound flaked in CI)


def test_alpaca_stream_unreachable_server_is_a_bounded_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    feed = AlpacaStreamFeed(["SPY"], api_key=KEY, secret_key=SECRET,
                            url_override=f"ws://127.0.0.1:{port}", max_connect_failures=1)
    try:
        with pytest.raises(SourceError, match="could not connect 1 times"):
            take(feed, 1, idle=5)
    finally:
        feed.close()


def test_alpaca_stream_missing_keys_name_the_variables():
    with pytest.raises(SourceError, match="MLTRADER_ALPACA_KEY"):
        take(AlpacaStreamFeed(["SPY"]), 1, idle=1)


def test_bar_event_from_an_alpaca_bar_model():
    from alpaca.data.models import Bar

    raw = {"t": pd.Timestamp("2024-07-24T07:56:00Z").to_pydatetime(), "o": 132.65, "h": 136,
           "l": 132.12, "c": 134.65, "v": 205, "n": 16, "vw": 133.7}
    e = bar_event_from_alpaca(Bar("FAKEPACA", raw))
    assert e == BarEvent("FAKEPACA", ts("2024-07-24 07:56"), 132.65, 136.0, 132.12, 134.65,
                         205.0, "1m")


def test_embedded_frames_equal_the_fixture_files():
    def lines(name):
        return [json.loads(x) for x in (STREAM_FIXTURES / name).read_text().splitlines() if x]

    assert lines("marketdata_v2_test_stream_session_server_frames.jsonl") == SERVER_FRAMES
    assert lines("marketdata_v2_test_stream_session_client_frames.jsonl") == CLIENT_FRAMES
    examples = json.loads((STREAM_FIXTURES / "marketdata_v2_datapoint_examples.json").read_text())
    assert DOC_BAR in examples and DOC_DAILY in examples
    assert AUTH_FAILED in lines("marketdata_v2_control_and_error_frames.jsonl")


def test_standard_columns_are_what_polling_reads():
    assert tuple(minute_frame().columns) == COLUMNS
