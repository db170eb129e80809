"""News items for sentiment features: one canonical frame (frame.py) from Alpaca, Yahoo,
RSS / Atom feeds or a user's file, behind the `NewsSource` interface, with a local cache.

Client libraries (alpaca-py, yfinance, feedparser) are imported only when a source is used.
"""

from __future__ import annotations

from typing import Any

from mltrader.data.news.alpaca import AlpacaNews
from mltrader.data.news.alpaca_stream import AlpacaNewsStream
from mltrader.data.news.base import NewsError, NewsSource
from mltrader.data.news.cache import CachedNews, NewsCache
from mltrader.data.news.files import FileNews, read_news_file, write_news_file
from mltrader.data.news.frame import (
    NEWS_COLUMNS,
    empty_news,
    explode_symbols,
    news_frame,
    parse_symbols,
    stable_id,
    validate_news,
)
from mltrader.data.news.placebo import PlaceboNews
from mltrader.data.news.rss import Feed, RssNews
from mltrader.data.news.yahoo import YahooNews
from mltrader.errors import ConfigError

__all__ = ["NEWS_COLUMNS", "SOURCES", "AlpacaNews", "AlpacaNewsStream", "CachedNews", "Feed",
           "FileNews", "NewsCache", "NewsError", "NewsSource", "PlaceboNews", "RssNews",
           "YahooNews",
           "empty_news", "explode_symbols", "news_frame", "parse_symbols", "read_news_file",
           "source_for", "stable_id", "validate_news", "write_news_file"]

SOURCES = ("alpaca", "yahoo", "rss", "file", "placebo")


def source_for(name: str, **kw: Any) -> NewsSource:
    """The news source registered as `name` (alpaca, yahoo, rss, file, placebo), built with
    `kw`."""
    key = str(name).strip().lower()
    if key == "alpaca":
        return AlpacaNews(**kw)
    if key == "yahoo":
        return YahooNews(**kw)
    if key == "rss":
        return RssNews(**kw)
    if key == "file":
        return FileNews(**kw)
    if key == "placebo":
        return PlaceboNews(**kw)
    raise ConfigError(f"news.source: unknown news source {name!r}; use one of "
                      f"{', '.join(SOURCES)}")
