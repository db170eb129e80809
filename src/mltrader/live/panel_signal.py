"""A panel model (`registry.PANEL_MODELS`: a policy of positions) served bar by bar, as the
backtest runs it.

`pipeline._predict_panel` fits one policy per walk-forward fold on that fold's training
rows of the (T, N, F + lags) panel (`models.panel.walk_forward_panel`) and runs it from
`models.panel.WARMUP` bars before the fold's test period, so the policy enters its test
period in the state its own recurrence reached. `PanelPolicy` does the same on the live
window: on a fold change it fits through `walk_forward_panel` on that fold alone (the same
training rows, `min_train_rows` error, params and cost from `plan.panel_plan`, seed); on
every bar it runs the fitted policy over the rows ``max(0, fold.test_start - WARMUP) .. t``
of the window (`models.panel.predict_panel`: the very call the backtest makes, from the
very same first row) and keeps row t. A recurrent position (and an online policy's
weights) depends on every row of that span, so the span is re-run on each bar rather than
continued from a state kept between bars, which no model interface offers: the number is
then the backtest's by construction. The pass reads only the span's inputs (at most
``WARMUP`` + one retrain period of rows); the features themselves are computed over the
whole window, as for a sequence model, since a rolling or smoothed feature computed from a
later first bar is not the same to the last bit.

Inputs and labels come from the window only: the features (causal), the last ``lags``
returns (`models.panel.panel_inputs`), and the run's labels (`features.labels.forward_return`
with the run's fill and horizon), which on the window are NaN for the last two bars, whose
outcome is not known yet. An online policy reads y[t-2] at row t only (realised by bar t's
fill), so it sees exactly the labels the backtest gave it; nothing after bar t reaches the
position at t. A model with ``needs_market`` gets a simulated market over the window
(`plan.panel_market`, the run's fills and costs, the calendar's bars a year), the way the
backtest builds one over its bars.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from mltrader.config import ModelConfig, RunConfig
from mltrader.data.bars import Bars
from mltrader.data.calendars import periods_per_year, resolve_calendar
from mltrader.features.labels import forward_return
from mltrader.models.panel import WARMUP, panel_inputs, predict_panel, walk_forward_panel
from mltrader.models.walkforward import Fold
from mltrader.plan import PanelPlan, panel_market, panel_plan, tuned_params


def panel_labels(window: Bars, cfg: RunConfig, fill: str) -> np.ndarray:
    """(T, N) the run's labels on the window (`pipeline.compute_signals`' labels): the
    return from the fill at t+1 to the fill ``horizon`` bars later, NaN where not known."""
    return forward_return(window, fill, cfg.target.horizon).to_numpy(np.float64)


class PanelPolicy:
    """One panel model config: its plan (params, lags, training cost) and the fit that
    serves the current fold. See the module docstring."""

    def __init__(self, cfg: RunConfig, mc: ModelConfig, fill: str) -> None:
        self.cfg, self.mc, self.fill = cfg, mc, fill
        panel_plan(mc, cfg, dict(mc.params))  # fail now on a bad target, lags or cost
        self.plan: PanelPlan | None = None  # resolved on the first fit, as the backtest does
        self.n_trials = 1
        self.model: BaseEstimator | None = None
        self.train_rows = 0

    @property
    def params(self) -> dict[str, object] | None:
        """The params the backtest reports (`Signals.params`): the estimator's, with the
        resolved cost_bps, and lags; None before the first fit."""
        if self.plan is None:
            return None
        return {**self.plan.est, "lags": self.plan.lags}

    def inputs(self, window: Bars, feats: np.ndarray) -> np.ndarray:
        """(T, N, F + lags): the window's features and its last ``lags`` returns."""
        assert self.plan is not None
        return panel_inputs(feats, window.close, self.plan.lags)

    def _market(self, window: Bars, x: np.ndarray) -> Callable[..., Any]:
        """The simulated market a ``needs_market`` model trades, built only when asked for
        (`models.panel` hands it to no other model), as `plan.panel_market` builds it."""
        built: list[Callable[..., Any]] = []  # once per window, on the first call

        def market(start: int, stop: int, **env_kwargs: Any) -> Any:
            if not built:
                cal = resolve_calendar(self.cfg.data.calendar, window.symbols)
                ppy = periods_per_year(window.index, cal)
                built.append(panel_market(self.cfg, window, x, self.fill, ppy))
            return built[0](start, stop, **env_kwargs)

        return market

    def fit(self, window: Bars, feats: np.ndarray, folds: list[Fold], fold: Fold
            ) -> np.ndarray:
        """Fit the fold's policy on its training rows of the window (the backtest's call,
        on this fold alone); returns the position row of the newest bar."""
        cfg, mc = self.cfg, self.mc
        y = panel_labels(window, cfg, self.fill)
        if self.plan is None:  # tuned_params refuses `tune` for a panel model, as it does there
            params, self.n_trials = tuned_params(mc, feats, y, folds[0], cfg)
            self.plan = panel_plan(mc, cfg, params)
        x = self.inputs(window, feats)
        fitted: list[BaseEstimator] = []
        pred, reports = walk_forward_panel(
            x, y, [fold], self.plan.factory(mc.name, cfg.seed),
            min_train_rows=cfg.walk_forward.min_train_rows, index=window.index,
            on_fit=lambda _fold, model: fitted.append(model), market=self._market(window, x))
        self.model = fitted[-1]
        self.train_rows = reports[0].train_rows
        return pred[-1]

    def predict(self, window: Bars, feats: np.ndarray, fold: Fold) -> np.ndarray:
        """(N,) positions of the newest bar: the fitted policy run over the rows from
        ``fold.test_start - WARMUP`` to the newest, as the backtest runs it; NaN where the
        newest row's inputs are not all finite (the backtest's rule)."""
        assert self.model is not None and self.plan is not None
        t = len(window) - 1
        lo = max(0, fold.test_start - WARMUP)
        # labels only for a policy that reads them (online): not recomputed on every bar else
        y = (panel_labels(window, self.cfg, self.fill) if getattr(self.model, "online", False)
             else np.full(window.shape, np.nan))
        if getattr(self.model, "needs_market", False):  # its market spans the whole window
            x = self.inputs(window, feats)
            positions = predict_panel(self.model, x, y, slice(lo, t + 1),
                                      self._market(window, x))
            return np.where(np.isfinite(x[t]).all(axis=1), positions[-1], np.nan)
        # only rows lo..t are read: their inputs, cell for cell the whole window's (the
        # lagged returns of row s read closes s - lags .. s, all kept), so the same numbers
        a = max(0, lo - self.plan.lags)
        x = panel_inputs(feats[a:], window.close[a:], self.plan.lags)[lo - a:]
        positions = predict_panel(self.model, x, y[lo:], slice(0, len(x)))
        return np.where(np.isfinite(x[-1]).all(axis=1), positions[-1], np.nan)
