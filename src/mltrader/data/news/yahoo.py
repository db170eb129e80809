"""Yahoo Finance news via yfinance (``Ticker(symbol).get_news()``), as the canonical frame.

Yahoo serves only each ticker's LATEST items (about the last 10-20; no history): a fetch
returns those published in [start, end], so a backtest over past years gets nothing from
here; collect it over time with the news cache or use Alpaca / a file for history.
Item shape (yfinance >= 0.2.51): ``{"id", "content": {"title", "summary", "pubDate",
"provider": {"displayName"}, "finance": {"stockTickers": [{"symbol"}]}}}``; the older flat
shape (``uuid``, ``title``, ``publisher``, ``providerPublishTime``, ``relatedTickers``) too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mltrader.data.news.base import NewsError, check_range
from mltrader.data.news.frame import NEWS_COLUMNS, news_frame, parse_symbols, stable_id

log = logging.getLogger(__name__)
INSTALL_HINT = 'pip install "mltrader[data]" (or: pip install yfinance)'


def _time(v: Any) -> pd.Timestamp | None:
    if v in (None, ""):
        return None
    try:
        t = pd.Timestamp(v, unit="s") if isinstance(v, int | float) else pd.Timestamp(v)
    except (ValueError, TypeError, OverflowError):
        return None
    if pd.isna(t):
        return None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def yahoo_item(raw: dict[str, Any], symbol: str, universe: set[str]) -> dict[str, Any] | None:
    """One Yahoo item as a canonical row (tagged with `symbol` and the related tickers of
    `universe`); None when it has no title or time."""
    c = raw.get("content") if isinstance(raw.get("content"), dict) else raw
    title = str(c.get("title") or "").strip()
    t = _time(c.get("pubDate") or c.get("displayTime") or c.get("providerPublishTime"))
    if not title or t is None:
        return None
    provider = c.get("provider")
    source = (provider.get("displayName") if isinstance(provider, dict) else None) or c.get(
        "publisher") or ""
    tickers = [x.get("symbol") for x in ((c.get("finance") or {}).get("stockTickers") or [])
               if isinstance(x, dict)] or list(c.get("relatedTickers") or [])
    related = [s for s in parse_symbols(tickers) if s in universe and s != symbol]
    ident = raw.get("id") or c.get("id") or raw.get("uuid")
    return {"id": str(ident) if ident else stable_id(t, title), "time": t,
            "symbols": (symbol, *related), "headline": title,
            "summary": str(c.get("summary") or c.get("description") or ""),
            "source": str(source), "provider": "yahoo"}


class YahooNews:
    """Yahoo Finance's latest news per ticker as a `NewsSource` (no history: module doc)."""

    name = "yahoo"

    def __init__(self, count: int = 20) -> None:
        self.count = int(count)

    def _raw(self, symbol: str) -> list[dict[str, Any]]:
        try:
            import yfinance as yf
        except ImportError as e:
            raise NewsError(f"yahoo news: yfinance is not installed ({e}); {INSTALL_HINT}") \
                from None
        try:
            items = yf.Ticker(symbol).get_news(count=self.count)
        except Exception as e:  # yfinance raises many kinds (curl errors, JSON, YFException)
            text = " ".join(str(e).split())[:200]
            raise NewsError(f"yahoo news: {symbol}: {type(e).__name__}: {text}; check the "
                            "internet connection and the ticker, then try again") from None
        return [i for i in (items or []) if isinstance(i, dict)]

    def fetch(self, symbols: Sequence[str], start: pd.Timestamp,
              end: pd.Timestamp) -> pd.DataFrame:
        """The latest Yahoo items of each symbol that were published in [start, end]; an item
        listed under several symbols appears once, tagged with all of them."""
        a, b = check_range(start, end)
        syms = list(dict.fromkeys(s.upper() for s in symbols))
        universe = set(syms)
        rows: dict[str, dict[str, Any]] = {}
        dropped = 0
        for s in syms:
            for raw in self._raw(s):
                row = yahoo_item(raw, s, universe)
                if row is None:
                    dropped += 1
                    continue
                if row["id"] in rows:  # the same story under another ticker
                    old = rows[row["id"]]
                    old["symbols"] = parse_symbols([*old["symbols"], *row["symbols"]])
                else:
                    rows[row["id"]] = row
        if dropped:
            log.warning("yahoo news: %d item(s) without a title or time were skipped", dropped)
        df = news_frame(r for r in rows.values() if a <= r["time"] <= b)
        return df[NEWS_COLUMNS]
