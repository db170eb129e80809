"""Data-quality checks for bars, and a simple cleaner, against a real exchange calendar.

`check_frame` checks one symbol's raw standard frame (before it becomes `Bars`, so it can
still see duplicates, unsorted rows and bad prices that `Bars` would refuse); `check_bars`
runs it on every symbol of a panel and adds the cross-symbol market for the split check.

Issue kinds (``FATAL_KINDS`` make a backtest wrong; the rest are warnings):

- ``unsorted``, ``duplicate``: rows out of time order / two rows with one timestamp (fatal).
- ``nan_price``: a NaN open/high/low/close inside the symbol's first..last bar (fatal).
- ``bad_price``: a price that is <= 0 or infinite (fatal).
- ``ohlc``: high below open/close/low or low above open/close (fatal).
- ``bad_volume``: negative volume (fatal).
- ``suspected_split``: a one-bar move that looks like an unadjusted split (fatal, see below).
- ``missing_session``: a session of the exchange calendar with no bar, between the symbol's
  own first and last bar (daily; for intraday: a whole session without bars).
- ``missing_bars``: intraday only, one issue per session with some (not all) bars missing.
- ``non_session``: a bar on a day (daily) or at a time (intraday, e.g. extended hours) when
  the exchange is closed.
- ``misaligned``: a daily bar whose timestamp is not 00:00 UTC (the standard label).
- ``zero_volume``: volume exactly 0 (no trades: the price is probably stale).
- ``outlier_return``: ``|log return| > outlier_sigma x robust sigma`` of that symbol, where
  robust sigma = 1.4826 x MAD of its log returns (insensitive to the outliers themselves).

Split heuristic (``suspected_split``): a close-to-close ratio between two consecutive bars of a
symbol that is within ``split_tolerance`` (3 %) of ``1/k`` for a ``k`` in ``split_ratios``
(shares after / shares before: 2 = a 2-for-1 split, price halves; 1/10 = a 1-for-10 reverse
split, price x10), AND the move is larger than ``SPLIT_MIN_SIGMA`` (5) robust sigmas of the
symbol, AND the market did not make a matching move: the median log return of the other
symbols on that bar is not at least half as large in the same direction (with one symbol only,
there is no market to compare with and the ratio test alone decides). 3-for-2 (a 33 % drop)
is not in the defaults: one-day 33 % drops are common real events. AND the new level
persists: the median close of the next ``SPLIT_PERSIST_BARS`` (40) bars has not moved back by
half the jump or more (in log terms), and the move does not merely restore the level of
the bars before a short excursion; a bad print or a thin stock's jump that is soon undone
is reported as an outlier instead (RRC's x1/3 on 1990-04-10 in the bundled data, back to
its old level within six weeks, is such a case). Real crashes of exactly
-50 % or -67 % can still be flagged; check such a date against the company's split history.

Gaps are judged only between each symbol's own first and last bar (a listing or delisting is
not a gap). Exchange sessions come from `mltrader.data.schedules` (exchange-calendars); "24/7"
(crypto: every period) and "24/5" (FX: every period but Friday 17:00 to Sunday 17:00 New
York) are judged against `mltrader.data.calendars.expected_bars`, a missing day being a
``missing_session`` and a partly missing one ``missing_bars``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from mltrader.data.bars import FIELDS, Bars
from mltrader.data.calendars import expected_bars, interval_minutes, session_ids
from mltrader.data.intervals import INTERVALS
from mltrader.data.schedules import calendar_schedule, calendar_sessions
from mltrader.errors import DataError

__all__ = [
    "DEFAULT_SPLIT_RATIOS",
    "FATAL_KINDS",
    "Issue",
    "QualityReport",
    "check_bars",
    "check_frame",
    "clean",
]

DEFAULT_SPLIT_RATIOS: tuple[float, ...] = (
    2, 3, 4, 5, 8, 10, 20, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 8, 1 / 10, 1 / 20,
)
SPLIT_MIN_SIGMA = 5.0
SPLIT_PERSIST_BARS = 40  # a split's new level persists; a move reverted by half is no split
MIN_RETURNS_FOR_SIGMA = 10  # fewer returns: no robust sigma, no outlier check
FATAL_KINDS = frozenset(
    {"unsorted", "duplicate", "nan_price", "bad_price", "ohlc", "bad_volume", "suspected_split"}
)
# what clean(method="drop") removes by default, in this order (a bar counts for the first)
DROP_KINDS: tuple[str, ...] = ("nan_price", "non_session", "zero_volume")
PRICE_FIELDS = ("open", "high", "low", "close")
UNGAPPED_INTERVALS = ("1wk", "1mo")  # bars that span sessions: no calendar gap check
_NS_DAY = 86_400 * 10**9
CONTINUOUS_CALENDARS = ("24/7", "24/5")  # crypto and FX: judged by data/calendars.py


# --------------------------------------------------------------------------- report
@dataclass(frozen=True)
class Issue:
    """One finding: its kind, the symbol, the bar (or session) time, a readable detail."""

    kind: str
    symbol: str
    time: pd.Timestamp | None
    detail: str
    fatal: bool


@dataclass(frozen=True)
class QualityReport:
    """All issues found, with the count per kind in ``summary``, and the calendar and bar
    interval the gaps were judged against (None: not judged)."""

    issues: tuple[Issue, ...]
    summary: dict[str, int]
    calendar: str | None = None
    interval: str | None = None

    @classmethod
    def from_issues(cls, issues: Iterable[Issue], calendar: str | None = None,
                    interval: str | None = None) -> QualityReport:
        items = tuple(issues)
        summary: dict[str, int] = {}
        for i in items:
            summary[i.kind] = summary.get(i.kind, 0) + 1
        return cls(items, summary, calendar, interval)

    @property
    def fatal(self) -> tuple[Issue, ...]:
        """The fatal issues (empty, hence falsy, when the data is safe to backtest)."""
        return tuple(i for i in self.issues if i.fatal)

    @property
    def ok(self) -> bool:
        """True when there is no fatal issue."""
        return not self.fatal

    def to_frame(self) -> pd.DataFrame:
        """One row per issue: kind, symbol, time, detail, fatal."""
        return pd.DataFrame(
            {
                "kind": [i.kind for i in self.issues],
                "symbol": [i.symbol for i in self.issues],
                "time": pd.DatetimeIndex([i.time for i in self.issues], tz="UTC"),
                "detail": [i.detail for i in self.issues],
                "fatal": np.array([i.fatal for i in self.issues], dtype=bool),
            }
        )

    def judged(self, detected: Sequence[str] = ()) -> str:
        """"judged against calendar X, interval Y"; a name in `detected` ("calendar",
        "interval") is marked as chosen by default rather than given."""
        if self.calendar is None and self.interval is None:
            return ""
        cal = "none (no gap check)" if self.calendar is None else self.calendar
        cal += " (default for the symbols)" if "calendar" in detected else ""
        ivl = f"{self.interval}{' (detected)' if 'interval' in detected else ''}"
        if self.interval in UNGAPPED_INTERVALS:
            ivl += " (bars span sessions: no gap check)"
        return f"judged against calendar {cal}, interval {ivl}"

    def where(self, examples: int = 5) -> list[str]:
        """Per warning kind: its count and its first `examples` places (symbol, dates)."""
        lines = []
        for kind in sorted(k for k in self.summary if k not in FATAL_KINDS):
            found = [i for i in self.issues if i.kind == kind]
            parts, last = [], None
            for i in found[:examples]:
                when = "" if i.time is None else _label(i.time)
                parts.append(when if i.symbol == last and when else f"{i.symbol} {when}".strip())
                last = i.symbol
            more = f" ... and {len(found) - examples} more" if len(found) > examples else ""
            lines.append(f"  {kind}: {len(found)} - {', '.join(parts)}{more}")
        return lines

    def text(self, examples: int = 5, detected: Sequence[str] = ()) -> str:
        """A short human summary: counts per kind, the calendar and interval judged against,
        where the warnings are (a few of each kind), then a few fatal issues in detail."""
        judged = self.judged(detected)
        if not self.issues:
            return "data quality: no issues found" + (f" ({judged})" if judged else "")
        fatal = self.fatal
        n_warn = len(self.issues) - len(fatal)
        kinds = sorted(self.summary, key=lambda k: (k not in FATAL_KINDS, k))
        counts = ", ".join(
            f"{k} {self.summary[k]}{' (fatal)' if k in FATAL_KINDS else ''}" for k in kinds
        )
        lines = [f"data quality: {len(fatal)} fatal issue(s), {n_warn} warning(s): {counts}"]
        lines += ([f"  {judged}"] if judged else []) + self.where(examples)
        for i in fatal[:examples]:
            when = "" if i.time is None else f" {_label(i.time)}"
            lines.append(f"  {i.kind}: {i.symbol}{when}: {i.detail}")
        if len(fatal) > examples:
            lines.append(f"  ... and {len(fatal) - examples} more fatal issue(s)")
        return "\n".join(lines)


def _label(t: pd.Timestamp) -> str:
    t = pd.Timestamp(t)
    return str(t.date()) if t == t.normalize() else t.strftime("%Y-%m-%d %H:%M")


def _issue(kind: str, symbol: str, time: Any, detail: str) -> Issue:
    return Issue(kind, symbol, None if time is None else pd.Timestamp(time), detail,
                 kind in FATAL_KINDS)


# --------------------------------------------------------------------------- checks
def _robust_sigma(r: np.ndarray) -> float:
    """1.4826 x MAD (a normal's sigma); falls back to the mean absolute deviation if MAD = 0."""
    if len(r) < MIN_RETURNS_FOR_SIGMA:
        return float("nan")
    med = float(np.median(r))
    dev = np.abs(r - med)
    s = 1.4826 * float(np.median(dev))
    if s == 0.0:
        s = 1.2533 * float(np.mean(dev))
    return s if s > 0 else float("nan")


def _split_name(k: float) -> str:
    if k >= 1:
        return f"{k:g}-for-1 split"
    return f"1-for-{1 / k:g} reverse split"


def check_frame(
    frame: pd.DataFrame,
    symbol: str,
    calendar: Any = "XNYS",
    interval: str = "1d",
    outlier_sigma: float = 10.0,
    split_ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS,
    market: pd.Series | None = None,
    split_tolerance: float = 0.03,
) -> QualityReport:
    """Check one symbol's raw standard frame (see the module doc for the kinds).

    ``market``: log returns of the market (e.g. the median of other symbols) indexed by time,
    for the split heuristic; None = no market comparison. ``calendar``: an exchange code,
    "24/7", "24/5" or a `MarketCalendar`; None skips the calendar checks. A naive index is
    read as UTC.
    """
    calendar = None if calendar is None else str(getattr(calendar, "name", calendar))
    if interval not in INTERVALS:
        raise DataError(f"interval {interval!r} is not supported; use one of "
                        f"{', '.join(INTERVALS)}")
    if "close" not in frame.columns:
        raise DataError(f"{symbol}: the frame has no close column")
    issues: list[Issue] = []
    if frame.empty:
        return QualityReport.from_issues(issues, calendar, interval)
    idx = pd.DatetimeIndex(frame.index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    df = frame.copy()
    df.index = idx.as_unit("ns")

    if not df.index.is_monotonic_increasing:
        i = int(np.argmax(np.diff(df.index.asi8) < 0)) + 1
        issues.append(_issue("unsorted", symbol, df.index[i],
                             f"comes after {_label(df.index[i - 1])}; sort the rows by time"))
        df = df.sort_index(kind="stable")
    dup = df.index.duplicated(keep=False)
    if dup.any():
        times = df.index[dup]
        for t, n in pd.Series(1, index=times).groupby(level=0).sum().items():
            issues.append(_issue("duplicate", symbol, t, f"{n} rows with this timestamp; "
                                 "keep one bar per timestamp"))
        df = df[~df.index.duplicated(keep="last")]

    present = [c for c in PRICE_FIELDS if c in df.columns]
    prices = df[present].to_numpy(dtype=np.float64)
    has_any = ~np.isnan(prices).all(axis=1)
    if not has_any.any():
        issues.append(_issue("nan_price", symbol, None, "no prices at all"))
        return QualityReport.from_issues(issues, calendar, interval)
    lo_row, hi_row = int(np.argmax(has_any)), len(df) - 1 - int(np.argmax(has_any[::-1]))
    df = df.iloc[lo_row:hi_row + 1]  # leading / trailing empty rows are outside the range
    prices = prices[lo_row:hi_row + 1]
    times = df.index

    nan = np.isnan(prices)
    for r in np.flatnonzero(nan.any(axis=1)):
        which = [present[c] for c in np.flatnonzero(nan[r])]
        issues.append(_issue("nan_price", symbol, times[r],
                             f"{'/'.join(which)} missing inside the series; fix or drop the bar"))
    with np.errstate(invalid="ignore"):
        bad = np.isinf(prices) | (prices <= 0)
    for r in np.flatnonzero(bad.any(axis=1)):
        c = int(np.flatnonzero(bad[r])[0])
        issues.append(_issue("bad_price", symbol, times[r],
                             f"{present[c]} is {prices[r, c]!r}; prices must be finite and > 0"))
    if {"high", "low"} <= set(present):
        hi, lo = df["high"].to_numpy(np.float64), df["low"].to_numpy(np.float64)
        tol = 1e-9 * np.abs(hi)
        with np.errstate(invalid="ignore"):
            wrong = hi < lo - tol
            for c in ("open", "close"):
                if c in present:
                    v = df[c].to_numpy(np.float64)
                    wrong |= (v > hi + tol) | (v < lo - tol)
        for r in np.flatnonzero(wrong):
            issues.append(_issue("ohlc", symbol, times[r],
                                 "high/low do not contain open/close; fix the bar"))
    if "volume" in df.columns:
        vol = df["volume"].to_numpy(np.float64)
        for r in np.flatnonzero(vol < 0):
            issues.append(_issue("bad_volume", symbol, times[r], f"volume is {vol[r]:g}"))
        for r in np.flatnonzero(vol == 0):
            issues.append(_issue("zero_volume", symbol, times[r],
                                 "no shares traded: the price may be stale"))

    if interval in UNGAPPED_INTERVALS:
        pass  # a weekly / monthly bar spans sessions: there is no missing session to name
    elif calendar in CONTINUOUS_CALENDARS:
        issues += _calendar_continuous(times, symbol, calendar, interval)
    elif calendar is not None:
        if interval == "1d":
            issues += _calendar_daily(times, symbol, calendar)
        else:
            issues += _calendar_intraday(times, symbol, calendar, interval_minutes(interval))

    issues += _return_checks(df["close"].to_numpy(np.float64), times, symbol, outlier_sigma,
                             split_ratios, split_tolerance, market)
    return QualityReport.from_issues(issues, calendar, interval)


def _calendar_daily(times: pd.DatetimeIndex, symbol: str, calendar: str) -> list[Issue]:
    out: list[Issue] = []
    dates = times.normalize()
    for r in np.flatnonzero(dates != times):
        out.append(_issue("misaligned", symbol, times[r],
                          "daily bar not at 00:00 UTC of its session date"))
    sessions = calendar_sessions(calendar, dates[0], dates[-1])
    for r in np.flatnonzero(~dates.isin(sessions)):
        out.append(_issue("non_session", symbol, times[r],
                          f"{dates[r]:%A} {dates[r].date()} is not a {calendar} session"))
    for s in sessions[~sessions.isin(dates)]:
        out.append(_issue("missing_session", symbol, s, f"no bar for this {calendar} session"))
    return out


def _calendar_intraday(times: pd.DatetimeIndex, symbol: str, calendar: str,
                       minutes: int) -> list[Issue]:
    """Bars outside sessions, and per session the number of missing bar slots.

    A slot is a ``minutes``-long step of the UTC clock; a bar fills the slot it starts in and
    a session expects every slot it touches, so session-aligned (09:30, 10:30 ...) and
    clock-aligned (09:00, 10:00 ...) hourly bars are both complete.
    """
    out: list[Issue] = []
    p = minutes * 60 * 10**9
    t = times.asi8
    sched = calendar_schedule(calendar, times[0] - pd.Timedelta(days=1), times[-1])
    opens = pd.DatetimeIndex(sched["open"]).as_unit("ns").asi8
    closes = pd.DatetimeIndex(sched["close"]).as_unit("ns").asi8
    j = np.searchsorted(opens, t + p, side="left") - 1  # last session opening before bar end
    inside = (j >= 0) & (closes[np.clip(j, 0, None)] > t)
    for r in np.flatnonzero(~inside):
        out.append(_issue("non_session", symbol, times[r],
                          f"bar outside {calendar} regular trading hours"))
    slots = np.unique(t[inside] // p)
    first, last = t[0] // p, t[-1] // p
    for s in range(len(sched)):
        a = max(opens[s] // p, first)
        b = min((closes[s] - 1) // p, last)
        if b < a:
            continue
        expected = int(b - a + 1)
        have = int(np.searchsorted(slots, b, side="right") - np.searchsorted(slots, a))
        if have == 0:
            out.append(_issue("missing_session", symbol, sched.index[s],
                              f"no bars in this {calendar} session"))
        elif have < expected:
            out.append(_issue("missing_bars", symbol, sched.index[s],
                              f"{expected - have} of {expected} {minutes}-minute bars missing"))
    return out


def _calendar_continuous(times: pd.DatetimeIndex, symbol: str, calendar: str,
                         interval: str) -> list[Issue]:
    """24/7 and 24/5 (data/calendars.py): bars in the FX weekend close, and missing periods
    (a whole day missing: ``missing_session``; part of one: ``missing_bars``)."""
    out: list[Issue] = []
    minutes = interval_minutes(interval)
    p = minutes * 60 * 10**9
    if interval == "1d":
        for r in np.flatnonzero(times.normalize() != times):
            out.append(_issue("misaligned", symbol, times[r], "daily bar not at 00:00 UTC"))
    slots = times.asi8 // p * p
    expected = expected_bars(calendar, pd.Timestamp(slots[0], tz="UTC"), times[-1], interval)
    exp = expected.asi8
    for r in np.flatnonzero(~np.isin(slots, exp)):
        out.append(_issue("non_session", symbol, times[r], "bar in the FX weekend close "
                          "(Friday 17:00 to Sunday 17:00 New York)"))
    missing = ~np.isin(exp, slots)
    if interval == "1d":
        for t in expected[missing]:
            out.append(_issue("missing_session", symbol, t, f"no bar for this {calendar} day"))
        return out
    day = session_ids(calendar, expected)
    for d in np.unique(day[missing]):
        n_exp, n_miss = int((day == d).sum()), int((missing & (day == d)).sum())
        when = pd.Timestamp(int(d) * _NS_DAY, tz="UTC")
        if n_miss == n_exp:
            out.append(_issue("missing_session", symbol, when, f"no bars in this {calendar} day"))
        else:
            out.append(_issue("missing_bars", symbol, when,
                              f"{n_miss} of {n_exp} {minutes}-minute bars missing"))
    return out


def _return_checks(close: np.ndarray, times: pd.DatetimeIndex, symbol: str,
                   outlier_sigma: float, split_ratios: Sequence[float], tol: float,
                   market: pd.Series | None) -> list[Issue]:
    out: list[Issue] = []
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(close) & (close > 0)
    rows = np.flatnonzero(ok)
    if len(rows) < 2:
        return out
    c = close[rows]
    r = np.diff(np.log(c))
    sigma = _robust_sigma(r)
    ratio = np.exp(r)
    k_of = np.full(len(r), np.nan)  # the first split ratio each move matches
    for k in split_ratios[::-1]:
        k_of[np.abs(ratio * k - 1.0) <= tol] = float(k)
    split = ~np.isnan(k_of)
    if np.isfinite(sigma):
        split &= np.abs(r) > SPLIT_MIN_SIGMA * sigma
        big = np.abs(r) > outlier_sigma * sigma
    else:
        big = np.zeros(len(r), dtype=bool)
    mkt = np.full(len(r), np.nan)
    if market is not None:
        m = pd.Series(market)
        m.index = pd.DatetimeIndex(m.index).tz_convert("UTC").as_unit("ns")
        mkt = m.reindex(times[rows[1:]]).to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        matched = (mkt * r > 0) & (np.abs(mkt) >= np.abs(r) / 2)
    split &= ~matched
    # a split moves the level for good; a move mostly undone within the next bars is not one
    # (and a move back to where the price was before a short excursion is not one either)
    for i in np.flatnonzero(split):
        after = c[i + 1: i + 1 + SPLIT_PERSIST_BARS]
        before = c[max(0, i + 1 - SPLIT_PERSIST_BARS): i + 1]
        undone = len(after) >= 5 and abs(np.log(np.median(after) / c[i + 1])) >= abs(r[i]) / 2
        undoing = len(before) >= 5 and abs(np.log(np.median(before) / c[i])) >= abs(r[i]) / 2
        if undone or undoing:
            split[i] = False
            big[i] = True  # still an outlier worth a warning
    for i in np.flatnonzero(split | big):
        ri, when = float(r[i]), times[rows[i + 1]]
        if split[i]:
            mi = float(mkt[i])
            mtxt = ("no market to compare" if not np.isfinite(mi)
                    else f"the market moved {np.expm1(mi):+.1%}")
            out.append(_issue(
                "suspected_split", symbol, when,
                f"close {c[i]:.4g} -> {c[i + 1]:.4g} (x{ratio[i]:.3f}), near a "
                f"{_split_name(k_of[i])}, {mtxt}; use split-adjusted prices",
            ))
        else:
            out.append(_issue(
                "outlier_return", symbol, when,
                f"log return {ri:+.3f} is {abs(ri) / sigma:.0f} robust sigmas "
                f"(sigma {sigma:.4f}); close {c[i]:.4g} -> {c[i + 1]:.4g}",
            ))
    return out


def _symbol_frame(bars: Bars, j: int) -> pd.DataFrame:
    cols = {f: getattr(bars, f)[:, j] for f in FIELDS if getattr(bars, f) is not None}
    df = pd.DataFrame(cols, index=bars.index)
    price = df[[c for c in PRICE_FIELDS if c in df.columns]]
    return df[price.notna().any(axis=1)]  # an all-NaN row in Bars = no bar that day


def _log_returns(close: np.ndarray) -> np.ndarray:
    """(T, N) log returns between each symbol's consecutive closes, at the later row."""
    out = np.full(close.shape, np.nan)
    for j in range(close.shape[1]):
        rows = np.flatnonzero(np.isfinite(close[:, j]))
        if len(rows) > 1:
            out[rows[1:], j] = np.diff(np.log(close[rows, j]))
    return out


def check_bars(
    bars: Bars,
    calendar: Any = "XNYS",
    interval: str = "1d",
    outlier_sigma: float = 10.0,
    split_ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS,
    split_tolerance: float = 0.03,
) -> QualityReport:
    """Check every symbol of a panel with `check_frame`; the "market" for the split check
    is the median log return of the other symbols on each bar. In `Bars`, a bar whose prices
    are all NaN means "no bar" (a gap), not a NaN price. ``calendar``: an exchange code,
    "24/7", "24/5" or a `MarketCalendar` (None: no calendar checks)."""
    calendar = None if calendar is None else str(getattr(calendar, "name", calendar))
    rets = _log_returns(bars.close)
    issues: list[Issue] = []
    n = len(bars.symbols)
    for j, sym in enumerate(bars.symbols):
        market = None
        if n > 1:
            others = np.delete(rets, j, axis=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # rows where none traded
                market = pd.Series(np.nanmedian(others, axis=1), index=bars.index)
        rep = check_frame(_symbol_frame(bars, j), sym, calendar, interval, outlier_sigma,
                          split_ratios, market, split_tolerance)
        issues.extend(rep.issues)
    return QualityReport.from_issues(issues, calendar, interval)


# --------------------------------------------------------------------------- cleaning
def clean(
    bars: Bars,
    method: Literal["drop", "ffill"],
    report: QualityReport | None = None,
    kinds: Sequence[str] = DROP_KINDS,
    calendar: str | None = "XNYS",
    interval: str = "1d",
) -> tuple[Bars, dict[str, int]]:
    """Fix what the report found; returns the new bars and the cells changed per kind.

    ``drop``: bars with an issue of one of ``kinds`` (default: partial-NaN bars, bars on
    non-session days/times, zero-volume bars; add "outlier_return" to drop outliers too) are
    set to NaN in every field; a cell counts once, for the first kind in ``kinds`` order. Rows
    left with no close for any symbol are removed. Suspected splits are not fixed here: use
    split-adjusted data.
    ``ffill``: every ``missing_session`` (daily) gets a bar: close = the previous close,
    open = high = low = that close, volume 0 (so a new report lists them as ``zero_volume``);
    the count is every cell written.
    ``report`` defaults to ``check_bars(bars, calendar, interval)``.
    """
    if method not in ("drop", "ffill"):
        raise DataError(f"unknown cleaning method {method!r}; use 'drop' or 'ffill'")
    if report is None:
        report = check_bars(bars, calendar=calendar, interval=interval)
    arrays = {f: getattr(bars, f).copy() for f in FIELDS if getattr(bars, f) is not None}
    col = {s: j for j, s in enumerate(bars.symbols)}
    if method == "drop":
        counts = {k: 0 for k in kinds}
        order = {k: n for n, k in enumerate(kinds)}
        todo = sorted((i for i in report.issues if i.kind in order and i.time is not None
                       and i.symbol in col), key=lambda i: order[i.kind])
        rows = bars.index.get_indexer(pd.DatetimeIndex([i.time for i in todo], tz="UTC"))
        for issue, r in zip(todo, rows, strict=True):
            if r < 0:
                continue  # e.g. a per-session intraday issue: not one bar
            c = col[issue.symbol]
            for a in arrays.values():
                if not np.isnan(a[r, c]):
                    a[r, c] = np.nan
                    counts[issue.kind] += 1
        keep = ~np.isnan(arrays["close"]).all(axis=1)
        for f in arrays:
            arrays[f] = arrays[f][keep]
        index = bars.index[keep]
    else:
        if interval != "1d" and any(i.kind == "missing_bars" for i in report.issues):
            raise DataError("ffill fills missing daily sessions only; for intraday bars use "
                            "method='drop' or resample to daily")
        missing = [i for i in report.issues if i.kind == "missing_session" and i.symbol in col
                   and i.time is not None]
        index = bars.index.union(pd.DatetimeIndex([i.time for i in missing], tz="UTC")
                                 .as_unit(bars.index.unit).unique())
        pos = index.get_indexer(bars.index)
        grown = {}
        for f, a in arrays.items():
            g = np.full((len(index), a.shape[1]), np.nan)
            g[pos] = a
            grown[f] = g
        arrays = grown
        fill = np.zeros(arrays["close"].shape, dtype=bool)
        fill[index.get_indexer(pd.DatetimeIndex([i.time for i in missing], tz="UTC")),
             [col[i.symbol] for i in missing]] = True
        prev = pd.DataFrame(arrays["close"]).ffill().to_numpy()
        n = 0
        for f, a in arrays.items():
            todo = fill & np.isnan(a) & ~np.isnan(prev)
            if f == "volume":
                a[todo] = 0.0
            else:
                a[todo] = prev[todo]
            n += int(todo.sum())
        counts = {"missing_session": n}
    return (Bars(index=index, symbols=bars.symbols, source=bars.source, **arrays), counts)
