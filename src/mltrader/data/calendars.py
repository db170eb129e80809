"""Which calendar a dataset trades on, and what that implies for everything that counts time.

A `MarketCalendar` is an exchange-calendars code (XNYS, XLON, XSHG, XHKG, XTKS, ...), "24/7"
(crypto: every minute of every day) or "24/5" (FX: Sunday 17:00 to Friday 17:00 New York).
From it follow:

- `bars_per_year`: the annualisation factor. An exchange's sessions per year are counted
  from its own calendar over `ANNUALISATION_YEARS` (a fixed window, so a result does not
  change with the date it is run); intraday bars per session are the regular session's
  length over the interval, rounded up for a partial last bar (NYSE hourly: 6.5 h -> 7),
  each half of a session with a lunch break counted on its own. 24/7 has 365 days of 24 h,
  24/5 has 52 x 5 = 260 days of 24 h. Weekly bars are 52 a year and monthly 12 everywhere.
- `session_ids`: each bar's trading session (days since 1970-01-01) for the daily loss limit
  and the per-day trade limits: an exchange's session date (a bar inside a session belongs
  to it; a daily bar at 00:00 UTC to that date; any other bar to the exchange's local
  date), the UTC day for 24/7, and for 24/5 the FX day that rolls at 17:00 New York.
- `expected_bars`: the bars a complete series has, for gap detection (data/quality.py).

`resolve_calendar` picks the calendar of a run: `data.calendar` when set, else a default
from the symbols' suffix (AAPL -> XNYS, 0700.HK -> XHKG, BTC-USD -> 24/7, EURUSD=X -> 24/5).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from mltrader.data.intervals import INTERVALS, detect_interval
from mltrader.data.schedules import calendar_schedule, calendar_sessions, get_calendar
from mltrader.errors import DataError

__all__ = [
    "ANNUALISATION_YEARS",
    "INTERVALS",
    "MarketCalendar",
    "bars_per_year",
    "expected_bars",
    "periods_per_year",
    "resolve_calendar",
    "session_ids",
    "symbol_calendar",
    "weekend_hint",
]

CRYPTO, FX = "24/7", "24/5"
CONTINUOUS = (CRYPTO, FX)
DEFAULT = "XNYS"
_MINUTES = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "1d": 1440}
ANNUALISATION_YEARS = (2015, 2024)  # ten full years of sessions: XNYS 251.6, XLON 252.6
FX_TZ = "America/New_York"
_FX_SHIFT = pd.Timedelta(hours=7).value  # 17:00 New York + 7 h = 00:00 of the next FX day
_NS_DAY = 86_400 * 10**9

# symbol suffix -> exchange (exchange_calendars has no Shenzhen calendar, XSHE: Shenzhen
# trades on the same days and hours as Shanghai, so .SZ uses XSHG; so does Beijing, .BJ)
SUFFIXES = {"SS": "XSHG", "SH": "XSHG", "SZ": "XSHG", "BJ": "XSHG", "HK": "XHKG", "L": "XLON",
            "T": "XTKS", "TO": "XTSE", "DE": "XETR", "PA": "XPAR", "AX": "XASX"}
# an A-share code without a suffix: 600519, sh600519, SZ.000001
_CN_CODE = re.compile(r"^(?:(?:SH|SZ|BJ)\.?)?\d{6}$")
CRYPTO_BASES = frozenset({
    "BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "BCH", "BNB", "AVAX", "MATIC",
    "POL", "LINK", "TRX", "XLM", "ATOM", "UNI", "ETC", "SHIB", "TON", "XMR", "FIL", "APT",
    "ARB", "OP", "NEAR", "ICP", "AAVE", "SUI", "PEPE", "USDT", "USDC", "DAI",
})
CRYPTO_QUOTES = ("USDT", "USDC", "USD", "EUR", "BTC", "ETH")
CURRENCIES = frozenset({
    "USD", "EUR", "JPY", "GBP", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK", "DKK", "HKD", "SGD",
    "CNY", "CNH", "MXN", "ZAR", "TRY", "PLN", "HUF", "CZK", "INR", "KRW", "BRL", "ILS", "THB",
    "TWD",
})


@dataclass(frozen=True)
class MarketCalendar:
    """The calendar a dataset trades on: an exchange-calendars code, "24/7" or "24/5"."""

    name: str

    def __post_init__(self) -> None:
        name = str(self.name).strip()
        if name not in CONTINUOUS:
            name = name.upper()
            if name not in _exchange_names():
                raise DataError(
                    f"unknown calendar {self.name!r}; use an exchange-calendars code (XNYS, "
                    "XNAS, XLON, XSHG, XHKG, XTKS, XTSE, XETR, XASX, ...), \"24/7\" (crypto) "
                    "or \"24/5\" (FX)")
        object.__setattr__(self, "name", name)

    @property
    def is_exchange(self) -> bool:
        """True for an exchange's calendar (sessions with hours), False for 24/7 and 24/5."""
        return self.name not in CONTINUOUS

    def __str__(self) -> str:
        return self.name


