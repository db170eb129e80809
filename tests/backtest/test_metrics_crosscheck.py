"""Return-based metrics cross-checked against empyrical-reloaded on seeded random paths.

The equity handed to our metrics is ``initial * cumprod(1 + r)``; empyrical gets ``r`` itself,
so the check also covers `bar_returns` (first return measured from initial cash) and the
drawdown anchor (empyrical anchors its running peak at the starting value, as we do at
initial cash). Conventions that match one for one, with ``annualization=periods_per_year``:

- annual volatility: sample std (ddof=1) x sqrt(ppy); sharpe: mean / sample std x sqrt(ppy);
  sortino: mean / sqrt(mean(min(r, 0)^2)) x sqrt(ppy) (required return 0).
- cagr: empyrical's ``cagr`` = prod(1 + r) ** (ppy / n) - 1, i.e. years = n_bars / ppy, the
  same as ours (not calendar days / 365 as e.g. quantstats' ``cagr`` does).
- calmar: cagr / |max drawdown|, NaN (ours None) without a drawdown.
- beta: cov(r, b) / var(b).

One convention differs: empyrical's ``alpha`` compounds the per-bar OLS intercept a into
(1 + a) ** ppy - 1, while ours is simple, a x ppy. We compare the intercept itself
(empyrical with ``annualization=1`` returns exactly a) and also check the compounded figure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mltrader.backtest.metrics import benchmark_metrics, compute_metrics
from mltrader.backtest.result import FILL_COLUMNS, TRADE_COLUMNS, BacktestResult

empyrical = pytest.importorskip("empyrical")

REL = 1e-8
SEEDS = range(40)


def _result(rets: np.ndarray, initial: float) -> BacktestResult:
    index = pd.bdate_range("2015-01-01", periods=len(rets))
    equity = pd.Series(initial * np.cumprod(1.0 + rets), index=index, name="equity")
    positions = pd.DataFrame({"AAA": np.zeros(len(rets))}, index=index)
    return BacktestResult(
        equity=equity, cash=equity.copy(), positions=positions, weights=positions.copy(),
        fills=pd.DataFrame({c: pd.Series(dtype=float) for c in FILL_COLUMNS}),
        trades=pd.DataFrame({c: pd.Series(dtype=float) for c in TRADE_COLUMNS}),
        initial_cash=float(initial),
    )


def _case(seed: int) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """Strategy and benchmark returns (strategy = a + beta b + noise), ppy, two cash levels."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 800))
    ppy = float(rng.choice([252.0, 52.0, 12.0, 365.25]))
    bench = rng.normal(rng.uniform(-5e-4, 1e-3), rng.uniform(0.005, 0.03), n)
    strat = (rng.uniform(-1e-3, 2e-3) + rng.uniform(-0.5, 2.0) * bench
             + rng.normal(0.0, rng.uniform(0.002, 0.02), n))
    strat, bench = np.clip(strat, -0.9, None), np.clip(bench, -0.9, None)
    return strat, bench, ppy, float(rng.uniform(1e3, 1e7)), float(rng.uniform(1e3, 1e7))


def _close(ours: float | None, theirs: float) -> None:
    assert ours is not None and math.isfinite(theirs), (ours, theirs)
    assert math.isclose(ours, theirs, rel_tol=REL, abs_tol=0.0), (ours, theirs)


@pytest.mark.parametrize("seed", SEEDS)
def test_single_series_metrics_match_empyrical(seed: int) -> None:
    rets, _, ppy, cash, _ = _case(seed)
    m = compute_metrics(_result(rets, cash), periods_per_year=ppy)
    _close(m["annual_volatility"], empyrical.annual_volatility(rets, annualization=ppy))
    _close(m["sharpe"], empyrical.sharpe_ratio(rets, annualization=ppy))
    _close(m["sortino"], empyrical.sortino_ratio(rets, annualization=ppy))
    _close(m["max_drawdown"], empyrical.max_drawdown(rets))
    _close(m["cagr"], empyrical.cagr(rets, annualization=ppy))
    _close(m["calmar"], empyrical.calmar_ratio(rets, annualization=ppy))


@pytest.mark.parametrize("seed", SEEDS)
def test_benchmark_metrics_match_empyrical(seed: int) -> None:
    strat, bench, ppy, cash, bench_cash = _case(seed)
    m = benchmark_metrics(_result(strat, cash), _result(bench, bench_cash), periods_per_year=ppy)
    _close(m["beta"], empyrical.beta(strat, bench))
    # simple annualisation of the per-bar intercept (empyrical with annualization=1 gives it)
    _close(m["alpha"], empyrical.alpha(strat, bench, annualization=1) * ppy)
    _close((1.0 + m["alpha"] / ppy) ** ppy - 1.0,
           empyrical.alpha(strat, bench, annualization=ppy))
    # information ratio = empyrical's (per-bar) excess Sharpe, annualised by sqrt(ppy)
    _close(m["information_ratio"], empyrical.excess_sharpe(strat, bench) * math.sqrt(ppy))
    _close(m["tracking_error"], empyrical.annual_volatility(strat - bench, annualization=ppy))
    _close(m["correlation"], float(np.corrcoef(strat, bench)[0, 1]))


def test_no_drawdown_calmar_is_undefined_in_both() -> None:
    rets = np.full(50, 0.001) + np.linspace(0.0, 1e-4, 50)
    m = compute_metrics(_result(rets, 1000.0))
    assert m["max_drawdown"] == 0.0 == empyrical.max_drawdown(rets)
    assert m["calmar"] is None and math.isnan(empyrical.calmar_ratio(rets))
