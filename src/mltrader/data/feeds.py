"""Real-time bars behind one `Feed` interface: replayed, polled from a source, or streamed.

Every feed yields `BarEvent`s for COMPLETED bars only (a bar still forming is never emitted
as finished), in time order, each bar once:

- `ReplayFeed` plays a stored `Bars` panel back, as fast as possible or at real time x speed
  (paper trading, tests).
- `PollingFeed` asks any `Source` for the recent range every `poll_seconds` and emits the bars
  it has not emitted yet, once they have ended by its clock.
- `AlpacaStreamFeed` receives Alpaca's minute bars over its websocket (alpaca-py's
  `StockDataStream`). Alpaca labels a minute bar by its start and sends it right after the
  minute ends (typically 20-100 ms later), so every streamed bar is complete. Late trades
  produce "updatedBars" 30 s later, which this feed does not subscribe to.

A bar's end (`bar_end`, from the sources' conventions in sources/base.py): start + interval
for intraday bars; for daily bars (stamped 00:00 UTC of the session date) the 16:00 New York
close of that date.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from mltrader.data.bars import Bars
from mltrader.data.sources.base import (
    INTERVAL_MINUTES,
    Source,
    SourceError,
    as_utc,
    bar_end,
    check_interval,
    interval_span,
    standardize,
)
from mltrader.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _now_utc() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


@dataclass(frozen=True)
class BarEvent:
    """One completed bar. `time` is the bar's START, tz-aware UTC (00:00 UTC of the session
    date for daily bars)."""

    symbol: str
    time: pd.Timestamp
    open: float
    high: float
    low: float
    close: float
    volume: float
    interval: str

    def __post_init__(self) -> None:
        ts = pd.Timestamp(self.time)
        if ts.tzinfo is None:
            raise DataError(f"BarEvent {self.symbol}: time {ts} has no timezone; give UTC")
        object.__setattr__(self, "time", ts.tz_convert("UTC"))
        object.__setattr__(self, "symbol", str(self.symbol))
        for name in ("open", "high", "low", "close", "volume"):
            object.__setattr__(self, name, float(getattr(self, name)))
        check_interval(self.interval)

    @property
    def end(self) -> pd.Timestamp:
        """When the bar ended (see `bar_end`)."""
        return bar_end(self.time, self.interval)


@runtime_checkable
class Feed(Protocol):
    """A source of completed bars, in time order, each once."""

    def bars(self) -> Iterator[BarEvent]:
        """Yield completed bars until the feed ends or `close()` is called."""
        ...

    def close(self) -> None:
        """Stop the feed and release what it holds (threads, connections)."""
        ...


# ===================================================================== replay
def infer_interval(index: pd.DatetimeIndex) -> str:
    """The bar interval of an index, from its smallest gap ("1d" for one row)."""
    if len(index) < 2:
        return "1d"
    gap = pd.Timedelta((index[1:] - index[:-1]).min())  # unit-agnostic (pandas 3: us)
    if gap >= pd.Timedelta(hours=20):
        return "1d"
    minutes = gap / pd.Timedelta(minutes=1)
    for name, m in INTERVAL_MINUTES.items():
        if name != "1d" and minutes == m:
            return name
    raise DataError(f"cannot tell the bar interval from the data (smallest gap {gap}); "
                    "pass interval= one of 1m, 5m, 15m, 1h, 1d")


class ReplayFeed:
    """Plays a `Bars` panel back bar by bar: all symbols of one timestamp (in the panel's
    symbol order), then the next timestamp; NaN bars are skipped.

    speed=None replays as fast as possible; speed=s sleeps (gap between timestamps) / s
    before each timestamp after the first (speed=60: a minute of data per second). `sleep`
    is injectable for tests. Close-only data gives open = high = low = close.
    """

    def __init__(self, bars: Bars, speed: float | None = None, start: Any = None,
                 end: Any = None, sleep: Callable[[float], None] = time.sleep,
                 interval: str | None = None) -> None:
        if speed is not None and not speed > 0:
            raise ConfigError(f"replay speed must be > 0 (or None for as fast as possible), "
                              f"got {speed!r}")
        self._bars = bars
        self.speed = speed
        self._sleep = sleep
        self.interval = check_interval(interval) if interval else infer_interval(bars.index)
        idx = bars.index.tz_convert("UTC")
        mask = np.ones(len(idx), dtype=bool)
        if start is not None:
            mask &= idx >= as_utc(start, idx[0])
        if end is not None:
            mask &= idx <= as_utc(end, idx[-1])
        self._rows = np.flatnonzero(mask)
        self._index = idx
        self._closed = False

    def __iter__(self) -> Iterator[BarEvent]:
        return self.bars()

    def bars(self) -> Iterator[BarEvent]:
        b = self._bars
        close = b.close
        open_ = b.open if b.open is not None else close
        high = b.high if b.high is not None else close
        low = b.low if b.low is not None else close
        volume = b.volume
        prev: pd.Timestamp | None = None
        for i in self._rows:
            if self._closed:
                return
            cols = np.flatnonzero(~np.isnan(close[i]))
            if len(cols) == 0:
                continue
            t = self._index[i]
            if self.speed is not None and prev is not None:
                self._sleep((t - prev).total_seconds() / self.speed)
                if self._closed:
                    return
            for j in cols:
                yield BarEvent(b.symbols[j], t, open_[i, j], high[i, j], low[i, j], close[i, j],
                               volume[i, j] if volume is not None else np.nan, self.interval)
                if self._closed:
                    return
            prev = t

    def close(self) -> None:
        self._closed = True


# ===================================================================== polling
class PollingFeed:
    """Polls a `Source` every `poll_seconds` and emits the bars it has not emitted yet.

    A bar is emitted only once it is complete: bar_end(start) + settle_seconds <= clock();
    a bar still forming is held back and emitted by a later poll. Per symbol, bars are emitted
    in order and never twice. Within a poll, events are ordered by time, then by `symbols`.

    start: emit bars starting at or after this time (a backfill); None = only bars that end
    after the feed was created (the bar forming at creation and every later one).
    A source error (SourceError or OSError) is logged and the symbol retried at the next
    poll; `max_failures` polls in a row with an error raise a SourceError.
    settle_seconds: extra wait after a bar ends (Alpaca computes a minute bar ~1 s after the
    minute and revises it after late trades 30 s later).
    """

    def __init__(self, source: Source, symbols: Sequence[str], interval: str,
                 poll_seconds: float = 60.0, *, start: Any = None, adjusted: bool = True,
                 settle_seconds: float = 0.0, max_failures: int = 5,
                 max_polls: int | None = None,
                 clock: Callable[[], pd.Timestamp] = _now_utc,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = check_interval(interval)
        self.symbols = tuple(dict.fromkeys(str(s) for s in symbols))
        if not self.symbols:
            raise ConfigError("PollingFeed needs at least one symbol")
        if not poll_seconds > 0:
            raise ConfigError(f"poll_seconds must be > 0, got {poll_seconds!r}")
        if max_failures < 1:
            raise ConfigError(f"max_failures must be >= 1, got {max_failures!r}")
        self.source = source
        self.poll_seconds = float(poll_seconds)
        self.adjusted = adjusted
        self.settle = pd.Timedelta(seconds=float(settle_seconds))
        self.max_failures = int(max_failures)
        self.max_polls = max_polls
        self._clock = clock
        self._sleep = sleep
        self._created = as_utc(clock(), _now_utc())
        self._start = as_utc(start, self._created) if start is not None else None
        self._last: dict[str, pd.Timestamp] = {}
        self._failures = 0
        self._closed = False

    def __iter__(self) -> Iterator[BarEvent]:
        return self.bars()

    def _since(self, symbol: str) -> pd.Timestamp:
        last = self._last.get(symbol)
        if last is not None:
            return last
        if self._start is not None:
            return self._start
        return self._created - interval_span(self.interval)

    def _wanted(self, symbol: str, t: pd.Timestamp) -> bool:
        last = self._last.get(symbol)
        if last is not None:
            return t > last
        if self._start is not None:
            return t >= self._start
        return bar_end(t, self.interval) > self._created

    def poll(self) -> list[BarEvent]:
        """One poll: the new completed bars of every symbol (see class doc)."""
        now = as_utc(self._clock(), _now_utc())
        events: list[BarEvent] = []
        errors: list[str] = []
        name = getattr(self.source, "name", type(self.source).__name__)
        for symbol in self.symbols:
            try:
                frame = standardize(self.source.fetch(symbol, self._since(symbol), now,
                                                      self.interval, self.adjusted),
                                    name, symbol)
            except (SourceError, OSError) as e:
                errors.append(" ".join(str(e).split()))
                log.warning("polling %s for %s failed (retrying next poll): %s", name, symbol, e)
                continue
            done = (bar_end(frame.index, self.interval) + self.settle) <= now
            for t, ok, o, h, lo, c, v in zip(frame.index, done, frame["open"], frame["high"],
                                            frame["low"], frame["close"], frame["volume"],
                                            strict=True):
                if not ok:
                    break  # still forming (and so is every later bar): next poll
                if np.isnan(c) or not self._wanted(symbol, t):
                    continue
                events.append(BarEvent(symbol, t, c if np.isnan(o) else o,
                                       c if np.isnan(h) else h, c if np.isnan(lo) else lo, c, v,
                                       self.interval))
        if errors:
            self._failures += 1
            if self._failures >= self.max_failures:
                raise SourceError(f"{name}: polling failed {self._failures} times in a row "
                                  f"(last: {errors[-1]}); fix the source and restart the feed")
        else:
            self._failures = 0
        order = {s: i for i, s in enumerate(self.symbols)}
        events.sort(key=lambda e: (e.time, order[e.symbol]))
        for e in events:
            self._last[e.symbol] = max(e.time, self._last.get(e.symbol, e.time))
        return events

    def bars(self) -> Iterator[BarEvent]:
        polls = 0
        while not self._closed:
            events = self.poll()
            polls += 1
            for e in events:
                yield e
                if self._closed:
                    return
            if self.max_polls is not None and polls >= self.max_polls:
                return
            self._sleep(self.poll_seconds)

    def close(self) -> None:
        self._closed = True


# ===================================================================== alpaca stream
_END = object()


def _to_utc_timestamp(t: Any) -> pd.Timestamp:
    if hasattr(t, "to_unix_nano"):  # msgpack.Timestamp (raw websocket data)
        return pd.Timestamp(t.to_unix_nano(), unit="ns", tz="UTC")
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def bar_event_from_alpaca(bar: Any, interval: str = "1m") -> BarEvent:
    """An alpaca-py stream bar (a raw dict with S/t/o/h/l/c/v, or a `Bar` model) as a
    BarEvent."""
    if isinstance(bar, dict):
        return BarEvent(bar["S"], _to_utc_timestamp(bar["t"]), bar["o"], bar["h"], bar["l"],
                        bar["c"], bar.get("v", np.nan), interval)
    return BarEvent(bar.symbol, _to_utc_timestamp(bar.timestamp), bar.open, bar.high, bar.low,
                    bar.close, bar.volume, interval)


def _stream_error_message(msg: str, feed: str) -> str:
    low = msg.lower()
    if "subscription" in low:
        fix = f"your Alpaca plan does not include the {feed!r} feed; use feed='iex'"
    elif "connection limit" in low:
        fix = ("another connection with these keys is open (the free plan allows one); "
               "close it and retry")
    elif "auth" in low:
        fix = "check MLTRADER_ALPACA_KEY / MLTRADER_ALPACA_SECRET"
    else:
        fix = "check the keys and the feed"
    return f"alpaca stream: {msg}; {fix}"


class AlpacaStreamFeed:
    """Alpaca's real-time minute bars (alpaca-py `StockDataStream`, bars channel).

    The stream runs in a background thread; its bars go through a thread-safe queue to
    `bars()`. Keys as for `AlpacaSource`. A rejected login or subscription raises a
    SourceError from `bars()`; `max_connect_failures` failed connections in a row (network)
    do too. Per symbol a bar is emitted once and in time order (a bar repeated after a
    reconnect is dropped). `close()` stops the stream and joins the thread.
    """

    interval = "1m"

    def __init__(self, symbols: Sequence[str], api_key: str | None = None,
                 secret_key: str | None = None, feed: str = "iex",
                 url_override: str | None = None, *, max_connect_failures: int = 5,
                 websocket_params: dict[str, Any] | None = None) -> None:
        self.symbols = tuple(dict.fromkeys(str(s).upper() for s in symbols))
        if not self.symbols:
            raise ConfigError("AlpacaStreamFeed needs at least one symbol")
        self.feed = str(feed).lower()
        if self.feed not in ("iex", "sip"):
            raise ConfigError(f"alpaca stream feed {feed!r} is not supported; use iex or sip")
        self.url_override = url_override
        self.max_connect_failures = max(1, int(max_connect_failures))
        self._websocket_params = websocket_params
        self._keys = (api_key, secret_key)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: Any = None
        self._last: dict[str, pd.Timestamp] = {}
        self._connect_failures = 0

    def __repr__(self) -> str:  # never shows the keys
        return f"AlpacaStreamFeed({list(self.symbols)}, feed={self.feed!r})"

    # ------------------------------------------------------------- set-up
    def _build(self) -> Any:
        from mltrader.data.sources.alpaca import INSTALL_HINT, resolve_keys

        key, secret = resolve_keys(*self._keys)
        try:
            with warnings.catch_warnings():  # alpaca-py uses websockets.legacy (deprecated)
                warnings.simplefilter("ignore", DeprecationWarning)
                from alpaca.data.enums import DataFeed
                from alpaca.data.live import StockDataStream
        except ImportError as e:
            raise SourceError(f"alpaca stream: alpaca-py is not installed ({e}); "
                              f"{INSTALL_HINT}") from None
        # raw_data: alpaca-py's Bar model rejects bars without trade_count/vwap
        stream = StockDataStream(key, secret, raw_data=True, feed=DataFeed(self.feed),
                                 url_override=self.url_override,
                                 websocket_params=self._websocket_params)
        stream.subscribe_bars(self._on_bar, *self.symbols)
        start_ws = getattr(stream, "_start_ws", None)
        if start_ws is not None:  # surface fatal login errors instead of reconnecting forever
            stream._start_ws = self._guard(stream, start_ws)
        return stream

    def _guard(self, stream: Any, start_ws: Callable[[], Any]) -> Callable[[], Any]:
        async def guarded() -> None:
            try:
                await start_ws()
            except ValueError as e:  # an error frame at login: bad keys, plan, limit
                self._queue.put(SourceError(_stream_error_message(str(e), self.feed)))
                await stream.stop_ws()
                raise
            except Exception as e:
                self._connect_failures += 1
                if self._connect_failures >= self.max_connect_failures:
                    self._queue.put(SourceError(
                        f"alpaca stream: could not connect {self._connect_failures} times in a "
                        f"row ({type(e).__name__}: {e}); check the network and "
                        "https://status.alpaca.markets"))
                    await stream.stop_ws()
                raise
            self._connect_failures = 0

        return guarded

    async def _on_bar(self, bar: Any) -> None:
        try:
            self._queue.put(bar_event_from_alpaca(bar, self.interval))
        except Exception as e:  # a malformed bar must not kill the stream
            log.warning("alpaca stream: bar skipped (%s: %s): %r", type(e).__name__, e, bar)

    def _run(self) -> None:
        try:
            self._stream.run()
        except Exception as e:  # pragma: no cover - alpaca-py logs and retries itself
            self._queue.put(SourceError(f"alpaca stream stopped: {type(e).__name__}: {e}"))
        finally:
            self._queue.put(_END)

    def start(self) -> None:
        """Connect in a background thread (bars() calls this on first use)."""
        if self._thread is not None:
            return
        if self._closed.is_set():
            raise SourceError("alpaca stream: the feed is closed; create a new one")
        self._stream = self._build()
        self._thread = threading.Thread(target=self._run, name="alpaca-stream", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- consuming
    def bars(self, idle_timeout: float | None = None) -> Iterator[BarEvent]:
        """Completed minute bars as they arrive. idle_timeout: raise SourceError when no bar
        came for that many seconds (None: wait forever)."""
        self.start()
        last = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closed.is_set():
                    return
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    raise SourceError(f"alpaca stream: no bar for {idle_timeout:g} s; the "
                                      "market may be closed or the symbols not trading") from None
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            prev = self._last.get(item.symbol)
            if prev is not None and item.time <= prev:
                log.debug("alpaca stream: repeated or old bar dropped: %s", item)
                continue
            self._last[item.symbol] = item.time
            last = time.monotonic()
            yield item

    def __iter__(self) -> Iterator[BarEvent]:
        return self.bars()

    def close(self, timeout: float = 5.0) -> None:
        self._closed.set()
        stream, thread = self._stream, self._thread
        if stream is not None and thread is not None and thread.is_alive():
            deadline = time.monotonic() + timeout
            loop = getattr(stream, "_loop", None)
            while (loop is None or not loop.is_running()) and thread.is_alive() \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
                loop = getattr(stream, "_loop", None)
            if loop is not None and loop.is_running():
                fut = asyncio.run_coroutine_threadsafe(_shutdown(stream), loop)
                try:
                    fut.result(timeout=max(0.1, deadline - time.monotonic()))
                except Exception as e:  # the loop may end while stopping
                    log.debug("alpaca stream: shutdown: %r", e)
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("alpaca stream: the stream thread did not stop within %g s", timeout)
        self._queue.put(_END)


async def _shutdown(stream: Any) -> None:
    """Stop alpaca-py's run loop and close the socket so a pending recv() ends at once."""
    await stream.stop_ws()
    await stream.close()


def collect(feed: Feed, n: int | None = None) -> list[BarEvent]:
    """The first `n` events of a feed (all when None), then close it. For tests and scripts."""
    out: list[BarEvent] = []
    try:
        for e in feed.bars():
            out.append(e)
            if n is not None and len(out) >= n:
                break
    finally:
        feed.close()
    return out


__all__ = ["AlpacaStreamFeed", "BarEvent", "Feed", "PollingFeed", "ReplayFeed", "bar_end",
           "bar_event_from_alpaca", "collect", "infer_interval", "interval_span"]
