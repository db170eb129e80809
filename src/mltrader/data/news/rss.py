"""RSS 2.0 / Atom feeds (parsed by feedparser) as a `NewsSource`.

Each feed maps its items to symbols by a fixed list (a company's own feed) and/or by the
cashtags ($AAPL) in an item's title and summary. The time is the item's ``published`` (else
``updated``) date in UTC; items without one are counted and dropped with a warning. A feed is
a URL (fetched with a timeout) or a local file path. Feeds carry only their latest items.
"""

from __future__ import annotations

import calendar
import html
import logging
import re
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mltrader.data.news.base import NewsError, check_range
from mltrader.data.news.frame import news_frame, parse_symbols, stable_id
from mltrader.errors import ConfigError

log = logging.getLogger(__name__)
CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:[.-][A-Za-z]{1,2})?)\b")
_TAG = re.compile(r"<[^>]+>")
INSTALL_HINT = 'pip install "mltrader[sentiment]" (or: pip install feedparser)'


@dataclass(frozen=True)
class Feed:
    """One feed: its URL or path, the symbols all its items are about, whether to read
    cashtags, and a publisher name (default: the feed's own title)."""

    url: str
    symbols: tuple[str, ...] = ()
    cashtags: bool = True
    source: str = ""

    @classmethod
    def of(cls, spec: str | Mapping[str, Any] | Feed) -> Feed:
        if isinstance(spec, Feed):
            return spec
        if isinstance(spec, str):
            return cls(url=spec)
        unknown = set(spec) - {"url", "symbols", "cashtags", "source"}
        if "url" not in spec or unknown:
            raise ConfigError(f"news.feeds: {dict(spec)!r}: a feed has 'url' and optional "
                              "'symbols', 'cashtags', 'source'"
                              + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
        return cls(url=str(spec["url"]), symbols=parse_symbols(spec.get("symbols")),
                   cashtags=bool(spec.get("cashtags", True)), source=str(spec.get("source", "")))


def cashtags(text: str) -> tuple[str, ...]:
    """Tickers written as cashtags ($AAPL, $BRK.B) in `text`, upper-case, in order."""
    return parse_symbols(m.group(1) for m in CASHTAG.finditer(text))


def _plain(text: Any) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", str(text or ""))).split())


class RssNews:
    """Items of RSS / Atom feeds about the asked symbols (see module doc)."""

    name = "rss"

    def __init__(self, feeds: Sequence[str | Mapping[str, Any] | Feed],
                 timeout: float = 20.0) -> None:
        self.feeds = [Feed.of(f) for f in feeds]
        if not self.feeds:
            raise ConfigError("news.feeds: no feeds; list at least one feed URL")
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"RssNews({[f.url for f in self.feeds]!r})"

    def _parse(self, feed: Feed) -> Any:
        try:
            import feedparser
        except ImportError as e:
            raise NewsError(f"rss: feedparser is not installed ({e}); {INSTALL_HINT}") from None
        try:
            if "://" in feed.url:
                req = urllib.request.Request(feed.url, headers={"User-Agent": "mltrader"})
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    body: Any = resp.read()
            else:
                body = Path(feed.url).read_bytes()
        except OSError as e:  # URLError, HTTPError, timeouts, missing file
            text = " ".join(str(e).split())[:200]
            raise NewsError(f"rss: {feed.url}: cannot read the feed ({type(e).__name__}: "
                            f"{text}); check the URL / path and the connection") from None
        parsed = feedparser.parse(body)
        if parsed.bozo and not parsed.entries:
            text = " ".join(str(parsed.get("bozo_exception", "")).split())[:200]
            raise NewsError(f"rss: {feed.url}: not an RSS or Atom feed ({text}); check the URL")
        if parsed.bozo:
            log.warning("rss: %s: feed is not well-formed (%s); read %d item(s) anyway",
                        feed.url, parsed.get("bozo_exception"), len(parsed.entries))
        return parsed

    def items(self, feed: Feed, universe: set[str]) -> list[dict[str, Any]]:
        """The feed's items that name a symbol of `universe`, as canonical rows."""
        parsed = self._parse(feed)
        source = feed.source or _plain(parsed.feed.get("title"))
        rows, dropped = [], 0
        for e in parsed.entries:
            title, summary = _plain(e.get("title")), _plain(e.get("summary"))
            st = e.get("published_parsed") or e.get("updated_parsed")
            if st is None or not title:  # no time to place it, or no headline to score
                dropped += 1
                continue
            t = pd.Timestamp(calendar.timegm(st), unit="s", tz="UTC")
            syms = list(feed.symbols) + (list(cashtags(f"{title} {summary}"))
                                         if feed.cashtags else [])
            syms = [s for s in parse_symbols(syms) if s in universe]
            if syms:
                rows.append({"id": str(e.get("id") or e.get("link") or stable_id(t, title)),
                             "time": t, "symbols": tuple(syms), "headline": title,
                             "summary": summary, "source": source, "provider": "rss"})
        if dropped:
            log.warning("rss: %s: %d item(s) without a published/updated date or a title "
                        "were dropped", feed.url, dropped)
        return rows

    def fetch(self, symbols: Sequence[str], start: pd.Timestamp,
              end: pd.Timestamp) -> pd.DataFrame:
        a, b = check_range(start, end)
        universe = {s.upper() for s in symbols}
        rows = [r for f in self.feeds for r in self.items(f, universe) if a <= r["time"] <= b]
        return news_frame(rows)
