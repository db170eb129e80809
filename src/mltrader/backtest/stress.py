"""Stress tables: how a strategy fared in named crises and in each market regime.

Conventions (those of `mltrader.backtest.metrics`, so the numbers agree with the report):

- Per-bar returns come from `metrics.bar_returns`. With ``initial_cash`` the first bar's
  return is ``equity[0] / initial_cash - 1``; without it (``None``) the first bar has no return
  and is left out (the series does not hold the equity before its first bar).
- A return that is not finite (next to a NaN equity value) is left out, as are the bars the
  mask does not select; ``bars`` counts the returns actually used.
- Statistics are over the selected returns compounded as one path starting at 1:
  ``total_return`` = prod(1 + r) - 1, ``cagr`` = (1 + total)^(ppy / bars) - 1 (years counted
  in bars, as in `compute_metrics`), ``annual_volatility`` = std(r, ddof=1) x sqrt(ppy),
  ``sharpe`` = mean(r) / std(r, ddof=1) x sqrt(ppy) (risk-free 0) and ``max_drawdown`` is
  the deepest fall of that path below its running peak, the peak starting at 1 (the equity
  just before the first selected bar). For a window that is the window's own drawdown; for a
  regime (bars that need not be adjacent) it is the drawdown of the regime's returns chained.
- Undefined values are ``None`` (no bars; fewer than two returns for volatility / Sharpe; a
  constant return for Sharpe).
- Windows are calendar dates, inclusive, compared with each bar's date in its own time zone.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mltrader.backtest.metrics import (
    _cagr,
    _check_periods,
    _json_safe,
    _sharpe,
    _volatility,
    bar_returns,
    drawdown_series,
)

CRISES: dict[str, tuple[str, str]] = {
    "2000-2002 dot-com bust": ("2000-01-01", "2002-12-31"),
    "2008-2009 financial crisis": ("2008-01-01", "2009-12-31"),
    "2020 Q1 covid crash": ("2020-01-01", "2020-03-31"),
    "2022 rate shock": ("2022-01-01", "2022-12-31"),
}

STAT_KEYS: tuple[str, ...] = (
    "bars", "total_return", "cagr", "annual_volatility", "sharpe", "max_drawdown",
)
# statistics shown per series (``bars`` is shown once per row)
_SERIES_STATS: tuple[str, ...] = STAT_KEYS[1:]
_SIDES: tuple[str, ...] = ("strategy", "benchmark")
SIDE_COLUMNS: tuple[str, ...] = tuple(
    f"{side}_{key}" for side in _SIDES for key in _SERIES_STATS
)
CRISIS_COLUMNS: tuple[str, ...] = (
    "crisis", "window_start", "window_end", "first", "last", "partial", "bars",
    "benchmark_bars", *SIDE_COLUMNS,
)
REGIME_COLUMNS: tuple[str, ...] = (
    "regime", "bars", "share", "benchmark_bars", *SIDE_COLUMNS,
)
UNKNOWN_REGIME = "unknown"
# A window edge on a weekend or holiday is still covered by bars up to this many days away.
_SLACK = pd.Timedelta(days=5)


# --- statistics ------------------------------------------------------------------------

def _returns(equity: pd.Series, initial_cash: float | None) -> np.ndarray:
    """Per-bar returns, one per bar; the first is NaN without ``initial_cash``."""
    if len(equity) == 0:
        return np.empty(0)
    if initial_cash is None:
        values = equity.to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            rest = values[1:] / values[:-1] - 1.0
        return np.concatenate(([np.nan], rest))
    with np.errstate(divide="ignore", invalid="ignore"):
        return bar_returns(equity, float(initial_cash))


def _stats_of(returns: np.ndarray, periods_per_year: float) -> dict[str, float | int | None]:
    """`STAT_KEYS` of already selected, finite returns (see the module docstring)."""
    out: dict[str, float | int | None] = dict.fromkeys(STAT_KEYS)
    out["bars"] = int(returns.size)
    if returns.size == 0:
        return out
    path = np.cumprod(1.0 + returns)
    total = float(path[-1]) - 1.0
    out["total_return"] = total
    out["cagr"] = _cagr(total, returns.size / periods_per_year)
    out["annual_volatility"] = _volatility(returns, periods_per_year)
    out["sharpe"] = _sharpe(returns, periods_per_year)
    out["max_drawdown"] = min(float(drawdown_series(pd.Series(path), 1.0).min()), 0.0)
    return {key: _json_safe(value) for key, value in out.items()}


def period_stats(
    equity: pd.Series,
    mask: np.ndarray | None = None,
    periods_per_year: float = 252.0,
    *,
    initial_cash: float | None = None,
) -> dict[str, float | int | None]:
    """Statistics (`STAT_KEYS`) of the bar returns of ``equity`` selected by ``mask``.

    ``mask`` is a boolean array with one entry per bar (``None`` selects every bar); entry t
    selects the return of bar t, i.e. from the close of bar t-1 to the close of bar t.
    """
    _check_periods(periods_per_year)
    returns = _returns(equity, initial_cash)
    keep = np.isfinite(returns)
    if mask is not None:
        selected = np.asarray(mask, dtype=bool)
        if selected.shape != (len(equity),):
            raise ValueError(f"period_stats: mask has shape {selected.shape}, "
                             f"expected ({len(equity)},) like the equity")
        keep &= selected
    return _stats_of(returns[keep], periods_per_year)


def _local_dates(index: pd.Index) -> pd.DatetimeIndex:
    """Each bar's calendar date in its own time zone (midnight, naive)."""
    if not isinstance(index, pd.DatetimeIndex):
        raise ValueError(f"stress tables need a DatetimeIndex, got {type(index).__name__}")
    if index.tz is not None:
        index = index.tz_localize(None)
    return index.normalize()


