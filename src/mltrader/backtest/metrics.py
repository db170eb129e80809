"""Performance metrics of a `BacktestResult`: returns, risk, drawdowns, trading activity.

Conventions (kept in one place so strategy and benchmark are measured identically):

- Per-bar returns come from the equity series with ``initial_cash`` prepended, so the first
  bar's return is ``equity[0] / initial_cash - 1`` and there are as many returns as bars.
- Annualisation uses ``periods_per_year`` (252 for daily bars); the elapsed time in years is
  ``n_bars / periods_per_year``. This counts trading bars rather than calendar days, which is
  exact for the returns we measure and does not depend on the timestamp before the first bar,
  which the result does not hold.
- Risk-free rate is 0. Undefined values (a ratio with zero denominator, a win rate without
  closed trades) are ``None``, never NaN or inf, so the dict is JSON-safe.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mltrader.backtest.result import BacktestResult

METRIC_KEYS: tuple[str, ...] = (
    "total_return", "cagr", "annual_volatility", "sharpe", "sortino", "max_drawdown",
    "longest_drawdown_days", "win_rate", "trades", "fills", "turnover", "total_costs",
    "exposure",
)

# A per-bar return standard deviation below this is floating-point noise (e.g. a constant
# growth rate computed through a cumulative product); a ratio over it would be meaningless.
_MIN_STD = 1e-12


def bar_returns(equity: pd.Series, initial_cash: float) -> np.ndarray:
    """Per-bar simple returns of ``equity``, the first one measured from ``initial_cash``."""
    values = np.concatenate(([float(initial_cash)], equity.to_numpy(dtype=float)))
    return values[1:] / values[:-1] - 1.0


def drawdown_series(equity: pd.Series, initial_cash: float) -> pd.Series:
    """Equity over its running peak minus one (fractions <= 0); the peak starts at initial_cash."""
    values = equity.to_numpy(dtype=float)
    peak = np.maximum.accumulate(np.maximum(values, float(initial_cash)))
    return pd.Series(values / peak - 1.0, index=equity.index, name="drawdown")


def _years(n_bars: int, periods_per_year: float) -> float:
    return n_bars / periods_per_year


def _volatility(returns: np.ndarray, periods_per_year: float) -> float | None:
    if returns.size < 2:
        return None
    return float(np.std(returns, ddof=1) * math.sqrt(periods_per_year))


def _sharpe(returns: np.ndarray, periods_per_year: float) -> float | None:
    if returns.size < 2:
        return None
    std = float(np.std(returns, ddof=1))
    if not std > _MIN_STD:
        return None
    return float(np.mean(returns) / std * math.sqrt(periods_per_year))


def _sortino(returns: np.ndarray, periods_per_year: float) -> float | None:
    """Mean over downside deviation sqrt(mean(min(r, 0)^2)), as empyrical with target 0."""
    downside = float(np.sqrt(np.mean(np.square(np.minimum(returns, 0.0)))))
    if not downside > _MIN_STD:
        return None
    return float(np.mean(returns) / downside * math.sqrt(periods_per_year))


def _cagr(total_return: float, years: float) -> float | None:
    if years <= 0:
        return None
    growth = 1.0 + total_return
    if growth <= 0:
        return -1.0
    try:
        return float(growth ** (1.0 / years) - 1.0)
    except OverflowError:
        return None


def _elapsed(index: pd.Index, start: int, end: int) -> int:
    """Calendar days between two bars (bar count if the index is not made of timestamps)."""
    if isinstance(index, pd.DatetimeIndex):
        return int((index[end] - index[start]).days)
    return end - start


def longest_drawdown_days(equity: pd.Series, initial_cash: float) -> int:
    """Longest span from a peak to the bar that regains it (or to the last bar if none does).

    A peak at ``initial_cash`` itself (before the first bar) is dated at the first bar, the
    earliest timestamp the result holds. Regaining the peak exactly counts as recovery.
    """
    values = equity.to_numpy(dtype=float)
    if values.size == 0:
        return 0
    peak = float(initial_cash)
    peak_at = 0
    in_drawdown = False
    longest = 0
    for i, value in enumerate(values):
        if value >= peak:
            if in_drawdown:
                longest = max(longest, _elapsed(equity.index, peak_at, i))
                in_drawdown = False
            peak = value
            peak_at = i
        else:
            in_drawdown = True
    if in_drawdown:
        longest = max(longest, _elapsed(equity.index, peak_at, values.size - 1))
    return int(longest)


def _win_rate(trades: pd.DataFrame) -> float | None:
    if trades.empty:
        return None
    closed = trades.loc[~trades["open"].astype(bool)]
    if closed.empty:
        return None
    return float((closed["pnl"].to_numpy(dtype=float) > 0).mean())


def _turnover(fills: pd.DataFrame, equity: pd.Series, years: float) -> float | None:
    """One-sided traded value per year in multiples of mean equity (buys+sells halved)."""
    if fills.empty:
        return 0.0
    mean_equity = float(equity.mean())
    if not mean_equity > 0 or years <= 0:
        return None
    traded = float(fills["notional"].to_numpy(dtype=float).sum()) / 2.0
    return traded / mean_equity / years


def compute_metrics(
    result: BacktestResult, periods_per_year: float = 252.0
) -> dict[str, float | int | None]:
    """Summary statistics of one backtest, keys in ``METRIC_KEYS`` order, JSON-safe values.

    ``cagr`` uses years = n_bars / periods_per_year (see the module docstring for why);
    ``turnover`` = (sum of fill notionals / 2) / mean equity / years; ``exposure`` is the
    share of bars holding any nonzero position; ``total_costs`` is commission + slippage.
    """
    equity = result.equity
    if len(equity) == 0:
        raise ValueError("compute_metrics needs at least one bar of equity")
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")
    initial = float(result.initial_cash)
    returns = bar_returns(equity, initial)
    years = _years(len(equity), periods_per_year)
    total_return = float(equity.iloc[-1]) / initial - 1.0
    max_dd = float(drawdown_series(equity, initial).min())
    fills = result.fills
    costs = 0.0
    if not fills.empty:
        costs = float(fills["commission"].to_numpy(dtype=float).sum()
                      + fills["slippage"].to_numpy(dtype=float).sum())
    positions = result.positions.fillna(0.0)
    exposure = float((positions != 0).any(axis=1).mean()) if len(positions) else 0.0
    metrics: dict[str, float | int | None] = {
        "total_return": total_return,
        "cagr": _cagr(total_return, years),
        "annual_volatility": _volatility(returns, periods_per_year),
        "sharpe": _sharpe(returns, periods_per_year),
        "sortino": _sortino(returns, periods_per_year),
        "max_drawdown": min(max_dd, 0.0),
        "longest_drawdown_days": longest_drawdown_days(equity, initial),
        "win_rate": _win_rate(result.trades),
        "trades": int(len(result.trades)),
        "fills": int(len(fills)),
        "turnover": _turnover(fills, equity, years),
        "total_costs": costs,
        "exposure": exposure,
    }
    return {key: _json_safe(value) for key, value in metrics.items()}


def _json_safe(value: float | int | None) -> float | int | None:
    """Plain Python numbers; NaN/inf (only reachable from NaN inputs) become None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None
