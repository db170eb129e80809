"""Real-time Alpaca news: alpaca-py's `NewsDataStream`, each article handed to a callback as
a one-row canonical news frame (see frame.py). ``run()`` blocks; ``stop()`` ends it.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from mltrader.data.news.alpaca import articles_frame
from mltrader.data.news.base import NewsError
from mltrader.data.sources.alpaca import INSTALL_HINT, resolve_keys
from mltrader.data.sources.base import SourceError

log = logging.getLogger(__name__)
Callback = Callable[[pd.DataFrame], Any]


def _stream_class() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from alpaca.data.live.news import NewsDataStream
    except ImportError as e:
        raise NewsError(f"alpaca news stream: alpaca-py is not installed ({e}); "
                        f"{INSTALL_HINT}") from None
    return NewsDataStream


class AlpacaNewsStream:
    """Subscribes to news of `symbols` ("*" for all) and calls ``callback(frame)`` with a
    one-row canonical frame per article (the callback may be a coroutine function)."""

    name = "alpaca"

    def __init__(self, symbols: Sequence[str], callback: Callback, api_key: str | None = None,
                 secret_key: str | None = None, url_override: str | None = None,
                 stream: Any = None) -> None:
        self.symbols = [s if s == "*" else s.upper() for s in symbols]
        if not self.symbols:
            raise NewsError("alpaca news stream: no symbols; give tickers or '*' for all news")
        self.callback = callback
        if stream is None:
            try:
                key, secret = resolve_keys(api_key, secret_key)
            except SourceError as e:
                raise NewsError(str(e)) from None
            stream = _stream_class()(key, secret, url_override=url_override)
        self.stream = stream
        self.stream.subscribe_news(self.on_news, *self.symbols)

    async def on_news(self, article: Any) -> None:
        """alpaca-py's handler: one article (model or raw dict) to the callback as a frame."""
        try:
            frame = articles_frame([article], "alpaca news stream")
        except NewsError as e:  # one odd article must not end the stream
            log.warning("%s; article skipped", e)
            return
        if frame.empty:
            return
        out = self.callback(frame)
        if inspect.isawaitable(out):
            await out

    def run(self) -> None:
        """Connect and deliver articles until `stop` (blocks; alpaca-py reconnects)."""
        self.stream.run()

    def stop(self) -> None:
        self.stream.stop()
