"""Metrics: hand-computed tiny examples for every key, plus numpy cross-checks on random paths."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mltrader.backtest.metrics import (
    BENCHMARK_KEYS,
    METRIC_KEYS,
    benchmark_metrics,
    compute_metrics,
    drawdown_series,
    max_drawdown_duration_days,
)
from mltrader.backtest.result import FILL_COLUMNS, TRADE_COLUMNS, BacktestResult


def make_result(
    equity: Sequence[float],
    initial_cash: float = 100.0,
    *,
    dates: Sequence[str] | pd.DatetimeIndex | None = None,
    positions: pd.DataFrame | None = None,
    weights: pd.DataFrame | None = None,
    fills: pd.DataFrame | None = None,
    trades: pd.DataFrame | None = None,
) -> BacktestResult:
    """A result whose equity is given; unspecified tables are empty or all-zero (all cash)."""
    index = (
        pd.DatetimeIndex(dates) if dates is not None
        else pd.bdate_range("2020-01-01", periods=len(equity))
    )
    eq = pd.Series(np.asarray(equity, dtype=float), index=index, name="equity")
    if positions is None:
        positions = pd.DataFrame({"AAA": np.zeros(len(eq))}, index=index)
    if weights is None:
        weights = pd.DataFrame(0.0, index=index, columns=positions.columns)
    if fills is None:
        fills = pd.DataFrame({c: pd.Series(dtype=float) for c in FILL_COLUMNS})
    if trades is None:
        trades = pd.DataFrame({c: pd.Series(dtype=float) for c in TRADE_COLUMNS})
    return BacktestResult(
        equity=eq, cash=eq.copy(), positions=positions, weights=weights, fills=fills,
        trades=trades, initial_cash=float(initial_cash),
    )


def trades_frame(pnls: Sequence[float], open_flags: Sequence[bool]) -> pd.DataFrame:
    """Trades table with the given pnl / open columns and plausible filler elsewhere."""
    n = len(pnls)
    entry = pd.bdate_range("2020-01-01", periods=n)
    return pd.DataFrame({
        "symbol": [f"S{i}" for i in range(n)],
        "entry_date": entry,
        "exit_date": entry + pd.Timedelta(days=3),
        "entry_price": 10.0,
        "exit_price": 11.0,
        "max_qty": 1.0,
        "pnl": np.asarray(pnls, dtype=float),
        "return": np.asarray(pnls, dtype=float) / 10.0,
        "bars_held": 3,
        "open": list(open_flags),
    }, columns=list(TRADE_COLUMNS))


def approx(value: float | None, expected: float) -> None:
    assert value is not None
    assert math.isclose(value, expected, rel_tol=1e-12, abs_tol=1e-12), (value, expected)


# --- hand-computed examples -------------------------------------------------------------

def test_returns_and_risk_on_three_bars() -> None:
    # returns +10%, -10%, +10% from 100: mean 1/30, sample variance 1/75, downside mean sq 1/300
    res = make_result([110.0, 99.0, 108.9], 100.0,
                      dates=["2020-01-06", "2020-01-07", "2020-01-10"])
    m = compute_metrics(res)
    approx(m["total_return"], 0.089)
    approx(m["cagr"], 1.089 ** (252 / 3) - 1)
    approx(m["annual_volatility"], math.sqrt(252 / 75))
    approx(m["sharpe"], math.sqrt(75 * 252) / 30)
    approx(m["sortino"], math.sqrt(300 * 252) / 30)
    approx(m["max_drawdown"], -0.1)
    # peak 110 on Jan 6 never regained: open drawdown runs to the last bar, Jan 10
    assert m["longest_drawdown_days"] == 4


def test_first_bar_return_is_measured_from_initial_cash() -> None:
    m = compute_metrics(make_result([90.0, 99.0], 100.0))
    approx(m["total_return"], -0.01)
    # returns -10% and +10%: the drop below initial cash is a drawdown
    approx(m["max_drawdown"], -0.1)
    approx(m["sharpe"], 0.0)
    assert m["annual_volatility"] is not None


def test_drawdowns_with_recovery() -> None:
    dates = ["2021-03-01", "2021-03-02", "2021-03-03", "2021-03-04", "2021-03-08", "2021-03-15"]
    equity = [90.0, 95.0, 100.0, 120.0, 110.0, 125.0]
    res = make_result(equity, 100.0, dates=dates)
    dd = drawdown_series(res.equity, 100.0)
    np.testing.assert_allclose(dd.to_numpy(), [-0.1, -0.05, 0.0, 0.0, 110 / 120 - 1, 0.0])
    assert dd.index.equals(res.equity.index)
    m = compute_metrics(res)
    approx(m["max_drawdown"], -0.1)
    # initial-cash peak (dated at the first bar) regained Mar 3: 2 days; 120 on Mar 4
    # regained Mar 15: 11 days
    assert m["longest_drawdown_days"] == 11
    # the deepest drawdown (-10% on Mar 1) is the short one: Mar 1 -> Mar 3
    assert m["max_drawdown_duration_days"] == 2


def test_flat_equity_has_undefined_ratios() -> None:
    m = compute_metrics(make_result([100.0] * 5, 100.0))
    assert m["total_return"] == 0.0
    assert m["cagr"] == 0.0
    assert m["annual_volatility"] == 0.0
    assert m["sharpe"] is None
    assert m["sortino"] is None
    assert m["max_drawdown"] == 0.0
    assert m["longest_drawdown_days"] == 0
    assert m["win_rate"] is None
    assert m["trades"] == 0
    assert m["fills"] == 0
    assert m["turnover"] == 0.0
    assert m["total_costs"] == 0.0
    assert m["exposure"] == 0.0
    assert m["calmar"] is None
    assert m["max_drawdown_duration_days"] == 0
    for key in ("profit_factor", "avg_win", "avg_loss", "avg_win_loss_ratio", "expectancy",
                "expectancy_return", "best_trade_return", "worst_trade_return"):
        assert m[key] is None, key


def test_single_bar_has_no_volatility() -> None:
    m = compute_metrics(make_result([101.0], 100.0))
    assert m["annual_volatility"] is None
    assert m["sharpe"] is None
    approx(m["cagr"], 1.01 ** 252 - 1)


def test_only_gains_has_no_sortino() -> None:
    m = compute_metrics(make_result([101.0, 103.0, 104.0], 100.0))
    assert m["sortino"] is None
    assert m["sharpe"] is not None


def test_win_rate_counts_closed_trades_only() -> None:
    trades = trades_frame([5.0, -2.0, 0.0, 10.0], [False, False, False, True])
    m = compute_metrics(make_result([100.0, 101.0], trades=trades))
    approx(m["win_rate"], 1 / 3)
    assert m["trades"] == 4


def test_win_rate_none_when_all_trades_open() -> None:
    m = compute_metrics(make_result([100.0, 101.0], trades=trades_frame([3.0], [True])))
    assert m["win_rate"] is None
    assert m["trades"] == 1


def test_fills_turnover_and_costs() -> None:
    n = 126  # half a year of daily bars at 252/yr
    fills = pd.DataFrame({
        "date": pd.bdate_range("2020-01-01", periods=2),
        "symbol": ["AAA", "AAA"],
        "qty": [10.0, -5.0],
        "price": [100.0, 100.0],
        "notional": [1000.0, 500.0],
        "commission": [1.0, 0.5],
        "slippage": [0.2, 0.1],
    }, columns=list(FILL_COLUMNS))
    m = compute_metrics(make_result([1000.0] * n, 1000.0, fills=fills))
    assert m["fills"] == 2
    approx(m["total_costs"], 1.8)
    # (1500 / 2) one-sided / 1000 mean equity / 0.5 years
    approx(m["turnover"], 1.5)
    approx(m["turnover"], compute_metrics(make_result([1000.0] * n, 1000.0, fills=fills),
                                          periods_per_year=126.0)["turnover"] * 2)


def test_exposure_is_share_of_bars_with_a_position() -> None:
    index = pd.bdate_range("2020-01-01", periods=4)
    positions = pd.DataFrame({"AAA": [0.0, 1.0, 0.0, 0.0], "BBB": [0.0, 0.0, -2.0, 0.0]},
                             index=index)
    m = compute_metrics(make_result([100.0] * 4, dates=index, positions=positions))
    approx(m["exposure"], 0.5)


def test_keys_order_and_json_safety() -> None:
    trades = trades_frame([1.0, -1.0], [False, True])
    res = make_result([100.0, 102.0, 101.0, 105.0], trades=trades)
    m = compute_metrics(res)
    assert tuple(m) == METRIC_KEYS
    assert all(type(v) in (float, int, type(None)) for v in m.values())
    assert isinstance(m["trades"], int) and isinstance(m["fills"], int)
    assert isinstance(m["longest_drawdown_days"], int)
    assert isinstance(m["max_drawdown_duration_days"], int)
    json.dumps(m, allow_nan=False)


def test_rejects_empty_equity() -> None:
    with pytest.raises(ValueError):
        compute_metrics(make_result([]))


def test_calmar_is_cagr_over_max_drawdown() -> None:
    # 3 bars at 3 per year = 1 year: cagr = total return = 21%, max drawdown 110 -> 99 = -10%
    m = compute_metrics(make_result([110.0, 99.0, 121.0], 100.0), periods_per_year=3.0)
    approx(m["cagr"], 0.21)
    approx(m["max_drawdown"], -0.1)
    approx(m["calmar"], 2.1)
    # a steady loss: cagr = max drawdown = -27.1% over one year, calmar -1
    m = compute_metrics(make_result([90.0, 81.0, 72.9], 100.0), periods_per_year=3.0)
    approx(m["calmar"], -1.0)


def test_calmar_none_without_drawdown() -> None:
    assert compute_metrics(make_result([101.0, 102.0, 103.0]))["calmar"] is None


def test_max_drawdown_duration_unrecovered_vs_longest() -> None:
    dates = ["2021-01-01", "2021-01-02", "2021-01-20", "2021-01-21", "2021-01-25"]
    # shallow -1% dip Jan 1 -> Jan 20 (19 days); deep 100.5 -> 80 from Jan 20, never regained
    m = compute_metrics(make_result([100.0, 99.0, 100.5, 80.0, 90.0], 100.0, dates=dates))
    approx(m["max_drawdown"], 80.0 / 100.5 - 1.0)
    assert m["longest_drawdown_days"] == 19
    assert m["max_drawdown_duration_days"] == 5  # Jan 20 -> last bar Jan 25


def test_max_drawdown_duration_uses_last_bar_at_the_peak_and_exact_recovery() -> None:
    dates = ["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-08", "2021-01-11"]
    # peak 105 reached Jan 4, held Jan 5; trough Jan 6; regained exactly Jan 8
    res = make_result([105.0, 105.0, 95.0, 105.0, 104.0], 100.0, dates=dates)
    assert compute_metrics(res)["max_drawdown_duration_days"] == 3


def test_max_drawdown_duration_first_of_equal_troughs_and_bar_index() -> None:
    # two -50% troughs; the first one (peak at bar 0 = initial cash, regained at bar 2) counts
    equity = pd.Series([50.0, 80.0, 100.0, 120.0, 60.0, 60.0, 70.0])
    assert max_drawdown_duration_days(equity, 100.0) == 2
    # without timestamps the duration is a bar count: peak 120 at bar 1 to last bar 3
    assert max_drawdown_duration_days(pd.Series([100.0, 120.0, 50.0, 60.0]), 100.0) == 2
    assert max_drawdown_duration_days(pd.Series([110.0, 120.0]), 100.0) == 0


def test_trade_statistics_on_closed_trades() -> None:
    # closed pnl 5, -2, 0, 3, -4; the open +10 trade is left out
    trades = trades_frame([5.0, -2.0, 0.0, 10.0, 3.0, -4.0],
                          [False, False, False, True, False, False])
    trades["return"] = [0.05, -0.01, 0.0, 0.9, 0.02, -0.08]
    m = compute_metrics(make_result([100.0, 101.0], trades=trades))
    approx(m["profit_factor"], 8.0 / 6.0)
    approx(m["avg_win"], 4.0)
    approx(m["avg_loss"], -3.0)
    approx(m["avg_win_loss_ratio"], 4.0 / 3.0)
    approx(m["expectancy"], 2.0 / 5.0)
    approx(m["expectancy_return"], (0.05 - 0.01 + 0.0 + 0.02 - 0.08) / 5)
    approx(m["best_trade_return"], 0.05)
    approx(m["worst_trade_return"], -0.08)
    approx(m["win_rate"], 2 / 5)


def test_trade_statistics_only_winners() -> None:
    m = compute_metrics(make_result([100.0, 101.0], trades=trades_frame([2.0, 6.0],
                                                                        [False, False])))
    assert m["profit_factor"] is None
    approx(m["avg_win"], 4.0)
    assert m["avg_loss"] is None
    assert m["avg_win_loss_ratio"] is None
    approx(m["expectancy"], 4.0)
    approx(m["expectancy_return"], 0.4)
    approx(m["best_trade_return"], 0.6)
    approx(m["worst_trade_return"], 0.2)


def test_trade_statistics_only_losers_and_scratches() -> None:
    trades = trades_frame([-1.0, 0.0, -3.0], [False, False, False])
    m = compute_metrics(make_result([100.0, 101.0], trades=trades))
    assert m["profit_factor"] == 0.0
    assert m["avg_win"] is None
    approx(m["avg_loss"], -2.0)
    assert m["avg_win_loss_ratio"] is None
    approx(m["expectancy"], -4.0 / 3.0)
    assert m["best_trade_return"] == 0.0
    approx(m["worst_trade_return"], -0.3)


def test_trade_statistics_none_when_all_open() -> None:
    m = compute_metrics(make_result([100.0, 101.0], trades=trades_frame([3.0, -1.0],
                                                                        [True, True])))
    for key in ("profit_factor", "avg_win", "avg_loss", "avg_win_loss_ratio", "expectancy",
                "expectancy_return", "best_trade_return", "worst_trade_return"):
        assert m[key] is None, key


# --- benchmark-relative metrics ----------------------------------------------------------

def _from_returns(rets: Sequence[float], initial: float = 100.0,
                  dates: Sequence[str] | None = None) -> BacktestResult:
    return make_result(initial * np.cumprod(1.0 + np.asarray(rets, dtype=float)), initial,
                       dates=dates)


def test_benchmark_metrics_hand_computed() -> None:
    # r = 2%, 0, 1%, -1%; b = 1%, -1%, 2%, 0: means 0.5% each; centred r = 1.5, -.5, .5, -1.5
    # (%), centred b = .5, -1.5, 1.5, -.5: cov = 0.75e-4, var = 1.25e-4 each -> beta = corr = 0.6
    # intercept = 0.005 - 0.6 * 0.005 = 0.002 per bar; active = +1%, +1%, -1%, -1%: mean 0
    m = benchmark_metrics(_from_returns([0.02, 0.0, 0.01, -0.01]),
                          _from_returns([0.01, -0.01, 0.02, 0.0], initial=50.0))
    assert tuple(m) == BENCHMARK_KEYS
    approx(m["beta"], 0.6)
    approx(m["correlation"], 0.6)
    approx(m["alpha"], 0.002 * 252)
    approx(m["tracking_error"], math.sqrt(0.0004 / 3) * math.sqrt(252))
    approx(m["information_ratio"], 0.0)
    json.dumps(m, allow_nan=False)
    assert all(type(v) is float for v in m.values())


def test_benchmark_metrics_levered_benchmark_plus_drift() -> None:
    # r = 2 b + 1% exactly: beta 2, correlation 1, alpha 1% per bar x 12
    b = [0.1, -0.1, 0.1, -0.1]
    m = benchmark_metrics(_from_returns([2 * x + 0.01 for x in b]), _from_returns(b),
                          periods_per_year=12.0)
    approx(m["beta"], 2.0)
    approx(m["correlation"], 1.0)
    approx(m["alpha"], 0.12)
    # active = b + 1%: mean 1%, sample std sqrt(0.04 / 3)
    approx(m["tracking_error"], math.sqrt(0.04 / 3 * 12))
    approx(m["information_ratio"], 0.01 / math.sqrt(0.04 / 3) * math.sqrt(12))


def test_benchmark_metrics_against_itself() -> None:
    res = _from_returns([0.01, -0.02, 0.03])
    m = benchmark_metrics(res, res)
    approx(m["beta"], 1.0)
    approx(m["correlation"], 1.0)
    approx(m["alpha"], 0.0)
    assert m["tracking_error"] == 0.0
    assert m["information_ratio"] is None


def test_benchmark_metrics_constant_benchmark_and_single_bar() -> None:
    m = benchmark_metrics(_from_returns([0.01, -0.02, 0.03]), make_result([100.0] * 3))
    assert m["beta"] is None and m["alpha"] is None and m["correlation"] is None
    assert m["tracking_error"] is not None and m["information_ratio"] is not None
    single = benchmark_metrics(make_result([101.0]), make_result([99.0]))
    assert single == dict.fromkeys(BENCHMARK_KEYS)


def test_benchmark_metrics_requires_identical_index() -> None:
    res = _from_returns([0.01, 0.02, 0.03], dates=["2020-01-01", "2020-01-02", "2020-01-03"])
    with pytest.raises(ValueError, match="3 bars, benchmark 2"):
        benchmark_metrics(res, _from_returns([0.01, 0.02]))
    shifted = _from_returns([0.01, 0.02, 0.03],
                            dates=["2020-01-01", "2020-01-02", "2020-01-06"])
    with pytest.raises(ValueError, match="identical equity indexes.*position 2"):
        benchmark_metrics(res, shifted)
    with pytest.raises(ValueError, match="periods_per_year"):
        benchmark_metrics(res, res, periods_per_year=0.0)
    with pytest.raises(ValueError, match="at least one bar"):
        benchmark_metrics(make_result([]), make_result([]))


# --- cross-checks against plain re-implementations ---------------------------------------

def _ref_returns(initial: float, equity: np.ndarray) -> list[float]:
    values = [initial, *equity.tolist()]
    return [values[i] / values[i - 1] - 1.0 for i in range(1, len(values))]


def _ref_max_drawdown(initial: float, equity: np.ndarray) -> float:
    peak, worst = initial, 0.0
    for value in equity:
        peak = max(peak, value)
        worst = min(worst, value / peak - 1.0)
    return worst


def _close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    rets=st.lists(st.floats(-0.5, 0.5, allow_subnormal=False), min_size=2, max_size=300),
    initial=st.floats(1.0, 1e7),
    ppy=st.sampled_from([252.0, 52.0, 12.0, 365.25]),
)
def test_cross_check_against_plain_formulas(rets: list[float], initial: float,
                                            ppy: float) -> None:
    equity = initial * np.cumprod(1.0 + np.asarray(rets))
    r = _ref_returns(initial, equity)
    n = len(r)
    mean = math.fsum(r) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in r) / (n - 1))
    downside = math.sqrt(math.fsum(min(x, 0.0) ** 2 for x in r) / n)
    # tiny dispersions make the ratios ill-conditioned: any two summation orders disagree
    assume(std > 1e-6)
    m = compute_metrics(make_result(equity, initial), periods_per_year=ppy)
    assert _close(m["annual_volatility"], std * math.sqrt(ppy))
    assert _close(m["sharpe"], mean / std * math.sqrt(ppy))
    assert _close(m["max_drawdown"], _ref_max_drawdown(initial, equity))
    assert _close(m["total_return"], equity[-1] / initial - 1.0)
    if downside > 1e-9:
        assert _close(m["sortino"], mean / downside * math.sqrt(ppy))
    elif downside == 0.0:
        assert m["sortino"] is None


@settings(max_examples=100, deadline=None)
@given(rets=st.lists(st.floats(-0.3, 0.3, allow_subnormal=False), min_size=1, max_size=200),
       initial=st.floats(1.0, 1e6))
def test_drawdown_series_matches_loop(rets: list[float], initial: float) -> None:
    equity = initial * np.cumprod(1.0 + np.asarray(rets))
    dd = drawdown_series(pd.Series(equity), initial).to_numpy()
    peak, expected = initial, []
    for value in equity:
        peak = max(peak, value)
        expected.append(value / peak - 1.0)
    np.testing.assert_allclose(dd, expected, rtol=1e-12, atol=1e-15)
    assert (dd <= 0).all()
