"""Walk-forward folds are units of work: on local workers they give exactly the results of
one process, for every kind of model (stacked, sequence, panel policy, RL agent)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrader.compare import compare
from mltrader.config import ExecutorConfig, config_from_dict
from mltrader.models.units import serial_map, using
from mltrader.models.walkforward import Fold
from mltrader.pipeline import run
from mltrader.testing import synthetic_bars

BARS = synthetic_bars(1500, 5, seed=3)
PPO_TINY = {"total_timesteps": 128, "n_steps": 32, "batch_size": 32, "n_envs": 2, "window": 3,
            "episode_length": 64, "net_arch": [16]}


def _cfg(**extra):
    return config_from_dict({
        "walk_forward": {"first_test_year": 2003, "min_train_rows": 100},
        "strategy": {"name": "threshold", "threshold": 0.0005, "rebalance": "weekly"},
        "features": ["ret_1", "ret_5", "vol_20"],
        **extra,
    })


def test_a_backtest_with_its_folds_on_workers_matches_one_process():
    cfg = _cfg(model={"name": "lightgbm", "params": {"n_estimators": 30}})
    one = run(cfg, bars=BARS)
    two = run(cfg.model_copy(update={"executor": ExecutorConfig(workers=2)}), bars=BARS)
    assert len(one.signals.folds) >= 3
    pd.testing.assert_frame_equal(one.signals.predictions, two.signals.predictions,
                                  check_exact=True)
    assert one.signals.folds == two.signals.folds
    pd.testing.assert_series_equal(one.strategy.equity, two.strategy.equity, check_exact=True)
    assert one.metrics == two.metrics
    # the last fold's model comes back from its worker: the model a live bot would use next
    x = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_array_equal(one.signals.last_model.predict(x),
                                  two.signals.last_model.predict(x))


def test_every_kind_of_model_compared_on_workers_matches_one_process():
    """Stacked (ridge), sequence (lstm), panel policy (rl_sharpe) and an agent trading its
    own market (ppo): the models run side by side, their folds on two worker processes."""
    pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    models = [{"name": "ridge"},
              {"name": "lstm", "window": 10,
               "params": {"hidden": 8, "layers": 1, "epochs": 1, "batch_size": 128}},
              {"name": "rl_sharpe", "params": {"epochs": 3}},
              {"name": "ppo", "params": PPO_TINY}]
    cfg = _cfg(compare=models)
    one = compare(cfg, bars=BARS)
    two = compare(cfg.model_copy(update={"executor": ExecutorConfig(workers=2)}),
                  bars=BARS)
    pd.testing.assert_frame_equal(one.leaderboard, two.leaderboard, check_exact=True)
    for name, res in one.results.items():
        pd.testing.assert_series_equal(res.equity, two.results[name].equity, check_exact=True)
    assert one.leaderboard["sharpe"].iloc[:4].notna().all()


def test_the_units_of_a_walk_forward_are_its_folds():
    calls: list[tuple[str, int]] = []

    def spy(fn, shared, units, on_result=None):
        if units and isinstance(units[0], Fold):
            calls.append((fn.__name__, len(units)))
        return serial_map(fn, shared, units, on_result)

    with using(spy):
        out = run(_cfg(model={"name": "ridge"}), bars=BARS)
    assert calls == [("_fit_fold", len(out.signals.folds))]
