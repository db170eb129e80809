"""`mltrader placebo`: placebo predictions are reproducible, causal and turnover-matched; a
planted edge ranks at the top of its placebos, noise does not; the command writes its files.

Small synthetic data (1100 bars x 5 symbols, ridge, yearly folds) keeps every test fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

import mltrader.cli_placebo  # noqa: F401  (registers the command on the app)
from mltrader.cli_app import app
from mltrader.config import config_from_dict
from mltrader.data.bars import Bars
from mltrader.data.files import save_file
from mltrader.errors import ConfigError
from mltrader.features.labels import forward_return
from mltrader.pipeline import compute_signals
from mltrader.placebo import (
    RUN_COLUMNS,
    check_kinds,
    percentile_of,
    placebo,
    placebo_from_predictions,
    placebo_predictions,
)
from mltrader.placebo_report import PlaceboOutput
from mltrader.placebo_series import KINDS, smooth
from mltrader.testing import synthetic_bars

T = 1100
BARS = synthetic_bars(T, 5, seed=21)
RAW = {
    "name": "tiny",
    "model": {"name": "ridge"},
    "walk_forward": {"first_test_year": 2002, "retrain": "yearly", "min_train_rows": 100},
    "strategy": {"name": "threshold", "threshold": 0.0, "rebalance": "daily"},
    "costs": {"commission_bps": 1, "slippage_bps": 2},
}
CFG = config_from_dict(RAW)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def sig():
    return compute_signals(BARS, CFG)


def _run(sig, **kw) -> PlaceboOutput:
    args = {"start": sig.start, "n": 10, "seed": 0, "kinds": ("random",), **kw}
    return placebo_from_predictions(BARS, CFG, sig.members, **args)


# --- the placebo series ------------------------------------------------------------------

def test_smooth_keeps_unit_variance_and_gets_persistent():
    draws = np.random.default_rng(0).standard_normal((3001, 400))
    assert np.array_equal(smooth(draws, 0.0), draws[1:])
    s = smooth(draws, 0.9)
    assert s.shape == (3000, 400)
    assert abs(s[0].std() - 1) < 0.15 and abs(s[2000:].std() - 1) < 0.05
    lag1 = np.corrcoef(s[2000:-1].ravel(), s[2001:].ravel())[0, 1]
    assert lag1 > 0.98
    with pytest.raises(ValueError):
        smooth(draws, 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_placebo_predictions_are_reproducible_and_nan_where_the_real_ones_are(sig, kind):
    a = placebo_predictions(kind, sig.predictions, BARS, seed=3, i=1, persistence=0.5)
    b = placebo_predictions(kind, sig.predictions, BARS, seed=3, i=1, persistence=0.5)
    pd.testing.assert_frame_equal(a, b)
    assert a.index.equals(sig.predictions.index) and list(a.columns) == list(BARS.symbols)
    assert np.array_equal(np.isnan(a.to_numpy()), np.isnan(sig.predictions.to_numpy()))
    other = placebo_predictions(kind, sig.predictions, BARS, seed=3, i=2, persistence=0.5)
    assert not np.allclose(np.nan_to_num(a.to_numpy()), np.nan_to_num(other.to_numpy()))


def test_shuffled_keeps_each_bars_cross_section(sig):
    real = sig.predictions.to_numpy()[sig.start:]
    shuf = placebo_predictions("shuffled", sig.predictions, BARS, seed=1).to_numpy()[sig.start:]
    assert np.array_equal(np.sort(real, axis=1), np.sort(shuf, axis=1), equal_nan=True)
    assert not np.array_equal(real, shuf, equal_nan=True)


def test_vol_matched_leans_to_volatile_stocks_like_the_real_predictions():
    # predictions that rank stocks by their trailing volatility (plus a little noise)
    from mltrader.placebo_series import rank_corr_rows, trailing_vol

    vol = trailing_vol(BARS.close)
    noise = np.random.default_rng(0).normal(0, 0.002, vol.shape)
    real = pd.DataFrame(vol + noise, index=BARS.index, columns=list(BARS.symbols))
    target = np.nanmean(rank_corr_rows(real.to_numpy(), vol)[300:])
    assert target > 0.3
    for kind, lo, hi in (("vol_matched", target - 0.15, target + 0.15),
                         ("random", -0.1, 0.1)):
        pl = placebo_predictions(kind, real, BARS, seed=2, persistence=0.5).to_numpy()
        got = np.nanmean(rank_corr_rows(pl, vol)[300:])
        assert lo < got < hi, (kind, got, target)


# --- causality ---------------------------------------------------------------------------

def _perturb(bars: Bars, after: int, j: int, factor: float) -> Bars:
    close = bars.close.copy()
    close[after + 1:, j] *= factor
    return bars.replace(close=close)


@pytest.mark.parametrize(("offset", "j", "factor"), [(40, 0, 1.5), (250, 3, 0.6)])
def test_placebo_predictions_are_causal(sig, offset, j, factor):
    """Changing the bars after t leaves every placebo value at or before t unchanged (the
    real predictions, the volatility and the draws all come from bars up to t)."""
    t = sig.start + offset
    bent = _perturb(BARS, t, j, factor)
    sig_b = compute_signals(bent, CFG)
    changed = False
    for kind in KINDS:
        a = placebo_predictions(kind, sig.predictions, BARS, seed=5, i=2,
                                persistence=0.7).to_numpy()
        b = placebo_predictions(kind, sig_b.predictions, bent, seed=5, i=2,
                                persistence=0.7).to_numpy()
        assert np.array_equal(a[: t + 1], b[: t + 1], equal_nan=True), kind
        changed |= not np.array_equal(a[t + 1:], b[t + 1:], equal_nan=True)
    assert changed  # the perturbation did reach the placebos after t


def test_a_rules_placebo_positions_are_causal():
    """Without a model the placebo draws the rule's held weights: still nothing after t."""
    from mltrader.placebo_series import held_weights
    from mltrader.strategy.base import StrategyInputs
    from mltrader.strategy.registry import run_strategy

    start, t = 300, 520

    def positions(bars: Bars) -> np.ndarray:
        w = run_strategy("crossover", StrategyInputs(bars=bars), {"fast": 10, "slow": 40})
        held = pd.DataFrame(held_weights(w, bars, start), index=bars.index,
                            columns=list(bars.symbols))
        return placebo_predictions("vol_matched", held, bars, seed=1, persistence=0.9).to_numpy()

    a, b = positions(BARS), positions(_perturb(BARS, t, 2, 0.5))
    assert np.array_equal(a[: t + 1], b[: t + 1], equal_nan=True)
    assert not np.array_equal(a[t + 1:], b[t + 1:], equal_nan=True)
    assert np.isnan(a[:start]).all() and set(np.unique(a[start:])) <= {0.0, 0.2}


