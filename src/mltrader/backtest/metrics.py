"""Performance metrics of a `BacktestResult`: returns, risk, drawdowns, trading activity.

Conventions (kept in one place so strategy and benchmark are measured identically):

- Per-bar returns come from the equity series with ``initial_cash`` prepended, so the first
  bar's return is ``equity[0] / initial_cash - 1`` and there are as many returns as bars.
- Annualisation uses ``periods_per_year``, the run's calendar's bars a year (data/calendars.py:
  about 252 for NYSE daily bars, 365 for crypto, 260 for FX); the elapsed time in years is
  ``n_bars / periods_per_year``. This counts trading bars rather than calendar days, which is
  exact for the returns we measure and does not depend on the timestamp before the first bar,
  which the result does not hold.
- Risk-free rate is 0. Undefined values (a ratio with zero denominator, a win rate without
  closed trades) are ``None``, never NaN or inf, so the dict is JSON-safe.
- Trade statistics use closed trades only (``open`` False); an open trade is marked at the
  last close and is not a realised outcome. A trade with pnl exactly 0 is neither a win nor a
  loss. Trade pnl is money (net of costs), trade return is ``pnl / money put in``.
- Versus a benchmark (`benchmark_metrics`), per-bar returns r (strategy) and b (benchmark) are
  regressed r = a + beta b by OLS; ``alpha`` = a x periods_per_year (simple annualisation, like
  the mean in the Sharpe ratio; empyrical's ``alpha`` compounds instead: (1 + a)^ppy - 1).
  Active return is r - b; ``tracking_error`` = std(r - b, ddof=1) x sqrt(ppy) and
  ``information_ratio`` = mean(r - b) / std(r - b, ddof=1) x sqrt(ppy) (arithmetic active
  returns, i.e. annualised mean active return over tracking error).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mltrader.backtest.result import BacktestResult

METRIC_KEYS: tuple[str, ...] = (
    "total_return", "cagr", "annual_volatility", "sharpe", "sortino", "max_drawdown",
    "longest_drawdown_days", "win_rate", "trades", "fills", "turnover", "total_costs",
    "cost_drag", "exposure", "calmar", "max_drawdown_duration_days", "profit_factor", "avg_win",
    "avg_loss", "avg_win_loss_ratio", "expectancy", "expectancy_return", "best_trade_return",
    "worst_trade_return",
)
BENCHMARK_KEYS: tuple[str, ...] = (
    "alpha", "beta", "information_ratio", "tracking_error", "correlation",
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


def max_drawdown_duration_days(equity: pd.Series, initial_cash: float) -> int:
    """Calendar days of the maximum drawdown: from its peak to the bar regaining that peak.

    The trough is the first bar with the deepest drawdown; its peak is the last bar at or
    before it standing at the running peak (``initial_cash`` itself is dated at the first bar,
    as in `longest_drawdown_days`). Without recovery the span runs to the last bar. 0 without
    a drawdown. Unlike ``longest_drawdown_days`` this follows the deepest, not the longest.
    """
    values = equity.to_numpy(dtype=float)
    dd = drawdown_series(equity, initial_cash).to_numpy()
    if not (np.isfinite(dd) & (dd < 0)).any():
        return 0
    trough = int(np.nanargmin(dd))
    peak_value = max(float(initial_cash), float(np.nanmax(values[: trough + 1])))
    at_peak = np.flatnonzero(values[:trough] >= peak_value)
    start = int(at_peak[-1]) if at_peak.size else 0
    regained = np.flatnonzero(values[trough + 1:] >= peak_value)
    end = trough + 1 + int(regained[0]) if regained.size else values.size - 1
    return int(_elapsed(equity.index, start, end))


def _calmar(cagr: float | None, max_dd: float) -> float | None:
    if cagr is None or not max_dd < 0:
        return None
    return cagr / abs(max_dd)


def _closed_trades(trades: pd.DataFrame) -> pd.DataFrame:
    if trades.empty:
        return trades
    return trades.loc[~trades["open"].astype(bool)]


def _finite(frame: pd.DataFrame, column: str) -> np.ndarray:
    if frame.empty:
        return np.empty(0)
    values = frame[column].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def trade_metrics(trades: pd.DataFrame) -> dict[str, float | None]:
    """Closed-trade statistics: profit factor, average win / loss, expectancy, best / worst.

    ``profit_factor`` = gross profit / gross loss (None without a losing trade, 0.0 with losses
    but no wins); ``avg_win`` / ``avg_loss`` are mean pnl of trades with pnl > 0 / < 0 (money,
    ``avg_loss`` negative); ``avg_win_loss_ratio`` = avg_win / |avg_loss|; ``expectancy`` is
    the mean pnl over all closed trades (money) and ``expectancy_return`` their mean return.
    NaN pnl / return values (not produced by the engine) are left out.
    """
    closed = _closed_trades(trades)
    pnl = _finite(closed, "pnl")
    rets = _finite(closed, "return")
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    avg_win = float(wins.mean()) if wins.size else None
    avg_loss = float(losses.mean()) if losses.size else None
    return {
        "profit_factor": float(wins.sum() / -losses.sum()) if losses.size else None,
        "avg_win": avg_win,
        "avg_loss": avg_loss,
        "avg_win_loss_ratio": (
            avg_win / -avg_loss if avg_win is not None and avg_loss is not None else None
        ),
        "expectancy": float(pnl.mean()) if pnl.size else None,
        "expectancy_return": float(rets.mean()) if rets.size else None,
        "best_trade_return": float(rets.max()) if rets.size else None,
        "worst_trade_return": float(rets.min()) if rets.size else None,
    }


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
    share of bars holding any nonzero position; ``total_costs`` is commission + slippage;
    ``cost_drag`` is those costs per year as a fraction of mean equity (the return they ate).
    """
    equity = result.equity
    if len(equity) == 0:
        raise ValueError("compute_metrics needs at least one bar of equity")
    _check_periods(periods_per_year)
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
    cagr = _cagr(total_return, years)
    metrics: dict[str, float | int | None] = {
        "total_return": total_return,
        "cagr": cagr,
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
        "cost_drag": (costs / float(equity.mean()) / years
                      if years > 0 and float(equity.mean()) > 0 else None),
        "exposure": exposure,
        "calmar": _calmar(cagr, max_dd),
        "max_drawdown_duration_days": max_drawdown_duration_days(equity, initial),
        **trade_metrics(result.trades),
    }
    return {key: _json_safe(metrics[key]) for key in METRIC_KEYS}


