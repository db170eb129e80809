"""Round-the-clock market hours (24/7 crypto, 24/5 FX) for the live loop."""

from __future__ import annotations

import pandas as pd
import pytest

from mltrader.live.hours import ContinuousHours
from mltrader.live.session import MarketHours, market_hours


def t(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def test_the_factory_picks_by_calendar() -> None:
    assert isinstance(market_hours("24/7"), ContinuousHours)
    assert isinstance(market_hours("24/5"), ContinuousHours)
    assert isinstance(market_hours("XNYS"), MarketHours)
    with pytest.raises(ValueError):
        ContinuousHours("XNYS")


def test_crypto_is_always_open_and_counts_every_day() -> None:
    h = ContinuousHours("24/7")
    assert h.is_open(t("2024-03-16 03:00")) and h.in_hours(t("2024-03-17"), "1d")  # weekend
    assert h.next_open(t("2024-03-16 03:00")) == t("2024-03-16 03:00")
    assert h.sessions_since(t("2024-03-15"), t("2024-03-15 23:00")) == 0
    assert h.sessions_since(t("2024-03-15"), t("2024-03-18 01:00")) == 2  # Sat, Sun ended


def test_fx_weekend_close_and_next_open_across_dst() -> None:
    h = ContinuousHours("24/5")
    # Friday 17:00 New York (EDT, UTC-4) = 21:00 UTC: closed until Sunday 17:00 = 21:00 UTC
    assert h.is_open(t("2024-03-15 20:59")) and not h.is_open(t("2024-03-15 21:00"))
    assert not h.in_hours(t("2024-03-16 12:00"), "1h")
    assert h.next_open(t("2024-03-16 12:00")) == t("2024-03-17 21:00")
    # in winter (EST, UTC-5) Sunday 17:00 New York is 22:00 UTC
    assert h.next_open(t("2024-01-13 12:00")) == t("2024-01-14 22:00")
    assert h.is_open(t("2024-01-14 22:00"))
    assert not h.in_hours(t("2024-03-16"), "1d") and h.in_hours(t("2024-03-18"), "1d")


def test_fx_sessions_since_counts_weekdays_only() -> None:
    h = ContinuousHours("24/5")
    # Friday's FX day (ends Fri 17:00 NY); by Monday 23:00 UTC (Mon 19:00 NY, so the FX day
    # is Tuesday) the Monday FX day has ended: one session behind
    assert h.sessions_since(t("2024-03-15 12:00"), t("2024-03-18 23:00")) == 1
    assert h.sessions_since(t("2024-03-15 12:00"), t("2024-03-17 12:00")) == 0
