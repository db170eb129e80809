"""Alpaca historical stock bars (alpaca-py's `StockHistoricalDataClient`), in the standard frame.

Keys: ``api_key``/``secret_key`` arguments, else the environment variables
``MLTRADER_ALPACA_KEY``/``MLTRADER_ALPACA_SECRET``, else alpaca's own ``APCA_API_KEY_ID``/
``APCA_API_SECRET_KEY``. Paper-trading keys work for market data. The free plan serves the
``iex`` feed (one exchange's trades); ``sip`` (the consolidated tape) needs a data
subscription for the last 15 minutes.

Conventions (see base.py): daily bars, which Alpaca stamps at midnight New York time
(04:00 or 05:00 UTC), are re-stamped 00:00 UTC of that New York date; intraday bars keep their
start time in UTC. A bar that has not ended yet by the injectable ``clock`` (a daily bar ends
at the 16:00 New York close) is dropped. alpaca-py follows ``next_page_token`` itself and
retries HTTP 429/504 itself (3 times, 3 s apart); this source adds bounded retries for network
errors and other 5xx answers, and a per-request timeout.

alpaca-py is imported only when a fetch needs it (``pip install "mltrader[live]"``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import warnings
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

KEY_VARS = ("MLTRADER_ALPACA_KEY", "APCA_API_KEY_ID")
SECRET_VARS = ("MLTRADER_ALPACA_SECRET", "APCA_API_SECRET_KEY")
FEEDS = ("iex", "sip")
NEW_YORK = "America/New_York"
# interval -> (amount, alpaca TimeFrameUnit member name)
_TIMEFRAMES = {"1m": (1, "Minute"), "5m": (5, "Minute"), "15m": (15, "Minute"),
               "1h": (1, "Hour"), "1d": (1, "Day")}
_RETRY_STATUS = (500, 502, 503, 504)
INSTALL_HINT = 'pip install "mltrader[live]" (or: pip install alpaca-py)'


def _alpaca() -> dict[str, Any]:
    """The alpaca-py names this module uses, imported on first use."""
    try:
        with warnings.catch_warnings():  # alpaca.data imports websockets.legacy (deprecated)
            warnings.simplefilter("ignore", DeprecationWarning)
            from alpaca.common.exceptions import APIError
            from alpaca.data.enums import Adjustment, DataFeed
            from alpaca.data.historical import StockHistoricalDataClient
            from alpaca.data.requests import StockBarsRequest
            from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
    except ImportError as e:
        raise SourceError(f"alpaca: the alpaca-py package is not installed ({e}); "
                          f"{INSTALL_HINT}") from None
    return {"APIError": APIError, "Adjustment": Adjustment, "DataFeed": DataFeed,
            "Client": StockHistoricalDataClient, "StockBarsRequest": StockBarsRequest,
            "TimeFrame": TimeFrame, "TimeFrameUnit": TimeFrameUnit}


def resolve_keys(api_key: str | None, secret_key: str | None) -> tuple[str, str]:
    """Keys from the arguments or the environment; SourceError naming the variables if absent."""
    key = api_key or next((os.environ[v] for v in KEY_VARS if os.environ.get(v)), None)
    secret = secret_key or next((os.environ[v] for v in SECRET_VARS if os.environ.get(v)), None)
    if not key or not secret:
        missing = " and ".join(f"{a} (or {b})" for (a, b), have in
                               ((KEY_VARS, key), (SECRET_VARS, secret)) if not have)
        raise SourceError(f"alpaca: no API key: set {missing}; free keys (paper trading "
                          "works) at https://app.alpaca.markets")
    return key, secret


def _check_feed(feed: str) -> str:
    feed = str(feed).lower()
    if feed not in FEEDS:
        raise SourceError(f"alpaca: feed {feed!r} is not supported; use 'iex' (free) or 'sip'")
    return feed


def _api_detail(err: Exception) -> str:
    """The server's message from an alpaca APIError, one short line."""
    text = str(err)
    try:
        body = json.loads(text)
        if isinstance(body, dict) and body.get("message"):
            text = str(body["message"])
    except (ValueError, TypeError):
        pass
    text = " ".join(text.split())
    return text[:200] if text else "no message"


def api_error_message(what: str, status: int | None, detail: str) -> str:
    """One line for an Alpaca HTTP error: what went wrong and what to do."""
    low = detail.lower()
    if status in (401, 403) and ("subscription" in low or "sip" in low):
        fix = ("your plan does not include this SIP data; use feed='iex' or end the range "
               "15+ minutes ago")
    elif status in (401, 403):
        fix = ("the API key was rejected; check MLTRADER_ALPACA_KEY / MLTRADER_ALPACA_SECRET "
               "(a key and its own secret, not expired or regenerated)")
    elif status == 422:
        fix = "the request was refused; check the symbol (US stocks, e.g. AAPL, BRK.B) and range"
    elif status == 429:
        fix = ("rate limit still hit after alpaca-py's retries; wait a minute, fetch fewer "
               "symbols at once (free plan: 200 requests/minute)")
    elif status is not None and status >= 500:
        fix = "Alpaca's server failed; try again later (https://status.alpaca.markets)"
    else:
        fix = "check the request"
    return f"{what}: HTTP {status}: {detail}; {fix}"