@lru_cache(maxsize=1)
def _exchange_names() -> frozenset[str]:
    try:
        import exchange_calendars as xcals
    except ImportError as e:  # pragma: no cover - a core dependency
        raise DataError("exchange-calendars is not installed; pip install "
                        "'exchange-calendars>=4.13'") from e
    return frozenset(xcals.get_calendar_names(include_aliases=True))


def _as_calendar(cal: MarketCalendar | str) -> MarketCalendar:
    return cal if isinstance(cal, MarketCalendar) else MarketCalendar(cal)


# --------------------------------------------------------------------------- defaults
def symbol_calendar(symbol: str) -> str:
    """The default calendar of one symbol, from its suffix or its shape (pair, FX cross)."""
    s = str(symbol).strip().upper()
    if s.endswith("=X"):
        return FX
    if "." in s:
        exchange = SUFFIXES.get(s.rsplit(".", 1)[1])
        if exchange is not None:
            return exchange
    for sep in ("-", "/"):
        if sep in s:
            base, _, quote = s.partition(sep)
            if base in CRYPTO_BASES and quote in CRYPTO_QUOTES:
                return CRYPTO
            if base in CURRENCIES and quote in CURRENCIES:
                return FX
    for quote in CRYPTO_QUOTES:  # BTCUSDT, ETHUSD
        if s.endswith(quote) and s[: -len(quote)] in CRYPTO_BASES:
            return CRYPTO
    if len(s) == 6 and s[:3] in CURRENCIES and s[3:] in CURRENCIES:
        return FX
    if _CN_CODE.match(s):  # an A-share code without suffix: 600519, sh600519, SZ.000001
        return "XSHG"
    return DEFAULT


def resolve_calendar(name: str | None, symbols: Sequence[str]) -> MarketCalendar:
    """The run's calendar: `name` (data.calendar) when given, else the symbols' default."""
    if name is not None and str(name).strip():
        return MarketCalendar(name)
    found: dict[str, list[str]] = {}
    for sym in symbols:
        found.setdefault(symbol_calendar(sym), []).append(str(sym))
    if len(found) > 1:
        which = "; ".join(f"{', '.join(s[:3])}{' ...' if len(s) > 3 else ''} -> {c}"
                          for c, s in found.items())
        raise DataError(f"the symbols trade on different calendars ({which}); set "
                        "data.calendar (e.g. `calendar: XNYS`, \"24/7\" or \"24/5\") to say "
                        "which one sessions and annualisation follow")
    return MarketCalendar(next(iter(found), DEFAULT))


# --------------------------------------------------------------------------- annualisation
def _check_interval(interval: str) -> None:
    if interval not in INTERVALS:
        raise DataError(f"interval {interval!r} is not supported; use one of "
                        f"{', '.join(INTERVALS)}")


@lru_cache(maxsize=32)
def _exchange_schedule(name: str) -> pd.DataFrame:
    """The exchange's sessions in `ANNUALISATION_YEARS` (open, break, close in UTC)."""
    first, last = ANNUALISATION_YEARS
    a, b = pd.Timestamp(f"{first}-01-01"), pd.Timestamp(f"{last}-12-31")
    sched = get_calendar(name, a, b).schedule
    return sched.loc[(sched.index >= a) & (sched.index <= b)]


def sessions_per_year(name: str) -> float:
    """Mean sessions a year of an exchange over `ANNUALISATION_YEARS`."""
    first, last = ANNUALISATION_YEARS
    return len(_exchange_schedule(name)) / (last - first + 1)


