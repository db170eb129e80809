"""Self-contained HTML report of a backtest: warnings, metrics table, equity, drawdown, positions.

The page opens offline: plotly.js is inlined exactly once (with the first figure), every
later figure reuses it, and styling is a plain ``<style>`` block with system fonts only.
"""

from __future__ import annotations

import html
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from mltrader.backtest.metrics import drawdown_series
from mltrader.backtest.result import BacktestResult

# metric key -> (human label, value format)
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "total_return": ("Total return", "pct"),
    "cagr": ("CAGR", "pct"),
    "annual_volatility": ("Annual volatility", "pct"),
    "sharpe": ("Sharpe", "ratio"),
    "sortino": ("Sortino", "ratio"),
    "max_drawdown": ("Max drawdown", "pct"),
    "longest_drawdown_days": ("Longest drawdown (days)", "int"),
    "win_rate": ("Win rate", "pct"),
    "trades": ("Trades", "int"),
    "fills": ("Fills", "int"),
    "turnover": ("Turnover (x/yr)", "times"),
    "total_costs": ("Total costs", "money"),
    "cost_drag": ("Cost drag (costs / mean equity per year)", "pct"),
    "exposure": ("Exposure (share of bars)", "pct"),
    "calmar": ("Calmar", "ratio"),
    "max_drawdown_duration_days": ("Max drawdown duration (days)", "int"),
    "profit_factor": ("Profit factor", "ratio"),
    "avg_win": ("Average win", "money"),
    "avg_loss": ("Average loss", "money"),
    "avg_win_loss_ratio": ("Average win / average loss", "ratio"),
    "expectancy": ("Expectancy (per trade)", "money"),
    "expectancy_return": ("Expectancy (return per trade)", "pct"),
    "best_trade_return": ("Best trade", "pct"),
    "worst_trade_return": ("Worst trade", "pct"),
    "alpha": ("Alpha vs buy & hold (annual)", "pct"),
    "beta": ("Beta vs buy & hold", "ratio"),
    "information_ratio": ("Information ratio vs buy & hold", "ratio"),
    "tracking_error": ("Tracking error (annual)", "pct"),
    "correlation": ("Correlation with buy & hold", "ratio"),
}
# rows where the better column is bolded: max = higher is better, min = lower is better
_BETTER: dict[str, Callable[[Sequence[float]], float]] = {
    "total_return": max, "cagr": max, "sharpe": max, "sortino": max,
    "max_drawdown": max, "longest_drawdown_days": min, "calmar": max,
}
_SIG_DIGITS = 6
_TRADE_ROWS = 50
_COLORS = ("#1f77b4", "#7f7f7f", "#d62728", "#2ca02c")  # strategy, benchmark, index, ...

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:#222;background:#fafafa;margin:0}
main{max-width:1200px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:1.7em;margin:0 0 4px}
h2{font-size:1.2em;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}
.warnings{border:2px solid #c0392b;background:#fdecea;border-radius:6px;padding:10px 16px;
 margin:16px 0}
