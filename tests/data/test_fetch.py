"""Fetching through sources in order: fallback, who served what, and clear failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrader.data.fetch import fetch_bars, make_source, to_bars
from mltrader.data.sources.base import COLUMNS, SourceError
from mltrader.errors import ConfigError


def _frame(start="2021-01-04", n=5, base=100.0):
    idx = pd.bdate_range(start, periods=n, tz="UTC")
    c = base + np.arange(n, dtype=float)
    return pd.DataFrame({"open": c, "high": c + 1, "low": c - 1, "close": c,
                         "volume": np.full(n, 1e6)}, index=idx)


class FakeSource:
    def __init__(self, name, data=None, fail=()):
        self.name, self.data, self.fail, self.calls = name, data or {}, set(fail), []

    def fetch(self, symbol, start, end, interval, adjusted=True):
        self.calls.append((symbol, start, end, interval, adjusted))
        if symbol in self.fail:
            raise SourceError(f"{self.name}: {symbol}: rate-limited 4 times")
        return self.data.get(symbol, pd.DataFrame(columns=list(COLUMNS)))


def test_fallback_tries_the_next_source_and_says_who_served():
    a = FakeSource("yahoo", {"AAPL": _frame()}, fail={"MSFT"})
    b = FakeSource("alphavantage", {"MSFT": _frame(base=200)})
    res = fetch_bars(["AAPL", "MSFT"], "2021-01-01", "2021-02-01", sources=[a, b])
    assert res.served_by == {"AAPL": "yahoo", "MSFT": "alphavantage"}
    assert "rate-limited" in res.failures["MSFT"][0]
    assert res.bars.symbols == ("AAPL", "MSFT")
    assert res.bars.close[0, 1] == 200.0
    assert [c[0] for c in b.calls] == ["MSFT"]  # the second source only for what failed
    assert "alphavantage: MSFT" in res.describe()


def test_a_source_with_no_bars_counts_as_a_miss():
    a = FakeSource("yahoo", {})
    b = FakeSource("alpaca", {"XOM": _frame()})
    res = fetch_bars(["XOM"], "2021-01-01", "2021-02-01", sources=[a, b])
    assert res.served_by == {"XOM": "alpaca"} and "no bars" in res.failures["XOM"][0]


def test_every_source_failing_is_one_error_naming_each_reason():
    a = FakeSource("yahoo", fail={"ZZZZ"})
    b = FakeSource("alpaca", {})
    with pytest.raises(SourceError, match="ZZZZ: every source failed") as e:
        fetch_bars(["ZZZZ"], "2021-01-01", "2021-02-01", sources=[a, b])
    assert "rate-limited" in str(e.value) and "alpaca" in str(e.value)
    assert "\n" not in str(e.value)


def test_range_and_arguments_are_passed_and_checked():
    a = FakeSource("yahoo", {"A": _frame(n=30)})
    res = fetch_bars(["A"], "2021-01-05", "2021-01-08", interval="1d", adjusted=False,
                     sources=[a])
    assert len(res.bars) == 4  # trimmed to [start, end]
    sym, t0, t1, interval, adjusted = a.calls[0]
    assert (str(t0.date()), str(t1.date()), interval, adjusted) == (
        "2021-01-05", "2021-01-08", "1d", False)
    with pytest.raises(SourceError, match="interval"):
        fetch_bars(["A"], "2021-01-01", sources=[a], interval="2h")
    with pytest.raises(ConfigError, match="after end"):
        fetch_bars(["A"], "2021-02-01", "2021-01-01", sources=[a])
    with pytest.raises(ConfigError, match="unknown data source"):
        make_source("bloomberg")


def test_symbols_with_different_calendars_share_one_index_with_nan():
    frames = {"A": _frame(n=3), "B": _frame(start="2021-01-05", n=3)}
    bars = to_bars(frames)
    assert len(bars) == 4 and np.isnan(bars.close[0, 1]) and np.isnan(bars.close[3, 0])


def test_the_cache_is_asked_instead_of_the_source():
    class Cache:
        def __init__(self):
            self.asked = []

        def get(self, source, symbol, interval, adjusted, start, end, fetch, calendar="XNYS"):
            self.asked.append((source, symbol))
            return fetch(start, end)

    cache = Cache()
    a = FakeSource("yahoo", {"A": _frame()})
    fetch_bars(["A"], "2021-01-01", "2021-02-01", sources=[a], cache=cache)
    assert cache.asked == [("yahoo", "A")] and len(a.calls) == 1