def curve_metrics(equity: pd.Series, initial: float, periods_per_year: float = 252.0
                  ) -> dict[str, float | int | None]:
    """The return and risk metrics of a value curve without trades (an index): total
    return, CAGR, volatility, Sharpe, Sortino, max drawdown, Calmar; JSON-safe."""
    _check_periods(periods_per_year)
    returns = bar_returns(equity, initial)
    years = _years(len(equity), periods_per_year)
    total_return = float(equity.iloc[-1]) / initial - 1.0
    max_dd = float(drawdown_series(equity, initial).min())
    cagr = _cagr(total_return, years)
    out = {"total_return": total_return, "cagr": cagr,
           "annual_volatility": _volatility(returns, periods_per_year),
           "sharpe": _sharpe(returns, periods_per_year),
           "sortino": _sortino(returns, periods_per_year),
           "max_drawdown": min(max_dd, 0.0), "calmar": _calmar(cagr, max_dd),
           "longest_drawdown_days": longest_drawdown_days(equity, initial)}
    return {k: _json_safe(v) for k, v in out.items()}


def benchmark_metrics(
    result: BacktestResult, benchmark: BacktestResult, periods_per_year: float = 252.0
) -> dict[str, float | None]:
    """Strategy against a benchmark on the same bars, keys in ``BENCHMARK_KEYS`` order.

    Per-bar returns of both come from `bar_returns` (each from its own initial cash); the
    equity indexes must be identical. ``beta`` = cov(r, b) / var(b); ``alpha`` is the OLS
    intercept mean(r) - beta mean(b) times periods_per_year; ``correlation`` is Pearson's;
    ``tracking_error`` and ``information_ratio`` as in the module docstring. All None with
    fewer than two bars; beta, alpha and correlation None for a constant benchmark.
    """
    _check_periods(periods_per_year)
    index, bench_index = result.equity.index, benchmark.equity.index
    if not index.equals(bench_index):
        raise ValueError(f"benchmark_metrics needs identical equity indexes: "
                         f"{_index_mismatch(index, bench_index)}")
    if len(index) == 0:
        raise ValueError("benchmark_metrics needs at least one bar of equity")
    r = bar_returns(result.equity, float(result.initial_cash))
    b = bar_returns(benchmark.equity, float(benchmark.initial_cash))
    out: dict[str, float | None] = dict.fromkeys(BENCHMARK_KEYS)
    if r.size < 2:
        return out
    root = math.sqrt(periods_per_year)
    active = r - b
    active_std = float(np.std(active, ddof=1))
    out["tracking_error"] = active_std * root
    if active_std > _MIN_STD:
        out["information_ratio"] = float(np.mean(active)) / active_std * root
    b_res, r_res = b - b.mean(), r - r.mean()
    var_b, var_r = float(np.mean(b_res * b_res)), float(np.mean(r_res * r_res))
    if math.sqrt(var_b) > _MIN_STD:
        cov = float(np.mean(b_res * r_res))
        beta = cov / var_b
        out["beta"] = beta
        out["alpha"] = (float(np.mean(r)) - beta * float(np.mean(b))) * periods_per_year
        if math.sqrt(var_r) > _MIN_STD:
            out["correlation"] = cov / math.sqrt(var_b * var_r)
    return {key: _json_safe(value) for key, value in out.items()}


def _check_periods(periods_per_year: float) -> None:
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")


def _index_mismatch(index: pd.Index, other: pd.Index) -> str:
    if len(index) != len(other):
        return f"strategy has {len(index)} bars, benchmark {len(other)}"
    differ = [i for i, (a, b) in enumerate(zip(index, other, strict=True)) if a != b]
    if differ:
        i = differ[0]
        return (f"{len(differ)} of {len(index)} bars differ, first at position {i}: "
                f"{index[i]!r} vs {other[i]!r}")
    return f"index types differ ({type(index).__name__} vs {type(other).__name__})"


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