class AlpacaSource:
    """Historical bars from Alpaca's market-data API (see module doc)."""

    name = "alpaca"

    def __init__(self, api_key: str | None = None, secret_key: str | None = None,
                 feed: str = "iex", url_override: str | None = None, client: Any = None,
                 *, timeout: float = 30.0, retries: int = 2, retry_wait: float = 2.0,
                 clock: Callable[[], pd.Timestamp] = now_utc,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.feed = _check_feed(feed)
        self.url_override = url_override
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.retry_wait = float(retry_wait)
        self.clock = clock
        self.sleep = sleep
        self._api_key, self._secret_key = api_key, secret_key
        self._client = client

    def __repr__(self) -> str:  # never shows the keys
        return f"AlpacaSource(feed={self.feed!r}, url_override={self.url_override!r})"

    # ----------------------------------------------------------------- client
    def client(self) -> Any:
        """The alpaca-py client, created on first use (raw JSON answers, request timeout)."""
        if self._client is None:
            a = _alpaca()
            key, secret = resolve_keys(self._api_key, self._secret_key)
            # raw_data: alpaca-py's Bar model requires trade_count/vwap, which older or
            # partial answers can lack; the raw dicts are parsed here instead.
            client = a["Client"](api_key=key, secret_key=secret, raw_data=True,
                                 url_override=self.url_override)
            session = getattr(client, "_session", None)  # requests.Session, no timeout default
            if session is not None and self.timeout > 0:
                session.request = functools.partial(session.request, timeout=self.timeout)
            self._client = client
        return self._client

    def _request(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp, interval: str,
                 adjusted: bool) -> Any:
        a = _alpaca()
        amount, unit = _TIMEFRAMES[interval]
        return a["StockBarsRequest"](
            symbol_or_symbols=symbol,
            timeframe=a["TimeFrame"](amount, getattr(a["TimeFrameUnit"], unit)),
            start=start.to_pydatetime(), end=end.to_pydatetime(),
            adjustment=a["Adjustment"].ALL if adjusted else a["Adjustment"].RAW,
            feed=a["DataFeed"](self.feed),
        )

    def _get(self, symbol: str, request: Any) -> Any:
        import requests  # a dependency of alpaca-py

        api_error = _alpaca()["APIError"]
        client = self.client()
        what = f"alpaca: {symbol}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                return client.get_stock_bars(request)
            except api_error as e:
                status = e.status_code
                if status in _RETRY_STATUS and not last:
                    log.warning("%s: HTTP %s, retrying (%d/%d)", what, status, attempt + 1,
                                self.retries)
                    self.sleep(self.retry_wait * 2 ** attempt)
                    continue
                raise SourceError(api_error_message(what, status, _api_detail(e))) from e
            except requests.RequestException as e:
                if not last:
                    log.warning("%s: %s, retrying (%d/%d)", what, type(e).__name__,
                                attempt + 1, self.retries)
                    self.sleep(self.retry_wait * 2 ** attempt)
                    continue
                kind = "timed out" if isinstance(e, requests.Timeout) else "network error"
                raise SourceError(f"{what}: {kind} after {self.retries + 1} attempts "
                                  f"({type(e).__name__}); check the internet connection "
                                  "and try again") from e
            except ValueError as e:  # alpaca-py: an answer without a known data key
                raise SourceError(f"{what}: unexpected answer ({' '.join(str(e).split())}); "
                                  "the API format may have changed") from e
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------- fetch
    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp, interval: str,
              adjusted: bool = True) -> pd.DataFrame:
        """Completed bars of `symbol` with start <= index <= end (standard frame)."""
        check_interval(interval)
        start, end = _utc(start), _utc(end)
        now = _utc(self.clock())
        if interval == "1d":
            # Alpaca stamps a session at midnight New York: ask from the first session's
            # midnight to the end of the last session's day
            req_start = pd.Timestamp(start.date(), tz=NEW_YORK).tz_convert("UTC")
            req_end = (pd.Timestamp(end.date(), tz=NEW_YORK) + pd.Timedelta(days=1)
                       - pd.Timedelta(seconds=1)).tz_convert("UTC")
        else:
            req_start, req_end = start, end
        req_end = min(req_end, now)
        if req_end < req_start:
            return empty_frame()
        raw = self._get(symbol, self._request(symbol, req_start, req_end, interval, adjusted))
        frame = _to_frame(_rows_for(raw, symbol), interval)
        if frame.empty:
            return empty_frame()
        frame = standardize(frame, self.name, symbol)
        done = bar_end(frame.index, interval) <= now
        frame = frame[done & (frame.index >= start) & (frame.index <= end)]
        return frame if not frame.empty else empty_frame()


def _utc(ts: Any) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _rows_for(raw: Any, symbol: str) -> list[Any]:
    """One symbol's bars from a raw dict ({symbol: [bar, ...]}) or an alpaca BarSet."""
    data = raw.data if hasattr(raw, "data") else raw
    if not data:
        return []
    if not isinstance(data, dict):
        raise SourceError(f"alpaca: {symbol}: unexpected answer of type {type(data).__name__}; "
                          "the API format may have changed")
    return list(data.get(symbol) or [])


def _to_frame(rows: list[Any], interval: str) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame()
    recs = []
    for r in rows:
        if isinstance(r, dict):
            recs.append({"t": r.get("t"), "open": r.get("o"), "high": r.get("h"),
                         "low": r.get("l"), "close": r.get("c"), "volume": r.get("v")})
        else:  # alpaca.data.models.Bar
            recs.append({"t": r.timestamp, "open": r.open, "high": r.high, "low": r.low,
                         "close": r.close, "volume": r.volume})
    df = pd.DataFrame.from_records(recs)
    idx = pd.DatetimeIndex(pd.to_datetime(df.pop("t"), utc=True))
    if interval == "1d":
        idx = idx.tz_convert(NEW_YORK).normalize().tz_localize(None).tz_localize("UTC")
    df.index = idx
    return df
