"""NewsCache: a covered range is served from disk; a wider one fetches only the gaps."""

from __future__ import annotations

import pandas as pd
import pytest

from mltrader.data.news import CachedNews, NewsCache, NewsError, NewsSource, news_frame

T = pd.Timestamp


class FakeSource:
    """A provider with one item a day for AAPL (and one shared with MSFT); records calls."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], pd.Timestamp, pd.Timestamp]] = []
        days = pd.date_range("2024-01-01T12:00Z", "2024-01-31T12:00Z", freq="D")
        rows = [{"id": f"a{i}", "time": t, "symbols": ("AAPL",), "headline": f"aapl {i}",
                 "summary": "", "source": "", "provider": "fake"} for i, t in enumerate(days)]
        rows.append({"id": "both", "time": T("2024-01-10T15:00Z"), "symbols": ("AAPL", "MSFT"),
                     "headline": "both", "summary": "", "source": "", "provider": "fake"})
        self.items = news_frame(rows)

    def fetch(self, symbols, start, end):
        self.calls.append((tuple(symbols), start, end))
        df = self.items
        keep = (df["time"] >= start) & (df["time"] <= end) & df["symbols"].map(
            lambda s: bool(set(symbols) & set(s)))
        return df[keep].reset_index(drop=True)


@pytest.fixture
def cache(tmp_path):
    return NewsCache(tmp_path, clock=lambda: T("2025-01-01", tz="UTC"))


def test_second_fetch_of_a_covered_range_does_not_call_the_provider(cache):
    src = FakeSource()
    first = cache.fetch(src, ["AAPL"], "2024-01-05", "2024-01-10")
    assert len(src.calls) == 1
    again = cache.fetch(src, ["aapl"], "2024-01-06", "2024-01-09")
    assert len(src.calls) == 1
    pd.testing.assert_frame_equal(
        again, first[(first["time"] >= T("2024-01-06", tz="UTC"))
                     & (first["time"] <= T("2024-01-09", tz="UTC"))].reset_index(drop=True))
    assert (cache.root / "news" / "fake" / "AAPL.parquet").exists()


def test_wider_range_fetches_only_head_and_tail(cache):
    src = FakeSource()
    cache.fetch(src, ["AAPL"], "2024-01-10", "2024-01-20")
    out = cache.fetch(src, ["AAPL"], "2024-01-05", "2024-01-25")
    assert [(c[1].day, c[2].day) for c in src.calls[1:]] == [(5, 10), (20, 25)]
    want = src.fetch(["AAPL"], T("2024-01-05", tz="UTC"), T("2024-01-25", tz="UTC"))
    pd.testing.assert_frame_equal(out, want)
    assert cache.coverage("fake", "AAPL") == (T("2024-01-05", tz="UTC"), T("2024-01-25", tz="UTC"))


def test_symbols_with_the_same_gap_share_one_call_and_items_appear_once(cache):
    src = FakeSource()
    out = cache.fetch(src, ["AAPL", "MSFT"], "2024-01-09", "2024-01-11")
    assert len(src.calls) == 1 and set(src.calls[0][0]) == {"AAPL", "MSFT"}
    assert out["id"].tolist() == ["a8", "a9", "both"]
    assert cache.fetch(src, ["MSFT"], "2024-01-09", "2024-01-11")["id"].tolist() == ["both"]
    assert len(src.calls) == 1


def test_recent_range_is_covered_only_up_to_now_minus_settle(tmp_path):
    now = T("2024-01-15T12:00Z")
    cache = NewsCache(tmp_path, settle="15min", clock=lambda: now)
    src = FakeSource()
    cache.fetch(src, ["AAPL"], "2024-01-10", "2024-01-16")
    assert cache.coverage("fake", "AAPL")[1] == now - pd.Timedelta("15min")
    cache.fetch(src, ["AAPL"], "2024-01-10", "2024-01-16")
    assert len(src.calls) == 2  # the unsettled tail is asked for again


def test_cached_news_is_a_news_source(cache):
    src = FakeSource()
    cached = CachedNews(src, cache)
    assert isinstance(cached, NewsSource) and cached.name == "fake"
    cached.fetch(["AAPL"], T("2024-01-01", tz="UTC"), T("2024-01-02", tz="UTC"))
    cached.fetch(["AAPL"], T("2024-01-01", tz="UTC"), T("2024-01-02", tz="UTC"))
    assert len(src.calls) == 1


def test_damaged_cache_file_is_one_line(cache):
    p = cache.path("fake", "AAPL")
    p.parent.mkdir(parents=True)
    p.write_bytes(b"not parquet")
    with pytest.raises(NewsError, match="unreadable .* delete it and fetch again"):
        cache.fetch(FakeSource(), ["AAPL"], "2024-01-01", "2024-01-02")
