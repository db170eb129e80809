"""The placebo test's result and its files: `PlaceboOutput`, the table, placebo.csv,
summary.json and placebo.html, kept apart from how the runs are made (`mltrader.placebo`).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mltrader.config import RunConfig
from mltrader.runs import json_safe

METRICS: tuple[str, ...] = ("total_return", "sharpe", "turnover", "max_drawdown")
CSV_NAME, JSON_NAME, HTML_NAME = "placebo.csv", "summary.json", "placebo.html"


@dataclass(frozen=True)
class PlaceboOutput:
    """The real run, every placebo run and, per kind, where the real run ranks among them.

    ``real``: `compute_metrics` of the real run (plus ``vol_corr``, its predictions' mean
    rank correlation with trailing volatility). ``runs``: one row per placebo run,
    `RUN_COLUMNS`. ``summary``: kind -> runs, medians, the real run's percentile of total
    return and Sharpe (share of placebos below it, ties half), how many placebos beat it,
    a one-sided p-value, the persistence and turnover reached, and a plain sentence.
    """

    config: RunConfig
    real: dict[str, object]
    runs: pd.DataFrame
    summary: dict[str, dict[str, object]]
    notes: list[str]
    out_of_sample: dict[str, object]
    rule_only: bool  # no model: the placebos replaced the rule's target weights
    n: int
    seed: int

    def sentences(self) -> list[str]:
        return [str(s["sentence"]) for s in self.summary.values()]


def _ordinal(pct: float) -> str:
    k = int(round(pct))
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


# --- files -----------------------------------------------------------------------------

def summary_dict(out: PlaceboOutput) -> dict[str, object]:
    cfg = out.config
    return {
        "config": cfg.name,
        "strategy": cfg.strategy.name,
        "model": None if out.rule_only else cfg.model.name,
        "rule_only": out.rule_only,
        "n": out.n,
        "seed": out.seed,
        "kinds": list(out.summary),
        "out_of_sample": out.out_of_sample,
        "real": {k: out.real.get(k) for k in (*METRICS, "cagr", "annual_volatility",
                                              "vol_corr")},
        "placebo": out.summary,
        "notes": out.notes,
    }


def _fmt(v: object, kind: str = "ratio") -> str:
    if not isinstance(v, int | float) or not math.isfinite(v):
        return "n/a"
    if kind == "pct":
        return f"{v:+.1%}"
    if kind == "times":
        return f"{v:.2f}x"
    if kind == "rank":
        return _ordinal(v)
    return f"{v:.2f}"


def _histograms(out: PlaceboOutput) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    kinds = list(out.summary)
    titles = [t for k in kinds for t in (f"Sharpe: {k}", f"Total return: {k}")]
    fig = make_subplots(rows=len(kinds), cols=2, subplot_titles=titles,
                        vertical_spacing=min(0.12, 0.3 / max(len(kinds), 1)))
    for r, kind in enumerate(kinds, start=1):
        runs = out.runs[out.runs["kind"] == kind]
        for c, (metric, fmt) in enumerate((("sharpe", ".2f"), ("total_return", ".0%")),
                                          start=1):
            x = runs[metric].to_numpy(float)
            fig.add_trace(go.Histogram(
                x=x[np.isfinite(x)], nbinsx=min(40, max(10, len(x) // 3)),
                marker={"color": "#9aa5b1"}, name=f"placebo ({kind})", showlegend=False,
                hovertemplate=f"%{{x:{fmt}}}: %{{y}} runs<extra></extra>"), row=r, col=c)
            v = out.real.get(metric)
            if isinstance(v, int | float) and math.isfinite(v):
                fig.add_vline(x=v, line={"color": "#d62728", "width": 3}, row=r, col=c,
                              annotation_text=f"real {format(v, fmt)}",
                              annotation_position="top right")
        fig.update_xaxes(tickformat=".0%", row=r, col=2)
    fig.update_layout(template="plotly_white", height=300 * len(kinds) + 80, bargap=0.05,
                      margin={"l": 60, "r": 30, "t": 60, "b": 40})
    return fig.to_html(full_html=False, include_plotlyjs=True,
                       config={"displaylogo": False, "responsive": True})


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:#222;background:#fafafa;margin:0}
main{max-width:1200px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:1.7em;margin:0 0 4px}
.sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;font-size:0.95em;margin-top:8px}
th,td{padding:5px 14px;border-bottom:1px solid #e5e5e5;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f2f4f7;border-bottom:2px solid #ccc}
.summary li,.notes li{line-height:1.45;margin-bottom:4px}
"""


def table_rows(out: PlaceboOutput) -> list[tuple[str, ...]]:
    """One row per kind: kind, runs, median return and Sharpe, the real run's percentiles,
    placebo median turnover vs the real run's."""
    rows = []
    for kind, k in out.summary.items():
        turn = f"{_fmt(k['turnover_median'], 'times')} vs {_fmt(k['turnover_real'], 'times')}"
        if not k["turnover_matched"]:
            turn += " (not matched)"
        rows.append((kind, str(k["runs"]), _fmt(k["median_total_return"], "pct"),
                     _fmt(k["median_sharpe"]), _fmt(k["percentile_total_return"], "rank"),
                     _fmt(k["percentile_sharpe"], "rank"), turn))
    return rows


TABLE_HEADS = ("kind", "runs", "median return", "median Sharpe", "real: return pct",
               "real: Sharpe pct", "turnover (placebo vs real)")


def placebo_html(out: PlaceboOutput) -> str:
    cfg = out.config
    title = f"mltrader placebo: {cfg.name} ({cfg.strategy.name})"
    r = out.real
    oos = out.out_of_sample
    head = "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEADS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table_rows(out))
    items = "".join(f"<li>{html.escape(s)}</li>" for s in out.sentences())
    notes = "".join(f"<li>{html.escape(s)}</li>" for s in out.notes)
    return "\n".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=\"sub\">Out of sample {oos['start']} .. {oos['end']} ({oos['bars']} bars); "
        f"{out.n} placebo runs per kind, seed {out.seed}. Real run: total return "
        f"{_fmt(r.get('total_return'), 'pct')}, Sharpe {_fmt(r.get('sharpe'))}, turnover "
        f"{_fmt(r.get('turnover'), 'times')} a year.</p>",
        f"<ul class=\"summary\">{items}</ul>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        "<h2>Placebo distributions (red: the real run)</h2>",
        _histograms(out),
        f"<h2>Notes</h2>\n<ul class=\"notes\">{notes}</ul>",
        "</main>\n</body>\n</html>\n",
    ])


def write_placebo(out: PlaceboOutput, folder: Path) -> dict[str, Path]:
    """Write placebo.csv (every run), summary.json and placebo.html (opens offline)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"runs": folder / CSV_NAME, "summary": folder / JSON_NAME,
             "report": folder / HTML_NAME}
    out.runs.to_csv(paths["runs"], index=False, float_format="%.6g")
    paths["summary"].write_text(json.dumps(json_safe(summary_dict(out)), indent=2) + "\n")
    paths["report"].write_text(placebo_html(out), encoding="utf-8")
    return paths
