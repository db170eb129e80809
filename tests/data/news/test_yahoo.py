"""YahooNews with `yfinance.Ticker` patched to return recorded-shape payloads (no network)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from mltrader.data.news import NewsError, NewsSource, YahooNews

from .conftest import FIXTURES

yf = pytest.importorskip("yfinance")
PAYLOADS = {s: json.loads((FIXTURES / f"yahoo_news_{s}.json").read_text())
            for s in ("AAPL", "MSFT")}


class FakeTicker:
    calls: list[tuple[str, int]] = []

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol

    def get_news(self, count: int = 10, tab: str = "news") -> list:
        FakeTicker.calls.append((self.symbol, count))
        return PAYLOADS.get(self.symbol, [])


@pytest.fixture
def fake_yf(monkeypatch):
    FakeTicker.calls = []
    monkeypatch.setattr(yf, "Ticker", FakeTicker)
    return FakeTicker


def test_items_map_to_the_canonical_frame(fake_yf, caplog):
    with caplog.at_level(logging.WARNING):
        df = YahooNews(count=15).fetch(["aapl", "MSFT"], pd.Timestamp("2026-11-01", tz="UTC"),
                                       pd.Timestamp("2026-12-01", tz="UTC"))
    assert isinstance(YahooNews(), NewsSource)
    assert fake_yf.calls == [("AAPL", 15), ("MSFT", 15)]
    assert df["headline"].tolist() == ["Apple's iPhone sales: what analysts expect",
                                       "Microsoft to raise dividend",
                                       "Apple and Microsoft lead tech rally"]
    rally = df.iloc[2]
    assert rally["id"] == "9f2a1c0e-0000-4000-8000-000000000001"
    assert rally["time"] == pd.Timestamp("2026-11-30T14:05:00Z")
    assert rally["symbols"] == ("AAPL", "MSFT")  # one item, listed under both; ^GSPC not kept
    assert rally["summary"] == "Shares of Apple and Microsoft rose after upbeat guidance."
    assert rally["source"] == "Reuters" and rally["provider"] == "yahoo"
    legacy = df.iloc[1]  # the older flat shape
    assert legacy["id"] == "0b1e7d6a-legacy-shape" and legacy["source"] == "Barrons.com"
    assert legacy["time"] == pd.Timestamp(1795910400, unit="s", tz="UTC")
    assert "1 item(s) without a title or time were skipped" in caplog.text


def test_only_items_in_the_range(fake_yf):
    df = YahooNews().fetch(["AAPL"], pd.Timestamp("2026-11-29", tz="UTC"),
                           pd.Timestamp("2026-12-01", tz="UTC"))
    assert df["id"].tolist() == ["9f2a1c0e-0000-4000-8000-000000000001"]
    assert df["symbols"].tolist() == [("AAPL",)]  # MSFT was not asked for
    assert YahooNews().fetch(["AAPL"], pd.Timestamp("2020-01-01", tz="UTC"),
                             pd.Timestamp("2020-12-31", tz="UTC")).empty  # no history


def test_yfinance_failure_is_one_line(monkeypatch):
    class Broken(FakeTicker):
        def get_news(self, count: int = 10, tab: str = "news") -> list:
            raise RuntimeError("curl: (6) Could not resolve host\nquery2.finance.yahoo.com")

    monkeypatch.setattr(yf, "Ticker", Broken)
    with pytest.raises(NewsError) as e:
        YahooNews().fetch(["AAPL"], pd.Timestamp("2026-11-01", tz="UTC"),
                          pd.Timestamp("2026-12-01", tz="UTC"))
    assert "\n" not in str(e.value) and "yahoo news: AAPL: RuntimeError" in str(e.value)
