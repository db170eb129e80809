"""Stress tables: hand-computed window statistics, crisis overlap, regime attribution (t-1)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mltrader.backtest.stress import (
    CRISES,
    CRISIS_COLUMNS,
    REGIME_COLUMNS,
    STAT_KEYS,
    crisis_table,
    period_stats,
    regime_table,
    stress_html,
)

TZ = "America/New_York"


def _series(values: list[float], start: str = "2021-01-04") -> pd.Series:
    index = pd.bdate_range(start, periods=len(values), tz=TZ)
    return pd.Series(values, index=index, dtype=float)


def _path(start: str, end: str, seed: int = 0, tz: str = TZ) -> pd.Series:
    index = pd.bdate_range(start, end, tz=tz)
    rng = np.random.default_rng(seed)
    return pd.Series(100_000 * np.cumprod(1 + rng.normal(3e-4, 0.01, len(index))), index=index)


# --- period_stats ----------------------------------------------------------------------

def test_period_stats_whole_series_by_hand() -> None:
    equity = _series([110.0, 99.0, 108.9, 121.0])
    stats = period_stats(equity, initial_cash=100.0)
    r = np.array([0.1, -0.1, 0.1, 121.0 / 108.9 - 1])
    assert list(stats) == list(STAT_KEYS)
    assert stats["bars"] == 4
    assert stats["total_return"] == pytest.approx(0.21)
    assert stats["cagr"] == pytest.approx(1.21 ** (252 / 4) - 1)
    assert stats["annual_volatility"] == pytest.approx(np.std(r, ddof=1) * math.sqrt(252))
    assert stats["sharpe"] == pytest.approx(r.mean() / np.std(r, ddof=1) * math.sqrt(252))
    assert stats["max_drawdown"] == pytest.approx(-0.1)


def test_first_return_needs_initial_cash() -> None:
    equity = _series([110.0, 99.0, 108.9, 121.0])
    stats = period_stats(equity)  # no initial cash: the first bar has no return
    assert stats["bars"] == 3
    assert stats["total_return"] == pytest.approx(121.0 / 110.0 - 1)
    assert stats["max_drawdown"] == pytest.approx(-0.1)


def test_sub_window_drawdown_starts_from_the_close_before_it() -> None:
    # the peak 120 is the close just before the window: the window's path is 90, 100, 80 / 120
    equity = _series([100.0, 120.0, 90.0, 100.0, 80.0, 130.0])
    mask = np.array([False, False, True, True, True, False])
    stats = period_stats(equity, mask, initial_cash=100.0)
    assert stats["bars"] == 3
    assert stats["total_return"] == pytest.approx(80 / 120 - 1)
    assert stats["max_drawdown"] == pytest.approx(80 / 120 - 1)
    up = period_stats(equity, np.array([False, True, False, False, False, True]),
                      initial_cash=100.0)
    assert up["max_drawdown"] == 0.0  # both returns up: no fall below the path's peak
    assert up["total_return"] == pytest.approx(1.2 * 1.625 - 1)


def test_period_stats_undefined_values() -> None:
    equity = _series([100.0, 101.0, 102.0])
    none = period_stats(equity, np.zeros(3, dtype=bool), initial_cash=100.0)
    assert none["bars"] == 0
    assert all(none[k] is None for k in STAT_KEYS if k != "bars")
    one = period_stats(equity, np.array([False, True, False]), initial_cash=100.0)
    assert one["bars"] == 1 and one["total_return"] == pytest.approx(0.01)
    assert one["sharpe"] is None and one["annual_volatility"] is None
    flat = period_stats(_series([100.0] * 5), initial_cash=100.0)
    assert flat["sharpe"] is None and flat["total_return"] == 0.0
    assert flat["max_drawdown"] == 0.0
    with pytest.raises(ValueError, match="mask"):
        period_stats(equity, np.ones(2, dtype=bool))


def test_period_stats_leaves_out_returns_next_to_nan_equity() -> None:
    equity = _series([100.0, 110.0, np.nan, 121.0, 133.1])
    stats = period_stats(equity, initial_cash=100.0)
    assert stats["bars"] == 3  # the returns into and out of the NaN bar are gone
    assert stats["total_return"] == pytest.approx(1.0 * 1.1 * 1.1 - 1)
    assert all(v is None or math.isfinite(v) for v in stats.values())


# --- crisis_table ----------------------------------------------------------------------

def test_crisis_partial_overlap_and_missing_windows() -> None:
    equity = _path("2007-06-01", "2009-06-30")
    table = crisis_table(equity, initial_cash=100_000.0)
    assert list(table.columns) == list(CRISIS_COLUMNS)
    assert list(table["crisis"]) == ["2008-2009 financial crisis"]
    row = table.iloc[0]
    assert row["first"] == pd.Timestamp("2008-01-01", tz=TZ)
    assert row["last"] == pd.Timestamp("2009-06-30", tz=TZ)
    assert bool(row["partial"])
    inside = equity.loc["2008-01-01":"2009-06-30"]
    before = equity.loc[:"2007-12-31"].iloc[-1]
    assert row["bars"] == len(inside)
    assert row["strategy_total_return"] == pytest.approx(inside.iloc[-1] / before - 1)
    assert row["benchmark_total_return"] is None or pd.isna(row["benchmark_total_return"])


def test_crisis_full_window_with_benchmark_and_weekend_edge() -> None:
    equity = _path("2021-06-01", "2022-12-30")  # 2022-12-31 is a Saturday
    bench = _path("2021-06-01", "2022-12-30", seed=1)
    table = crisis_table(equity, bench, initial_cash=100_000.0,
                         benchmark_initial_cash=100_000.0)
    assert list(table["crisis"]) == ["2022 rate shock"]
    row = table.iloc[0]
    assert not bool(row["partial"])
    window = bench.loc["2022-01-01":]
    prev = bench.loc[:"2021-12-31"].iloc[-1]
    assert row["benchmark_bars"] == len(window)
    assert row["benchmark_total_return"] == pytest.approx(window.iloc[-1] / prev - 1)
    assert row["benchmark_max_drawdown"] == pytest.approx(
        min(0.0, (window / np.maximum.accumulate(np.maximum(window, prev)) - 1).min()))


def test_crisis_window_dates_use_the_bar_time_zone() -> None:
    # a bar at 2020-03-31 20:00 New York is 2020-04-01 in UTC: it is still inside Q1
    index = pd.DatetimeIndex(["2020-03-30 20:00", "2020-03-31 20:00", "2020-04-01 20:00"],
                             tz=TZ)
    equity = pd.Series([100.0, 90.0, 95.0], index=index)
    row = crisis_table(equity).iloc[0]
    assert row["last"] == index[1] and row["bars"] == 1
    assert row["strategy_total_return"] == pytest.approx(-0.1)


def test_crisis_table_empty_cases() -> None:
    table = crisis_table(_path("2015-01-01", "2016-12-31"))
    assert table.empty and list(table.columns) == list(CRISIS_COLUMNS)
    empty = crisis_table(pd.Series([], index=pd.DatetimeIndex([], tz=TZ), dtype=float))
    assert empty.empty and list(empty.columns) == list(CRISIS_COLUMNS)
    assert "No named crisis period" in stress_html(table, None)


def test_crisis_table_covers_all_default_windows() -> None:
    table = crisis_table(_path("1999-01-01", "2023-06-30"))
    assert list(table["crisis"]) == list(CRISES)
    assert not table["partial"].any()


# --- regime_table ----------------------------------------------------------------------

def _planted_regimes(n: int = 300, seed: int = 3) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """Regimes in random blocks; bar t gains 1% if the regime at t-1 is 0, loses 2% if 1."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(rng.integers(0, 2, n), rng.integers(1, 6, n))[:n]
    assert codes.size == n
    index = pd.bdate_range("2010-01-04", periods=n, tz=TZ)
    r = np.where(codes[:-1] == 0, 0.01, -0.02)
    r = np.concatenate(([0.005], r))  # bar 0: previous regime unknown
    equity = pd.Series(100.0 * np.cumprod(1 + r), index=index)
    return equity, pd.Series(codes.astype(float), index=index), codes


