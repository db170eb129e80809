"""RssNews: RSS 2.0 and Atom fixture feeds, served from 127.0.0.1 (feedparser parses what
urllib fetched) or read from a path; symbols by a fixed list and/or cashtags."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from mltrader.data.news import Feed, NewsError, NewsSource, RssNews, source_for
from mltrader.data.news.rss import cashtags
from mltrader.errors import ConfigError

from .conftest import FIXTURES

pytest.importorskip("feedparser")
RSS = (FIXTURES / "feed_rss2.xml").read_bytes()
ATOM = (FIXTURES / "feed_atom.xml").read_bytes()
START, END = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC")


@pytest.fixture
def feeds(local_server):
    def respond(path, query):
        if path == "/rss":
            return 200, RSS, "application/rss+xml"
        if path == "/atom":
            return 200, ATOM, "application/atom+xml"
        return 404, b"not found", "text/plain"

    return local_server(respond)


def test_rss2_by_cashtags_from_a_local_server(feeds, caplog):
    src = RssNews([feeds.url + "/rss"])
    assert isinstance(src, NewsSource)
    with caplog.at_level(logging.WARNING):
        df = src.fetch(["AAPL", "MSFT"], START, END)
    assert df.to_dict("records") == [
        {"id": "https://news.example.com/a1", "time": pd.Timestamp("2024-01-02T20:30Z"),
         "symbols": ("AAPL", "MSFT"), "headline": "$AAPL beats estimates; $MSFT flat",
         "summary": "Apple & Microsoft reported results.", "source": "Example Markets Wire",
         "provider": "rss"},
        {"id": "https://news.example.com/a4", "time": pd.Timestamp("2024-01-04T21:10Z"),
         "symbols": ("MSFT",), "headline": "Markets close higher, $MSFT leads",
         "summary": "No guid here: the link is the id.", "source": "Example Markets Wire",
         "provider": "rss"}]
    assert "1 item(s) without a published/updated date or a title were dropped" in caplog.text
    assert feeds.requests[0].path == "/rss"


def test_atom_with_a_fixed_symbol_and_cashtags(feeds):
    src = RssNews([{"url": feeds.url + "/atom", "symbols": ["aapl"], "source": "Apple"}])
    df = src.fetch(["AAPL", "MSFT"], START, END)
    assert df["time"].tolist() == [pd.Timestamp("2024-01-03T13:00Z"),  # published, in UTC
                                   pd.Timestamp("2024-01-05T12:00Z")]  # only updated
    assert df["symbols"].tolist() == [("AAPL", "MSFT"), ("AAPL",)]
    assert df["source"].unique().tolist() == ["Apple"]
    no_tags = RssNews([Feed(url=feeds.url + "/atom", symbols=("AAPL",), cashtags=False)])
    assert no_tags.fetch(["MSFT"], START, END).empty


def test_feed_from_a_path_and_range_filter():
    df = RssNews([str(FIXTURES / "feed_rss2.xml")]).fetch(
        ["AAPL", "MSFT", "TSLA"], pd.Timestamp("2024-01-03", tz="UTC"), END)
    assert df["headline"].tolist() == ["$TSLA recalls cars", "Markets close higher, $MSFT leads"]


def test_bad_feeds_are_one_line(feeds, tmp_path):
    with pytest.raises(NewsError, match=r"cannot read the feed \(HTTPError"):
        RssNews([feeds.url + "/missing"]).fetch(["AAPL"], START, END)
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"\x00\x01 this is not xml <<<")
    with pytest.raises(NewsError, match="not an RSS or Atom feed"):
        RssNews([str(bad)]).fetch(["AAPL"], START, END)
    with pytest.raises(ConfigError, match="unknown: symbol"):
        RssNews([{"url": "x", "symbol": "AAPL"}])
    with pytest.raises(ConfigError, match="no feeds"):
        source_for("rss", feeds=[])


def test_cashtags():
    assert cashtags("Buy $aapl and $BRK.B, not US$5 or $5") == ("AAPL", "BRK.B")
