"""Server-side rendering helpers of the dashboard's pages: charts and cell formats."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from mltrader import __version__
from mltrader.dashboard.state import Dashboard
from mltrader.live.logfile import tail

LOG_LINES = 100  # the Health page's log tail


def _health(dash: Dashboard) -> dict[str, Any]:
    out: dict[str, Any] = {"journal": dash.journal.safe_url if dash.journal else None,
                           "journal_reachable": False, "journal_error": dash.journal_error,
                           "last_bar": None, "lag_seconds": None,
                           "stream_clients": dash.stream.clients, "errors": [],
                           "broker": None, "version": __version__}
    log_file = dash.source.log_file
    out["log_file"] = str(log_file) if log_file is not None else None
    out["log_tail"] = tail(log_file, LOG_LINES) if log_file is not None else []
    if dash.views is not None:
        try:
            out.update(journal_reachable=True, **dash.views.last_bar(),
                       errors=dash.views.errors(50), broker=dash.views.broker())
        except Exception as exc:
            out["journal_error"] = " ".join(str(exc).split())[:300]
    return out


def _overview_chart(ov: Mapping[str, Any]) -> str:
    t = [p["time"] for p in ov["curve"]]
    data: list[dict[str, Any]] = [
        {"x": t, "y": [p["equity"] for p in ov["curve"]], "name": "equity", "type": "scatter",
         "mode": "lines"},
        {"x": t, "y": [p["drawdown"] for p in ov["curve"]], "name": "drawdown",
         "type": "scatter", "mode": "lines", "yaxis": "y2", "fill": "tozeroy"}]
    if ov.get("buy_and_hold"):
        data.insert(1, {"x": t, "y": ov["buy_and_hold"], "name": "buy & hold",
                        "type": "scatter", "mode": "lines"})
    layout = {"height": 420, "margin": {"t": 20, "l": 60, "r": 20, "b": 30},
              "yaxis": {"domain": [0.32, 1], "title": "equity"},
              "yaxis2": {"domain": [0, 0.25], "tickformat": ".0%", "title": "drawdown"},
              "legend": {"orientation": "h"}}
    return json.dumps({"data": data, "layout": layout})


def _overlay_chart(curves: list[dict[str, Any]]) -> str:
    data = []
    for c in curves:
        first = next((v for v in c["equity"] if v), None) or 1.0
        data.append({"x": c["time"], "y": [v / first if v is not None else None
                                           for v in c["equity"]],
                     "name": c["name"], "type": "scatter", "mode": "lines"})
    layout = {"height": 420, "margin": {"t": 20, "l": 60, "r": 20, "b": 30},
              "yaxis": {"title": "growth of 1"}, "legend": {"orientation": "h"}}
    return json.dumps({"data": data, "layout": layout})


def _num(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, int | float):
        return f"{v:,.{digits}f}"
    return str(v)


def _ago(seconds: Any) -> str:
    """A lag in the unit a trader reads at a glance: s, min, h or days (ago)."""
    if seconds is None or seconds != seconds:
        return "–"
    s = float(seconds)
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if abs(s) < limit:
            return f"{s / size:,.0f} {unit} ago"
    return f"{s / 86400:,.1f} days ago"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{float(v) * 100:.2f}%"


def _when(v: Any) -> str:
    if not v:
        return "–"
    try:
        return pd.Timestamp(v).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(v)


def _short(v: Any, n: int = 120) -> str:
    if isinstance(v, Mapping):
        v = ", ".join(f"{k}={_num(x, 4) if isinstance(x, float) else x}" for k, x in v.items())
    s = "" if v is None else str(v)
    return s if len(s) <= n else s[: n - 1] + "…"