def test_regime_attribution_uses_previous_bar_regime() -> None:
    equity, regimes, codes = _planted_regimes()
    table = regime_table(equity, regimes, ["calm", "stress"], initial_cash=100.0)
    assert list(table.columns) == list(REGIME_COLUMNS)
    assert list(table["regime"]) == ["calm", "stress", "unknown"]
    calm, stress, unknown = (table.iloc[i] for i in range(3))
    n_calm = int((codes[:-1] == 0).sum())
    n_stress = int((codes[:-1] == 1).sum())
    assert calm["bars"] == n_calm and stress["bars"] == n_stress and unknown["bars"] == 1
    assert calm["strategy_total_return"] == pytest.approx(1.01 ** n_calm - 1)
    assert stress["strategy_total_return"] == pytest.approx(0.98 ** n_stress - 1)
    assert calm["strategy_max_drawdown"] == 0.0  # only gains when attributed correctly
    assert calm["strategy_sharpe"] is None  # constant +1%: no volatility
    assert unknown["strategy_total_return"] == pytest.approx(0.005)
    assert table["share"].sum() == pytest.approx(1.0)
    assert calm["share"] == pytest.approx(n_calm / len(equity))


def test_regime_attribution_same_bar_would_differ() -> None:
    # guard that the planted case discriminates: same-bar attribution mixes gains and losses
    _, _, codes = _planted_regimes()
    r = np.where(codes[:-1] == 0, 0.01, -0.02)
    assert (r[codes[1:] == 0] < 0).any()


