"""Parameter sensitivity: a grid of strategy settings, each scored before and after a split.

The bars before ``split`` are the *selection* period: the grid cell with the best Sharpe
there is the one a researcher would pick (``chosen``). The bars from ``split`` on are the
*hold-out*: the chosen cell's hold-out Sharpe is the honest estimate of what picking
parameters this way delivers; the best hold-out cell is not (it was found by looking).
The spread of results across neighbouring cells shows how fragile the parameters are.

Statistics follow `mltrader.backtest.stress.period_stats` (and through it the conventions
of `mltrader.backtest.metrics`): per-bar returns with the first measured from
``initial_cash`` when given (left out otherwise), Sharpe = mean / std(ddof=1) x sqrt(ppy),
CAGR with years = bars / ppy, max drawdown of each period's returns compounded from 1, so
the hold-out drawdown is measured from the equity at the split.
"""

from __future__ import annotations

import html
import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mltrader.backtest.stress import period_stats
from mltrader.errors import ConfigError
from mltrader.models.units import map_units, serial_map

MAX_AXIS_VALUES = 50
MAX_CELLS = 400
METRIC_COLUMNS: tuple[str, ...] = (
    "sharpe_is", "cagr_is", "maxdd_is", "sharpe_oos", "cagr_oos", "maxdd_oos",
)
CSV_NAME = "sensitivity.csv"

GridValue = float | int | str

_FORMS = ("KEY=LO:HI:N (N evenly spaced values from LO to HI, 2 <= N <= 50) "
          "or KEY=A,B,C (listed values)")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class GridAxis:
    """One parameter of the grid: a config key (dotted paths allowed) and its values."""

    key: str
    values: tuple[GridValue, ...]


# --- parsing ---------------------------------------------------------------------------

def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(f"bad --grid {spec!r}: {why}; expected {_FORMS}")


