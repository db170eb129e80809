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
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from mltrader.errors import ConfigError
from mltrader.models.walkforward import Fold, FoldReport, daily_ic, fold_message

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
    """Out-of-sample positions (T, N) of a panel model (see the module docstring)."""
    t_len, n_sym, _ = x.shape
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0; got {warmup}")
    complete = np.isfinite(x).all(axis=2)
    pred = np.full((t_len, n_sym), np.nan)
    reports: list[FoldReport] = []
    ctx = progress(len(folds)) if progress else nullcontext(lambda _msg: None)
    with ctx as advance:
        for fold in folds:
            train = slice(fold.train_start, fold.train_stop)
            n_train = int((complete[train] & np.isfinite(y[train])).sum())
            if n_train < min_train_rows:
                when = index[fold.test_start].date() if index is not None else fold.test_start
                raise ConfigError(
                    f"walk_forward: only {n_train} complete training rows before the test "
                    f"period starting {when} (min_train_rows is {min_train_rows}); "
                    "choose a later first_test_year or load more history"
                )
            model = fit_panel(model_factory(), x, y, train, market)
            if on_fit is not None:
                on_fit(fold, model)
            lo = max(0, fold.test_start - warmup)
            positions = predict_panel(model, x, y, slice(lo, fold.test_stop), market)
            test = slice(fold.test_start, fold.test_stop)
            pred[test] = np.where(complete[test], positions[fold.test_start - lo:], np.nan)
            ic = daily_ic(pred[test], y[test])
            mean_ic = float(np.nanmean(ic)) if np.isfinite(ic).any() else float("nan")
            reports.append(FoldReport(fold, n_train, int(complete[test].sum()), mean_ic))
            advance(fold_message(pred[test], y[test], mean_ic))
    return pred, reports
