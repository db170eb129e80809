"""Alpha Vantage daily and intraday stock bars (its JSON ``/query`` API), in the standard frame.

Key: the ``api_key`` argument, else ``MLTRADER_ALPHAVANTAGE_KEY``, else ``ALPHAVANTAGE_API_KEY``
(free key: https://www.alphavantage.co/support/#api-key). The key is only checked when a fetch
needs it, so a source list can name alphavantage without one and fall back cleanly. The key is
added to the URL below httpx's logging, and never appears in a log line or error message.

Requests:
- daily: ``TIME_SERIES_DAILY_ADJUSTED`` when ``adjusted`` (a premium endpoint for free keys:
  the error says to use ``adjusted=False``), else ``TIME_SERIES_DAILY``; ``outputsize=compact``
  (the last 100 bars) when the range starts within ~135 days of now, else ``full``.
  Adjusted bars use ``5. adjusted close`` as close and scale open/high/low by
  adjusted close / close, so each bar stays consistent; volume is left as traded.
- intraday (1m/5m/15m/1h): ``TIME_SERIES_INTRADAY`` with interval 1min/5min/15min/60min,
  ``adjusted`` passed through, ``extended_hours=false`` (regular session, like the other
  sources), ``outputsize=full`` and one request per calendar month (``month=YYYY-MM``).

Timestamps: daily keys -> 00:00 UTC of the date. Intraday keys are the bar's start in the
``Time Zone`` named by the response's ``Meta Data`` (US/Eastern) -> UTC. Only completed bars
are returned: an intraday bar whose end (start + interval) is after ``now()``, and a daily bar
before its 16:00 close (local to the response's time zone) or after the response's
``Last Refreshed`` time (a mid-session snapshot), are dropped.

Limits: a sliding-window limiter allows ``calls_per_minute`` requests per 60 s (free keys:
5/minute, 25/day). Throttle answers (HTTP 200 with a ``Note`` or a rate-limit ``Information``
body), HTTP 429/5xx and network errors are retried with exponential backoff (``backoff``,
2x, 4x ...) at most ``max_retries`` times. ``Error Message`` bodies (bad symbol/function/key),
premium-only answers and demo-key answers are not retried.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
import pandas as pd

from mltrader.data.sources.base import (
    INTERVAL_MINUTES,
    SourceError,
    as_utc,
    check_interval,
    empty_frame,
    now_utc,
    standardize,
)

log = logging.getLogger(__name__)

KEY_VARS = ("MLTRADER_ALPHAVANTAGE_KEY", "ALPHAVANTAGE_API_KEY")
BASE_URL = "https://www.alphavantage.co/query"
DAILY = "TIME_SERIES_DAILY"
DAILY_ADJUSTED = "TIME_SERIES_DAILY_ADJUSTED"
INTRADAY = "TIME_SERIES_INTRADAY"
_AV_INTERVAL = {"1m": "1min", "5m": "5min", "15m": "15min", "1h": "60min"}
_COMPACT_DAYS = 135           # calendar days surely inside the 100 bars of outputsize=compact
_DAILY_CLOSE = pd.Timedelta(hours=16)   # a daily bar ends at the 16:00 local close
_DEFAULT_TZ = "US/Eastern"
# words of the "Information" bodies that are throttles (retry) rather than refusals
_THROTTLE_WORDS = ("rate limit", "call frequency", "requests per day", "per minute",
                   "spreading out", "sparingly")


def resolve_key(api_key: str | None) -> str:
    """The key from the argument or the environment; SourceError naming the variable if absent."""
    key = api_key or next((os.environ[v] for v in KEY_VARS if os.environ.get(v)), None)
    if not key:
        raise SourceError(f"alphavantage: no API key: set {KEY_VARS[0]} (or {KEY_VARS[1]}), "
                          "or pass api_key=; free keys at "
                          "https://www.alphavantage.co/support/#api-key")
    return key


class _Retry(Exception):
    """A failure worth retrying (throttle, 429/5xx, network); `rate` marks a throttle."""

    def __init__(self, reason: str, rate: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.rate = rate


class _KeyTransport(httpx.BaseTransport):
    """Adds ``apikey`` to the URL below the client, so httpx's request log never shows it."""

    def __init__(self, inner: httpx.BaseTransport, key: str):
        self._inner = inner
        self._key = key

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        keyed = httpx.Request(request.method, request.url.copy_add_param("apikey", self._key),
                              headers=request.headers, stream=request.stream,
                              extensions=request.extensions)
        return self._inner.handle_request(keyed)

    def close(self) -> None:
        self._inner.close()


