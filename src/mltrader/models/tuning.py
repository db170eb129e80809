"""Hyper-parameter tuning with Optuna, scored by purged, embargoed time-series cross-validation.

`tune` sees only the data the caller gives it: pass the training window of a walk-forward
fold (never the test period), or the tuned parameters leak the future into the backtest.
Cross-validation follows López de Prado, *Advances in Financial Machine Learning*, ch. 7:
training bars whose labels overlap a test block are purged, and bars just after it embargoed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mltrader.errors import ConfigError
from mltrader.models.registry import make_model
from mltrader.models.units import map_units
from mltrader.models.walkforward import daily_ic

_KINDS = ("int", "int_log", "float", "float_log", "categorical")
_SCORES = ("ic", "mse")


@dataclass(frozen=True)
class PurgedKFold:
    """K contiguous test blocks over bar positions; training is every other bar, less:

    * purged bars: ``t`` whose label window ``[t, t + lookahead]`` reaches into the test
      block, i.e. ``t`` in ``[start - lookahead, stop)``;
    * embargoed bars: the ``embargo`` bars right after the block, ``[stop, stop + embargo)``.

    Labels of the block's last bars reach ``lookahead`` bars past it, so an ``embargo`` of at
    least ``lookahead`` also keeps training labels from overlapping those test labels.
    """

    n_splits: int = 5
    embargo: int = 0
    lookahead: int = 2

    def __post_init__(self) -> None:
        if self.n_splits < 2:
            raise ConfigError(f"tuning.cv: n_splits must be at least 2, got {self.n_splits}")
        if self.embargo < 0 or self.lookahead < 0:
            raise ConfigError(
                f"tuning.cv: embargo ({self.embargo}) and lookahead ({self.lookahead}) must "
                "be >= 0"
            )

    def split(self, n_bars: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_bars, test_bars)`` as sorted int arrays; test blocks tile [0, n_bars)."""
        if n_bars < self.n_splits:
            raise ConfigError(
                f"tuning.cv: {n_bars} bars cannot make {self.n_splits} test blocks; use "
                "fewer splits or more data"
            )
        bars = np.arange(n_bars)
        for test in np.array_split(bars, self.n_splits):
            start, stop = int(test[0]), int(test[-1]) + 1
            keep = np.ones(n_bars, dtype=bool)
            keep[max(start - self.lookahead, 0) : stop + self.embargo] = False
            yield bars[keep], test


@dataclass(frozen=True)
class TuningResult:
    """The best parameters and every trial's score and parameters, in trial order."""

    best_params: dict[str, Any]
    best_score: float
    n_trials: int
    trial_scores: list[float] = field(default_factory=list)
    trial_params: list[dict[str, Any]] = field(default_factory=list)


def _check_space(space: dict[str, tuple]) -> None:
    if not space:
        raise ConfigError("tuning.space is empty; give at least one parameter to tune")
    for name, spec in space.items():
        if not isinstance(spec, tuple | list) or not spec or spec[0] not in _KINDS:
            raise ConfigError(
                f"tuning.space[{name!r}] = {spec!r}: the first item must be one of "
                f"{', '.join(_KINDS)}"
            )
        kind = spec[0]
        if kind == "categorical":
            if len(spec) != 2 or not isinstance(spec[1], tuple | list) or not spec[1]:
                raise ConfigError(
                    f"tuning.space[{name!r}]: write ('categorical', [choice, ...])"
                )
        else:
            if len(spec) != 3 or not spec[1] <= spec[2]:
                raise ConfigError(
                    f"tuning.space[{name!r}]: write ({kind!r}, low, high) with low <= high"
                )
            if kind.endswith("_log") and spec[1] <= 0:
                raise ConfigError(f"tuning.space[{name!r}]: a log range needs low > 0")


def _suggest(trial: Any, space: dict[str, tuple]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec[1]))
        elif kind in ("int", "int_log"):
            params[name] = trial.suggest_int(name, int(spec[1]), int(spec[2]),
                                             log=kind == "int_log")
        else:
            params[name] = trial.suggest_float(name, float(spec[1]), float(spec[2]),
                                               log=kind == "float_log")
    return params


