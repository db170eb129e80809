"""`detect_interval`: the bar interval from timestamp spacing, and in the load report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mltrader.data.files import load_file_report
from mltrader.data.intervals import INTERVALS, detect_interval


def sessions(freq: str, days: int = 5) -> pd.DatetimeIndex:
    """Intraday bars 09:30-16:00 New York on ``days`` weekdays (overnight gaps included)."""
    out = [pd.date_range(f"{d.date()} 09:30", f"{d.date()} 15:59", freq=freq,
                         tz="America/New_York")
           for d in pd.bdate_range("2024-01-02", periods=days)]
    return out[0].append(out[1:]).tz_convert("UTC")


@pytest.mark.parametrize("freq, want", [("1min", "1m"), ("5min", "5m"), ("15min", "15m"),
                                        ("30min", "30m"), ("1h", "1h")])
def test_intraday(freq: str, want: str) -> None:
    assert detect_interval(sessions(freq)) == want


@pytest.mark.parametrize("index, want", [
    (pd.bdate_range("2020-01-01", periods=300), "1d"),  # weekend gaps
    (pd.date_range("2020-01-01", periods=300, freq="D"), "1d"),  # crypto, every day
    (pd.date_range("2020-01-03", periods=100, freq="W-FRI"), "1wk"),
    (pd.date_range("2020-01-06", periods=100, freq="W-MON"), "1wk"),
    (pd.date_range("2020-01-31", periods=36, freq="ME"), "1mo"),
    (pd.date_range("2020-01-01", periods=36, freq="MS"), "1mo"),
    (pd.date_range("2020-01-31", periods=36, freq="BME"), "1mo"),
])
def test_daily_weekly_monthly(index: pd.DatetimeIndex, want: str) -> None:
    assert detect_interval(index) == want


def test_weekly_with_holiday_moved_bars_and_daily_with_holidays() -> None:
    weeks = pd.date_range("2020-01-03", periods=52, freq="W-FRI")
    moved = weeks.where(weeks.month != 4, weeks - pd.Timedelta(days=1))  # Thursdays in April
    assert detect_interval(pd.DatetimeIndex(moved)) == "1wk"
    days = pd.bdate_range("2020-01-01", periods=300)
    assert detect_interval(days.delete(list(range(5, 300, 20)))) == "1d"


def test_short_and_empty_input_is_a_daily_guess() -> None:
    assert detect_interval(pd.DatetimeIndex([])) == "1d"
    assert detect_interval(pd.DatetimeIndex(["2020-01-01"])) == "1d"
    assert INTERVALS == ("1m", "5m", "15m", "30m", "1h", "1d", "1wk", "1mo")


def test_load_report_carries_the_interval(tmp_path: Path) -> None:
    p = tmp_path / "monthly.csv"
    p.write_text("date,close\n2024-01-31,1\n2024-02-29,2\n2024-03-31,3\n2024-04-30,4\n")
    assert load_file_report(p)[1].interval == "1mo"
