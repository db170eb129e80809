"""Placebo news: real headlines at random times and symbols, the same for the same seed."""

from __future__ import annotations

import pandas as pd

from mltrader.data.news import NEWS_COLUMNS, PlaceboNews

A, B = pd.Timestamp("2020-01-01", tz="UTC"), pd.Timestamp("2020-03-01", tz="UTC")


def test_placebo_items_are_reproducible_and_inside_the_span():
    one = PlaceboNews(seed=1).fetch(["AAPL", "MSFT"], A, B)
    assert list(one.columns) == NEWS_COLUMNS and len(one) > 100
    assert one["time"].between(A, B).all() and one["headline"].str.len().gt(0).all()
    assert {s for row in one["symbols"] for s in row} == {"AAPL", "MSFT"}
    pd.testing.assert_frame_equal(one, PlaceboNews(seed=1).fetch(["MSFT", "AAPL"], A, B))
    other = PlaceboNews(seed=2).fetch(["AAPL", "MSFT"], A, B)
    assert not one["time"].equals(other["time"])
    # a longer span keeps the shorter one's items (each day is drawn on its own)
    longer = PlaceboNews(seed=1).fetch(["AAPL", "MSFT"], A - pd.Timedelta(days=30), B)
    assert set(one["id"]) <= set(longer["id"])
    assert 3.0 < len(one) / 60 < 5.0  # about 4 a day