class RateLimiter:
    """At most `per_minute` calls in any 60 s window; waits (via `sleep`) when full."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = time.sleep):
        if per_minute < 1:
            raise SourceError(f"alphavantage: calls_per_minute must be >= 1, got {per_minute}")
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._calls: deque[float] = deque()

    def acquire(self) -> None:
        while True:
            t = self._clock()
            while self._calls and t - self._calls[0] >= 60.0:
                self._calls.popleft()
            if len(self._calls) < self.per_minute:
                self._calls.append(t)
                return
            self._sleep(60.0 - (t - self._calls[0]))


def _one_line(text: Any, limit: int = 240) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


class AlphaVantageSource:
    """Alpha Vantage as a `Source` (see the module doc for requests, limits and conventions)."""

    name = "alphavantage"

    def __init__(self, api_key: str | None = None, calls_per_minute: int = 5,
                 max_retries: int = 4, backoff: float = 15.0, base_url: str = BASE_URL,
                 sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], pd.Timestamp] = now_utc,
                 transport: httpx.BaseTransport | None = None, timeout: float = 30.0):
        self._api_key = api_key
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.base_url = base_url
        self.timeout = timeout
        self._sleep = sleep
        self._now = now
        self._transport = transport
        self._limiter = RateLimiter(calls_per_minute, clock=clock, sleep=sleep)
        self._client: httpx.Client | None = None
        self._key: str | None = None

    def __repr__(self) -> str:
        return f"AlphaVantageSource(base_url={self.base_url!r})"

    # -- http ----------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._key = resolve_key(self._api_key)
            inner = self._transport if self._transport is not None else httpx.HTTPTransport()
            self._client = httpx.Client(transport=_KeyTransport(inner, self._key),
                                        timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> AlphaVantageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _redact(self, text: Any) -> str:
        s = _one_line(text)
        for key in (self._key, self._api_key):
            if key:
                s = s.replace(key, "***")
        return s

    def _attempt(self, client: httpx.Client, symbol: str, params: dict[str, str]) -> dict:
        """One request: the JSON body, or _Retry / SourceError."""
        self._limiter.acquire()
        try:
            resp = client.get(self.base_url, params=params)
        except httpx.TransportError as e:
            raise _Retry(f"{type(e).__name__}: {self._redact(e) or 'no detail'}") from None
        if resp.status_code == 429:
            raise _Retry("HTTP 429 Too Many Requests", rate=True)
        if resp.status_code >= 500:
            raise _Retry(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise SourceError(f"alphavantage: {symbol}: HTTP {resp.status_code} "
                              f"({self._redact(resp.text[:200])}); check base_url and the key")
        try:
            body = resp.json()
        except ValueError:
            raise _Retry(f"the answer was not JSON ({self._redact(resp.text[:80])})") from None
        if not isinstance(body, dict):
            raise _Retry("the answer was not a JSON object")
        self._check_body(symbol, params["function"], body)
        return body

    def _check_body(self, symbol: str, function: str, body: dict) -> None:
        """Raise for Alpha Vantage's in-band errors (HTTP 200 with a message instead of data)."""
        if "Error Message" in body:
            msg = self._redact(body["Error Message"])
            if "apikey" in msg.lower().replace(" ", ""):
                raise SourceError(f"alphavantage: {symbol}: the API key was rejected ({msg}); "
                                  f"check {KEY_VARS[0]}")
            raise SourceError(f"alphavantage: {symbol}: Alpha Vantage rejected {function} "
                              f"({msg}); check the symbol (e.g. with the SYMBOL_SEARCH "
                              "function: US tickers like IBM, others with a suffix like "
                              "TSCO.LON)")
        if "Note" in body:
            raise _Retry(self._redact(body["Note"]), rate=True)
        if "Information" in body:
            msg = self._redact(body["Information"])
            low = msg.lower()
            if any(w in low for w in _THROTTLE_WORDS):
                raise _Retry(msg, rate=True)
            if "premium" in low:
                fix = ("use adjusted=False (TIME_SERIES_DAILY is free) or a premium key"
                       if function == DAILY_ADJUSTED else "use another source or a premium key")
                raise SourceError(f"alphavantage: {symbol}: {function} needs a premium "
                                  f"Alpha Vantage plan for this key; {fix}")
            if "api key" in low or "apikey" in low:
                raise SourceError(f"alphavantage: {symbol}: the API key was refused ({msg}); "
                                  f"set {KEY_VARS[0]} to your own key")
            raise _Retry(msg, rate=True)

    def _request(self, symbol: str, params: dict[str, str]) -> dict:
        """One query with rate limiting and bounded retries."""
        client = self._http()
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                return self._attempt(client, symbol, params)
            except _Retry as r:
                if attempt + 1 >= attempts:
                    if r.rate:
                        raise SourceError(
                            f"alphavantage: {symbol}: rate-limited {attempts} times (the free "
                            "key allows 25 requests a day / 5 a minute); wait or set "
                            "calls_per_minute lower") from None
                    raise SourceError(f"alphavantage: {symbol}: request failed {attempts} times "
                                      f"(last: {r.reason}); check the network connection or "
                                      "try later") from None
                delay = self.backoff * (2 ** attempt)
                log.warning("alphavantage: %s: %s; retry %d/%d in %.0f s", symbol,
                            _one_line(r.reason, 120), attempt + 1, self.max_retries, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    # -- parsing -------------------------------------------------------------------------

    @staticmethod
    def _series(symbol: str, body: dict) -> tuple[dict, dict]:
        key = next((k for k in body if k.startswith("Time Series")), None)
        if key is None or not isinstance(body[key], dict):
            raise SourceError(f"alphavantage: {symbol}: the answer has no 'Time Series' "
                              f"(keys: {', '.join(list(body)[:4])}); the format may have "
                              "changed")
        meta = body.get("Meta Data")
        return body[key], meta if isinstance(meta, dict) else {}

    @staticmethod
    def _meta(meta: dict, suffix: str) -> str | None:
        return next((str(v) for k, v in meta.items() if k.lower().endswith(suffix)), None)

    def _frame(self, symbol: str, series: dict) -> pd.DataFrame:
        raw = pd.DataFrame.from_dict(series, orient="index")
        raw.columns = [str(c).split(". ", 1)[-1].strip().lower() for c in raw.columns]
        out = raw.apply(pd.to_numeric, errors="coerce").astype("float64")
        missing = [c for c in ("open", "high", "low", "close") if c not in out]
        if missing:
            raise SourceError(f"alphavantage: {symbol}: the answer has no {', '.join(missing)}"
                              " field(s); the format may have changed")
        return out

    def _parse_daily(self, symbol: str, body: dict, adjusted: bool) -> pd.DataFrame:
        series, meta = self._series(symbol, body)
        if not series:
            return empty_frame()
        df = self._frame(symbol, series)
        if adjusted:
            if "adjusted close" not in df:
                raise SourceError(f"alphavantage: {symbol}: the adjusted answer has no "
                                  "'adjusted close'; the format may have changed")
            factor = df["adjusted close"] / df["close"]
            for c in ("open", "high", "low"):
                df[c] = df[c] * factor
            df["close"] = df["adjusted close"]
        dates = pd.to_datetime(pd.Index(df.index), format="%Y-%m-%d")
        df.index = dates.tz_localize("UTC")
        # completed bars only: the close is past both now and the data's Last Refreshed time
        tz = self._meta(meta, "time zone") or _DEFAULT_TZ
        closes = (dates + _DAILY_CLOSE).tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        limit = as_utc(self._now(), now_utc())
        refreshed = self._meta(meta, "last refreshed")
        try:
            ts = pd.Timestamp(refreshed) if refreshed else None
        except ValueError:
            ts = None
        if ts is not None and ts.tzinfo is None:
            if len(refreshed.strip()) <= 10:       # a date only: that day's data is final
                ts = ts + pd.Timedelta(days=1)
            limit = min(limit, ts.tz_localize(tz).tz_convert("UTC"))
        keep = (closes.tz_convert("UTC") <= limit)
        return df.loc[keep]

    def _parse_intraday(self, symbol: str, body: dict, interval: str) -> pd.DataFrame:
        series, meta = self._series(symbol, body)
        if not series:
            return empty_frame()
        df = self._frame(symbol, series)
        tz = self._meta(meta, "time zone") or _DEFAULT_TZ
        local = pd.to_datetime(pd.Index(df.index), format="%Y-%m-%d %H:%M:%S")
        idx = local.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").tz_convert("UTC")
        df.index = idx
        df = df.loc[~idx.isna()]
        now = as_utc(self._now(), now_utc())
        step = pd.Timedelta(minutes=INTERVAL_MINUTES[interval])
        return df.loc[df.index + step <= now]

    # -- Source --------------------------------------------------------------------------

    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp, interval: str,
              adjusted: bool = True) -> pd.DataFrame:
        """One symbol's completed bars with start <= index <= end, in the standard frame."""
        check_interval(interval)
        symbol = str(symbol).strip()
        now = as_utc(self._now(), now_utc())
        start = as_utc(start, now)
        end = as_utc(end, now)
        if start > end:
            return empty_frame()
        if interval == "1d":
            function = DAILY_ADJUSTED if adjusted else DAILY
            size = "compact" if start >= now - pd.Timedelta(days=_COMPACT_DAYS) else "full"
            body = self._request(symbol, {"function": function, "symbol": symbol,
                                          "outputsize": size})
            df = self._parse_daily(symbol, body, adjusted)
        else:
            frames = []
            for month in self._months(start, min(end, now)):
                body = self._request(symbol, {
                    "function": INTRADAY, "symbol": symbol, "interval": _AV_INTERVAL[interval],
                    "adjusted": "true" if adjusted else "false", "extended_hours": "false",
                    "month": month, "outputsize": "full"})
                frames.append(self._parse_intraday(symbol, body, interval))
            frames = [f for f in frames if not f.empty]
            df = pd.concat(frames) if frames else empty_frame()
        df = standardize(df, self.name, symbol)
        return df.loc[(df.index >= start) & (df.index <= end)]

    @staticmethod
    def _months(start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
        """The YYYY-MM months (New York time) that [start, end] touches."""
        if start > end:
            return []
        first = start.tz_convert(_DEFAULT_TZ).tz_localize(None).to_period("M")
        last = end.tz_convert(_DEFAULT_TZ).tz_localize(None).to_period("M")
        return [str(p) for p in pd.period_range(first, last, freq="M")]
