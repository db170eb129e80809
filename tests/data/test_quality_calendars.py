"""Gap detection on 24/7 (crypto) and 24/5 (FX) calendars, and where the report says the
warnings are."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mltrader.data.bars import Bars
from mltrader.data.calendars import MarketCalendar, expected_bars
from mltrader.data.quality import check_bars, check_frame


def _frame(idx: pd.DatetimeIndex, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(idx))))
    return pd.DataFrame({"close": close}, index=idx)


def _gaps(rep) -> list[tuple[str, str]]:
    cal_kinds = {"missing_session", "missing_bars", "non_session", "misaligned"}
    return [(i.kind, str(i.time)[:16]) for i in rep.issues if i.kind in cal_kinds]


def test_crypto_daily_expects_every_day_weekends_included():
    idx = pd.date_range("2024-03-01", "2024-04-30", freq="D", tz="UTC")
    assert _gaps(check_frame(_frame(idx), "BTC-USD", "24/7")) == []
    gappy = idx.drop(pd.DatetimeIndex(["2024-03-09", "2024-03-10"], tz="UTC"))  # a weekend
    rep = check_frame(_frame(gappy), "BTC-USD", "24/7")
    assert _gaps(rep) == [("missing_session", "2024-03-09 00:00"),
                          ("missing_session", "2024-03-10 00:00")]
    assert (rep.calendar, rep.interval) == ("24/7", "1d")
    # the same file on an exchange calendar: every weekend bar is off-session
    nyse = check_frame(_frame(idx), "BTC-USD", "XNYS")
    assert nyse.summary["non_session"] > 10


def test_crypto_hourly_missing_bars_and_whole_days():
    idx = pd.date_range("2024-03-01", "2024-03-05 23:00", freq="h", tz="UTC")
    drop = idx[(idx.day == 3)].append(idx[(idx.day == 4) & (idx.hour < 3)])
    rep = check_frame(_frame(idx.drop(drop)), "ETH-USD", "24/7", "1h")
    assert _gaps(rep) == [("missing_session", "2024-03-03 00:00"),
                          ("missing_bars", "2024-03-04 00:00")]
    assert rep.issues[1].detail == "3 of 24 60-minute bars missing"


def test_fx_daily_weekend_bars_are_off_session_and_weekdays_are_expected():
    idx = pd.date_range("2024-03-04", "2024-03-29", freq="D", tz="UTC")
    weekdays = idx[idx.day_of_week < 5]
    assert _gaps(check_frame(_frame(weekdays), "EURUSD=X", "24/5")) == []
    rep = check_frame(_frame(idx.drop(pd.Timestamp("2024-03-13", tz="UTC"))), "EURUSD=X",
                      "24/5")
    kinds = [k for k, _ in _gaps(rep)]
    assert kinds.count("non_session") == 6 and ("missing_session", "2024-03-13 00:00") in \
        _gaps(rep)


def test_fx_hourly_weekend_close_across_dst():
    # Friday 2024-03-08 17:00 EST (22:00 UTC) to Sunday 2024-03-10 17:00 EDT (21:00 UTC)
    full = expected_bars("24/5", "2024-03-06", "2024-03-13 23:00", "1h")
    assert pd.Timestamp("2024-03-08 21:00", tz="UTC") in full
    assert pd.Timestamp("2024-03-08 22:00", tz="UTC") not in full
    assert pd.Timestamp("2024-03-10 20:00", tz="UTC") not in full
    assert pd.Timestamp("2024-03-10 21:00", tz="UTC") in full
    assert _gaps(check_frame(_frame(full), "EURUSD", "24/5", "1h")) == []
    # a bar inside the close, a whole FX day missing, and part of another
    sat = pd.DatetimeIndex(["2024-03-09 12:00"], tz="UTC")
    day = full[(full >= pd.Timestamp("2024-03-11 21:00", tz="UTC"))
               & (full < pd.Timestamp("2024-03-12 21:00", tz="UTC"))]  # FX day 03-12
    idx = full.append(sat).sort_values().drop(day).drop(full[5:7])
    rep = check_frame(_frame(idx), "EURUSD", "24/5", "1h")
    assert _gaps(rep) == [("non_session", "2024-03-09 12:00"),
                          ("missing_bars", "2024-03-06 00:00"),
                          ("missing_session", "2024-03-12 00:00")]
    assert rep.issues[1].detail.startswith("2 of ")


def test_check_bars_reports_its_calendar_and_where_the_warnings_are():
    idx = pd.date_range("2024-03-01", "2024-04-30", freq="D", tz="UTC")
    close = np.column_stack([_frame(idx, 1)["close"], _frame(idx, 2)["close"]])
    close[[3, 4, 5, 6, 7, 8, 9], 0] = np.nan  # BTC-USD misses 7 days
    close[[20, 30], 1] = np.nan  # ETH-USD misses 2
    bars = Bars(index=idx, symbols=("BTC-USD", "ETH-USD"), close=close, source="t")
    rep = check_bars(bars, calendar=MarketCalendar("24/7"))
    assert (rep.calendar, rep.interval) == ("24/7", "1d")
    assert rep.summary["missing_session"] == 9
    assert rep.where()[0] == ("  missing_session: 9 - BTC-USD 2024-03-04, 2024-03-05, "
                              "2024-03-06, 2024-03-07, 2024-03-08 ... and 4 more")
    text = rep.text(detected=["calendar", "interval"])
    assert ("judged against calendar 24/7 (default for the symbols), interval 1d (detected)"
            in text)
    assert "missing_session: 9 - BTC-USD" in text
    clean = check_bars(Bars(index=idx, symbols=("BTC-USD",), close=close[:, 1:], source="t")
                       .select(None, "2024-03-01", "2024-03-20"), calendar="24/7")
    assert clean.text() == ("data quality: no issues found (judged against calendar 24/7, "
                            "interval 1d)")