def _window_mask(index: pd.Index, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    dates = _local_dates(index)
    return np.asarray((dates >= start) & (dates <= end))


def _side_stats(side: str, stats: Mapping[str, object]) -> dict[str, object]:
    return {f"{side}_{key}": stats.get(key) for key in _SERIES_STATS}


def crisis_table(
    equity: pd.Series,
    benchmark: pd.Series | None = None,
    *,
    initial_cash: float | None = None,
    benchmark_initial_cash: float | None = None,
    crises: Mapping[str, tuple[str, str]] | None = None,
    periods_per_year: float = 252.0,
) -> pd.DataFrame:
    """One row per crisis window (default `CRISES`) holding at least one bar of ``equity``.

    Columns `CRISIS_COLUMNS`: the window as defined, ``first`` / ``last`` the dates of the
    first and last bar inside it, ``partial`` True when the bars do not cover the window
    (the series starts more than 5 days after its start or ends more than 5 days before its
    end; the slack covers window edges on weekends and holidays), ``bars`` the strategy's
    returns used, then strategy and benchmark statistics (benchmark ones ``None`` without a
    benchmark). The benchmark is measured over its own bars in the same dates. A bar's
    return counts if the bar lies in the window, so the first return in a window runs from
    the close before it. No overlap: an empty frame with the same columns.
    """
    _check_periods(periods_per_year)
    windows = CRISES if crises is None else crises
    returns = _returns(equity, initial_cash)
    bench_returns = None if benchmark is None else _returns(benchmark, benchmark_initial_cash)
    rows = []
    if len(equity):
        dates = _local_dates(equity.index)
        for name, (start_text, end_text) in windows.items():
            start, end = pd.Timestamp(start_text), pd.Timestamp(end_text)
            if end < start:
                raise ValueError(f"crisis {name!r} ends ({end_text}) before it starts "
                                 f"({start_text})")
            inside = np.asarray((dates >= start) & (dates <= end))
            if not inside.any():
                continue
            at = np.flatnonzero(inside)
            first, last = equity.index[at[0]], equity.index[at[-1]]
            stats = _stats_of(returns[inside & np.isfinite(returns)], periods_per_year)
            row: dict[str, object] = {
                "crisis": name, "window_start": start.date(), "window_end": end.date(),
                "first": first, "last": last,
                "partial": bool(dates[0] - start > _SLACK or end - dates[-1] > _SLACK),
                "bars": stats["bars"], "benchmark_bars": None,
                **_side_stats("strategy", stats), **_side_stats("benchmark", {}),
            }
            if benchmark is not None and bench_returns is not None:
                b_inside = _window_mask(benchmark.index, start, end) & np.isfinite(bench_returns)
                b_stats = _stats_of(bench_returns[b_inside], periods_per_year)
                row["benchmark_bars"] = b_stats["bars"]
                row.update(_side_stats("benchmark", b_stats))
            rows.append(row)
    return pd.DataFrame(rows, columns=list(CRISIS_COLUMNS))


def _previous_regime(regimes: pd.Series, index: pd.Index) -> np.ndarray:
    """For each bar t, the regime stamped at the latest time strictly before bar t (NaN if none).

    With regimes on the bar index this is the regime at bar t-1's close: the one in force
    while the position carried into bar t was held.
    """
    if not isinstance(regimes.index, pd.DatetimeIndex) or not isinstance(index,
                                                                          pd.DatetimeIndex):
        raise ValueError("regime_table needs DatetimeIndex on both the equity and the regimes")
    if (regimes.index.tz is None) != (index.tz is None):
        raise ValueError(f"regime_table: time zones differ (equity {index.tz}, regimes "
                         f"{regimes.index.tz}); put both on tz-aware or both on naive stamps")
    ordered = regimes.sort_index(kind="stable")
    pos = ordered.index.searchsorted(index, side="left") - 1
    values = ordered.to_numpy(dtype=object)
    out = np.full(len(index), np.nan, dtype=object)
    ok = pos >= 0
    out[ok] = values[pos[ok]]
    return out


def _regime_labels(prev: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Regime name per bar: integer codes index ``names``, a name stands for itself."""
    labels = np.full(prev.size, UNKNOWN_REGIME, dtype=object)
    known_names = set(names)
    for i, value in enumerate(prev):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, str):
            if value not in known_names:
                raise ValueError(f"regime_table: regime {value!r} is not one of {list(names)}")
            labels[i] = value
            continue
        code = float(value)
        if not code.is_integer() or not 0 <= code < len(names):
            raise ValueError(f"regime_table: regime code {value!r} is not an integer in "
                             f"0..{len(names) - 1} (names {list(names)})")
        labels[i] = names[int(code)]
    return labels


def regime_table(
    equity: pd.Series,
    regimes: pd.Series,
    names: Sequence[str],
    benchmark: pd.Series | None = None,
    *,
    initial_cash: float | None = None,
    benchmark_initial_cash: float | None = None,
    periods_per_year: float = 252.0,
) -> pd.DataFrame:
    """One row per regime in ``names`` order, then an ``"unknown"`` row if any bar has none.

    ``regimes`` holds a state per timestamp: an integer code into ``names`` or a name, NaN
    when unknown. The return of bar t goes to the regime known at bar t-1's close (the latest
    regime stamped strictly before bar t): the regime in force while the position earning
    that return was held. Bars whose previous regime is NaN, or which have no earlier
    regime stamp (the first bar when regimes share the equity index), go to "unknown".
    ``share`` is the row's share of the strategy's returns used; benchmark statistics use
    the benchmark's own bars attributed the same way (``None`` without a benchmark).
    """
    _check_periods(periods_per_year)
    names = [str(n) for n in names]
    if len(set(names)) != len(names) or UNKNOWN_REGIME in names:
        raise ValueError(f"regime_table: names must be distinct and not {UNKNOWN_REGIME!r}, "
                         f"got {names}")
    returns = _returns(equity, initial_cash)
    labels = _regime_labels(_previous_regime(regimes, equity.index), names)
    usable = np.isfinite(returns)
    total_bars = int(usable.sum())
    b_returns = b_labels = None
    if benchmark is not None:
        b_returns = _returns(benchmark, benchmark_initial_cash)
        b_labels = _regime_labels(_previous_regime(regimes, benchmark.index), names)
    rows = []
    for name in [*names, UNKNOWN_REGIME]:
        selected = usable & (labels == name)
        if name == UNKNOWN_REGIME and not selected.any():
            continue
        stats = _stats_of(returns[selected], periods_per_year)
        row: dict[str, object] = {
            "regime": name, "bars": stats["bars"],
            "share": stats["bars"] / total_bars if total_bars else None,
            "benchmark_bars": None,
            **_side_stats("strategy", stats), **_side_stats("benchmark", {}),
        }
        if b_returns is not None and b_labels is not None:
            b_stats = _stats_of(b_returns[np.isfinite(b_returns) & (b_labels == name)],
                                periods_per_year)
            row["benchmark_bars"] = b_stats["bars"]
            row.update(_side_stats("benchmark", b_stats))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(REGIME_COLUMNS))


# --- HTML ------------------------------------------------------------------------------

_STAT_LABELS: dict[str, tuple[str, str]] = {
    "total_return": ("Return", "pct"),
    "cagr": ("CAGR", "pct"),
    "annual_volatility": ("Volatility", "pct"),
    "sharpe": ("Sharpe", "ratio"),
    "max_drawdown": ("Max drawdown", "pct"),
}


def _missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _fmt(value: object, kind: str) -> str:
    if _missing(value):
        return "n/a"
    if kind == "pct":
        return f"{float(value):.2%}"  # type: ignore[arg-type]
    if kind == "ratio":
        return f"{float(value):.2f}"  # type: ignore[arg-type]
    if kind == "int":
        return f"{int(value):,}"  # type: ignore[call-overload]
    if kind == "date":
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
        return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime(
            "%Y-%m-%d %H:%M")
    return html.escape(str(value))


def _sides_present(table: pd.DataFrame) -> list[str]:
    sides = ["strategy"]
    bench = [f"benchmark_{key}" for key in _SERIES_STATS]
    if any(not _missing(v) for col in bench if col in table for v in table[col]):
        sides.append("benchmark")
    return sides


def _table_html(table: pd.DataFrame, lead: list[tuple[str, str, str]], css: str) -> str:
    """``lead`` = (column, header, format) before the per-side statistic columns."""
    sides = _sides_present(table)
    stat_cols = [(f"{side}_{key}", f"{label} ({side})", kind)
                 for key, (label, kind) in _STAT_LABELS.items() for side in sides]
    cols = lead + stat_cols
    head = "".join(f"<th>{html.escape(header)}</th>" for _, header, _ in cols)
    body = []
    for rec in table.to_dict("records"):
        cells = "".join(f"<td>{_fmt(rec.get(col), kind)}</td>" for col, _, kind in cols)
        body.append(f"<tr>{cells}</tr>")
    return (f"<table class=\"{css}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def stress_html(crisis: pd.DataFrame, regime: pd.DataFrame | None) -> str:
    """HTML fragment for the report: a crisis table and, if given, a regime table."""
    parts = ["<h2>Crisis periods</h2>"]
    if crisis.empty:
        parts.append("<p class=\"sub\">No named crisis period overlaps the backtest.</p>")
    else:
        window = crisis.assign(
            dates=[f"{_fmt(a, 'date')} to {_fmt(b, 'date')}" + (" (partial)" if p else "")
                   for a, b, p in zip(crisis["first"], crisis["last"], crisis["partial"],
                                      strict=True)])
        parts.append(_table_html(
            window, [("crisis", "Crisis", "text"), ("dates", "Bars from / to", "text"),
                     ("bars", "Bars", "int")], "stress crisis"))
        parts.append("<p class=\"foot\">Statistics over the bars inside each window, returns "
                     "compounded from the close before its first bar; drawdown measured within "
                     "the window. Partial: the backtest covers only part of the window.</p>")
    if regime is not None:
        parts.append("<h2>Market regimes</h2>")
        if regime.empty:
            parts.append("<p class=\"sub\">No regime data.</p>")
        else:
            parts.append(_table_html(
                regime, [("regime", "Regime", "text"), ("bars", "Bars", "int"),
                         ("share", "Share of bars", "pct")], "stress regime"))
            parts.append("<p class=\"foot\">Each bar's return is attributed to the regime "
                         "known at the previous bar's close, the regime in force while the "
                         "position was held; returns of a regime are chained for its return, "
                         "CAGR and drawdown. Risk-free rate 0.</p>")
    return "\n".join(parts)