def _fold_data(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Complete training rows, and the test bars' rows with a mask of complete features."""
    xs = x[train].reshape(-1, x.shape[2])
    ys = y[train].reshape(-1)
    ok = ~(np.isnan(xs).any(axis=1) | np.isnan(ys))
    if not ok.any():
        raise ConfigError(
            f"tuning: CV fold {k} has no complete training rows; use fewer splits, a smaller "
            "embargo, or a longer training window"
        )
    test_x = x[test].reshape(-1, x.shape[2])
    test_ok = ~np.isnan(test_x).any(axis=1)
    if not (test_ok & ~np.isnan(y[test].reshape(-1))).any():
        raise ConfigError(f"tuning: CV fold {k} has no complete test rows to score")
    return xs[ok], ys[ok], test_x, test_ok, y[test]


def _fold_score(shared: tuple[list[tuple[np.ndarray, ...]], str, int, str, int],
                unit: tuple[dict[str, Any], int]) -> float:
    """One trial's score on one CV fold (a unit of `map_units`): fit ``make_model(model_name,
    params, seed)`` on the fold's training rows and score its test bars."""
    folds, model_name, seed, score, n_sym = shared
    params, k = unit
    xs, ys, test_x, test_ok, test_y = folds[k]
    model = make_model(model_name, params, seed)
    model.fit(xs, ys)
    pred = np.full(test_x.shape[0], np.nan)
    pred[test_ok] = model.predict(test_x[test_ok])
    pred = pred.reshape(-1, n_sym)
    if score == "ic":
        ic = daily_ic(pred, test_y)
        return float(np.nanmean(ic)) if np.isfinite(ic).any() else 0.0
    ok = ~(np.isnan(pred) | np.isnan(test_y))
    return -float(np.mean((pred[ok] - test_y[ok]) ** 2))


def tune(
    x: np.ndarray,
    y: np.ndarray,
    model_name: str,
    space: dict[str, tuple],
    n_trials: int,
    seed: int,
    cv: PurgedKFold,
    score: str = "ic",
    parallel_trials: int = 1,
) -> TuningResult:
    """Search ``space`` with Optuna's TPE sampler for the parameters with the best CV score.

    ``x`` (T, N, K) and ``y`` (T, N) must be the training window only. Each trial builds
    ``make_model(model_name, params, seed)``, fits it on the complete (bar, symbol) rows of
    each fold's training bars and scores the fold's test bars: ``"ic"`` is the mean daily
    cross-sectional Spearman IC (a fold whose predictions give no valid IC, e.g. constant
    predictions, scores 0: no information), ``"mse"`` the negative mean squared error. The
    objective is the mean over folds; higher is better. The study is in memory (no files) and
    seeded, so a fixed ``seed`` gives the same trials.

    This process owns the study (Optuna's ask/tell); the fits are units of `map_units`, one
    per (trial, CV fold), so they run wherever the current unit map runs them, with the same
    results. ``parallel_trials`` trials are asked at once and told together: with more than
    one, more units run at once, but TPE proposes each batch without the scores of its own
    batch, so the trials depend on this number (never on the executor).
    """
    import optuna
    from optuna.trial import TrialState

    if x.ndim != 3 or y.ndim != 2 or x.shape[:2] != y.shape:
        raise ConfigError(f"tuning: x must be (T, N, K) and y (T, N); got {x.shape} and {y.shape}")
    if score not in _SCORES:
        raise ConfigError(f"tuning.score {score!r} is unknown; choose one of {', '.join(_SCORES)}")
    if n_trials < 1:
        raise ConfigError(f"tuning.n_trials must be at least 1, got {n_trials}")
    if isinstance(parallel_trials, bool) or parallel_trials < 1:
        raise ConfigError(f"tuning.parallel_trials must be at least 1, got {parallel_trials}")
    _check_space(space)
    make_model(model_name, {}, seed)  # unknown model name: fail before any work
    folds = [
        _fold_data(x, y, train, test, k)
        for k, (train, test) in enumerate(cv.split(x.shape[0]), start=1)
    ]
    shared = (folds, model_name, seed, score, x.shape[1])

    logger = optuna.logging
    previous = logger.get_verbosity()
    logger.set_verbosity(logger.WARNING)
    try:
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
        )
        done = 0
        while done < n_trials:
            batch = [study.ask() for _ in range(min(parallel_trials, n_trials - done))]
            params = []
            for trial in batch:  # suggest in trial order: TPE's draws stay in sequence
                params.append(_suggest(trial, space))
                make_model(model_name, params[-1], seed)  # bad parameters: fail here
            units = [(p, k) for p in params for k in range(len(folds))]
            scores = map_units(_fold_score, shared, units)
            for j, trial in enumerate(batch):
                value = float(np.mean(scores[j * len(folds):(j + 1) * len(folds)]))
                if math.isnan(value):  # as study.optimize: a NaN objective fails the trial
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, value)
            done += len(batch)
    finally:
        logger.set_verbosity(previous)

    trials = study.trials
    return TuningResult(
        best_params=dict(study.best_params),
        best_score=float(study.best_value),
        n_trials=len(trials),
        trial_scores=[float(t.value) if t.value is not None else float("nan") for t in trials],
        trial_params=[dict(t.params) for t in trials],
    )
