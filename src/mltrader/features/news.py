"""News sentiment as causal features: each scored item is assigned to the first bar whose
close comes AFTER its publication, then aggregated per symbol and bar.

An item published at or after bar t's close (the exchange calendar's session close for
daily bars, early closes included; the bar's end for intraday bars, which are labelled by
their start) counts for bar t+1: a decision taken at t's close could not have read it. Over
a weekend or a holiday the next bar is the next session. Items after the last bar are kept
out (they belong to a bar that has not happened), and so are items from before the bar
preceding the first one (they belong to bars before the data).

Features (T x N, per symbol and bar; 0 where a symbol had no news):

* ``news_score``: the mean score of the bar's items (scores in [-1, 1]);
* ``news_count``: how many items the bar got;
* ``news_surprise_N``: the bar's mean score minus the mean score of the items of the N
  bars before it (taken as 0, neutral, when they had none); 0 at a bar without items;
* ``news_decay_H``: the item-weighted mean score of every item so far, each weighted by
  0.5 ** (bars since it / H): recent news counts most, old news fades with half-life H bars.

The news they read is registered once per process (`use_news`), by the pipeline from the
config's ``news:`` section and by the live runner as items stream in; a sentiment feature
without registered news is a one-line ConfigError naming the fix.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np
import pandas as pd

from mltrader.data.bars import Bars
from mltrader.data.calendars import CONTINUOUS, interval_minutes, resolve_calendar
from mltrader.data.intervals import detect_interval
from mltrader.data.schedules import calendar_schedule
from mltrader.errors import ConfigError

SCORED_COLUMNS = ("time", "symbol", "score")


@dataclass(frozen=True)
class NewsPanel:
    """Scored news, one row per (item, symbol): ``time`` (UTC, sorted), ``symbol``,
    ``score``; and the calendar whose session closes decide the bars (None: the symbols')."""

    scored: pd.DataFrame
    calendar: str | None = None


_LOCK = threading.Lock()
_ACTIVE: list[NewsPanel] = []


def use_news(scored: pd.DataFrame | None, calendar: str | None = None) -> None:
    """Register the scored news the sentiment features read (None: forget it)."""
    with _LOCK:
        _ACTIVE.clear()
        if scored is not None:
            _ACTIVE.append(NewsPanel(check_scored(scored), calendar))


def add_news(scored: pd.DataFrame) -> None:
    """Append newly arrived scored items (the live news stream) to the registered news."""
    new = check_scored(scored)
    with _LOCK:
        if not _ACTIVE:
            _ACTIVE.append(NewsPanel(new))
            return
        old = _ACTIVE[0]
        both = pd.concat([old.scored, new], ignore_index=True).sort_values(
            "time", kind="stable", ignore_index=True)
        _ACTIVE[0] = NewsPanel(both, old.calendar)


def active_news() -> NewsPanel:
    with _LOCK:
        if not _ACTIVE:
            raise ConfigError(
                "the news_* features need news: add a `news:` section to the config (e.g. "
                "news: {source: file, path: news.parquet, scorer: vader}; `mltrader news "
                "import FILE` makes the file)")
        return _ACTIVE[0]


def check_scored(scored: pd.DataFrame) -> pd.DataFrame:
    """The scored frame with UTC times, upper-case symbols and finite scores, time-sorted."""
    missing = [c for c in SCORED_COLUMNS if c not in scored.columns]
    if missing:
        raise ConfigError(f"scored news needs columns {', '.join(SCORED_COLUMNS)}; missing "
                          f"{', '.join(missing)}")
    out = scored.loc[:, list(SCORED_COLUMNS)].copy()
    t = pd.DatetimeIndex(out["time"])
    if t.tz is None:
        raise ConfigError("scored news times must be time-zone aware (UTC)")
    out["time"] = t.tz_convert("UTC")
    out["symbol"] = out["symbol"].astype(str).str.upper()
    out["score"] = pd.to_numeric(out["score"], errors="coerce").astype("float64")
    if not np.isfinite(out["score"].to_numpy()).all():
        raise ConfigError("a news score is NaN or infinite; scorers must return numbers in "
                          "[-1, 1]")
    return out.sort_values("time", kind="stable", ignore_index=True)


# --------------------------------------------------------------------------- alignment
def bar_close_times(index: pd.DatetimeIndex, calendar: str | None,
                    symbols: tuple[str, ...] = ()) -> pd.DatetimeIndex:
    """When each bar's close is known (UTC): the session close of a daily bar on an
    exchange calendar, the end of the day for a 24/7 or 24/5 daily bar, else the label plus
    the bar's length (intraday bars are labelled by their start)."""
    idx = pd.DatetimeIndex(index).tz_convert("UTC")
    if not len(idx):
        return idx
    interval = detect_interval(idx) if len(idx) > 1 else "1d"
    cal = resolve_calendar(calendar, list(symbols) or ["SPY"])
    if interval != "1d":
        return idx + pd.Timedelta(interval_minutes(interval), "min")
    day_end = idx.normalize() + pd.Timedelta(days=1)
    if cal.name in CONTINUOUS:
        return day_end
    sched = calendar_schedule(cal.name, idx[0], idx[-1])
    closes = pd.DatetimeIndex(sched["close"].reindex(idx.normalize()))
    return closes.where(closes.notna(), day_end)  # a bar on no session: its day's end


def assign_bars(times: pd.DatetimeIndex, closes: pd.DatetimeIndex) -> np.ndarray:
    """Each time's bar: the first whose close is strictly after it (len(closes) when none)."""
    t = pd.DatetimeIndex(times).tz_convert("UTC").as_unit("ns").asi8
    c = pd.DatetimeIndex(closes).tz_convert("UTC").as_unit("ns").asi8
    return np.searchsorted(c, t, side="right")


# per Bars object: the panel its sums were made from and the sums; the four news features
# of one compute share one alignment (a new panel, e.g. a streamed item, recomputes)
_PER_BAR: WeakKeyDictionary[Bars, tuple[NewsPanel, np.ndarray, np.ndarray]] = (
    WeakKeyDictionary())


def per_bar(bars: Bars, panel: NewsPanel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sum of scores, item count) per bar and symbol, (T, N) each."""
    panel = panel or active_news()
    hit = _PER_BAR.get(bars)
    if hit is not None and hit[0] is panel:
        return hit[1], hit[2]
    total, count = _per_bar(bars, panel)
    total.flags.writeable = count.flags.writeable = False  # shared by the features
    _PER_BAR[bars] = (panel, total, count)
    return total, count


def _per_bar(bars: Bars, panel: NewsPanel) -> tuple[np.ndarray, np.ndarray]:
    T, N = len(bars.index), len(bars.symbols)
    total, count = np.zeros((T, N)), np.zeros((T, N))
    news = panel.scored
    if not len(news) or not T:
        return total, count
    col = pd.Index(bars.symbols).get_indexer(news["symbol"])
    closes = bar_close_times(bars.index, panel.calendar, bars.symbols)
    times = pd.DatetimeIndex(news["time"])
    row = assign_bars(times, closes)
    # bar 0 takes what came since the bar before it closed (one bar's length earlier), not
    # every older item: those belong to bars before the data
    step = closes[1] - closes[0] if T > 1 else pd.Timedelta(days=1)
    keep = (col >= 0) & (row < T) & (times >= closes[0] - step)
    np.add.at(total, (row[keep], col[keep]), news["score"].to_numpy()[keep])
    np.add.at(count, (row[keep], col[keep]), 1.0)
    return total, count


# --------------------------------------------------------------------------- features
def _frame(bars: Bars, values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, index=bars.index, columns=list(bars.symbols))


def news_score(bars: Bars) -> pd.DataFrame:
    total, count = per_bar(bars)
    return _frame(bars, np.divide(total, count, out=np.zeros_like(total), where=count > 0))


def news_count(bars: Bars) -> pd.DataFrame:
    return _frame(bars, per_bar(bars)[1].copy())


def news_surprise(bars: Bars, n: int) -> pd.DataFrame:
    total, count = per_bar(bars)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    # the trailing window's sums over the n bars BEFORE each bar (the bar itself excluded)
    cs_t = np.vstack([np.zeros((1, total.shape[1])), np.cumsum(total, axis=0)])
    cs_c = np.vstack([np.zeros((1, count.shape[1])), np.cumsum(count, axis=0)])
    i = np.arange(total.shape[0])
    lo = np.maximum(i - n, 0)
    past_t, past_c = cs_t[i] - cs_t[lo], cs_c[i] - cs_c[lo]
    past = np.divide(past_t, past_c, out=np.zeros_like(past_t), where=past_c > 0)
    return _frame(bars, np.where(count > 0, mean - past, 0.0))


def news_decay(bars: Bars, half_life: int) -> pd.DataFrame:
    total, count = per_bar(bars)
    w = 0.5 ** (1.0 / half_life)
    s, c = np.zeros(total.shape[1]), np.zeros(total.shape[1])
    out = np.zeros_like(total)
    for t in range(total.shape[0]):  # a recursive filter: T steps of N-wide arithmetic
        s = s * w + total[t]
        c = c * w + count[t]
        out[t] = np.divide(s, c, out=np.zeros_like(s), where=c > 1e-12)
    return _frame(bars, out)


NEWS_FEATURES = {"news_score": news_score, "news_count": news_count}
