"""Sensitivity grid: spec parsing, IS/OOS scoring on the right bars, the choice, the report."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from mltrader.errors import ConfigError
from mltrader.sensitivity import (
    CSV_NAME,
    METRIC_COLUMNS,
    GridAxis,
    check_grid,
    default_split,
    parse_grid,
    run_grid,
    sensitivity_html,
    write_sensitivity_report,
)

TZ = "America/New_York"
INDEX = pd.bdate_range("2012-01-02", periods=400, tz=TZ)
SPLIT = INDEX[250]
NOISE = np.where(np.arange(len(INDEX)) % 2 == 0, 0.01, -0.01)  # same std in every cell


# --- parse_grid / check_grid -----------------------------------------------------------

def test_parse_range_of_floats() -> None:
    axis = parse_grid("threshold=0.005:0.03:6")
    assert axis == GridAxis("threshold", (0.005, 0.01, 0.015, 0.02, 0.025, 0.03))
    assert all(isinstance(v, float) for v in axis.values)


def test_parse_range_ints_stay_ints_only_with_integral_step() -> None:
    assert parse_grid("lookback=10:50:5").values == (10, 20, 30, 40, 50)
    assert all(type(v) is int for v in parse_grid("n=2:10:5").values)
    thirds = parse_grid("n=0:10:4").values
    assert all(isinstance(v, float) for v in thirds)
    assert thirds[1] == pytest.approx(10 / 3)
    assert all(isinstance(v, float) for v in parse_grid("x=1.0:3:3").values)


def test_parse_list_numbers_and_strings() -> None:
    assert parse_grid("strategy.rebalance=daily,weekly").values == ("daily", "weekly")
    axis = parse_grid(" model.max_depth = 3, 4.5 ,deep ")
    assert axis.key == "model.max_depth" and axis.values == (3, 4.5, "deep")
    assert parse_grid("stop_loss=0.02").values == (0.02,)


@pytest.mark.parametrize("spec", [
    "threshold", "=1:2:3", "x=", "x=1:2", "x=1:2:3:4", "x=1:2:1", "x=1:2:51", "x=0:1:2.5",
    "x=a:b:3", "x=2:1:3", "x=1:1:3", "x=1,,2", "x=1,1", "1x=1,2", "x y=1,2",
    "x=" + ",".join(str(i) for i in range(51)), "x=nan:1:3",
])
def test_parse_grid_errors_are_one_line_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_grid(spec)
    message = str(info.value)
    assert "\n" not in message
    assert "KEY=LO:HI:N" in message and "KEY=A,B,C" in message


def test_check_grid_limits() -> None:
    assert check_grid([parse_grid("a=1:20:20"), parse_grid("b=1:20:20")]) == 400
    with pytest.raises(ConfigError, match="400"):
        check_grid([parse_grid("a=1:21:21"), parse_grid("b=1:20:20")])
    with pytest.raises(ConfigError, match="twice"):
        check_grid([parse_grid("a=1,2"), parse_grid("a=3,4")])
    with pytest.raises(ConfigError):
        check_grid([])


def test_default_split_is_middle_bar() -> None:
    assert default_split(INDEX) == INDEX[200]
    assert default_split(INDEX[:3]) == INDEX[1]
    with pytest.raises(ValueError):
        default_split(INDEX[:0])


# --- run_grid --------------------------------------------------------------------------

def _drift(a: object, b: object, oos: bool) -> float:
    """Per-bar mean return. IS best: a=3, b='x'; OOS best: a=1, b='y' (planted to differ)."""
    a = float(a)  # type: ignore[arg-type]
    if not oos:
        return 1e-4 * a + (2e-4 if b == "x" else 0.0)
    return 1e-4 * (4 - a) + (2e-4 if b == "y" else 0.0)


def _toy_equity(overrides: dict[str, object]) -> pd.Series:
    a, b = overrides["a"], overrides["b"]
    oos = np.asarray(INDEX >= SPLIT)
    r = NOISE + np.where(oos, _drift(a, b, True), _drift(a, b, False))
    if a == 2 and b == "y":  # a planted crash in the hold-out only
        r[300] = -0.3
    return pd.Series(100.0 * np.cumprod(1 + r), index=INDEX)


def _expected(equity: pd.Series, before: bool, initial: float) -> tuple[float, float, float]:
    values = np.concatenate(([initial], equity.to_numpy()))
    r = values[1:] / values[:-1] - 1
    sel = np.asarray(equity.index < SPLIT) if before else np.asarray(equity.index >= SPLIT)
    r = r[sel]
    sharpe = r.mean() / r.std(ddof=1) * math.sqrt(252)
    growth = np.prod(1 + r)
    path = np.cumprod(1 + r)
    maxdd = min(0.0, (path / np.maximum.accumulate(np.maximum(path, 1.0)) - 1).min())
    return sharpe, growth ** (252 / r.size) - 1, maxdd


def test_run_grid_scores_each_side_of_the_split_and_chooses_on_selection() -> None:
    axes = [parse_grid("a=1:3:3"), parse_grid("b=x,y")]
    seen: list[dict[str, object]] = []
    messages: list[str] = []

    def evaluate(overrides: dict[str, object]) -> pd.Series:
        seen.append(overrides)
        return _toy_equity(overrides)

    table = run_grid(axes, evaluate, SPLIT, progress=messages.append, initial_cash=100.0)
    assert list(table.columns) == ["a", "b", *METRIC_COLUMNS, "chosen"]
    assert seen == [{"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")]
    assert len(messages) == 6 and messages[0].startswith("cell 1/6: a=1, b=x")
    for rec in table.to_dict("records"):
        equity = _toy_equity({"a": rec["a"], "b": rec["b"]})
        for suffix, before in (("is", True), ("oos", False)):
            sharpe, cagr, maxdd = _expected(equity, before, 100.0)
            assert rec[f"sharpe_{suffix}"] == pytest.approx(sharpe, rel=1e-9)
            assert rec[f"cagr_{suffix}"] == pytest.approx(cagr, rel=1e-9)
            assert rec[f"maxdd_{suffix}"] == pytest.approx(maxdd, rel=1e-9, abs=1e-12)
    chosen = table.loc[table["chosen"]]
    assert len(chosen) == 1
    assert (chosen["a"].iloc[0], chosen["b"].iloc[0]) == (3, "x")  # the IS best
    best_oos = table.loc[table["sharpe_oos"].idxmax()]
    assert (best_oos["a"], best_oos["b"]) == (1, "y")  # ... not the OOS best
    crash = table.loc[(table["a"] == 2) & (table["b"] == "y")].iloc[0]
    assert crash["maxdd_oos"] < -0.29 and crash["maxdd_is"] > -0.05  # crash lands OOS only


def test_run_grid_hold_out_starts_at_split_bar_and_first_return_convention() -> None:
    index = INDEX[:6]
    values = [110.0, 121.0, 108.9, 119.79, 131.769, 118.5921]

    table = run_grid([GridAxis("k", (1,))], lambda _: pd.Series(values, index=index),
                     index[3].tz_localize(None))  # a naive split is read in the bars' zone
    row = table.iloc[0]
    # no initial cash: selection returns are bars 1, 2 (+10%, -10%); hold-out bars 3..5
    assert row["cagr_is"] == pytest.approx((1.1 * 0.9) ** (252 / 2) - 1)
    assert row["maxdd_is"] == pytest.approx(-0.1)
    assert row["maxdd_oos"] == pytest.approx(-0.1)
    with_cash = run_grid([GridAxis("k", (1,))], lambda _: pd.Series(values, index=index),
                         index[3], initial_cash=100.0).iloc[0]
    assert with_cash["cagr_is"] == pytest.approx((1.1 * 1.1 * 0.9) ** (252 / 3) - 1)
    assert with_cash["cagr_oos"] == pytest.approx(row["cagr_oos"])


def test_run_grid_ties_pick_first_and_undefined_sharpe_never_chosen() -> None:
    def evaluate(overrides: dict[str, object]) -> pd.Series:
        if overrides["k"] == 0:
            return pd.Series(100.0, index=INDEX)  # flat: Sharpe undefined
        return _toy_equity({"a": 2, "b": "x"})

    table = run_grid([parse_grid("k=0,1,2")], evaluate, SPLIT)
    assert np.isnan(table.loc[0, "sharpe_is"])
    assert list(table["chosen"]) == [False, True, False]
    none = run_grid([parse_grid("k=0,3")], lambda _: pd.Series(100.0, index=INDEX), SPLIT)
    assert not none["chosen"].any()
    assert "none is chosen" in sensitivity_html(none, [parse_grid("k=0,3")], SPLIT)


# --- report ----------------------------------------------------------------------------

def _table_2d() -> tuple[pd.DataFrame, list[GridAxis]]:
    axes = [parse_grid("a=1:3:3"), parse_grid("b=x,y")]
    return run_grid(axes, _toy_equity, SPLIT, initial_cash=100.0), axes


def test_html_two_axes_heatmaps_and_marker() -> None:
    table, axes = _table_2d()
    text = sensitivity_html(table, axes, SPLIT)
    assert text.count('"type":"heatmap","xaxis"') == 4  # traces (the template has one more)
    assert "Sharpe, selection period (before split)" in text
    assert "Sharpe, hold-out (from split)" in text and "CAGR, hold-out" in text
    assert "\\u2605" in text or "\u2605" in text  # the starred chosen cell
    assert text.count('"type":"rect"') == 4  # boxed in each heatmap
    assert "cdn.plot.ly" in text
    chosen = table.loc[table["chosen"]].iloc[0]
    assert f"{chosen['sharpe_oos']:.2f}" in text and "honest estimate" in text
    assert "fragile" in text and f"bars before {SPLIT:%Y-%m-%d}" in text


def test_html_one_and_three_axes() -> None:
    one = [parse_grid("a=1:3:3")]
    t1 = run_grid(one, lambda o: _toy_equity({**o, "b": "x"}), SPLIT, initial_cash=100.0)
    text = sensitivity_html(t1, one, SPLIT, include_plotlyjs=False)
    assert text.count('"type":"scatter"') >= 4 and '"symbol":"star"' in text
    cats = [parse_grid("b=x,y")]
    t_cat = run_grid(cats, lambda o: _toy_equity({**o, "a": 1}), SPLIT, initial_cash=100.0)
    assert "star" in sensitivity_html(t_cat, cats, SPLIT, include_plotlyjs=False)
    three = [parse_grid("a=1,3"), parse_grid("b=x,y"), parse_grid("c=0.1,0.2")]
    t3 = run_grid(three, lambda o: _toy_equity(o), SPLIT, initial_cash=100.0)
    assert len(t3) == 8
    text3 = sensitivity_html(t3, three, SPLIT)
    assert "<table" in text3 and "plotly" not in text3.lower()
    assert text3.count("<tr") == 9 and 'class="chosen"' in text3


def test_write_report_page_and_csv(tmp_path) -> None:
    table, axes = _table_2d()
    page = tmp_path / "out" / "sensitivity.html"
    write_sensitivity_report(page, table, axes, SPLIT, title="Grid <test>")
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "Grid &lt;test&gt;" in text
    # plotly.js inlined once, no script fetched from the network: the page opens offline
    assert len(re.findall(r"^\* plotly\.js v\d", text, re.MULTILINE)) == 1
    assert not re.search(r"<script[^>]*src=", text)
    csv = pd.read_csv(page.parent / CSV_NAME)
    assert list(csv.columns) == list(table.columns) and len(csv) == len(table)
    np.testing.assert_allclose(csv["sharpe_oos"], table["sharpe_oos"])
