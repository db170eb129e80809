"""A-share symbols default to the Shanghai calendar in every spelling (suffix, prefix, bare)."""

from __future__ import annotations

import pytest

from mltrader.data.calendars import resolve_calendar, symbol_calendar


@pytest.mark.parametrize("symbol", [
    "600519.SH", "600519.SS", "000001.SZ", "430047.BJ", "600519", "000001", "300750",
    "sh600519", "SH600519", "sz000001", "SZ.000001", "sh.600519", "bj430047", "688981",
])
def test_a_share_codes_are_xshg(symbol):
    assert symbol_calendar(symbol) == "XSHG"


@pytest.mark.parametrize("symbol, want", [
    ("AAPL", "XNYS"), ("EURUSD", "24/5"), ("BTCUSDT", "24/7"), ("0700.HK", "XHKG"),
    ("12345", "XNYS"), ("1234567", "XNYS"), ("shanghai", "XNYS"),
])
def test_other_symbols_unchanged(symbol, want):
    assert symbol_calendar(symbol) == want


def test_mixed_spellings_resolve_to_one_calendar():
    assert resolve_calendar(None, ["600519", "sz000001", "300750.SZ"]).name == "XSHG"