@lru_cache(maxsize=64)
def bars_per_session(name: str, minutes: int) -> int:
    """Bars of `minutes` in the exchange's regular session (the most common one), each part
    of a session with a lunch break rounded up on its own."""
    sched = _exchange_schedule(name)
    p = minutes * 60 * 10**9

    def ns(col: str) -> np.ndarray:
        return pd.DatetimeIndex(sched[col]).as_unit("ns").asi8

    opens, closes = ns("open"), ns("close")
    counts = -((opens - closes) // p)  # ceil((close - open) / p)
    if "break_start" in sched and sched["break_start"].notna().any():
        has = sched["break_start"].notna().to_numpy()
        bs = np.where(has, ns("break_start"), closes)
        be = np.where(has, ns("break_end"), closes)
        counts = -((opens - bs) // p) - ((be - closes) // p)
    values, freq = np.unique(counts, return_counts=True)
    return int(values[np.flatnonzero(freq == freq.max())[-1]])


def bars_per_year(cal: MarketCalendar | str, interval: str) -> float:
    """Bars a year of `interval` on this calendar: the factor that annualises returns."""
    cal = _as_calendar(cal)
    _check_interval(interval)
    if interval == "1wk":
        return 52.0
    if interval == "1mo":
        return 12.0
    per_day = 1440 // _MINUTES[interval]
    if cal.name == CRYPTO:
        return 365.0 * per_day
    if cal.name == FX:
        return 52.0 * 5.0 * per_day
    sessions = sessions_per_year(cal.name)
    if interval == "1d":
        return sessions
    return sessions * bars_per_session(cal.name, _MINUTES[interval])


# --------------------------------------------------------------------------- sessions
def _utc_ns(index: Any) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return idx.as_unit("ns")


def _local_days(idx: pd.DatetimeIndex, tz: Any, shift: int = 0) -> np.ndarray:
    """Days since the epoch of each time's wall-clock date in `tz` (after adding `shift` ns)."""
    wall = idx.tz_convert(tz).tz_localize(None).as_unit("ns").asi8
    return (wall + shift) // _NS_DAY


def session_ids(cal: MarketCalendar | str, index: pd.DatetimeIndex) -> np.ndarray:
    """Each bar's trading session as days since 1970-01-01 (int64); see the module doc.

    Decided bar by bar (never from the neighbours), so one timestamp alone, as the live
    runner sees it, gets the same session as in a backtest over the whole index.
    """
    cal = _as_calendar(cal)
    idx = _utc_ns(index)
    t = idx.asi8
    if len(t) == 0:
        return np.empty(0, dtype=np.int64)
    if cal.name == CRYPTO:
        return (t // _NS_DAY).astype(np.int64)
    if cal.name == FX:
        return _local_days(idx, FX_TZ, _FX_SHIFT).astype(np.int64)
    if not (t % _NS_DAY).any():
        # daily bars stamped 00:00 UTC (the standard label) are their date: a session that
        # holds 00:00 UTC (Tokyo's open, Sydney's in summer) is labelled that local date too
        return (t // _NS_DAY).astype(np.int64)
    sched = calendar_schedule(cal.name, pd.Timestamp(t.min(), tz="UTC") - pd.Timedelta(days=2),
                              pd.Timestamp(t.max(), tz="UTC") + pd.Timedelta(days=1))
    opens = pd.DatetimeIndex(sched["open"]).as_unit("ns").asi8
    closes = pd.DatetimeIndex(sched["close"]).as_unit("ns").asi8
    labels = pd.DatetimeIndex(sched.index).as_unit("ns").asi8 // _NS_DAY
    j = np.searchsorted(opens, t, side="right") - 1
    jj = np.clip(j, 0, None)
    inside = (j >= 0) & (t < closes[jj]) if len(opens) else np.zeros(len(t), dtype=bool)
    tz = get_calendar(cal.name, idx[0], idx[-1]).tz
    other = np.where(t % _NS_DAY == 0, t // _NS_DAY, _local_days(idx, tz))
    return np.where(inside, labels[jj] if len(opens) else 0, other).astype(np.int64)


def fx_closed(index: pd.DatetimeIndex) -> np.ndarray:
    """True for times in the FX weekend close (Friday 17:00 to Sunday 17:00 New York)."""
    days = session_ids(MarketCalendar(FX), index)
    return (days + 3) % 7 >= 5  # 1970-01-01 was a Thursday; Monday = 0


_DAY_NAMES = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays",
              "Sundays")


def weekend_hint(cal: MarketCalendar | str, index: pd.DatetimeIndex, interval: str,
                 how: str = "data.calendar: {cal} (--set data.calendar={cal})") -> str | None:
    """A warning when bars of an exchange calendar fall on weekdays it never trades (crypto or
    FX data whose symbols named no calendar, e.g. a Binance or MetaTrader export): those bars
    would be annualised and grouped into days as that exchange's sessions. None when at most
    5% of the dates with bars are such days, for weekly / monthly bars, and for 24/7 / 24/5.
    ``how`` says how to set the calendar, with ``{cal}`` for the suggested one."""
    cal = _as_calendar(cal)
    if not cal.is_exchange or interval in ("1wk", "1mo") or len(index) == 0:
        return None
    trading = np.unique(pd.DatetimeIndex(_exchange_schedule(cal.name).index).day_of_week)
    days = np.unique(_utc_ns(index).asi8 // _NS_DAY)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    off = ~np.isin(weekday, trading)
    n = int(off.sum())
    if n == 0 or n <= 0.05 * len(days):
        return None
    names = " and ".join(_DAY_NAMES[d] for d in np.unique(weekday[off]))
    return (f"{n} of the {len(days)} dates with bars are {names}, when {cal.name} never "
            f"trades, but time is counted on {cal.name} (annualisation, the daily limits): for "
            f"a market that trades every day (crypto) set {how.format(cal=CRYPTO)}, Sunday to "
            f"Friday (FX) {how.format(cal=FX)}")


# --------------------------------------------------------------------------- gaps
def expected_bars(cal: MarketCalendar | str, start: Any, end: Any,
                  interval: str) -> pd.DatetimeIndex:
    """The bar start times (UTC) a complete series has in [start, end], for gap detection.

    24/7: every period; 24/5: every period outside the weekend close; an exchange: its
    sessions (daily, labelled 00:00 UTC) or every `interval` step of the UTC clock that a
    session touches (intraday, as `data.quality` counts them). Periods are aligned to the
    UTC clock (hourly bars at :00, daily at midnight).
    """
    cal = _as_calendar(cal)
    _check_interval(interval)
    if interval not in _MINUTES:
        raise DataError(f"gap detection needs a bar interval of 1m .. 1d, not {interval!r}")
    a, b = _utc_ns([start])[0], _utc_ns([end])[0]
    p = _MINUTES[interval] * 60 * 10**9
    if not cal.is_exchange:
        first = -(-a.value // p) * p
        # integer count: np.arange's float length drops the last slot at ns magnitudes
        slots = first + p * np.arange(max((b.value - first) // p + 1, 0), dtype=np.int64)
        out = pd.DatetimeIndex(slots.astype("datetime64[ns]")).tz_localize("UTC")
        return out[~fx_closed(out)] if cal.name == FX else out
    if interval == "1d":
        return calendar_sessions(cal.name, a, b)
    sched = calendar_schedule(cal.name, a - pd.Timedelta(days=1), b)
    opens = pd.DatetimeIndex(sched["open"]).as_unit("ns").asi8 // p
    closes = (pd.DatetimeIndex(sched["close"]).as_unit("ns").asi8 - 1) // p
    parts = [np.arange(o, c + 1, dtype=np.int64) for o, c in zip(opens, closes, strict=True)]
    slots = np.unique(np.concatenate(parts)) * p if parts else np.empty(0, dtype=np.int64)
    slots = slots[(slots >= a.value // p * p) & (slots <= b.value)]
    return pd.DatetimeIndex(slots.astype("datetime64[ns]")).tz_localize("UTC")


def interval_minutes(interval: str) -> int:
    """Minutes of an intraday or daily interval (1d = 1440)."""
    _check_interval(interval)
    if interval not in _MINUTES:
        raise DataError(f"interval {interval!r} has no fixed length in minutes")
    return _MINUTES[interval]


def periods_per_year(index: pd.DatetimeIndex, calendar: MarketCalendar | str | None = None,
                     interval: str | None = None) -> float:
    """Bars per year; annualised return, volatility and Sharpe follow it.

    With a `calendar` (data/calendars.py): that calendar's bars a year of `interval`
    (detected from the index when None), e.g. XNYS daily ~252, 24/7 daily 365, 24/5 hourly
    6,240. Without one (the old rule): 252 sessions x the median bars per session for
    intraday data (390 for 1-minute bars of a 6.5-hour session, 7 for hourly), 252 for
    daily, 52 weekly, 12 monthly."""
    if calendar is not None:
        return bars_per_year(calendar, interval or detect_interval(index))
    if len(index) < 3:
        return 252.0
    local = index.tz_localize(None) if index.tz is not None else index
    days = local.normalize()
    per_day = pd.Series(1, index=days).groupby(level=0).size()
    if per_day.median() > 1:
        return 252.0 * float(per_day.median())
    gap = float(np.median(np.diff(days.to_numpy()).astype("timedelta64[s]").astype(float)))
    gap /= 86_400.0
    if gap >= 27:
        return 12.0
    if gap >= 6:
        return 52.0
    return 252.0
