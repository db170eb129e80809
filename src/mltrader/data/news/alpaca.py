"""Historical news from Alpaca (Benzinga's feed) via alpaca-py's `NewsClient`, as the
canonical frame.

``time`` is the article's ``created_at`` (its publication; ``updated_at`` is later edits).
alpaca-py follows ``next_page_token`` itself (50 items a page) and retries HTTP 429/504;
errors become one-line `NewsError`s. Keys as for bars (`mltrader.data.sources.alpaca`):
arguments, else MLTRADER_ALPACA_KEY / MLTRADER_ALPACA_SECRET, else APCA_API_KEY_ID /
APCA_API_SECRET_KEY. alpaca-py is imported only when used (``pip install "mltrader[live]"``).
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from mltrader.data.news.base import NewsError, check_range
from mltrader.data.news.frame import empty_news, news_frame, parse_symbols
from mltrader.data.sources.alpaca import INSTALL_HINT, api_error_message, resolve_keys
from mltrader.data.sources.base import SourceError

log = logging.getLogger(__name__)


def _client_class() -> tuple[Any, Any, Any]:
    try:
        with warnings.catch_warnings():  # alpaca.data imports websockets.legacy (deprecated)
            warnings.simplefilter("ignore", DeprecationWarning)
            from alpaca.common.exceptions import APIError
            from alpaca.data.historical.news import NewsClient
            from alpaca.data.requests import NewsRequest
    except ImportError as e:
        raise NewsError(f"alpaca news: alpaca-py is not installed ({e}); {INSTALL_HINT}") from None
    return NewsClient, NewsRequest, APIError


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def news_item(article: Any) -> dict[str, Any] | None:
    """One Alpaca article (alpaca-py `News` model or raw dict) as a canonical row; None when
    it has no headline or time."""
    headline = str(_get(article, "headline") or "").strip()
    created = _get(article, "created_at")
    try:
        t = pd.Timestamp(created)
    except (ValueError, TypeError):
        return None
    if not headline or pd.isna(t):
        return None
    return {"id": str(_get(article, "id")), "time": t.tz_localize("UTC") if t.tzinfo is None
            else t.tz_convert("UTC"),
            "symbols": parse_symbols(_get(article, "symbols") or ()), "headline": headline,
            "summary": str(_get(article, "summary") or ""),
            "source": str(_get(article, "source") or "").lower(), "provider": "alpaca"}


def articles_frame(articles: Iterable[Any], what: str = "alpaca news") -> pd.DataFrame:
    """Canonical frame of Alpaca articles; articles without headline/time are counted and
    dropped with a warning."""
    rows, dropped = [], 0
    for a in articles:
        row = news_item(a)
        if row is None:
            dropped += 1
        else:
            rows.append(row)
    if dropped:
        log.warning("%s: %d item(s) without a headline or time were skipped", what, dropped)
    return news_frame(rows)


class AlpacaNews:
    """Alpaca's historical news API as a `NewsSource` (see module doc)."""

    name = "alpaca"

    def __init__(self, api_key: str | None = None, secret_key: str | None = None,
                 url_override: str | None = None, client: Any = None,
                 *, timeout: float = 30.0) -> None:
        self._api_key, self._secret_key = api_key, secret_key
        self.url_override = url_override
        self.timeout = float(timeout)
        self._client = client

    def __repr__(self) -> str:  # never shows the keys
        return f"AlpacaNews(url_override={self.url_override!r})"

    def client(self) -> Any:
        """alpaca-py's `NewsClient`, created on first use, with a request timeout."""
        if self._client is None:
            client_cls = _client_class()[0]
            try:
                key, secret = resolve_keys(self._api_key, self._secret_key)
            except SourceError as e:
                raise NewsError(str(e)) from None
            client = client_cls(api_key=key, secret_key=secret, url_override=self.url_override)
            session = getattr(client, "_session", None)
            if session is not None and self.timeout > 0:
                session.request = functools.partial(session.request, timeout=self.timeout)
            self._client = client
        return self._client

    def fetch(self, symbols: Sequence[str], start: pd.Timestamp,
              end: pd.Timestamp) -> pd.DataFrame:
        """Articles about any of `symbols` created in [start, end] (all pages)."""
        import requests  # a dependency of alpaca-py

        a, b = check_range(start, end)
        syms = list(dict.fromkeys(s.upper() for s in symbols))
        if not syms:
            return empty_news()
        _, request_cls, api_error = _client_class()
        req = request_cls(symbols=",".join(syms), start=a.to_pydatetime(),
                          end=b.to_pydatetime(), sort="asc")
        what = f"alpaca news: {','.join(syms)}"
        try:
            result = self.client().get_news(req)
        except api_error as e:
            detail = " ".join(str(e).split())[:200] or "no message"
            raise NewsError(api_error_message(what, e.status_code, detail)) from None
        except requests.RequestException as e:
            raise NewsError(f"{what}: network error ({type(e).__name__}); check the internet "
                            "connection and try again") from None
        except ValueError as e:  # alpaca-py: an answer without a known data key, or bad item
            text = " ".join(str(e).split())[:200]
            raise NewsError(f"{what}: unexpected answer ({text}); the API format may have "
                            "changed") from None
        data = result.data if hasattr(result, "data") else result
        df = articles_frame((data or {}).get("news", []), what)
        want = set(syms)
        keep = (df["time"] >= a) & (df["time"] <= b) & df["symbols"].map(
            lambda s: bool(want.intersection(s)))
        return df[keep].reset_index(drop=True)
