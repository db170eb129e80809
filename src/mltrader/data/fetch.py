"""Fetch bars from the network sources, through the local cache, with fallback between sources.

`fetch_bars` asks each symbol's sources in the order given; when one fails (or has no bars)
the next is tried, and the result says which source served each symbol. A symbol that no
source can serve is an error naming every source's reason: never a silently missing column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mltrader.data.bars import FIELDS, Bars
from mltrader.data.calendars import CONTINUOUS, symbol_calendar
from mltrader.data.sources.base import (
    Source,
    SourceError,
    as_utc,
    check_interval,
    standardize,
)
from mltrader.errors import ConfigError, DataError

NETWORK_SOURCES: tuple[str, ...] = ("yahoo", "alphavantage", "alpaca", "ib", "akshare")


def make_source(name: str, **kwargs: Any) -> Source:
    """A network source by registry name (its client library is imported only when used)."""
    if name == "yahoo":
        from mltrader.data.sources.yahoo import YahooSource

        return YahooSource(**kwargs)
    if name == "alphavantage":
        from mltrader.data.sources.alphavantage import AlphaVantageSource

        return AlphaVantageSource(**kwargs)
    if name == "alpaca":
        from mltrader.data.sources.alpaca import AlpacaSource

        return AlpacaSource(**kwargs)
    if name == "ib":
        from mltrader.data.sources.ib import IBSource

        return IBSource(**kwargs)
    if name == "akshare":
        from mltrader.data.sources.akshare import AkshareSource

        return AkshareSource(**kwargs)
    raise ConfigError(f"unknown data source {name!r}; choose one of {', '.join(NETWORK_SOURCES)}")


@dataclass(frozen=True)
class FetchResult:
    """The bars, which source served each symbol, and what failed on the way."""

    bars: Bars
    served_by: dict[str, str]
    failures: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> str:
        """One line per source: the symbols it served."""
        by: dict[str, list[str]] = {}
        for sym, src in self.served_by.items():
            by.setdefault(src, []).append(sym)
        return "; ".join(f"{src}: {', '.join(syms)}" for src, syms in by.items())


def _one(src: Source, symbol: str, start: pd.Timestamp, end: pd.Timestamp, interval: str,
         adjusted: bool, cache: Any) -> pd.DataFrame:
    def fetch(a: pd.Timestamp, b: pd.Timestamp) -> pd.DataFrame:
        return standardize(src.fetch(symbol, a, b, interval, adjusted), src.name, symbol)

    if cache is None:
        return fetch(start, end)
    # crypto trades every day, FX round the clock: their cached days are judged on their own
    # calendar (an exchange symbol keeps the NYSE sessions the cache has always used)
    cal = symbol_calendar(symbol)
    return cache.get(src.name, symbol, interval, adjusted, start, end, fetch,
                     calendar=cal if cal in CONTINUOUS else "XNYS")


def fetch_bars(symbols: Sequence[str], start: Any, end: Any = None, interval: str = "1d",
               adjusted: bool = True, sources: Sequence[Source | str] = ("yahoo",),
               cache: Any = None, progress: Callable[[str], None] | None = None
               ) -> FetchResult:
    """Bars for `symbols` from the first source that serves each one (see module doc)."""
    check_interval(interval)
    if not symbols:
        raise ConfigError("no symbols to fetch; pass e.g. --symbols AAPL,MSFT")
    if not sources:
        raise ConfigError("no data source given; e.g. --source yahoo")
    srcs = [make_source(s) if isinstance(s, str) else s for s in sources]
    try:
        return _fetch_all(symbols, start, end, interval, adjusted, srcs, cache, progress)
    finally:  # a source made here from its name is ours to close (IB: its connection)
        for src, given in zip(srcs, sources, strict=True):
            close = getattr(src, "close", None)
            if isinstance(given, str) and callable(close):
                close()


def _fetch_all(symbols: Sequence[str], start: Any, end: Any, interval: str, adjusted: bool,
               srcs: list[Source], cache: Any, progress: Callable[[str], None] | None
               ) -> FetchResult:
    now = pd.Timestamp.now(tz="UTC")
    t0 = as_utc(start, now - pd.Timedelta(days=365))
    t1 = as_utc(end, now)
    if t0 > t1:
        raise ConfigError(f"start {t0.date()} is after end {t1.date()}")
    frames: dict[str, pd.DataFrame] = {}
    served: dict[str, str] = {}
    failures: dict[str, list[str]] = {}
    for symbol in symbols:
        for src in srcs:
            try:
                frame = _one(src, symbol, t0, t1, interval, adjusted, cache)
            except SourceError as e:
                failures.setdefault(symbol, []).append(str(e))
                continue
            frame = frame.loc[(frame.index >= t0) & (frame.index <= t1)]
            if frame.empty:
                failures.setdefault(symbol, []).append(
                    f"{src.name}: {symbol}: no bars between {t0.date()} and {t1.date()}")
                continue
            frames[symbol] = frame
            served[symbol] = src.name
            break
        if progress is not None:
            progress(f"{symbol}: {served.get(symbol, 'failed')}")
        if symbol not in frames:
            raise SourceError(f"{symbol}: every source failed ({' | '.join(failures[symbol])})")
    return FetchResult(to_bars(frames, source="+".join(dict.fromkeys(served.values()))),
                       served, failures)


def to_bars(frames: dict[str, pd.DataFrame], source: str = "") -> Bars:
    """Standard frames per symbol -> one `Bars` panel on the union of their timestamps."""
    if not frames:
        raise DataError("no bars to build a panel from")
    index = frames[next(iter(frames))].index
    for f in frames.values():
        index = index.union(f.index)
    wide = {}
    for col in FIELDS:
        panel = pd.DataFrame({s: f[col].reindex(index) for s, f in frames.items()}, index=index)
        if col != "close" and panel.isna().all().all():
            continue  # e.g. no volume from this source
        wide[col] = panel
    return Bars.from_frames(wide, source=source)
