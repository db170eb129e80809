"""The configured news, loaded, scored and registered for the news_* features.

`prepare_news(cfg, bars)` runs before features are computed (backtest, compare, the live
runner): it reads the config's ``news:`` source over the bars' span (plus a margin before,
so the first bars' trailing measures see their past), scores each item once with the
configured scorer, explodes items to one row per (item, symbol), and registers the result
(`features.news.use_news`) with the run's calendar. The same news and scorer are not loaded
twice in one process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from mltrader.config import RunConfig
from mltrader.data.bars import Bars
from mltrader.data.calendars import resolve_calendar
from mltrader.errors import ConfigError
from mltrader.features import news as nws

log = logging.getLogger("mltrader.news")
MARGIN = pd.Timedelta(days=400)  # news before the first bar: trailing windows need a past
_LOCK = threading.Lock()
_LOADED: dict[str, str] = {}  # "key" -> the key of what is registered now


def uses_news(cfg: RunConfig) -> bool:
    """Does any feature of the run (or of a compared model) read news?"""
    names = list(cfg.features)
    for mc in [cfg.model, *cfg.compare]:
        names += list(mc.add_features)
    return any(n.startswith("news_") for n in names)


def prepare_news(cfg: RunConfig, bars: Bars) -> int:
    """Load, score and register the run's news when a feature reads it; the number of
    (item, symbol) rows registered (0 when no feature needs news)."""
    if not uses_news(cfg):
        return 0
    if cfg.news is None:
        raise ConfigError("the features ask for news_* but the config has no `news:` section; "
                          "add e.g. news: {source: file, path: news.parquet, scorer: vader} "
                          "(`mltrader news import FILE` checks and converts a file)")
    calendar = resolve_calendar(cfg.data.calendar, bars.symbols).name
    # up to now, not to the last bar: a paper or live runner's later bars need their news
    # too (the alignment never lets an item reach a bar before its publication)
    start, end = bars.index[0] - MARGIN, pd.Timestamp.now(tz="UTC").ceil("D")
    key = hashlib.sha256(json.dumps(
        [cfg.news.model_dump(mode="json"), list(bars.symbols), str(start), str(end),
         calendar], default=str).encode()).hexdigest()
    with _LOCK:
        if _LOADED.get("key") == key:
            return len(nws.active_news().scored)
        items = load_news(cfg, list(bars.symbols), start, end)
        scored = score_items(items, cfg.news.scorer, cfg.news.text, set(bars.symbols))
        nws.use_news(scored, calendar)
        _LOADED["key"] = key
    log.info("news: %d items, %d (item, symbol) rows scored with %s", len(items), len(scored),
             cfg.news.scorer)
    return len(scored)


def load_news(cfg: RunConfig, symbols: list[str], start: pd.Timestamp,
              end: pd.Timestamp) -> pd.DataFrame:
    """The canonical news frame (data.news) of the configured source over [start, end]."""
    assert cfg.news is not None
    n = cfg.news
    if n.source == "file":
        from mltrader.data.news import read_news_file

        frame = read_news_file(n.path, tz=n.tz, symbols=None)
        return frame[pd.DatetimeIndex(frame["time"]) >= start].reset_index(drop=True)
    from mltrader.data.news import CachedNews, NewsCache, source_for

    kwargs: dict[str, Any] = ({"feeds": list(n.feeds)} if n.source == "rss" else
                              {"seed": n.seed, "per_day": n.per_day} if n.source == "placebo"
                              else {})
    source = source_for(n.source, **kwargs)
    if cfg.data.cache and n.source in ("alpaca", "rss"):  # Yahoo: latest only; placebo: drawn
        source = CachedNews(source, NewsCache())
    return source.fetch(symbols, start, end)


def score_items(items: pd.DataFrame, scorer: str, text: str = "headline",
                universe: set[str] | None = None) -> pd.DataFrame:
    """One row per (item, symbol) with the item's score: time, symbol, score. Items about
    no symbol of the universe are left out (counted in the log, not silently)."""
    from mltrader.features.sentiment import get_scorer

    if not len(items):
        return pd.DataFrame({"time": pd.DatetimeIndex([], tz="UTC"), "symbol": [],
                             "score": np.array([], dtype="float64")})
    texts = items["headline"].astype(str)
    if text == "headline_summary":
        texts = texts + ". " + items["summary"].fillna("").astype(str)
    scores = np.asarray(get_scorer(scorer).score(list(texts)), dtype="float64")
    rows = pd.DataFrame({"time": items["time"], "symbols": items["symbols"], "score": scores})
    rows = rows.explode("symbols").rename(columns={"symbols": "symbol"})
    rows = rows[rows["symbol"].notna()]
    rows["symbol"] = rows["symbol"].astype(str).str.upper()
    if universe is not None:
        outside = ~rows["symbol"].isin(universe)
        if outside.any():
            log.info("news: %d (item, symbol) rows are about symbols outside the run's "
                     "universe and are not used", int(outside.sum()))
        rows = rows[~outside]
    return rows.reset_index(drop=True)


def live_news(cfg: RunConfig, symbols: list[str], stream: Any = None) -> Callable[[], None]:
    """Feed the news_* features from Alpaca's real-time news while a live runner trades:
    each article is scored as it arrives and added to the registered news (the next bar's
    features see it, by its publication time). Starts a daemon thread; returns `stop`.
    Nothing (a no-op stop) when no feature reads news or the news source is not alpaca."""
    if not uses_news(cfg) or cfg.news is None or cfg.news.source != "alpaca":
        return lambda: None
    from mltrader.data.news import AlpacaNewsStream

    n, universe = cfg.news, set(symbols)

    def on_item(frame: pd.DataFrame) -> None:
        try:
            scored = score_items(frame, n.scorer, n.text, universe)
        except Exception as e:  # a scorer failure must not end the stream
            log.warning("news: an article could not be scored (%s); skipped", e)
            return
        if len(scored):
            nws.add_news(scored)
            log.info("news: %s %r scored %+.3f", ",".join(scored["symbol"]),
                     str(frame["headline"].iloc[0])[:80], float(scored["score"].iloc[0]))

    feed = AlpacaNewsStream(symbols, on_item, stream=stream)
    thread = threading.Thread(target=feed.run, name="mltrader-news", daemon=True)
    thread.start()
    return feed.stop


def forget_news() -> None:
    """Drop the registered news (tests; a process that runs another config next)."""
    with _LOCK:
        _LOADED.clear()
        nws.use_news(None)