.warnings strong{color:#a93226;font-size:1.05em}
.warnings ul,.notes ul{margin:6px 0 0;padding-left:22px}
.notes{color:#333}
table{border-collapse:collapse;font-size:0.95em;margin-top:8px}
th,td{padding:5px 14px;border-bottom:1px solid #e5e5e5;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f2f4f7;border-bottom:2px solid #ccc}
tbody tr:hover{background:#f7f9fc}
td.best{font-weight:700}
.foot{color:#777;font-size:0.85em;margin-top:6px}
.chart{margin-top:4px}
"""


def write_report(
    path: Path,
    *,
    title: str,
    strategy: BacktestResult,
    benchmark: BacktestResult,
    metrics: dict[str, dict[str, object]],
    notes: list[str],
    warnings: list[str],
    strategy_name: str = "Strategy",
    benchmark_name: str = "Benchmark",
    sections: Sequence[str] = (),
    short_period: bool = False,
    currency: str = "",
    extra_curves: dict[str, pd.Series] | None = None,
) -> Path:
    """Write the report for ``strategy`` against ``benchmark`` to ``path`` and return the path.

    ``metrics`` maps a column name (e.g. "strategy", "buy & hold") to that column's metric
    dict (as from `compute_metrics`); unknown metric keys are shown with a generic label.
    ``sections`` are ready HTML fragments (risk actions, stress tables) placed after the charts.
    ``short_period``: the bars span less than a year, so CAGR is flagged "(from < 1 year)".
    ``currency``: the account's money (e.g. CNY), named on the equity chart and the period
    line; ``extra_curves``: more value curves for the equity chart (e.g. an index).
    """
    path = Path(path)
    figures = [
        (f"Equity ({currency})" if currency else "Equity",
         _equity_figure(strategy, benchmark, strategy_name, benchmark_name, extra_curves,
                        currency)),
        ("Drawdown", _drawdown_figure(strategy, benchmark, strategy_name, benchmark_name)),
        (f"Positions ({strategy_name.lower()})", _positions_figure(strategy)),
    ]
    chart_html = []
    for i, (heading, fig) in enumerate(figures):
        div = fig.to_html(full_html=False, include_plotlyjs=(i == 0),
                          config={"displaylogo": False, "responsive": True})
        chart_html.append(f"<h2>{html.escape(heading)}</h2>\n<div class=\"chart\">{div}</div>")
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=\"sub\">{html.escape(_period_line(strategy))}</p>",
        _warnings_html(warnings),
        _notes_html(notes),
        "<h2>Metrics</h2>",
        _metrics_table(metrics, short_period),
        *chart_html,
        *sections,
        _trades_html(strategy.trades),
        "</main>\n</body>\n</html>\n",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    return path


# --- text blocks -----------------------------------------------------------------------

def significance_html(test: dict[str, object]) -> str:
    """Did the strategy beat the benchmark beyond luck: the verdict and the numbers behind it."""
    if not test or not test.get("summary"):
        why = (test or {}).get("why") or "not enough out-of-sample bars"
        return ("<h2>Against buy &amp; hold</h2>"
                f"<p>No significance test: {html.escape(str(why))}.</p>")
    sd = test["sharpe_difference"]  # type: ignore[index]
    al = test["alpha"]  # type: ignore[index]
    lev = test["levered_benchmark"]  # type: ignore[index]
    act = test["active_deflated_sharpe"]  # type: ignore[index]

    def num(v: object, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    level = float(test.get("level") or 0.95)  # type: ignore[arg-type]
    rows = [
        ("Sharpe difference (annual, strategy - buy & hold)",
         f"{num(sd['difference_annual'], '+.2f')} ({level:.0%} CI "
         f"{num(sd['ci_low_annual'], '+.2f')} to {num(sd['ci_high_annual'], '+.2f')}), "
         f"p = {num(sd['p_value'], '.3g')}", sd["method"]),
        ("Alpha (per year) and beta", f"{num(al['alpha_annual'], '+.2%')} (t = "
         f"{num(al['t_stat'], '.2f')}, p = {num(al['p_value'], '.3g')}), beta "
         f"{num(al['beta'], '.2f')}", al["method"]),
        ("Buy & hold levered to the strategy's volatility",
         f"x{num(lev['leverage'], '.2f')}: CAGR {num(lev['cagr'], '+.2%')} vs the strategy's "
         f"{num(lev['strategy_cagr'], '+.2%')}",
         "constant leverage, rebalanced every bar, no financing cost: is the extra return "
         "just extra risk?"),
        ("Deflated Sharpe of the active returns (strategy - buy & hold)",
         f"{num(act.get('dsr'), '.2f')} over {act.get('n_trials')} trial(s)",
         "P(the active returns' true Sharpe beats the best of that many trials by luck); "
         "below 0.95 it is not significant"),
    ]
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td>"
                   f"<td>{html.escape(str(c))}</td></tr>" for a, b, c in rows)
    return ("<h2>Against buy &amp; hold</h2>"
            f"<p><strong>{html.escape(str(test['summary']))}</strong></p>"
            "<table class=\"metrics\"><thead><tr><th>Test</th><th>Result</th><th>How</th>"
            f"</tr></thead><tbody>{body}</tbody></table>")


def risk_html(summary: dict[str, object]) -> str:
    """What the risk layer did: resized targets, blocked or resized orders, exits by reason."""
    rows = []
    for what, key in (("Target resized by a cap", "targets_resized"),
                      ("Order blocked or resized", "orders"), ("Position closed by", "exits"),
                      ("Exit held back by", "held_back")):
        for rule, n in dict(summary.get(key) or {}).items():  # type: ignore[call-overload]
            rows.append(f"<tr><td>{html.escape(what)}</td><td>{html.escape(str(rule))}</td>"
                        f"<td>{int(n):,}</td></tr>")
    sizing = html.escape(str(summary.get("sizing", "weights")))
    if not rows:
        return (f"<h2>Risk actions</h2>\n<p class=\"sub\">Sizing: {sizing}. No cap, guard or "
                "risk exit acted.</p>")
    return (f"<h2>Risk actions</h2>\n<p class=\"sub\">Sizing: {sizing}. Every order a rule "
            "blocked or resized is in orders.parquet with its reason.</p>\n<table><thead><tr>"
            "<th>What</th><th>Rule</th><th>Count</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


# the rows of `bt_engine.compare_engines` -> the metric key that formats them
ENGINE_ROW_KEYS = {"total return": "total_return", "CAGR": "cagr", "Sharpe": "sharpe",
                   "max drawdown": "max_drawdown", "fills": "fills",
                   "total commission": "total_costs", "final equity": "total_costs"}


def engine_cell(row: str, value: object) -> str:
    """One cell of the engines table, formatted as its metric."""
    return format_metric(ENGINE_ROW_KEYS.get(row, row), value)


def engines_html(table: pd.DataFrame) -> str:
    """Both engines' results side by side (`--engine backtrader`)."""
    cols = list(table.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["", *cols])
    body = "".join(
        "<tr><td>" + html.escape(str(idx)) + "</td>"
        + "".join(f"<td>{html.escape(engine_cell(str(idx), v))}</td>" for v in row) + "</tr>"
        for idx, row in zip(table.index, table.to_numpy(), strict=True))
    return ("<h2>mltrader and backtrader, same targets</h2>\n<p class=\"sub\">The same target "
            "weights (or shares) through both engines, with the same fills, costs and market "
            "rules where backtrader can model them; the difference column is backtrader minus "
            "mltrader.</p>\n<table class=\"metrics\"><thead><tr>" + head
            + "</tr></thead><tbody>" + body + "</tbody></table>")


def _period_line(result: BacktestResult) -> str:
    index = result.equity.index
    if len(index) == 0:
        return "No bars"
    return (f"{_fmt_date(index[0])} to {_fmt_date(index[-1])}, {len(index):,} bars; "
            f"orders fill at the {result.fill_timing}")


def _warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    return f"<div class=\"warnings\"><strong>Warnings</strong><ul>{items}</ul></div>"


def _notes_html(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"<div class=\"notes\"><strong>Notes</strong><ul>{items}</ul></div>"


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(
        float(value))


def format_metric(key: str, value: object) -> str:
    """Display text of one metric value: %, ratio, count, multiple or money; None -> n/a."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if not _is_number(value):
        return str(value)
    x = float(value)  # type: ignore[arg-type]
    kind = METRIC_LABELS.get(key, ("", "num"))[1]
    if kind == "pct":
        return f"{x:.2%}"
    if kind == "ratio":
        return f"{x:.2f}"
    if kind == "int":
        return f"{x:,.0f}"
    if kind == "times":
        return f"{x:.2f}x"
    if kind == "money":
        return f"{x:,.2f}"
    return f"{x:.6g}"


def _metrics_table(metrics: dict[str, dict[str, object]], short_period: bool = False) -> str:
    columns = list(metrics)
    keys: list[str] = []
    for col in columns:
        keys.extend(k for k in metrics[col] if k not in keys)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for key in keys:
        label = METRIC_LABELS.get(key, (key.replace("_", " ").capitalize(), ""))[0]
        if key == "cagr" and short_period:
            label += " (from < 1 year)"
        values = [metrics[c].get(key) for c in columns]
        best = _best_value(key, values)
        cells = "".join(
            f"<td{_best_attr(v, best)}>{html.escape(format_metric(key, v))}</td>"
            for v in values
        )
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    foot = ("<p class=\"foot\">Bold marks the higher value for return, CAGR, Sharpe, Sortino and "
            "max drawdown, and the shorter longest drawdown. Risk-free rate 0.</p>")
    return (f"<table class=\"metrics\"><thead><tr><th>Metric</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>\n{foot}")


def _best_attr(value: object, best: float | None) -> str:
    is_best = best is not None and _is_number(value) and float(value) == best  # type: ignore[arg-type]
    return ' class="best"' if is_best else ""


def _best_value(key: str, values: list[object]) -> float | None:
    """The value to bold in a row, or None if the row is not ranked or there is no contest."""
    pick = _BETTER.get(key)
    numeric = [float(v) for v in values if _is_number(v)]  # type: ignore[arg-type]
    if pick is None or len(numeric) < 2 or len(set(numeric)) == 1:
        return None
    return pick(numeric)


def _trades_html(trades: pd.DataFrame) -> str:
    if trades.empty:
        return ""
    last = trades.sort_values("entry_date", kind="stable").tail(_TRADE_ROWS)
    rows = []
    for rec in last.to_dict("records"):
        exit_text = "open" if bool(rec["open"]) else _fmt_date(rec["exit_date"])
        cells = [
            html.escape(str(rec["symbol"])), _fmt_date(rec["entry_date"]), exit_text,
            format_metric("total_return", rec["return"]),
            format_metric("trades", rec["bars_held"]),
            format_metric("total_costs", rec["pnl"]),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in
                   ("Symbol", "Entry", "Exit", "Return", "Bars held", "P&amp;L"))
    n = len(trades)
    caption = f"Last {len(last)} of {n:,} trades" if n > len(last) else f"All {n:,} trades"
    return (f"<h2>Trades</h2><p class=\"sub\">{caption}, by entry date; P&amp;L net of "
            f"costs, open trades marked at the last close.</p>"
            f"<table class=\"trades\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _fmt_date(value: object) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):  # type: ignore[arg-type]
        return "\u2014"
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M")


# --- figures ---------------------------------------------------------------------------

def round_sig(values: np.ndarray | pd.Series, digits: int = _SIG_DIGITS) -> np.ndarray:
    """Values rounded to ``digits`` significant figures as float32, to keep the page small."""
    x = np.asarray(values, dtype=float).copy()
    ok = np.isfinite(x) & (x != 0)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(x[ok]))))
    x[ok] = np.round(x[ok] * scale) / scale
    return x.astype(np.float32)


def _x(index: pd.Index) -> list[str]:
    """Compact date strings for the x axis (time of day only when the bars have one)."""
    if not isinstance(index, pd.DatetimeIndex):
        return [str(v) for v in index]
    fmt = "%Y-%m-%d" if bool((index == index.normalize()).all()) else "%Y-%m-%d %H:%M"
    return list(index.strftime(fmt))


def _layout(fig: go.Figure, *, y_title: str, height: int = 430) -> None:
    fig.update_layout(
        template="plotly_white", height=height, hovermode="x unified",
        margin={"l": 70, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
        yaxis_title=y_title,
    )


def _equity_figure(strategy: BacktestResult, benchmark: BacktestResult,
                   s_name: str, b_name: str, extra: dict[str, pd.Series] | None = None,
                   currency: str = "") -> go.Figure:
    fig = go.Figure()
    curves = [(strategy.equity, s_name), (benchmark.equity, b_name), *((extra or {}).items())]
    for k, (series, name) in enumerate((c, n) if isinstance(n, str) else (n, c)
                                       for c, n in curves):
        fig.add_trace(go.Scatter(
            x=_x(series.index), y=round_sig(series), name=name, mode="lines",
            line={"color": _COLORS[k % len(_COLORS)], "width": 1.6},
            hovertemplate="%{y:,.0f}",
        ))
    _layout(fig, y_title=f"Equity ({currency})" if currency else "Equity")
    buttons = [{"label": label, "method": "relayout", "args": [{"yaxis.type": kind}]}
               for label, kind in (("Linear", "linear"), ("Log", "log"))]
    fig.update_layout(updatemenus=[{
        "type": "buttons", "direction": "left", "buttons": buttons, "showactive": True,
        "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom", "pad": {"r": 4, "t": 0},
    }], legend_x=0.14)
    return fig


def _drawdown_figure(strategy: BacktestResult, benchmark: BacktestResult,
                     s_name: str, b_name: str) -> go.Figure:
    fig = go.Figure()
    fills = ("rgba(31,119,180,0.35)", "rgba(127,127,127,0.30)")
    for res, name, color, fill in ((benchmark, b_name, _COLORS[1], fills[1]),
                                   (strategy, s_name, _COLORS[0], fills[0])):
        dd = drawdown_series(res.equity, res.initial_cash)
        fig.add_trace(go.Scatter(
            x=_x(dd.index), y=round_sig(dd), name=name, mode="lines", fill="tozeroy",
            line={"color": color, "width": 1}, fillcolor=fill, hovertemplate="%{y:.1%}",
        ))
    _layout(fig, y_title="Drawdown", height=340)
    fig.update_yaxes(tickformat=".0%")
    return fig


def _positions_figure(strategy: BacktestResult) -> go.Figure:
    weights = strategy.weights.fillna(0.0)
    held = [c for c in weights.columns if bool((weights[c] != 0).any())]
    x = _x(weights.index)
    palette = list(qualitative.Dark24) + list(qualitative.Light24)
    fig = go.Figure()
    for i, symbol in enumerate(held):
        fig.add_trace(go.Scatter(
            x=x, y=round_sig(weights[symbol]), name=str(symbol), mode="lines",
            stackgroup="weights", line={"width": 0.5, "color": palette[i % len(palette)]},
            hovertemplate="%{y:.1%}",
        ))
    gross = weights.abs().sum(axis=1)
    fig.add_trace(go.Scatter(
        x=x, y=round_sig(gross), name="Gross exposure", mode="lines",
        line={"color": "#222", "width": 1.4, "dash": "dot"}, hovertemplate="%{y:.1%}",
    ))
    _layout(fig, y_title="Weight of equity", height=max(460, 19 * (len(held) + 1) + 110))
    fig.update_yaxes(tickformat=".0%")
    fig.update_layout(
        hovermode="closest" if len(held) > 12 else "x unified",
        legend={"orientation": "v", "yanchor": "top", "y": 1, "xanchor": "left", "x": 1.01,
                "font": {"size": 10}, "tracegroupgap": 0},
        margin={"r": 130},
    )
    return fig
