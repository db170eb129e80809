"""Interactive Brokers historical bars (ib_async's `reqHistoricalData`), in the standard frame.

Needs a running TWS / IB Gateway and IB market-data permissions for the symbols.
`mltrader live --broker ib` uses it over the broker adapter's own connection (one login,
one client id) when the config's data comes from no other network source;
`mltrader data fetch --source ib` opens a connection of its own (MLTRADER_IB_HOST,
MLTRADER_IB_PORT, MLTRADER_IB_CLIENT_ID; default 127.0.0.1:7497, the TWS paper port,
client id 17, so it never collides with a bot's client id 1).

Conventions (base.py): requests ask for formatDate=2, so intraday bars come as UTC datetimes
of the bar's START; daily bars come as session dates and are stamped 00:00 UTC. Regular
trading hours only (useRTH). Daily bars with adjusted=True use ADJUSTED_LAST (splits and
dividends), which IB serves only up to now (endDateTime ''), so rows after `end` are cut
here; raw daily bars and all intraday bars use TRADES, paged backwards from `end` in chunks
within IB's duration limits (1 min: 1 day a request, 5/15 min: a week, 1 h: a month).
A bar that has not ended by the injectable `clock` (IB serves the forming one; a daily bar
ends at the 16:00 New York close) is dropped, as base.py requires.

Failures: ib_async reports a failed historical request on `errorEvent` and returns no bars
(its default `RaiseRequestErrors=False`), so the source listens while it asks and turns the
codes into one-line `SourceError`s: 200 (unknown symbol), 354 / 10089 / 10090 / 10168 (no
market-data subscription), 162 with "no data" is an empty range (not an error), 162/420
pacing violations are retried after a pause (bounded), a lost connection is reconnected
through `ensure_connected` (bounded) before the last error is raised.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from mltrader.data.sources.base import (
    SourceError,
    bar_end,
    check_interval,
    empty_frame,
    now_utc,
    standardize,
)

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "mltrader[live]" (or: pip install ib_async)'
DEFAULT_CLIENT_ID = 17
BAR_SIZES = {"1m": "1 min", "5m": "5 mins", "15m": "15 mins", "1h": "1 hour", "1d": "1 day"}
# the longest duration IB accepts per request for each intraday bar size (its step-size table)
_CHUNK = {"1m": ("1 D", pd.Timedelta(days=1)), "5m": ("1 W", pd.Timedelta(weeks=1)),
          "15m": ("1 W", pd.Timedelta(weeks=1)), "1h": ("1 M", pd.Timedelta(days=30))}
_NO_PERMISSION = frozenset({354, 10089, 10090, 10167, 10168, 10197})
_PACING = ("pacing violation", "max rate", "too many")
_MAX_EMPTY_CHUNKS = 5  # paging back stops after this many chunks in a row without bars


def _daily_duration(start: pd.Timestamp, end: pd.Timestamp) -> str:
    """A duration string covering start..end for daily bars (IB wants years above 365 days)."""
    days = max(1, (end.normalize() - start.normalize()).days + 1)
    return f"{days} D" if days <= 365 else f"{math.ceil(days / 365)} Y"


def _stamp(value: Any) -> pd.Timestamp:
    """A BarData.date as our index value: a date -> 00:00 UTC, a datetime -> UTC."""
    if isinstance(value, dt.datetime):
        ts = pd.Timestamp(value)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return pd.Timestamp(value).tz_localize("UTC")


class IBSource:
    """A `Source` for IB historical bars; see the module docstring."""

    name = "ib"

    def __init__(self, ib: Any = None, *, host: str | None = None, port: int | None = None,
                 client_id: int | None = None,
                 ensure_connected: Callable[[], None] | None = None,
                 exchange: str = "SMART", currency: str = "USD", timeout: float = 30.0,
                 max_retries: int = 3, backoff: float = 10.0,
                 sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], pd.Timestamp] = now_utc) -> None:
        self.host = host or os.environ.get("MLTRADER_IB_HOST", "127.0.0.1")
        self.port = int(port or os.environ.get("MLTRADER_IB_PORT", 7497))
        self.client_id = int(client_id or os.environ.get("MLTRADER_IB_CLIENT_ID",
                                                         DEFAULT_CLIENT_ID))
        self.exchange, self.currency = exchange, currency
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self._sleep = sleep
        self._clock = clock
        self._ib = ib
        self._ensure = ensure_connected
        self._contracts: dict[str, Any] = {}

    # ------------------------------------------------------------------ connection
    def _client(self) -> Any:
        if self._ib is None:
            try:
                from ib_async import IB
            except ImportError:
                raise SourceError(f"ib: the ib_async package is not installed; {INSTALL_HINT}"
                                  ) from None
            self._ib = IB()
        return self._ib

    def _connect(self) -> None:
        ib = self._client()
        if self._ensure is not None:
            self._ensure()
            return
        if ib.isConnected():
            return
        try:
            ib.connect(self.host, self.port, clientId=self.client_id, timeout=self.timeout,
                       readonly=True)
        except (OSError, TimeoutError, ConnectionError) as e:
            raise SourceError(f"ib: cannot reach TWS / IB Gateway at {self.host}:{self.port} "
                              f"({type(e).__name__}: {e}); start it with the API enabled, or "
                              "set MLTRADER_IB_HOST / MLTRADER_IB_PORT") from None

    def close(self) -> None:
        """Disconnect a connection this source opened itself (a shared one stays open)."""
        if self._ensure is None and self._ib is not None and self._ib.isConnected():
            self._ib.disconnect()

    def _contract(self, symbol: str) -> Any:
        if symbol in self._contracts:
            return self._contracts[symbol]
        from ib_async import Stock

        contract = Stock(symbol, self.exchange, self.currency)
        got = self._client().qualifyContracts(contract) or []
        if not got or got[0] is None or not getattr(contract, "conId", 0):
            raise SourceError(f"ib: {symbol!r} is not a unique stock at IB ({self.exchange}, "
                              f"{self.currency}); check the symbol")
        self._contracts[symbol] = contract
        return contract

    # ------------------------------------------------------------------ requests
    def _request(self, symbol: str, end: Any, duration: str, interval: str,
                 what: str) -> list[Any]:
        """One reqHistoricalData call with its errors caught; retried on pacing / connection."""
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            try:
                self._connect()
                contract = self._contract(symbol)
            except (OSError, ConnectionError) as e:
                last = f"connection: {e}"
                continue
            ib = self._client()
            errors: list[tuple[int, str]] = []

            def on_error(req_id: int, code: int, text: str, *_: Any,
                         errors: list[tuple[int, str]] = errors) -> None:
                errors.append((int(code), str(text)))

            ib.errorEvent += on_error
            try:
                bars = ib.reqHistoricalData(contract, endDateTime=end, durationStr=duration,
                                            barSizeSetting=BAR_SIZES[interval],
                                            whatToShow=what, useRTH=True, formatDate=2,
                                            timeout=self.timeout)
            except (OSError, ConnectionError) as e:
                last = f"connection lost during the request: {e}"
                continue
            finally:
                ib.errorEvent -= on_error
            if bars:
                return list(bars)
            fatal = self._classify(symbol, errors)
            if fatal is None:  # no data in the range, or no error at all
                if errors and any(any(p in t.lower() for p in _PACING) for _, t in errors):
                    last = "pacing violation (too many historical requests)"
                    log.warning("ib: %s: %s; retrying in %.0f s", symbol, last,
                                self.backoff * 2 ** attempt)
                    continue
                if not ib.isConnected():
                    last = "the connection dropped during the request"
                    continue
                return []
            raise SourceError(fatal)
        raise SourceError(f"ib: {symbol}: historical bars failed after {self.max_retries + 1} "
                          f"attempts ({last}); check TWS / IB Gateway and retry later")

    @staticmethod
    def _classify(symbol: str, errors: list[tuple[int, str]]) -> str | None:
        """A one-line error for a refused request, None for 'no data' / pacing / nothing."""
        for code, text in errors:
            low = text.lower()
            if code == 200:
                return f"ib: {symbol}: IB has no such contract ({text}); check the symbol"
            if code in _NO_PERMISSION:
                return (f"ib: {symbol}: no market-data permission at IB (error {code}: "
                        f"{text}); subscribe to the exchange's data in the IB account portal "
                        "or use another data.source")
            if code in (162, 420) and ("no data" in low or any(p in low for p in _PACING)):
                continue
            if code in (162, 321, 322):
                return f"ib: {symbol}: historical data request refused (error {code}: {text})"
        return None

    # ------------------------------------------------------------------ the Source API
    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp, interval: str,
              adjusted: bool = True) -> pd.DataFrame:
        """`symbol`'s completed bars with start <= index <= end (the standard frame)."""
        check_interval(interval)
        start, end = pd.Timestamp(start), pd.Timestamp(end)
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        if start > end:
            return empty_frame()
        rows: list[Any] = []
        if interval == "1d":
            if adjusted:  # IB serves ADJUSTED_LAST only up to now
                now = self._clock()
                rows = self._request(symbol, "", _daily_duration(start, now), interval,
                                     "ADJUSTED_LAST")
            else:
                rows = self._request(symbol, end.to_pydatetime(), _daily_duration(start, end),
                                     interval, "TRADES")
        else:
            duration, span = _CHUNK[interval]
            chunk_end, empty = end, 0
            while chunk_end > start and empty < _MAX_EMPTY_CHUNKS:
                got = self._request(symbol, chunk_end.to_pydatetime(), duration, interval,
                                    "TRADES")
                if not got:  # a weekend or holiday chunk; older data may still come
                    empty += 1
                    chunk_end -= span
                    continue
                empty = 0
                rows = got + rows
                first = _stamp(got[0].date)
                if first <= start:
                    break
                chunk_end = min(first, chunk_end - span)
        if not rows:
            return empty_frame()
        frame = pd.DataFrame(
            {"open": [b.open for b in rows], "high": [b.high for b in rows],
             "low": [b.low for b in rows], "close": [b.close for b in rows],
             "volume": [b.volume if b.volume is not None and b.volume >= 0 else float("nan")
                        for b in rows]},
            index=pd.DatetimeIndex([_stamp(b.date) for b in rows]))
        frame = standardize(frame, self.name, symbol)
        done = bar_end(frame.index, interval) <= self._clock()
        return frame[done & (frame.index >= start) & (frame.index <= end)]
