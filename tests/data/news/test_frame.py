"""The canonical news frame: types, validation, dedup, sort, symbol parsing, explode."""

from __future__ import annotations

import pandas as pd
import pytest

from mltrader.data.news import (
    NEWS_COLUMNS,
    NewsError,
    empty_news,
    explode_symbols,
    news_frame,
    parse_symbols,
    stable_id,
    validate_news,
)


def _row(i: str, t: str, syms: object = "AAPL", headline: str = "h") -> dict:
    return {"id": i, "time": pd.Timestamp(t), "symbols": syms, "headline": headline,
            "summary": None, "source": "benzinga", "provider": "file"}


def test_empty_news_has_the_columns_and_types():
    df = empty_news()
    assert list(df.columns) == NEWS_COLUMNS and df.empty
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert validate_news(df).empty


def test_validate_sorts_dedups_by_id_and_normalises():
    df = news_frame([_row("2", "2024-01-03T10:00-05:00", "msft, aapl"),
                     _row("1", "2024-01-02T10:00Z", ["aapl"]),
                     _row("2", "2024-01-01T10:00Z", "TSLA", headline="duplicate id")])
    assert list(df["id"]) == ["1", "2"]  # sorted by time; the first "2" kept
    assert df["symbols"].tolist() == [("AAPL",), ("MSFT", "AAPL")]
    assert df["time"].iloc[1] == pd.Timestamp("2024-01-03T15:00Z")
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df["summary"].tolist() == ["", ""]


def test_validate_refuses_missing_columns_naive_times_and_empty_headlines():
    with pytest.raises(NewsError, match="no headline column"):
        validate_news(pd.DataFrame({c: [] for c in NEWS_COLUMNS if c != "headline"}))
    naive = pd.DataFrame([_row("1", "2024-01-02T10:00")])
    with pytest.raises(NewsError, match="no time zone"):
        validate_news(naive)
    with pytest.raises(NewsError, match="empty headline"):
        news_frame([_row("1", "2024-01-02T10:00Z", headline="  ")])


def test_parse_symbols_separators_and_lists():
    assert parse_symbols("AAPL MSFT") == ("AAPL", "MSFT")
    assert parse_symbols("aapl,msft|brk.b ; aapl") == ("AAPL", "MSFT", "BRK.B")
    assert parse_symbols(["$tsla", "TSLA"]) == ("TSLA",)
    assert parse_symbols(None) == () and parse_symbols("") == ()


def test_explode_symbols_one_row_per_item_and_symbol():
    df = news_frame([_row("1", "2024-01-02T10:00Z", "AAPL MSFT"),
                     _row("2", "2024-01-03T10:00Z", "TSLA")])
    out = explode_symbols(df)
    assert list(zip(out["id"], out["symbol"], strict=True)) == [
        ("1", "AAPL"), ("1", "MSFT"), ("2", "TSLA")]
    assert set(NEWS_COLUMNS) < set(out.columns)
    assert "symbol" in explode_symbols(empty_news()).columns


def test_stable_id_depends_on_time_and_headline_only():
    t = pd.Timestamp("2024-01-02T15:30:00-05:00")
    assert stable_id(t, "A") == stable_id(t.tz_convert("UTC"), " A ")
    assert stable_id(t, "A") != stable_id(t, "B")