def _number(text: str) -> int | float | None:
    """An int or finite float written in ``text``, else None."""
    if _INT.fullmatch(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _tidy(value: float) -> float:
    """Drop floating-point noise from a grid step (0.015000000000000001 -> 0.015)."""
    return float(f"{value:.12g}")


def parse_grid(spec: str) -> GridAxis:
    """``KEY=LO:HI:N`` -> N evenly spaced values, both ends included; ``KEY=A,B,C`` -> listed.

    A range stays integer when LO and HI are written as integers and the step is integral
    (``n=2:10:5`` -> 2, 4, 6, 8, 10); otherwise values are floats. Listed values are ints,
    floats or, if not numbers, strings. Raises `ConfigError` (one line) on a bad spec.
    """
    text = spec.strip()
    key, sep, rest = text.partition("=")
    key, rest = key.strip(), rest.strip()
    if not sep or not key or not rest:
        raise _bad(spec, "missing KEY= or values")
    if not _KEY.fullmatch(key):
        raise _bad(spec, f"{key!r} is not a config key (letters, digits, _ and dots)")
    if ":" in rest:
        parts = [p.strip() for p in rest.split(":")]
        if len(parts) != 3:
            raise _bad(spec, "a range needs exactly LO:HI:N")
        lo, hi, n = (_number(p) for p in parts)
        if lo is None or hi is None:
            raise _bad(spec, "LO and HI must be numbers")
        if not isinstance(n, int):
            raise _bad(spec, "N must be an integer")
        if not 2 <= n <= MAX_AXIS_VALUES:
            raise _bad(spec, f"N must be between 2 and {MAX_AXIS_VALUES}, got {n}")
        if not lo < hi:
            raise _bad(spec, "LO must be below HI")
        values: tuple[GridValue, ...]
        if isinstance(lo, int) and isinstance(hi, int) and (hi - lo) % (n - 1) == 0:
            step = (hi - lo) // (n - 1)
            values = tuple(lo + i * step for i in range(n))
        else:
            values = tuple(_tidy(v) for v in np.linspace(float(lo), float(hi), n))
            if len(set(values)) != n:
                raise _bad(spec, "the range is too narrow for N distinct values")
        return GridAxis(key, values)
    items = [p.strip() for p in rest.split(",")]
    if any(not item for item in items):
        raise _bad(spec, "an empty value in the list")
    if len(items) > MAX_AXIS_VALUES:
        raise _bad(spec, f"at most {MAX_AXIS_VALUES} values, got {len(items)}")
    listed: list[GridValue] = []
    for item in items:
        number = _number(item)
        listed.append(item if number is None else number)
    if len(set(listed)) != len(listed):
        raise _bad(spec, "a value is listed twice")
    return GridAxis(key, tuple(listed))


def check_grid(axes: Sequence[GridAxis]) -> int:
    """Raise `ConfigError` for no axes, a repeated key or more than 400 cells; the cell count."""
    if not axes:
        raise ConfigError(f"sensitivity needs at least one --grid {_FORMS}")
    keys = [axis.key for axis in axes]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ConfigError(f"--grid key given twice: {', '.join(repeated)}; give each key once")
    reserved = sorted(set(keys) & {*METRIC_COLUMNS, "chosen"})
    if reserved:
        raise ConfigError(f"--grid key {reserved[0]!r} clashes with a result column; "
                          f"use the full config path")
    if any(not axis.values for axis in axes):
        raise ConfigError("--grid axis without values")
    cells = math.prod(len(axis.values) for axis in axes)
    if cells > MAX_CELLS:
        sizes = " x ".join(str(len(axis.values)) for axis in axes)
        raise ConfigError(f"--grid has {sizes} = {cells} cells, more than {MAX_CELLS}; "
                          f"use fewer values per axis")
    return cells


# --- running ---------------------------------------------------------------------------

def default_split(index: pd.DatetimeIndex) -> pd.Timestamp:
    """The bar in the middle of ``index`` (the hold-out starts there)."""
    if len(index) == 0:
        raise ValueError("default_split needs at least one bar")
    return pd.Timestamp(index[len(index) // 2])


def _align_split(split: pd.Timestamp | str, index: pd.Index) -> pd.Timestamp:
    """``split`` in the time zone of ``index`` (a naive split is read as local time there)."""
    ts = pd.Timestamp(split)
    tz = getattr(index, "tz", None)
    if tz is not None and ts.tzinfo is None:
        return ts.tz_localize(tz)
    if tz is None and ts.tzinfo is not None:
        return ts.tz_convert(None)
    return ts


def _chosen(sharpe: pd.Series) -> np.ndarray:
    """True at the first cell with the highest finite Sharpe (none if no cell has one)."""
    values = pd.to_numeric(sharpe, errors="coerce").to_numpy(dtype=float)
    flags = np.zeros(values.size, dtype=bool)
    finite = np.isfinite(values)
    if finite.any():
        flags[int(np.argmax(np.where(finite, values, -np.inf)))] = True
    return flags


def _cell_text(overrides: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items())


def run_grid(
    axes: Sequence[GridAxis],
    evaluate: Callable[[dict[str, object]], pd.Series],
    split: pd.Timestamp,
    progress: Callable[[str], None] | None = None,
    initial_cash: float | None = None,
    *,
    periods_per_year: float = 252.0,
) -> pd.DataFrame:
    """Evaluate every cell of the grid and score it before and from ``split``.

    Cells run in ``itertools.product`` order (first axis slowest), in this process.
    ``evaluate(overrides)`` returns the equity series of the backtest for that cell; rows
    hold the axis values, `METRIC_COLUMNS` (``_is``: bars before ``split``; ``_oos``: bars
    from ``split`` on; the first hold-out return runs from the close before the split) and
    ``chosen``, True on the first cell with the best ``sharpe_is``. Undefined statistics are
    NaN. `run_grid_units` runs the cells as units of work (on workers or Ray) instead.
    """
    return _grid(axes, serial_map, _call, evaluate, split, progress, initial_cash,
                 periods_per_year)[0]


def run_grid_units(
    axes: Sequence[GridAxis],
    fn: Callable[[Any, dict[str, object]], pd.Series],
    shared: Any,
    split: pd.Timestamp,
    progress: Callable[[str], None] | None = None,
    initial_cash: float | None = None,
    *,
    periods_per_year: float = 252.0,
) -> tuple[pd.DataFrame, list[pd.Series]]:
    """`run_grid` with every cell a unit of work on the current unit map (`map_units`):
    ``fn(shared, overrides)`` is a module-level function (it may run on a worker) and
    ``shared`` what every cell reads, shipped once. The table (rows in ``itertools.product``
    order) and each cell's equity in the same order; ``progress`` as each cell finishes."""
    return _grid(axes, map_units, fn, shared, split, progress, initial_cash, periods_per_year)


def _call(evaluate: Callable[[dict[str, object]], pd.Series],
          overrides: dict[str, object]) -> pd.Series:
    return evaluate(dict(overrides))


def _grid(
    axes: Sequence[GridAxis],
    mapper: Callable[..., list[Any]],
    fn: Callable[[Any, dict[str, object]], pd.Series],
    shared: Any,
    split: pd.Timestamp,
    progress: Callable[[str], None] | None,
    initial_cash: float | None,
    periods_per_year: float,
) -> tuple[pd.DataFrame, list[pd.Series]]:
    check_grid(axes)
    keys = [axis.key for axis in axes]
    cells: list[dict[str, object]] = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(axis.values for axis in axes))]
    rows: list[dict[str, object]] = [{} for _ in cells]
    finished = itertools.count(1)

    def on_result(i: int, equity: object) -> None:
        if not isinstance(equity, pd.Series):
            raise TypeError(f"evaluate must return a pandas Series, got {type(equity).__name__}")
        rows[i] = row = _score(cells[i], equity, split, periods_per_year, initial_cash)
        if progress is not None:
            progress(f"cell {next(finished)}/{len(cells)}: {_cell_text(cells[i])}: Sharpe "
                     f"{_fmt(row['sharpe_is'])} selection, {_fmt(row['sharpe_oos'])} hold-out")

    equities = mapper(fn, shared, [dict(c) for c in cells], on_result)
    table = pd.DataFrame(rows, columns=[*keys, *METRIC_COLUMNS])
    for col in METRIC_COLUMNS:
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    table["chosen"] = _chosen(table["sharpe_is"])
    return table, equities


def _score(overrides: dict[str, object], equity: pd.Series, split: pd.Timestamp,
           periods_per_year: float, initial_cash: float | None) -> dict[str, object]:
    """One row of the table: the cell's values and its statistics each side of ``split``."""
    before = np.asarray(equity.index < _align_split(split, equity.index))
    row: dict[str, object] = dict(overrides)
    for suffix, mask in (("is", before), ("oos", ~before)):
        stats = period_stats(equity, mask, periods_per_year, initial_cash=initial_cash)
        row[f"sharpe_{suffix}"] = stats["sharpe"]
        row[f"cagr_{suffix}"] = stats["cagr"]
        row[f"maxdd_{suffix}"] = stats["max_drawdown"]
    return row


# --- report ----------------------------------------------------------------------------

def _fmt(value: object, kind: str = "ratio") -> str:
    if value is None or not isinstance(value, (int, float, np.number)) or not np.isfinite(
            float(value)):
        return "n/a"
    return f"{float(value):.2%}" if kind == "pct" else f"{float(value):.2f}"


def _label(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _split_text(split: pd.Timestamp) -> str:
    ts = pd.Timestamp(split)
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M")


def _chosen_row(table: pd.DataFrame) -> pd.Series | None:
    if "chosen" not in table or not table["chosen"].astype(bool).any():
        return None
    return table.loc[table["chosen"].astype(bool)].iloc[0]


def _symmetric_range(values: Sequence[np.ndarray]) -> tuple[float, float]:
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    if finite.size == 0:
        return -1.0, 1.0
    bound = float(np.abs(finite).max()) or 1.0
    return -bound, bound


def _matrix(table: pd.DataFrame, axes: Sequence[GridAxis], column: str) -> np.ndarray:
    """``column`` as a (len(axes[1]), len(axes[0])) matrix: rows = y values, columns = x."""
    x_axis, y_axis = axes
    z = np.full((len(y_axis.values), len(x_axis.values)), np.nan)
    x_pos = {v: i for i, v in enumerate(x_axis.values)}
    y_pos = {v: i for i, v in enumerate(y_axis.values)}
    for x, y, value in zip(table[x_axis.key], table[y_axis.key], table[column], strict=True):
        if x in x_pos and y in y_pos:
            z[y_pos[y], x_pos[x]] = value
    return z


def _cell_texts(z: np.ndarray, kind: str, chosen: tuple[int, int] | None) -> list[list[str]]:
    text = [[_fmt(v, kind) for v in row] for row in z]
    if chosen is not None:
        r, c = chosen
        text[r][c] = "\u2605 " + text[r][c]
    return text


def _heatmap_figure(table: pd.DataFrame, axes: Sequence[GridAxis]) -> go.Figure:
    x_axis, y_axis = axes
    xs = [_label(v) for v in x_axis.values]
    ys = [_label(v) for v in y_axis.values]
    row = _chosen_row(table)
    chosen = None
    if row is not None and row[y_axis.key] in y_axis.values and row[x_axis.key] in x_axis.values:
        chosen = (list(y_axis.values).index(row[y_axis.key]),
                  list(x_axis.values).index(row[x_axis.key]))
    fig = make_subplots(
        rows=2, cols=2, horizontal_spacing=0.12, vertical_spacing=0.16,
        subplot_titles=("Sharpe, selection period (before split)", "Sharpe, hold-out (from split)",
                        "CAGR, selection period (before split)", "CAGR, hold-out (from split)"),
    )
    show_text = len(xs) * len(ys) <= 150
    for r, (metric, kind, coloraxis) in enumerate(
            (("sharpe", "ratio", "coloraxis"), ("cagr", "pct", "coloraxis2")), start=1):
        for c, suffix in enumerate(("is", "oos"), start=1):
            z = _matrix(table, axes, f"{metric}_{suffix}")
            fmt = ".2%" if kind == "pct" else ".2f"
            fig.add_trace(go.Heatmap(
                x=xs, y=ys, z=np.where(np.isfinite(z), z, None), coloraxis=coloraxis,
                text=_cell_texts(z, kind, chosen), texttemplate="%{text}" if show_text else None,
                hovertemplate=(f"{html.escape(x_axis.key)}=%{{x}}<br>{html.escape(y_axis.key)}"
                               f"=%{{y}}<br>{metric}=%{{z:{fmt}}}<extra></extra>"),
                xgap=1, ygap=1,
            ), row=r, col=c)
            fig.update_xaxes(title_text=x_axis.key, type="category", row=r, col=c)
            fig.update_yaxes(title_text=y_axis.key, type="category", row=r, col=c)
            if chosen is not None:
                y_i, x_i = chosen
                fig.add_shape(type="rect", x0=x_i - 0.5, x1=x_i + 0.5, y0=y_i - 0.5,
                              y1=y_i + 0.5, line={"color": "#111", "width": 3},
                              row=r, col=c)
    sharpe_lo, sharpe_hi = _symmetric_range(
        [table["sharpe_is"].to_numpy(float), table["sharpe_oos"].to_numpy(float)])
    cagr_lo, cagr_hi = _symmetric_range(
        [table["cagr_is"].to_numpy(float), table["cagr_oos"].to_numpy(float)])
    fig.update_layout(
        template="plotly_white", height=820, margin={"l": 80, "r": 30, "t": 60, "b": 50},
        coloraxis={"colorscale": "RdBu", "cmin": sharpe_lo, "cmax": sharpe_hi,
                   "colorbar": {"title": {"text": "Sharpe"}, "y": 0.79, "len": 0.42}},
        coloraxis2={"colorscale": "RdBu", "cmin": cagr_lo, "cmax": cagr_hi,
                    "colorbar": {"title": {"text": "CAGR"}, "y": 0.21, "len": 0.42,
                                 "tickformat": ".0%"}},
    )
    return fig


def _line_figure(table: pd.DataFrame, axis: GridAxis) -> go.Figure:
    numeric = all(isinstance(v, (int, float)) for v in axis.values)
    x = list(table[axis.key]) if numeric else [_label(v) for v in table[axis.key]]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=(f"Sharpe vs {axis.key}", f"CAGR vs {axis.key}"))
    chosen = table["chosen"].astype(bool).to_numpy()
    styles = (("is", "selection period (before split)", "#1f77b4"),
              ("oos", "hold-out (from split)", "#d62728"))
    for c, (metric, fmt) in enumerate((("sharpe", ".2f"), ("cagr", ".2%")), start=1):
        for suffix, name, color in styles:
            y = table[f"{metric}_{suffix}"].to_numpy(float)
            fig.add_trace(go.Scatter(
                x=x, y=np.where(np.isfinite(y), y, None), mode="lines+markers", name=name,
                legendgroup=suffix, showlegend=c == 1, line={"color": color, "width": 1.8},
                hovertemplate=f"{html.escape(axis.key)}=%{{x}}<br>%{{y:{fmt}}}<extra></extra>",
            ), row=1, col=c)
            if chosen.any():
                at = int(np.flatnonzero(chosen)[0])
                fig.add_trace(go.Scatter(
                    x=[x[at]], y=[y[at] if np.isfinite(y[at]) else None], mode="markers",
                    name="chosen on the selection period", legendgroup="chosen",
                    showlegend=c == 1 and suffix == "is",
                    marker={"symbol": "star", "size": 16, "color": color,
                            "line": {"color": "#111", "width": 1}},
                    hovertemplate=f"chosen<br>%{{y:{fmt}}}<extra></extra>",
                ), row=1, col=c)
        fig.update_xaxes(title_text=axis.key, type="linear" if numeric else "category",
                         row=1, col=c)
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    fig.update_layout(
        template="plotly_white", height=430, hovermode="closest",
        margin={"l": 70, "r": 20, "t": 70, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "xanchor": "left", "x": 0},
    )
    return fig


def _table_html(table: pd.DataFrame, axes: Sequence[GridAxis]) -> str:
    """All cells, best selection-period Sharpe first, the chosen row in bold."""
    ordered = table.assign(_key=table["sharpe_is"].fillna(-np.inf)).sort_values(
        "_key", ascending=False, kind="stable")
    heads = [axis.key for axis in axes] + [
        "Sharpe (selection)", "CAGR (selection)", "Max DD (selection)",
        "Sharpe (hold-out)", "CAGR (hold-out)", "Max DD (hold-out)"]
    kinds = ("ratio", "pct", "pct", "ratio", "pct", "pct")
    body = []
    for rec in ordered.to_dict("records"):
        cells = [html.escape(_label(rec[axis.key])) for axis in axes]
        cells += [_fmt(rec[col], kind) for col, kind in zip(METRIC_COLUMNS, kinds, strict=True)]
        attr = ' class="chosen" style="font-weight:700"' if rec["chosen"] else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    return (f"<table class=\"sensitivity\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
            "<p class=\"foot\">Sorted by selection-period Sharpe; bold: the chosen cell.</p>")


def _summary_html(table: pd.DataFrame, split: pd.Timestamp) -> str:
    row = _chosen_row(table)
    when = _split_text(split)
    if row is None:
        return (f"<p class=\"sensitivity-summary\">No cell has a Sharpe ratio on the selection "
                f"period (bars before {when}), so none is chosen; the grid cannot rank the "
                f"parameters.</p>")
    keys = [c for c in table.columns if c not in (*METRIC_COLUMNS, "chosen")]
    cell = ", ".join(f"{k} = {_label(row[k])}" for k in keys)
    oos = table["sharpe_oos"].to_numpy(float)
    finite = oos[np.isfinite(oos)]
    spread = ""
    if finite.size:
        rank = ""
        if np.isfinite(row["sharpe_oos"]):
            better = int((finite > row["sharpe_oos"]).sum())
            rank = f" The chosen cell ranks {better + 1} of {finite.size} on the hold-out."
        spread = (f" Across the {len(table)} cells the hold-out Sharpe ranges from "
                  f"{finite.min():.2f} to {finite.max():.2f} (median {np.median(finite):.2f})."
                  f"{rank}")
    return (
        f"<p class=\"sensitivity-summary\">Chosen on the selection period (bars before {when}): "
        f"<strong>{html.escape(cell)}</strong>, Sharpe {_fmt(row['sharpe_is'])} there. Its "
        f"hold-out Sharpe (bars from {when}) is <strong>{_fmt(row['sharpe_oos'])}</strong>: "
        f"the honest estimate of what choosing parameters this way delivers; the best "
        f"hold-out cell is not, since it was found by looking at the hold-out.{spread} A wide "
        f"spread across cells, or a chosen cell that stands alone among poorer neighbours, "
        f"means the parameters are fragile: small changes move the result a lot.</p>"
    )


def sensitivity_html(
    table: pd.DataFrame,
    axes: Sequence[GridAxis],
    split: pd.Timestamp,
    include_plotlyjs: bool | str = "cdn",
) -> str:
    """HTML fragment: heatmaps (2 axes), line charts (1 axis) or a table (3+), then a summary.

    With two axes the first runs along x, the second along y; Sharpe heatmaps of the
    selection period and the hold-out sit side by side on one color scale, CAGR below, the
    chosen cell boxed and starred in each. ``include_plotlyjs`` is passed to plotly.
    """
    config = {"displaylogo": False, "responsive": True}
    parts = []
    if len(axes) == 2:
        fig = _heatmap_figure(table, axes)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs,
                                 config=config))
    elif len(axes) == 1:
        fig = _line_figure(table, axes[0])
        parts.append(fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs,
                                 config=config))
    else:
        parts.append(_table_html(table, axes))
    parts.append(_summary_html(table, split))
    return "\n".join(parts)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:#222;background:#fafafa;margin:0}
main{max-width:1200px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:1.7em;margin:0 0 4px}
.sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;font-size:0.95em;margin-top:8px}
th,td{padding:5px 14px;border-bottom:1px solid #e5e5e5;text-align:right}
thead th{background:#f2f4f7;border-bottom:2px solid #ccc}
.foot{color:#777;font-size:0.85em;margin-top:6px}
.sensitivity-summary{max-width:900px;line-height:1.45}
"""


def write_sensitivity_report(
    path: Path,
    table: pd.DataFrame,
    axes: Sequence[GridAxis],
    split: pd.Timestamp,
    title: str,
) -> None:
    """Write a standalone HTML page (plotly.js inlined, opens offline) and ``sensitivity.csv``
    with the table in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = " x ".join(f"{axis.key} ({len(axis.values)})" for axis in axes)
    body = sensitivity_html(table, axes, split, include_plotlyjs=True)
    page = "\n".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=\"sub\">Grid {html.escape(sizes)} = {len(table)} cells; selection period "
        f"before {_split_text(split)}, hold-out from it. Risk-free rate 0.</p>",
        body,
        "</main>\n</body>\n</html>\n",
    ])
    path.write_text(page, encoding="utf-8")
    table.to_csv(path.parent / CSV_NAME, index=False)
