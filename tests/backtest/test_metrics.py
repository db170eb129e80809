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

from mltrader.backtest.metrics import METRIC_KEYS, compute_metrics, drawdown_series
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
    json.dumps(m, allow_nan=False)


def test_rejects_empty_equity() -> None:
    with pytest.raises(ValueError):
        compute_metrics(make_result([]))


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