def test_a_peek_at_the_future_would_be_caught(sig):
    """The check above is not vacuous: a placebo scaled by the whole period's spread of the
    real predictions (hindsight) changes before t when the bars after t change."""
    t = sig.start + 100
    bent = _perturb(BARS, t, 1, 3.0)
    sig_b = compute_signals(bent, CFG)

    def leaky(pred: pd.DataFrame, bars: Bars) -> np.ndarray:
        p = placebo_predictions("random", pred, bars, seed=5).to_numpy()
        return p * np.nanstd(pred.to_numpy()[sig.start:])

    assert not np.array_equal(leaky(sig.predictions, BARS)[: t + 1],
                              leaky(sig_b.predictions, bent)[: t + 1], equal_nan=True)


# --- the runs ----------------------------------------------------------------------------

def test_runs_are_reproducible_by_seed(sig):
    a = _run(sig, seed=4, kinds=("random", "shuffled"))
    b = _run(sig, seed=4, kinds=("random", "shuffled"))
    pd.testing.assert_frame_equal(a.runs, b.runs)
    assert list(a.runs.columns) == list(RUN_COLUMNS)
    assert len(a.runs) == 20 and set(a.runs["kind"]) == {"random", "shuffled"}
    c = _run(sig, seed=5, kinds=("random", "shuffled"))
    assert not np.allclose(a.runs["total_return"], c.runs["total_return"])


def test_the_real_run_is_the_pipelines(sig):
    from mltrader.pipeline import run

    out = _run(sig)
    full = run(CFG, bars=BARS).metrics["strategy"]
    for key in ("total_return", "sharpe", "turnover", "max_drawdown"):
        assert out.real[key] == pytest.approx(full[key], rel=1e-12), key


def test_turnover_is_matched_for_random_placebos(sig):
    out = _run(sig, kinds=("random", "vol_matched"))
    real = out.real["turnover"]
    assert real > 1.0  # the rule trades, so matching means something
    s = out.summary["random"]
    assert s["turnover_matched"], s
    assert abs(s["turnover_median"] / real - 1) <= 0.10
    turn = out.runs.loc[out.runs["kind"] == "random", "turnover"]
    assert (abs(turn / real - 1) < 0.35).all()
    # iid draws would churn far more than the real run: the smoothing did the matching
    assert s["persistence"] > 0


def _planted(preds: pd.DataFrame, sig, n: int = 20, seed: int = 0) -> PlaceboOutput:
    return placebo_from_predictions(BARS, CFG, preds, start=sig.start, n=n, seed=seed,
                                    kinds=("random",))


