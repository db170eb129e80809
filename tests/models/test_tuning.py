import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltrader.errors import ConfigError
from mltrader.models.tuning import PurgedKFold, TuningResult, tune


@settings(max_examples=200, deadline=None)
@given(
    n_bars=st.integers(2, 400),
    n_splits=st.integers(2, 10),
    embargo=st.integers(0, 30),
    lookahead=st.integers(0, 30),
)
def test_purged_kfold_properties(n_bars, n_splits, embargo, lookahead):
    n_splits = min(n_splits, n_bars)
    cv = PurgedKFold(n_splits=n_splits, embargo=embargo, lookahead=lookahead)
    seen = np.zeros(n_bars, dtype=int)
    splits = list(cv.split(n_bars))
    assert len(splits) == n_splits
    for train, test in splits:
        seen[test] += 1
        start, stop = test.min(), test.max() + 1
        assert np.array_equal(test, np.arange(start, stop))  # contiguous block
        assert np.all(np.diff(train) > 0)
        # no training label window [t, t+lookahead] touches the test block
        assert not np.any((train + lookahead >= start) & (train < stop))
        # nothing from the embargo after the block
        assert not np.any((train >= stop) & (train < stop + embargo))
        # and every other bar is used for training
        expected = np.setdiff1d(np.arange(n_bars),
                                np.arange(max(start - lookahead, 0), stop + embargo))
        assert np.array_equal(train, expected)
    assert np.all(seen == 1)  # test blocks cover every bar exactly once


def test_purged_kfold_example():
    splits = list(PurgedKFold(n_splits=3, embargo=1, lookahead=2).split(9))
    assert [t.tolist() for _, t in splits] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert [tr.tolist() for tr, _ in splits] == [[4, 5, 6, 7, 8], [0, 7, 8], [0, 1, 2, 3]]


def test_purged_kfold_rejects_bad_settings():
    with pytest.raises(ConfigError, match="n_splits"):
        PurgedKFold(n_splits=1)
    with pytest.raises(ConfigError, match="embargo"):
        PurgedKFold(embargo=-1)
    with pytest.raises(ConfigError, match="cannot make"):
        list(PurgedKFold(n_splits=5).split(3))


def _problem(seed=0, t=600, n=5, k=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(t, n, k))
    y = 0.1 * x[..., 0] + 0.1 * rng.normal(size=(t, n))
    x[5, 2, 1] = np.nan  # incomplete rows are dropped, not fatal
    y[7, 3] = np.nan
    return x, y


SPACE = {"alpha": ("float_log", 1e-3, 1e3)}


def test_tune_ridge_small_problem():
    x, y = _problem()
    began = time.perf_counter()
    res = tune(x, y, "ridge", SPACE, n_trials=8, seed=0,
               cv=PurgedKFold(n_splits=4, embargo=2, lookahead=2))
    assert time.perf_counter() - began < 20
    assert isinstance(res, TuningResult)
    assert res.n_trials == 8
    assert len(res.trial_scores) == 8 and len(res.trial_params) == 8
    assert res.best_score > 0.3  # strong signal: positive cross-sectional IC
    assert res.best_score == max(res.trial_scores)
    assert 1e-3 <= res.best_params["alpha"] <= 1e3
    assert res.best_params in res.trial_params


def test_tune_is_deterministic_for_a_seed():
    x, y = _problem(1)
    cv = PurgedKFold(n_splits=3, embargo=1, lookahead=2)
    a = tune(x, y, "ridge", SPACE, n_trials=5, seed=7, cv=cv)
    b = tune(x, y, "ridge", SPACE, n_trials=5, seed=7, cv=cv)
    c = tune(x, y, "ridge", SPACE, n_trials=5, seed=8, cv=cv)
    assert a.best_params == b.best_params
    assert a.trial_params == b.trial_params and a.trial_scores == b.trial_scores
    assert a.trial_params != c.trial_params


def test_tune_mse_score_and_mixed_space_with_lightgbm():
    x, y = _problem(2, t=200)
    space = {
        "num_leaves": ("int", 3, 15),
        "learning_rate": ("float_log", 0.01, 0.1),
        "max_depth": ("categorical", [3, None]),
    }
    res = tune(x, y, "lightgbm", space, n_trials=2, seed=0,
               cv=PurgedKFold(n_splits=2, lookahead=2), score="mse")
    assert res.n_trials == 2
    assert res.best_score < 0  # negative MSE
    assert set(res.best_params) == set(space)
    assert res.best_params["max_depth"] in (3, None)
    assert 3 <= res.best_params["num_leaves"] <= 15


def test_tune_writes_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = _problem(3, t=120)
    tune(x, y, "ridge", SPACE, n_trials=2, seed=0, cv=PurgedKFold(n_splits=2))
    assert list(tmp_path.iterdir()) == []


def test_tune_rejects_bad_input():
    x, y = _problem(4, t=60)
    cv = PurgedKFold(n_splits=2)
    with pytest.raises(ConfigError, match="unknown model"):
        tune(x, y, "nope", SPACE, 2, 0, cv)
    with pytest.raises(ConfigError, match="not a parameter"):
        tune(x, y, "ridge", {"alpah": ("float", 1.0, 2.0)}, 1, 0, cv)
    with pytest.raises(ConfigError, match="first item"):
        tune(x, y, "ridge", {"alpha": ("uniform", 1.0, 2.0)}, 1, 0, cv)
    with pytest.raises(ConfigError, match="low > 0"):
        tune(x, y, "ridge", {"alpha": ("float_log", 0.0, 2.0)}, 1, 0, cv)
    with pytest.raises(ConfigError, match="score"):
        tune(x, y, "ridge", SPACE, 1, 0, cv, score="r2")
    with pytest.raises(ConfigError, match=r"\(T, N, K\)"):
        tune(x[..., 0], y, "ridge", SPACE, 1, 0, cv)
    empty = np.full_like(y, np.nan)
    with pytest.raises(ConfigError, match="no complete training rows"):
        tune(x, empty, "ridge", SPACE, 1, 0, cv)


def test_tune_is_quiet_and_restores_optuna_verbosity(capsys):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        x, y = _problem(5, t=120)
        tune(x, y, "ridge", SPACE, n_trials=2, seed=0, cv=PurgedKFold(n_splits=2))
        captured = capsys.readouterr()
        assert "Trial" not in captured.out + captured.err
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
