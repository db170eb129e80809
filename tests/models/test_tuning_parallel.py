"""Tuning's fits as units: the driver owns the study (ask/tell), each (trial, CV fold) fit is a
unit of `map_units`, so the trials are the same on local workers as in this process; asking
several trials at once (`parallel_trials`) changes them only by that number."""

from __future__ import annotations

import numpy as np
import pytest

from mltrader.config import ExecutorConfig, TuneConfig
from mltrader.errors import ConfigError
from mltrader.models import units
from mltrader.models.tuning import PurgedKFold, TuningResult, tune
from mltrader.parallel import session

SPACE = {"alpha": ("float_log", 1e-3, 1e3)}
CV = PurgedKFold(n_splits=3, embargo=1, lookahead=2)
N_TRIALS = 12  # past TPE's 10 random start-up trials: later ones use the earlier scores


def _problem(seed: int = 0, t: int = 160, n: int = 4, k: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(t, n, k))
    y = 0.1 * x[..., 0] + 0.1 * rng.normal(size=(t, n))
    x[5, 2, 1] = np.nan
    return x, y


def _same(a: TuningResult, b: TuningResult) -> None:
    assert a.trial_params == b.trial_params
    assert a.trial_scores == b.trial_scores  # exactly, not approximately
    assert a.best_params == b.best_params and a.best_score == b.best_score
    assert a.n_trials == b.n_trials


class _Recording:
    """A serial unit map that counts its calls and units."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, fn, shared, us, on_result=None):
        self.calls.append(len(us))
        return units.serial_map(fn, shared, us, on_result)


@pytest.fixture(scope="module")
def serial():
    x, y = _problem()
    return {b: tune(x, y, "ridge", SPACE, N_TRIALS, seed=3, cv=CV, parallel_trials=b)
            for b in (1, 3)}


def test_each_trial_maps_one_unit_per_fold_and_a_batch_maps_once():
    x, y = _problem()
    for batch, calls in ((1, [3] * 5), (2, [6, 6, 3])):
        rec = _Recording()
        with units.using(rec):
            res = tune(x, y, "ridge", SPACE, 5, seed=3, cv=CV, parallel_trials=batch)
        assert rec.calls == calls and res.n_trials == 5


def _optimize(x, y, n_trials, seed):
    """The search as it was before the units: `study.optimize`, each trial's folds in turn."""
    import optuna

    from mltrader.models.tuning import _fold_data, _fold_score, _suggest

    folds = [_fold_data(x, y, tr, te, k) for k, (tr, te) in enumerate(CV.split(len(x)), 1)]
    shared = (folds, "ridge", seed, "ic", x.shape[1])

    def objective(trial):
        params = _suggest(trial, SPACE)
        return float(np.mean([_fold_score(shared, (params, k)) for k in range(len(folds))]))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    return [t.value for t in study.trials], [t.params for t in study.trials]


def test_one_trial_at_a_time_is_the_sequential_search(serial):
    x, y = _problem()
    again = tune(x, y, "ridge", SPACE, N_TRIALS, seed=3, cv=CV)  # the default: 1
    _same(again, serial[1])
    assert len(set(map(str, serial[1].trial_params))) == N_TRIALS
    scores, params = _optimize(x, y, N_TRIALS, seed=3)  # ask/tell == study.optimize
    assert serial[1].trial_scores == scores and serial[1].trial_params == params


def test_batches_return_every_trial_and_differ_only_by_the_batch(serial):
    one, three = serial[1], serial[3]
    assert three.n_trials == N_TRIALS and len(three.trial_scores) == N_TRIALS
    assert np.isfinite(three.trial_scores).all()
    assert three.best_score == max(three.trial_scores)
    # the 10 random start-up trials do not use scores: the same in any batch size
    assert three.trial_params[:10] == one.trial_params[:10]
    assert three.trial_params != one.trial_params  # TPE's later trials did not see their batch
    x, y = _problem()
    b = tune(x, y, "ridge", SPACE, N_TRIALS, seed=3, cv=CV, parallel_trials=5)  # 5, 5, 2
    assert b.n_trials == N_TRIALS


def test_workers_give_the_serial_trials_exactly(serial):
    x, y = _problem()
    with session(ExecutorConfig(workers=2)):
        assert units.parallel_active()
        got = {b: tune(x, y, "ridge", SPACE, N_TRIALS, seed=3, cv=CV, parallel_trials=b)
               for b in (1, 3)}
    _same(got[1], serial[1])
    _same(got[3], serial[3])


def test_parallel_trials_is_configured_and_bounded():
    assert TuneConfig(space={"alpha": ["float_log", 1e-3, 1e3]}).parallel_trials == 1
    assert TuneConfig(space={"alpha": ["float", 0, 1]}, parallel_trials=8).parallel_trials == 8
    with pytest.raises(ValueError, match="parallel_trials"):
        TuneConfig(space={"alpha": ["float", 0, 1]}, parallel_trials=0)
    with pytest.raises(ValueError, match="parallel_trials"):
        TuneConfig(space={"alpha": ["float", 0, 1]}, parallel_trials=65)
    x, y = _problem()
    with pytest.raises(ConfigError, match="parallel_trials"):
        tune(x, y, "ridge", SPACE, 2, seed=0, cv=CV, parallel_trials=0)


def test_a_run_tunes_with_its_configured_batch():
    from mltrader.config import config_from_dict
    from mltrader.models.walkforward import Fold
    from mltrader.plan import tuned_params

    tune_cfg = {"n_trials": 4, "cv_splits": 3, "parallel_trials": 2,
                "space": {"alpha": ["float_log", 1e-3, 1e3]}}
    cfg = config_from_dict({"model": {"name": "ridge", "tune": tune_cfg}})
    x, y = _problem()
    rec = _Recording()
    with units.using(rec):
        params, n = tuned_params(cfg.model, x, y, Fold(0, 120, 120, 160), cfg)
    assert n == 4 and "alpha" in params
    assert rec.calls == [6, 6]  # two batches of 2 trials x 3 folds
