"""Calendars: annualisation checked by hand per calendar and interval, suffix defaults,
session numbers (FX roll at 17:00 New York across DST, UTC days for crypto, exchange dates)."""

from __future__ import annotations

import math
import warnings

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest

from mltrader.data.calendars import (
    ANNUALISATION_YEARS,
    MarketCalendar,
    bars_per_year,
    expected_bars,
    periods_per_year,
    resolve_calendar,
    session_ids,
    symbol_calendar,
)
from mltrader.errors import DataError


def _day(s: str) -> int:
    return int(pd.Timestamp(s).to_datetime64().astype("datetime64[D]").astype(np.int64))


def _hand_sessions(name: str) -> tuple[float, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """Sessions a year counted with a plain loop, and every session's (open, close)."""
    first, last = ANNUALISATION_YEARS
    with warnings.catch_warnings():  # exchange-calendars' own pandas-4 deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        cal = xcals.get_calendar(name, start=f"{first}-01-01", end=f"{last}-12-31")
        n = 0
        hours = []
        for label in cal.sessions:
            if first <= label.year <= last:
                n += 1
                hours.append((cal.session_open(label), cal.session_close(label)))
    return n / (last - first + 1), hours


# ----------------------------------------------------------------------- annualisation
@pytest.mark.parametrize("name", ["XNYS", "XLON", "XTSE"])
def test_exchange_daily_and_hourly_bars_a_year_match_a_hand_count(name):
    per_year, hours = _hand_sessions(name)
    assert bars_per_year(name, "1d") == pytest.approx(per_year)
    # the regular (most common) session, hourly bars rounded up: NYSE 6.5 h -> 7
    lengths = pd.Series([(c - o).total_seconds() / 3600 for o, c in hours]).mode().iloc[0]
    assert bars_per_year(name, "1h") == pytest.approx(per_year * math.ceil(lengths))
    assert bars_per_year(name, "1m") == pytest.approx(per_year * round(lengths * 60))
    assert bars_per_year(name, "1wk") == 52 and bars_per_year(name, "1mo") == 12


def test_nyse_is_about_252_sessions_and_7_hourly_bars():
    per_year, _ = _hand_sessions("XNYS")
    assert 250 < per_year < 253
    assert bars_per_year("XNYS", "1h") == pytest.approx(7 * per_year)
    assert bars_per_year("XNYS", "30m") == pytest.approx(13 * per_year)


def test_a_lunch_break_splits_the_session():
    # Shanghai 09:30-11:30 and 13:00-15:00: 2 + 2 hourly bars, not ceil(5.5 h) = 6
    per_year, _ = _hand_sessions("XSHG")
    assert bars_per_year("XSHG", "1h") == pytest.approx(4 * per_year)
    assert bars_per_year("XSHG", "1d") == pytest.approx(per_year)


@pytest.mark.parametrize(("interval", "bars"), [
    ("1d", 365), ("1h", 24 * 365), ("30m", 48 * 365), ("1m", 1440 * 365), ("1wk", 52),
    ("1mo", 12)])
def test_crypto_counts_every_hour_of_every_day(interval, bars):
    assert bars_per_year("24/7", interval) == bars


@pytest.mark.parametrize(("interval", "bars"), [
    ("1d", 5 * 52), ("1h", 24 * 5 * 52), ("15m", 96 * 5 * 52), ("1wk", 52), ("1mo", 12)])
def test_fx_counts_five_days_of_24_hours(interval, bars):
    assert bars_per_year("24/5", interval) == bars


def test_periods_per_year_follows_the_calendar_and_keeps_the_old_rule_without_one():
    days = pd.date_range("2021-01-01", periods=400, freq="D", tz="UTC")
    assert periods_per_year(days, "24/7") == 365
    assert periods_per_year(days, MarketCalendar("24/5"), "1h") == 6240
    assert periods_per_year(pd.bdate_range("2021-01-04", periods=300, tz="UTC")) == 252
    with pytest.raises(DataError, match="interval '2h' is not supported"):
        bars_per_year("XNYS", "2h")


# ----------------------------------------------------------------------- defaults
@pytest.mark.parametrize(("symbol", "calendar"), [
    ("AAPL", "XNYS"), ("BRK.B", "XNYS"), ("600519.SS", "XSHG"), ("600000.SH", "XSHG"),
    ("000001.SZ", "XSHG"), ("0700.HK", "XHKG"), ("VOD.L", "XLON"), ("7203.T", "XTKS"),
    ("RY.TO", "XTSE"), ("SAP.DE", "XETR"), ("MC.PA", "XPAR"), ("BHP.AX", "XASX"),
    ("BTC-USD", "24/7"), ("ETH-USDT", "24/7"), ("BTCUSDT", "24/7"), ("BTC/USD", "24/7"),
    ("sol-usdc", "24/7"), ("EURUSD=X", "24/5"), ("EUR/USD", "24/5"), ("EURUSD", "24/5"),
    ("LINK", "XNYS")])
def test_default_calendar_by_symbol(symbol, calendar):
    assert symbol_calendar(symbol) == calendar
    assert resolve_calendar(None, [symbol]).name == calendar


def test_an_explicit_calendar_wins_and_is_validated():
    assert resolve_calendar("xlon", ["AAPL", "BTC-USD"]).name == "XLON"
    assert resolve_calendar("24/5", ["AAPL"]).name == "24/5"
    assert resolve_calendar(None, []).name == "XNYS"
    with pytest.raises(DataError) as e:
        resolve_calendar("NYSEE", ["AAPL"])
    msg = str(e.value)
    assert "\n" not in msg and "'NYSEE'" in msg and "XNYS" in msg
    assert '"24/7"' in msg and '"24/5"' in msg


def test_mixed_suffixes_are_one_line_asking_for_data_calendar():
    with pytest.raises(DataError) as e:
        resolve_calendar(None, ["AAPL", "MSFT", "0700.HK", "BTC-USD"])
    msg = str(e.value)
    assert "\n" not in msg and "data.calendar" in msg and "0700.HK -> XHKG" in msg


def test_the_config_key_is_checked_and_defaults_to_none():
    from mltrader.config import config_from_dict
    from mltrader.errors import ConfigError

    assert config_from_dict({}).data.calendar is None
    assert config_from_dict({"data": {"calendar": "24/7"}}).data.calendar == "24/7"
    with pytest.raises(ConfigError, match="data.calendar: unknown calendar 'MARS'"):
        config_from_dict({"data": {"calendar": "MARS"}})


# ----------------------------------------------------------------------- sessions
@pytest.mark.parametrize(("utc", "fx_day"), [
    # winter (EST, UTC-5): the FX day rolls at 22:00 UTC
    ("2024-03-07 21:59", "2024-03-07"), ("2024-03-07 22:00", "2024-03-08"),
    # Friday 17:00 New York: the weekend close (a Saturday "day")
    ("2024-03-08 21:59", "2024-03-08"), ("2024-03-08 22:00", "2024-03-09"),
    # DST began Sunday 2024-03-10: Sunday 17:00 EDT is 21:00 UTC, Monday's FX day
    ("2024-03-10 20:59", "2024-03-10"), ("2024-03-10 21:00", "2024-03-11"),
    ("2024-03-11 20:59", "2024-03-11"), ("2024-03-11 21:00", "2024-03-12"),
    # and back: 2024-11-03, 17:00 EST = 22:00 UTC again
    ("2024-11-04 21:30", "2024-11-04"), ("2024-11-04 22:00", "2024-11-05"),
    # a daily bar labelled 00:00 UTC belongs to its date
    ("2024-03-12 00:00", "2024-03-12")])
def test_fx_day_rolls_at_17_new_york_across_dst(utc, fx_day):
    idx = pd.DatetimeIndex([utc], tz="UTC")
    assert session_ids("24/5", idx)[0] == _day(fx_day)


def test_crypto_sessions_are_utc_days():
    idx = pd.DatetimeIndex(["2024-03-09 23:59", "2024-03-10 00:00", "2024-03-10 23:00"],
                           tz="UTC")
    assert list(session_ids("24/7", idx)) == [_day("2024-03-09"), _day("2024-03-10"),
                                              _day("2024-03-10")]
    ny = idx.tz_convert("America/New_York")  # the index's time zone does not matter
    assert list(session_ids("24/7", ny)) == list(session_ids("24/7", idx))


def test_exchange_sessions_are_the_local_session_date_not_the_utc_date():
    # Sydney (AEDT, UTC+11): the 10:00 open of 2024-03-08 is 23:00 UTC on 03-07
    asx = pd.DatetimeIndex(["2024-03-07 23:00", "2024-03-08 04:00", "2024-03-08 00:00"],
                           tz="UTC")
    assert list(session_ids("XASX", asx)) == [_day("2024-03-08")] * 3
    # NYSE: daily labels are their date; an after-hours bar is the New York date
    nyse = pd.DatetimeIndex(["2024-03-08 00:00", "2024-03-08 14:30", "2024-03-08 23:00",
                             "2024-03-09 01:00"], tz="UTC")
    assert list(session_ids("XNYS", nyse)) == [_day("2024-03-08")] * 4
    # bar by bar: one timestamp alone (as the live runner sees it) gets the same
    one = [int(session_ids("XASX", asx[i:i + 1])[0]) for i in range(len(asx))]
    assert one == list(session_ids("XASX", asx))
    assert session_ids("XNYS", pd.DatetimeIndex([], tz="UTC")).dtype == np.int64


# ----------------------------------------------------------------------- expected bars
def test_expected_bars_per_calendar():
    start, end = "2024-03-08 20:00", "2024-03-10 23:00"
    assert len(expected_bars("24/7", start, end, "1h")) == 52
    fx = expected_bars("24/5", start, end, "1h")
    # Friday 20:00, 21:00 UTC (before 17:00 EST), then from Sunday 17:00 EDT = 21:00 UTC
    assert list(fx.strftime("%d %H")) == ["08 20", "08 21", "10 21", "10 22", "10 23"]
    days = expected_bars("24/5", "2024-03-04", "2024-03-17", "1d")
    assert len(days) == 10 and (days.day_of_week < 5).all()
    nyse = expected_bars("XNYS", "2024-03-08", "2024-03-11 23:00", "1h")
    assert len(nyse) == 14  # two sessions of 7 hourly slots
    assert list(expected_bars("XNYS", "2024-03-08", "2024-03-11", "1d").day) == [8, 11]


def test_expected_bars_keeps_the_last_period() -> None:
    """np.arange over nanosecond integers computes its length in floating point and dropped
    the last day of a 5-year 24/7 range: the last bar was reported as outside the calendar."""
    start, end = pd.Timestamp("2019-01-01", tz="UTC"), pd.Timestamp("2023-12-31", tz="UTC")
    got = expected_bars("24/7", start, end, "1d")
    assert got[0] == start and got[-1] == end and len(got) == 1826


@pytest.mark.parametrize("name", ["XTKS", "XASX", "CMES", "XNYS"])
def test_daily_bars_at_midnight_utc_are_their_date(name) -> None:
    """The fast path for daily bars (no schedule look-up, the live runner's per-bar cost)
    rests on this: where 00:00 UTC falls inside a session (Tokyo's open, Sydney's in
    summer, CME's evening), that session is labelled the same date."""
    from mltrader.data.schedules import calendar_schedule

    idx = pd.date_range("2019-01-01", "2023-12-31", freq="D", tz="UTC")
    assert (session_ids(name, idx) == idx.as_unit("ns").asi8 // 86_400_000_000_000).all()
    sched = calendar_schedule(name, idx[0], idx[-1])
    opens = pd.DatetimeIndex(sched["open"]).tz_convert("UTC")
    closes = pd.DatetimeIndex(sched["close"]).tz_convert("UTC")
    labels = pd.DatetimeIndex(sched.index)
    for o, c, lab in zip(opens, closes, labels, strict=True):
        midnight = c.normalize()
        if o <= midnight < c:
            assert lab.date() == midnight.date(), (name, o, c, lab)