def test_a_planted_edge_beats_its_placebos(sig):
    """Predictions that are the very returns a position earns (the labels) rank at the top."""
    edge = forward_return(BARS, "next_close", 1)
    out = _planted(edge, sig)
    s = out.summary["random"]
    assert s["percentile_sharpe"] > 90 and s["percentile_total_return"] > 90
    assert s["beat_sharpe"] == 0
    assert "beat the real run's Sharpe in 0 of 20 runs" in s["sentence"]


def test_noise_predictions_do_not_sit_at_an_extreme(sig):
    rng = np.random.default_rng(7)
    noise = pd.DataFrame(rng.normal(0.0, 0.01, BARS.shape), index=BARS.index,
                         columns=list(BARS.symbols))
    s = _planted(noise, sig, n=30, seed=1).summary["random"]
    assert 5 < s["percentile_sharpe"] < 95, s


def test_a_rule_without_a_model_gets_random_positions():
    cfg = config_from_dict({**RAW, "strategy": {"name": "crossover", "fast": 10, "slow": 40},
                            "walk_forward": {"first_test_year": 2002}})
    out = placebo(cfg, n=10, kinds=("random", "shuffled"), bars=BARS)
    assert out.rule_only
    assert any("replace the rule's target weights" in note for note in out.notes)
    assert out.summary["random"]["sentence"].startswith("Random positions at the rule's")
    assert len(out.runs) == 20 and out.runs["turnover"].gt(0).all()


def test_percentile_of_counts_ties_half():
    assert percentile_of(2.0, [1.0, 2.0, 3.0, np.nan]) == pytest.approx(50.0)
    assert percentile_of(9.0, [1.0, 2.0]) == 100.0
    assert percentile_of(None, [1.0]) is None


def test_bad_arguments_are_config_errors(sig):
    with pytest.raises(ConfigError, match="--n"):
        _run(sig, n=3)
    with pytest.raises(ConfigError, match="random, shuffled, vol_matched"):
        check_kinds("random,nope")
    assert check_kinds(" random , vol_matched ") == ("random", "vol_matched")


# --- the command -------------------------------------------------------------------------

runner = CliRunner(env={"COLUMNS": "200", "FORCE_COLOR": None, "NO_COLOR": "1"})


def _invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def _one_line_error(r: Result, *needles: str) -> None:
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    lines = [ln for ln in ANSI.sub("", r.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    save_file(BARS, tmp_path / "close.csv")
    (tmp_path / "tiny.yaml").write_text(
        "name: tiny\nmodel: {name: ridge}\ndata: {source: file, path: close.csv}\n"
        "walk_forward: {first_test_year: 2002, min_train_rows: 100}\n"
        "strategy: {name: threshold, threshold: 0.0, rebalance: daily}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_command_writes_the_table_and_the_files(project):
    r = _invoke("placebo", "-c", "tiny.yaml", "--n", "10", "--kinds", "random,shuffled",
                "--seed", "3")
    assert r.exit_code == 0, r.output
    text = ANSI.sub("", r.stdout)
    assert "Placebo test" in text and "median Sharpe" in text
    assert "beat the real run's Sharpe in" in text
    folders = [p for p in (project / "runs").iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0].name.endswith("-placebo-tiny")
    folder = folders[0]
    assert str(folder.name) in text
    runs = pd.read_csv(folder / "placebo.csv")
    assert len(runs) == 20 and list(runs.columns) == list(RUN_COLUMNS)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["kinds"] == ["random", "shuffled"] and summary["seed"] == 3
    assert set(summary["placebo"]["random"]) >= {"percentile_sharpe", "sentence",
                                                 "turnover_median", "percentile_total_return"}
    html = (folder / "placebo.html").read_text()
    assert "plotly" in html.lower() and "real" in html


def test_the_command_writes_where_out_says(project):
    r = _invoke("placebo", "-c", "tiny.yaml", "--n", "10", "--kinds", "random",
                "--out", "mine/placebo")
    assert r.exit_code == 0, r.output
    assert {p.name for p in (project / "mine" / "placebo").iterdir()} == {
        "placebo.csv", "summary.json", "placebo.html"}


@pytest.mark.parametrize(("args", "needles"), [
    (["--n", "1"], ["--n 1", "at least 10"]),
    (["--kinds", "nope"], ["nope", "random, shuffled, vol_matched"]),
    (["--kinds", "random,random"], ["twice"]),
])
def test_bad_options_are_one_line_errors(project, args, needles):
    r = _invoke("placebo", "-c", "tiny.yaml", *args)
    _one_line_error(r, *needles)
    assert not (project / "runs").exists()  # nothing trained, nothing written
