"""Walk-forward for panel models: one fit per fold on the whole (T, N, F) block of that fold.

A stacked model (`walkforward.walk_forward_predict`) sees one symbol-bar per row; a panel
model (`registry.PANEL_MODELS`: rl_sharpe's recurrent policy) sees time itself:
``fit(X (T, N, F), y (T, N))`` and ``predict(X[, y]) -> positions (T, N)``, where the
position at row t depends on the position at row t-1. So, per fold (the same folds as every
model, whose ``train_stop`` already lies ``lookahead + embargo`` bars before the test
period, so no training label reaches into it):

* fit on ``x[train_start:train_stop]`` and ``y[train_start:train_stop]``, NaN kept (the
  model skips NaN labels and holds where features are missing) and labels NOT clipped: the
  policy's objective is the return it would really have earned;
* predict from `warmup` bars before ``test_start`` to ``test_stop`` and keep the test rows,
  so each fold's policy enters its test period in the state its own recurrence reached on
  the bars before, not from flat (a restart at every fold would trade at every boundary);
* a model with ``online=True`` also gets the labels of the same rows: it reads y[t-2] at
  row t only (realised by bar t's fill), so the positions stay causal.

Cells whose features are not all finite come back NaN (the policy holds there; NaN means
"keep what you hold" to a strategy), as do rows outside every test window.

The inputs: the configured features, plus, with the model parameter ``lags`` (m), the last m
returns known at each close (`rl_sharpe.lagged_returns`: the paper's inputs).

A model with ``needs_market = True`` (the deep-RL agents of `models.rl_agent`) trades a
simulated market while it learns and while it acts: the caller passes `market`, a callable
``market(start, stop, **env_kwargs)`` that builds an environment over the rows
``start .. stop - 1`` of the whole panel (`mltrader.plan.panel_market`); `fit_panel` and
`predict_panel` hand it to such a model with the rows it is fitted or asked on, and to no
other model, so models stay ignorant of the engine's settings (a lower layer).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from mltrader.errors import ConfigError
from mltrader.models.walkforward import (
    Fold,
    FoldOut,
    FoldReport,
    WalkJob,
    mean_ic,
    too_few_rows,
    walk_folds,
)

# market(start, stop, **env_kwargs) -> an environment over rows start .. stop - 1 of the panel
Market = Callable[..., Any]

# Bars before each test period the policy runs on to reach its state: a year, so the state
# has forgotten the flat start (its memory decays like u**k) before the first test bar.
WARMUP = 252


def split_params(name: str, params: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """(the estimator's params, lags): ``lags`` is popped, checked and returned apart."""
    est = dict(params)
    lags = est.pop("lags", 0)
    if isinstance(lags, bool) or not isinstance(lags, int) or lags < 0:
        raise ConfigError(f"model.params.lags for {name}: the number of past returns fed to "
                          f"the policy must be a whole number >= 0, e.g. lags: 5 (got {lags!r})")
    return est, lags


def panel_inputs(x: np.ndarray, close: np.ndarray, lags: int) -> np.ndarray:
    """(T, N, F + lags): the features, then the last `lags` returns (causal: row t reads
    closes up to bar t); +-inf becomes NaN, a cell the policy then holds through."""
    if lags:
        from mltrader.models.rl_sharpe import lagged_returns  # torch: only for the model

        x = np.concatenate([x, lagged_returns(close, lags)], axis=2)
    return np.where(np.isinf(x), np.nan, x)


def _market_kwargs(model: BaseEstimator, rows: slice, market: Market | None) -> dict[str, Any]:
    if not getattr(model, "needs_market", False):
        return {}
    if market is None:
        raise ValueError(f"{type(model).__name__} trades a simulated market: pass market=")
    start, stop = rows.start, rows.stop

    def bound(**env_kwargs: Any) -> Any:
        return market(start, stop, **env_kwargs)

    return {"market": bound}


def fit_panel(model: BaseEstimator, x: np.ndarray, y: np.ndarray, rows: slice,
              market: Market | None = None) -> BaseEstimator:
    """Fit a panel model on rows `rows` of the whole panel (x, y are the whole panel)."""
    model.fit(x[rows], y[rows], **_market_kwargs(model, rows, market))
    return model


def predict_panel(model: BaseEstimator, x: np.ndarray, y: np.ndarray, rows: slice,
                  market: Market | None = None) -> np.ndarray:
    """Positions (len(rows), N) of a fitted panel model on rows `rows` of the whole panel;
    an ``online`` model also reads the labels of those rows (causally: y[t-2] at row t)."""
    kw = _market_kwargs(model, rows, market)
    if getattr(model, "online", False):
        return model.predict(x[rows], y[rows], **kw)
    return model.predict(x[rows], **kw)


def walk_forward_panel(
    x: np.ndarray,
    y: np.ndarray,
    folds: list[Fold],
    model_factory: Callable[[], BaseEstimator],
    *,
    min_train_rows: int = 500,
    index: pd.DatetimeIndex | None = None,
    warmup: int = WARMUP,
    progress: Callable[[int], AbstractContextManager[Callable[[str], None]]] | None = None,
    on_fit: Callable[[Fold, BaseEstimator], None] | None = None,
    market: Market | None = None,
) -> tuple[np.ndarray, list[FoldReport]]:
    """Out-of-sample positions (T, N) of a panel model (see the module docstring).

    Each fold is one unit of work (`models.units`), as in `walk_forward_predict`: with an
    executor open, `model_factory` and `market` must be picklable. ``on_fit(fold, model)``
    is called once, with the last fold and its fitted policy."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0; got {warmup}")
    job = _PanelJob(x, y, model_factory, min_train_rows, index,
                    folds[-1] if on_fit is not None and folds else None,
                    warmup=warmup, market=market)
    return walk_folds(job, folds, _fit_panel_fold, progress, on_fit)


@dataclass(frozen=True)
class _PanelJob(WalkJob):
    """A panel model's walk-forward: its warm-up and, for an agent, its market."""

    warmup: int = WARMUP
    market: Market | None = None


def _fit_panel_fold(job: _PanelJob, fold: Fold) -> FoldOut:
    """One fold's policy: fit on its training rows, run from `warmup` bars before its test
    period, keep the test rows (NaN where the inputs are not all finite)."""
    x, y = job.x, job.y
    train = slice(fold.train_start, fold.train_stop)
    test = slice(fold.test_start, fold.test_stop)
    complete = np.isfinite(x[train]).all(axis=2)
    n_train = int((complete & np.isfinite(y[train])).sum())
    if n_train < job.min_train_rows:
        raise too_few_rows(job, fold, n_train, "rows",
                           "choose a later first_test_year or load more history")
    model = fit_panel(job.model_factory(), x, y, train, job.market)
    lo = max(0, fold.test_start - job.warmup)
    positions = predict_panel(model, x, y, slice(lo, fold.test_stop), job.market)
    test_complete = np.isfinite(x[test]).all(axis=2)
    block = np.where(test_complete, positions[fold.test_start - lo:], np.nan)
    return FoldOut(block, FoldReport(fold, n_train, int(test_complete.sum()),
                                     mean_ic(block, y[test])),
                   model if fold == job.last else None)
