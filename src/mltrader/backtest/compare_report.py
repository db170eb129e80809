"""The HTML page of `mltrader compare`: the leaderboard and every model's equity curve."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mltrader.backtest.result import BacktestResult

_PCT = {"hit_rate", "always_up_rate", "cagr", "max_drawdown", "total_return", "cost_drag"}
_LABELS = {
    "model": "Model", "ic_mean": "IC (mean)", "ic_t": "IC t-stat", "hit_rate": "Hit rate",
    "hit_p_value": "p (hit > 50%)", "always_up_rate": "Always-up rate",
    "mse_ratio": "MSE / MSE(zero)", "sharpe": "Sharpe",
    "deflated_sharpe": "Deflated Sharpe (P)", "dsr_trials": "Trials deflated over",
    "n_trials": "Tuning trials", "cagr": "CAGR",
    "max_drawdown": "Max drawdown", "total_return": "Total return",
    "turnover": "Turnover (x/yr)", "cost_drag": "Cost drag (/yr)", "trades": "Trades",
}


def _cell(key: str, v: object) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if key in _PCT:
        return f"{float(v):.2%}"  # type: ignore[arg-type]
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def write_compare_report(path: Path, *, title: str, leaderboard: pd.DataFrame,
                         results: dict[str, BacktestResult], benchmark: BacktestResult,
                         notes: list[str], warnings: list[str]) -> Path:
    """One self-contained HTML file (plotly.js inlined once) that opens offline."""
    cols = [c for c in _LABELS if c in leaderboard.columns]
    head = "".join(f"<th>{html.escape(_LABELS[c])}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c, row[c])}</td>" for c in cols) + "</tr>"
        for _, row in leaderboard.iterrows())
    fig = go.Figure()
    for name, res in results.items():
        fig.add_trace(go.Scatter(x=res.equity.index, y=np.round(res.equity.to_numpy(), 2),
                                 name=name, mode="lines"))
    fig.add_trace(go.Scatter(x=benchmark.equity.index, y=np.round(benchmark.equity.to_numpy(), 2),
                             name="buy & hold (equal weight)", mode="lines",
                             line={"color": "black", "dash": "dot"}))
    fig.update_layout(height=520, yaxis_type="log", yaxis_title="equity (log)",
                      margin={"l": 60, "r": 20, "t": 30, "b": 40})
    chart = fig.to_html(full_html=False, include_plotlyjs=True)
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    note = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}
table{{border-collapse:collapse;font-size:14px}}td,th{{border-bottom:1px solid #ddd;
padding:4px 10px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
.warn{{background:#fdecea;border:1px solid #c0392b;padding:8px 16px}}</style></head><body>
<h1>{html.escape(title)}</h1>
{f'<div class="warn"><b>Warnings</b><ul>{warn}</ul></div>' if warn else ''}
<ul>{note}</ul>
<h2>Leaderboard (out of sample, after costs)</h2>
<table><tr>{head}</tr>{body}</table>
<h2>Equity</h2>{chart}</body></html>"""
    path.write_text(page, encoding="utf-8")
    return path
