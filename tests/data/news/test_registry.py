"""source_for: each registered news source by name; an unknown name is a ConfigError."""

from __future__ import annotations

import pytest

from mltrader.data import news
from mltrader.data.news import NewsSource, source_for
from mltrader.errors import ConfigError


@pytest.mark.parametrize(("name", "kw", "cls"), [
    ("alpaca", {}, "AlpacaNews"), ("Yahoo", {"count": 5}, "YahooNews"),
    ("rss", {"feeds": ["https://example.com/feed"]}, "RssNews"),
    ("file", {"path": "news.csv", "tz": "UTC"}, "FileNews"),
    ("placebo", {"seed": 3}, "PlaceboNews")])
def test_source_for_builds_each_source(name, kw, cls):
    src = source_for(name, **kw)  # builds only: no key, network or file needed yet
    assert type(src).__name__ == cls and isinstance(src, NewsSource)
    assert src.name == name.lower()


def test_unknown_source_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown news source 'bloomberg'; use one of alpaca"):
        source_for("bloomberg")


def test_public_names_exist():
    assert all(hasattr(news, n) for n in news.__all__)
