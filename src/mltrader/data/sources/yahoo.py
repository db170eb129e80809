"""Yahoo Finance bars through yfinance (``Ticker.history``), in the standard frame.

yfinance is imported only when a fetch needs it (``pip install "mltrader[data]"``). Its
exceptions are switched on (``yf.config.debug.hide_exceptions = False``, the replacement of
the deprecated ``raise_errors=True``; a process-wide yfinance setting) so that failures can be
told apart instead of arriving as an empty frame and a log line.

Requests: ``history(start, end, interval, auto_adjust=adjusted, actions=False,
prepost=False)``; intervals 1m/5m/15m/1h/1d are Yahoo's own names. yfinance's ``end`` is
exclusive, so the request runs one interval (one day for daily bars) past ``end`` and the frame
is cut to ``start <= index <= end``. Yahoo keeps intraday history for a limited time: 1m bars
for the last 30 days (at most 7 days per request: longer 1m ranges are split into 7-day
requests), 5m/15m for the last 60 days, 1h for the last 730 days. A range starting earlier is
refused with a SourceError before any request.

Timestamps: daily bars (yfinance: midnight at the exchange) -> 00:00 UTC of the session date;
intraday bars -> their start in UTC. Only completed bars are returned: a bar ends at
start + interval (daily: the next local midnight), or at the close of the session Yahoo
reports as current, if that comes first; a bar whose end is after ``now()`` is dropped.

Failures: network errors, rate limiting (``YFRateLimitError``) and empty or malformed answers
are retried ``max_retries`` times with exponential backoff, then raise one
SourceError line. Yahoo's explicit "no data" answers (unknown or delisted symbol, range not
served) raise at once, naming the symbol. A known symbol with no bars in the range gives an
empty frame.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

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

INSTALL_HINT = 'pip install "mltrader[data]" (or: pip install yfinance)'
YAHOO_INTERVAL = {"1m": "1m", "5m": "5m", "15m": "15m", "1h": "1h", "1d": "1d"}
# how far back Yahoo serves each intraday interval, and the longest span of one request
LOOKBACK_DAYS = {"1m": 30, "5m": 60, "15m": 60, "1h": 730}
MAX_SPAN = {"1m": pd.Timedelta(days=7)}
SYMBOL_HINT = "check the symbol (Yahoo spells some differently: BRK-B, ^GSPC, 7974.T, VOD.L)"
_RENAME = {"Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}


def _one_line(text: Any, limit: int = 200) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _ts_utc(value: Any) -> pd.Timestamp | None:
    """A metadata time (epoch seconds or Timestamp) as UTC, or None."""
    if value is None:
        return None
    try:
        if isinstance(value, (int, float)):
            return pd.Timestamp(int(value), unit="s", tz="UTC")
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _yfinance() -> Any:
    """yfinance, imported on first use, with its exceptions switched on."""
    try:
        import yfinance as yf
    except ImportError as e:
        raise SourceError(f"yahoo: the yfinance package is not installed ({e}); "
                          f"{INSTALL_HINT}") from None
    yf.config.debug.hide_exceptions = False
    return yf


def _retryable() -> tuple[type[BaseException], ...]:
    """Exceptions worth another try: network, rate limit, Yahoo down, a non-JSON answer, and
    an answer without the expected fields (yfinance's KeyError/IndexError/TypeError on an
    empty or null body)."""
    from yfinance.exceptions import YFDataException, YFRateLimitError

    return (OSError, TimeoutError, json.JSONDecodeError, YFRateLimitError, YFDataException,
            KeyError, IndexError, TypeError)


def _forget_cached_answers() -> None:
    """yfinance memoizes answers for past ranges; drop them so a retry asks Yahoo again."""
    try:
        from yfinance.data import YfData
    except ImportError:
        return
    clear = getattr(getattr(YfData, "cache_get", None), "cache_clear", None)
    if clear is not None:
        clear()


def _http_status(err: BaseException) -> int | None:
    status = getattr(getattr(err, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


class YahooSource:
    """Yahoo Finance as a `Source` (see the module doc for limits and conventions)."""

    name = "yahoo"

    def __init__(self, session: Any = None, max_retries: int = 3, backoff: float = 2.0,
                 sleep: Callable[[float], Any] = time.sleep,
                 now: Callable[[], pd.Timestamp] = now_utc, timeout: float = 30.0):
        self.session = session
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.timeout = timeout
        self._sleep = sleep
        self._now = now

    def __repr__(self) -> str:
        return f"YahooSource(max_retries={self.max_retries})"

    # -- Source --------------------------------------------------------------------------

    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp, interval: str,
              adjusted: bool = True) -> pd.DataFrame:
        """One symbol's completed bars with start <= index <= end, in the standard frame."""
        check_interval(interval)
        symbol = str(symbol).strip().upper()
        now = as_utc(self._now(), now_utc())
        start = as_utc(start, now)
        end = as_utc(end, now)
        if start > end:
            return empty_frame()
        if interval != "1d":
            self._check_reach(symbol, start, interval, now)
        yf = _yfinance()
        frames = []
        for a, b in self._windows(start, end, interval, now):
            raw, meta = self._history(yf, symbol, a, b, interval, adjusted)
            if not raw.empty:
                frames.append(self._to_standard(symbol, raw, interval, meta, now))
        if not frames:
            return empty_frame()
        df = standardize(pd.concat(frames), self.name, symbol)
        return df.loc[(df.index >= start) & (df.index <= end)]

    # -- helpers -------------------------------------------------------------------------

    def _check_reach(self, symbol: str, start: pd.Timestamp, interval: str,
                     now: pd.Timestamp) -> None:
        days = LOOKBACK_DAYS[interval]
        earliest = now - pd.Timedelta(days=days)
        if start < earliest:
            raise SourceError(
                f"yahoo: {symbol}: Yahoo serves {interval} bars for the last {days} days only "
                f"(requested start {start:%Y-%m-%d %H:%M} UTC, earliest "
                f"{earliest:%Y-%m-%d %H:%M} UTC); use a later start, a coarser interval "
                "(1h: 730 days, 1d: all history) or another source")

    @staticmethod
    def _windows(start: pd.Timestamp, end: pd.Timestamp, interval: str,
                 now: pd.Timestamp) -> list[tuple[Any, Any]]:
        """The (start, exclusive end) pairs to ask yfinance for (intraday: none past now)."""
        if interval == "1d":
            # session dates: yfinance reads bare dates at the exchange's midnight
            return [(start.date().isoformat(), (end.date() + pd.Timedelta(days=1)).isoformat())]
        stop = min(end, now) + pd.Timedelta(minutes=INTERVAL_MINUTES[interval])
        if start >= stop:
            return []
        span = MAX_SPAN.get(interval)
        if span is None:
            return [(start, stop)]
        out, a = [], start
        while a < stop:
            b = min(a + span, stop)
            out.append((a, b))
            a = b
        return out

    def _history(self, yf: Any, symbol: str, a: Any, b: Any, interval: str,
                 adjusted: bool) -> tuple[pd.DataFrame, dict]:
        """yfinance's frame and chart metadata for one window, with bounded retries."""
        from yfinance.exceptions import (
            YFPricesMissingError,
            YFTickerMissingError,
        )

        retry = _retryable()
        attempts = self.max_retries + 1
        last = "no answer"
        for attempt in range(attempts):
            ticker = None
            try:
                ticker = (yf.Ticker(symbol, session=self.session) if self.session is not None
                          else yf.Ticker(symbol))
                raw = ticker.history(start=a, end=b, interval=YAHOO_INTERVAL[interval],
                                     auto_adjust=adjusted, actions=False, prepost=False,
                                     repair=False, timeout=self.timeout)
                return raw, self._meta(ticker)
            except YFPricesMissingError as e:
                if e.yahoo_reason:
                    raise SourceError(f"yahoo: {symbol}: Yahoo says: "
                                      f"{_one_line(e.yahoo_reason)}; {SYMBOL_HINT}") from None
                if self._meta(ticker).get("exchangeTimezoneName"):
                    return pd.DataFrame(), {}        # a known symbol, no bars in the range
                last = "Yahoo sent no price data and no reason"
            except YFTickerMissingError:
                raise SourceError(f"yahoo: {symbol}: no data found (possibly delisted, or not "
                                  f"a Yahoo symbol); {SYMBOL_HINT}") from None
            except retry as e:
                status = _http_status(e)
                if status == 404:
                    raise SourceError(f"yahoo: {symbol}: no data found (HTTP 404: possibly "
                                      f"delisted, or not a Yahoo symbol); {SYMBOL_HINT}") from None
                if status is not None and 400 <= status < 500 and status != 429:
                    raise SourceError(f"yahoo: {symbol}: Yahoo refused the request (HTTP "
                                      f"{status}); try later or update yfinance") from None
                last = f"{type(e).__name__}: {_one_line(e, 120) or 'no detail'}"
            except Exception as e:
                raise SourceError(f"yahoo: {symbol}: yfinance failed ({type(e).__name__}: "
                                  f"{_one_line(e, 120)}); update yfinance or use another "
                                  "source") from e
            if attempt + 1 < attempts:
                delay = self.backoff * (2 ** attempt)
                log.warning("yahoo: %s: %s; retry %d/%d in %.0f s", symbol, last, attempt + 1,
                            self.max_retries, delay)
                _forget_cached_answers()
                self._sleep(delay)
        raise SourceError(f"yahoo: {symbol}: no usable answer in {attempts} tries (last: {last})"
                          "; check the network or try later (Yahoo may be rate-limiting this "
                          "address)")

    @staticmethod
    def _meta(ticker: Any) -> dict:
        """The chart metadata this module uses (time zone, current session), read offline."""
        if ticker is None:
            return {}
        try:
            md = ticker.history_metadata
            out = {}
            for k in ("exchangeTimezoneName", "currentTradingPeriod"):
                if k in md:
                    out[k] = md[k]
            return out
        except Exception:  # metadata is a refinement: never fail a fetch over it
            return {}

    def _to_standard(self, symbol: str, raw: pd.DataFrame, interval: str, meta: dict,
                     now: pd.Timestamp) -> pd.DataFrame:
        df = raw.rename(columns=_RENAME)
        idx = pd.DatetimeIndex(df.index)
        tz = meta.get("exchangeTimezoneName") or (str(idx.tz) if idx.tz is not None else "UTC")
        regular = (meta.get("currentTradingPeriod") or {}).get("regular") or {}
        session_end = _ts_utc(regular.get("end"))
        if interval == "1d":
            local = idx.tz_convert(tz) if idx.tz is not None else idx.tz_localize(tz)
            dates = local.tz_localize(None).normalize()
            ends = (dates + pd.Timedelta(days=1)).tz_localize(
                tz, ambiguous="NaT", nonexistent="shift_forward").tz_convert("UTC")
            if session_end is not None:
                same_day = dates == session_end.tz_convert(tz).tz_localize(None).normalize()
                ends = ends.where(~same_day, session_end)
            df.index = dates.tz_localize("UTC")
        else:
            starts = idx.tz_convert("UTC") if idx.tz is not None else idx.tz_localize("UTC")
            ends = starts + pd.Timedelta(minutes=INTERVAL_MINUTES[interval])
            if session_end is not None:
                cut = (starts < session_end) & (ends > session_end)
                ends = ends.where(~cut, session_end)
            df.index = starts
        done = ~pd.isna(ends) & (ends <= now)
        return standardize(df.loc[done], self.name, symbol)