def test_regime_nan_goes_to_unknown_and_earlier_stamp_fills_first_bar() -> None:
    equity, regimes, codes = _planted_regimes()
    regimes = regimes.copy()
    regimes.iloc[[10, 50]] = np.nan
    # a regime stamp before the first bar: bar 0 is attributed to it
    before = pd.Series([0.0], index=[equity.index[0] - pd.Timedelta(days=3)])
    table = regime_table(equity, pd.concat([before, regimes]), ["calm", "stress"],
                         initial_cash=100.0)
    unknown = table.set_index("regime").loc["unknown"]
    assert unknown["bars"] == 2  # returns of bars 11 and 51
    assert unknown["strategy_total_return"] == pytest.approx(
        (1 + (0.01 if codes[10] == 0 else -0.02)) * (1 + (0.01 if codes[50] == 0 else -0.02))
        - 1)
    assert table["bars"].sum() == len(equity)


def test_regime_table_without_initial_cash_has_no_unknown_row() -> None:
    equity, regimes, _ = _planted_regimes()
    table = regime_table(equity, regimes, ["calm", "stress"])
    assert list(table["regime"]) == ["calm", "stress"]
    assert table["bars"].sum() == len(equity) - 1


def test_regime_table_with_benchmark_names_and_empty_regime() -> None:
    equity, regimes, _ = _planted_regimes()
    labels = regimes.map({0.0: "calm", 1.0: "stress"})
    table = regime_table(equity, labels, ["calm", "stress", "crash"], benchmark=equity * 2,
                         initial_cash=100.0, benchmark_initial_cash=200.0)
    crash = table.set_index("regime").loc["crash"]
    assert crash["bars"] == 0 and crash["share"] == 0.0
    assert crash["strategy_total_return"] is None or pd.isna(crash["strategy_total_return"])
    np.testing.assert_allclose(table["benchmark_total_return"].astype(float),
                               table["strategy_total_return"].astype(float), equal_nan=True)


def test_regime_table_bad_codes_raise() -> None:
    equity, regimes, _ = _planted_regimes()
    with pytest.raises(ValueError, match="code"):
        regime_table(equity, regimes + 5, ["calm", "stress"])
    with pytest.raises(ValueError, match="time zones"):
        regime_table(equity, regimes.tz_localize(None), ["calm", "stress"])


# --- HTML ------------------------------------------------------------------------------

def test_stress_html_formats_percentages_and_missing_values() -> None:
    equity, regimes, _ = _planted_regimes()
    crisis = crisis_table(_path("2007-06-01", "2009-06-30"), initial_cash=100_000.0)
    regime = regime_table(equity, regimes, ["calm", "stress", "crash"], initial_cash=100.0)
    text = stress_html(crisis, regime)
    assert "<h2>Crisis periods</h2>" in text and "<h2>Market regimes</h2>" in text
    assert "2008-2009 financial crisis" in text and "(partial)" in text
    assert "2008-01-01 to 2009-06-30" in text
    calm = regime.set_index("regime").loc["calm"]
    assert f"{calm['strategy_total_return']:.2%}" in text
    assert "n/a" in text  # the empty "crash" regime and the constant-return Sharpe
    assert "(benchmark)" not in text  # no benchmark: no empty benchmark columns
    assert text.count("<table") == 2
