"""`mltrader compare`: the model zoo on shared folds, and the leaderboard's honesty."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from mltrader.compare import compare
from mltrader.config import config_from_dict
from mltrader.errors import ConfigError
from mltrader.models.evaluation import prediction_stats
from mltrader.models.registry import (
    CLASSIFIERS,
    MODELS,
    PANEL_MODELS,
    SEQUENCE_MODELS,
    make_model,
)
from mltrader.testing import synthetic_bars

BARS = synthetic_bars(1500, 5, seed=3)


def _cfg(models, **extra):
    return config_from_dict({
        "compare": models,
        "walk_forward": {"first_test_year": 2003, "min_train_rows": 100},
        "strategy": {"name": "threshold", "threshold": 0.0005, "rebalance": "weekly"},
        **extra,
    })


@pytest.mark.parametrize("name", sorted(set(MODELS) - SEQUENCE_MODELS - PANEL_MODELS))
def test_every_registered_model_is_a_working_sklearn_estimator(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 4))
    y = 0.5 * x[:, 0] + rng.normal(size=3000)
    model = clone(make_model(name, {}, 0))
    model.fit(x, (y > 0).astype(int) if name in CLASSIFIERS else y)
    out = model.predict_proba(x)[:, 1] if name in CLASSIFIERS else model.predict(x)
    assert out.shape == (3000,) and np.isfinite(out).all()
    assert np.corrcoef(out, y)[0, 1] > 0.2  # each one finds an obvious signal


def test_leaderboard_has_every_model_and_buy_and_hold_on_the_same_bars():
    out = compare(_cfg([{"name": "ridge"}, {"name": "decision_tree"}, {"name": "logistic"}]),
                  bars=BARS)
    board = out.leaderboard
    assert list(board["model"]) == ["ridge", "decision_tree", "logistic",
                                    "buy & hold (equal weight)"]
    for col in ("ic_mean", "ic_t", "hit_rate", "hit_p_value", "always_up_rate", "sharpe",
                "cagr", "max_drawdown"):
        assert col in board.columns
    assert board["mse_ratio"].iloc[2] != board["mse_ratio"].iloc[2]  # NaN: no MSE for P(up)
    starts = {res.equity.index[0] for res in out.results.values()}
    assert starts == {out.benchmark.equity.index[0]}
    assert str(out.benchmark.equity.index[0].date()) == out.oos["start"]


def test_duplicate_entries_need_labels():
    with pytest.raises(ConfigError, match="twice"):
        compare(_cfg([{"name": "ridge"}, {"name": "ridge"}]), bars=BARS)
    out = compare(_cfg([{"name": "ridge"}, {"name": "ridge", "label": "ridge-strong",
                                              "params": {"alpha": 1e4}}]), bars=BARS)
    assert list(out.leaderboard["model"])[:2] == ["ridge", "ridge-strong"]


def test_direction_target_and_horizon():
    cfg = _cfg([{"name": "ridge"}], target={"kind": "direction", "horizon": 5})
    out = compare(cfg, bars=BARS)
    assert out.leaderboard["mse_ratio"].isna().iloc[0]


def test_prediction_stats_against_hand_counts():
    pred = np.array([[0.1, -0.2], [0.3, 0.1], [np.nan, 0.2]])
    real = np.array([[0.05, 0.01], [-0.1, 0.2], [0.3, 0.0]])
    s = prediction_stats(pred, real)
    # cells used: 4 (the NaN prediction and the zero return are left out); hits: 2
    assert s["n_predictions"] == 4 and s["hit_rate"] == 0.5
    assert s["always_up_rate"] == 0.75
    full = np.isfinite(pred) & np.isfinite(real)
    assert s["mse"] == pytest.approx(np.mean((pred[full] - real[full]) ** 2))


def test_a_model_with_no_skill_is_not_significant():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 10))
    s = prediction_stats(rng.normal(size=(400, 10)), real)
    assert s["hit_p_value"] > 0.01 and abs(s["ic_t"]) < 3.5
    assert s["mse_ratio"] > 1  # noise predictions lose to predicting zero


def test_compare_command_writes_the_leaderboard(tmp_path):
    from typer.testing import CliRunner

    from mltrader.cli import app
    from mltrader.data.files import save_file

    data = save_file(BARS, tmp_path / "prices.csv")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"name: cmp\ndata: {{source: file, path: {data}}}\n"
        "walk_forward: {first_test_year: 2003, min_train_rows: 100}\n"
        "compare: [{name: ridge}, {name: lightgbm, params: {n_estimators: 20}}]\n"
        f"output_dir: {tmp_path / 'runs'}\n")
    result = CliRunner().invoke(app, ["compare", "-c", str(cfg)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]  # trials.jsonl beside
    board = (run / "leaderboard.csv").read_text().splitlines()
    assert board[0].startswith("model,rule,ic_mean,ic_t,hit_rate")
    assert [line.split(",")[0] for line in board[1:]] == [
        "ridge", "lightgbm", "buy & hold (equal weight)"]
    assert "Leaderboard (out of sample, after costs)" in (run / "report.html").read_text()


def test_tuning_uses_the_first_training_window_and_counts_trials():
    cfg = _cfg([{"name": "ridge", "tune": {"n_trials": 4, "space": {
        "alpha": ["float_log", 1e-3, 1e3]}, "cv_splits": 3}}, {"name": "linear"}])
    out = compare(cfg, bars=BARS)
    board = out.leaderboard.set_index("model")
    assert board.loc["ridge", "n_trials"] == 4 and board.loc["linear", "n_trials"] == 1
    assert "alpha" in board.loc["ridge", "params"]
    dsr = board.loc[["ridge", "linear"], "deflated_sharpe"]
    assert ((dsr >= 0) & (dsr <= 1)).all()


def test_price_target_is_traded_as_an_expected_return():
    from mltrader.config import config_from_dict as cfd
    from mltrader.pipeline import compute_signals

    # a price target needs price-level inputs (as the 8-input LSTM preset has)
    cfg = cfd({"model": {"name": "ridge"}, "target": {"kind": "price"},
               "features": ["close", "sma_20", "ret_1"],
               "walk_forward": {"first_test_year": 2003, "min_train_rows": 100}})
    sig = compute_signals(BARS, cfg)
    pred = sig.predictions.to_numpy()
    oos = pred[np.isfinite(pred)]
    assert len(oos) > 1000
    # a predicted price becomes pred / close - 1: returns of a few percent, not price levels
    assert np.median(np.abs(oos)) < 0.2
    out = compare(_cfg([{"name": "ridge"}], target={"kind": "price"},
                       features=["close", "sma_20", "ret_1"]), bars=BARS)
    assert out.leaderboard["model"].iloc[0] == "ridge"


def test_backtest_can_tune_and_reports_a_deflated_sharpe():
    from mltrader.config import config_from_dict as cfd
    from mltrader.pipeline import run

    cfg = cfd({"model": {"name": "ridge", "tune": {"n_trials": 3, "cv_splits": 3, "space": {
                   "alpha": ["float_log", 1e-2, 1e2]}}},
               "walk_forward": {"first_test_year": 2003, "min_train_rows": 100},
               "strategy": {"threshold": 0.0005, "rebalance": "weekly"}})
    out = run(cfg, bars=BARS)
    assert out.metrics["model"]["n_trials"] == 3 and "alpha" in out.metrics["model"]["params"]
    dsr = out.metrics["deflated_sharpe"]
    assert dsr["n_trials"] == 3 and 0 <= dsr["dsr"] <= 1


def test_a_single_model_is_deflated_by_its_trials_and_the_board_says_by_how_many():
    """Bug: one model gave a trial variance of 0, so nothing was deflated whatever n_trials."""
    from types import SimpleNamespace

    from mltrader.compare import _deflate

    rng = np.random.default_rng(0)
    equity = pd.Series(100_000 * np.cumprod(1 + rng.normal(4e-4, 0.01, 2000)))
    results = {"ridge": SimpleNamespace(equity=equity)}
    dsr = {}
    for n in (1, 50, 1000):
        rows = [{"model": "ridge"}, {"model": "buy & hold (equal weight)"}]
        _deflate(rows, results, n)
        dsr[n] = rows[0]["deflated_sharpe"]
        assert rows[0]["dsr_trials"] == n and "dsr_trials" not in rows[1]
    assert dsr[1] > dsr[50] > dsr[1000]


def test_rl_policies_sit_beside_the_supervised_models_under_the_positions_rule():
    """A policy's positions are not forecasts: under a forecast rule the compare trades them
    by the positions rule (same folds, costs and bars) and the board says which rule."""
    pytest.importorskip("stable_baselines3")
    ppo = {"total_timesteps": 128, "n_steps": 32, "batch_size": 32, "n_envs": 2, "window": 3,
           "episode_length": 64, "net_arch": [16]}
    out = compare(_cfg([{"name": "ridge"}, {"name": "rl_sharpe", "params": {"epochs": 3}},
                        {"name": "ppo", "params": ppo}], features=["ret_5", "vol_20"]),
                  bars=BARS)
    board = out.leaderboard.set_index("model")
    assert list(board.index) == ["ridge", "rl_sharpe", "ppo", "buy & hold (equal weight)"]
    assert list(board["rule"].iloc[:3]) == ["threshold", "positions", "positions"]
    assert board["sharpe"].iloc[:3].notna().all()
    starts = {res.equity.index[0] for res in out.results.values()}
    assert starts == {out.benchmark.equity.index[0]}
    w = out.results["ppo"].weights.to_numpy()
    assert np.nanmax(np.abs(w)) <= 1 / 5 + 1e-12  # positions x 1 / N, not a threshold bet
