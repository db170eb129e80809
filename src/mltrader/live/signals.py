"""Walk-forward model signals for the live runner, trained and scored as the backtest does.

`WalkForwardSignal(cfg, history)` is the runner's ``signal=`` callable. On each newest bar it
finds the walk-forward fold that covers that bar with the backtest's own rule
(`mltrader.plan.run_folds` on the window's index), and when that fold is not the one its
model serves (the first call, or the first bar of a new yearly / quarterly / monthly period)
it retrains through `mltrader.models.walkforward.walk_forward_predict` on that fold alone:
the same training rows (train_start / train_stop, the label horizon + embargo cut), label
clipping, classifier / direction handling, `min_train_rows` error, tuned parameters (tuned
once, on the first fold's training window) and seed as `mltrader.pipeline.compute_signals`.
Only bars of the window are used, so nothing after the newest bar can reach a prediction.

Construction is cheap: nothing is trained until the first call (the fold covering a bar is
known only when the bar arrives; the first bar may open a new period). The prediction of the
newest bar uses the newest-row feature path (`features.latest.latest_features`, on a bounded
tail) when every feature has one, the full computation over the window otherwise (registered
or regime features, and sequence models, which need each symbol's last `model.window` rows).
Predictions are in the backtest's units: the model's return, P(up) - 0.5 for classifiers and
direction targets, a price target turned into an expected return against the close, and a
panel model's position in [-1, 1] (served by `live.panel_signal.PanelPolicy`: fitted on the
fold's training rows of the window, run from `models.panel.WARMUP` bars before the fold's
test period to the newest bar, as `pipeline._predict_panel` runs it).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, is_classifier

from mltrader.config import ModelConfig, RunConfig
from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.features.labels import forward_price, forward_return
from mltrader.features.latest import latest_features
from mltrader.features.registry import FEATURES, RAW_FIELDS, compute_features, resolve
from mltrader.live.panel_signal import PanelPolicy
from mltrader.models.artifacts import FORMAT_SKOPS, SKOPS_FILE, ArtifactError, save_model
from mltrader.models.registry import PANEL_MODELS, SEQUENCE_MODELS, make_model
from mltrader.models.walkforward import (
    Fold,
    _score,
    sequence_samples,
    stack,
    walk_forward_predict,
)
from mltrader.plan import resolve_fill, run_folds, tuned_params

log = logging.getLogger("mltrader.live.signals")

FEATURE_TAIL = 400  # bars the newest-row path reads at least (SMA 200, vol 60, RSI 14)
_FAST_KINDS = ("ret", "sma_ratio", "sma", "vol", "rsi")
_RSI_TAIL = 60  # x n bars: Wilder's smoothing forgets its seed to (1 - 1/n)^(60 n) ~ 1e-26


def _label(mc: ModelConfig) -> str:
    return mc.label or mc.name


def fast_tail(names: list[str] | tuple[str, ...]) -> int | None:
    """Bars of history the newest-row path needs for these features; None when some feature
    has no such path (registered or regime features): then the full computation is used."""
    need = FEATURE_TAIL
    for name in names:
        if name in FEATURES:
            return None
        if name in RAW_FIELDS:
            continue
        m = re.fullmatch(r"([a-z_]+?)_(\d+)", name)
        if m is None or m.group(1) not in _FAST_KINDS:
            return None
        n = int(m.group(2))
        need = max(need, n + 2, _RSI_TAIL * n if m.group(1) == "rsi" else 0)
    return need


def _canonical_skops(data: bytes) -> dict[str, Any]:
    """A skops file's schema with memory ids dropped and array files replaced by their
    sha256: skops names arrays by `id()` and stamps zip entries with the time, so its bytes
    change from one save of the same model to the next while this does not."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = set(z.namelist())

        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                out = {}
                for k, v in node.items():
                    if k in ("__id__", "_skops_version"):
                        continue
                    if k == "file" and isinstance(v, str) and v in names:
                        out[k] = hashlib.sha256(z.read(v)).hexdigest()
                    else:
                        out[k] = walk(v)
                return out
            if isinstance(node, list):
                return [walk(v) for v in node]
            return node

        return walk(json.loads(z.read("schema.json")))


def model_hash(model: BaseEstimator) -> str:
    """sha256 hex of a fitted model's saved form (`models.artifacts.save_model`, no pickle),
    stable across saves of the same model; "" when it cannot be saved as data at all."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            manifest = save_model(model, Path(tmp))
            root = Path(tmp) / "model"
            files: dict[str, Any] = dict(manifest["files"])
            if manifest["format"] == FORMAT_SKOPS:
                files[SKOPS_FILE] = _canonical_skops((root / SKOPS_FILE).read_bytes())
            doc = {"format": manifest["format"], "class": manifest["class"], "files": files}
        except ArtifactError as err:
            # e.g. an mltrader estimator skops saves but `load_model` would not trust:
            # hash its skops form anyway, so the journal still tells fits apart
            try:
                import skops.io as sio

                doc = {"format": "skops-untrusted", "class": type(model).__qualname__,
                       "files": {SKOPS_FILE: _canonical_skops(sio.dumps(model))}}
            except Exception:  # noqa: BLE001 - any failure only loses the hash
                log.warning("no artifact hash for %s: %s", type(model).__name__, err)
                return ""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Served:
    """One model config and the fit that serves the current period."""

    mc: ModelConfig
    params: dict[str, object] | None = None  # tuned once, on the first fold's training rows
    n_trials: int = 1
    model: BaseEstimator | None = None
    classify: bool = False
    period_start: pd.Timestamp | None = None
    train_rows: int = 0
    artifact_hash: str = ""
    panel: PanelPolicy | None = None  # a panel model's plan and fit (registry.PANEL_MODELS)

    @property
    def sequence(self) -> bool:
        return self.mc.name in SEQUENCE_MODELS


@dataclass
class _Bar:
    """What one call computes, lazily, shared by every model it serves."""

    window: Bars
    names: list[str]
    tail: int | None
    folds: list[Fold] = field(default_factory=list)
    panel_rows: dict[int, np.ndarray] = field(default_factory=dict)  # fitted this bar
    _x: np.ndarray | None = None
    _row: np.ndarray | None = None

    @property
    def x(self) -> np.ndarray:
        """(T, N, K) features of the whole window: the full computation."""
        if self._x is None:
            self._x = stack(compute_features(self.window, self.names))
        return self._x

    @property
    def row(self) -> np.ndarray:
        """(N, K) features of the newest bar: the fast path when it applies."""
        if self._row is None:
            w = self.window
            if self._x is not None or self.tail is None:
                self._row = self.x[-1]
            else:
                tail = w if len(w) <= self.tail else w.select(None, w.index[-self.tail], None)
                self._row = latest_features(tail, self.names)
        return self._row


class WalkForwardSignal:
    """The runner's model signal: the backtest's walk-forward model, served bar by bar.

    `__call__(window)` is the main model's prediction of the newest bar (index =
    window.symbols, NaN where a feature is NaN, as the backtest); `members(window)` gives
    every prediction `compute_signals` hands the strategy ("model", the main label, each of
    `cfg.strategy.models`' labels). Retrains (see the module docstring) are logged at INFO.

    Journal attributes: `artifact_hash` (of the main model; "" before the first fit),
    `artifact_hashes` (per label), `last_features` (symbol -> feature -> value of the
    newest row used), `last_fit` (first bar of the period the main model serves).
    """

    def __init__(self, cfg: RunConfig, history: Bars) -> None:
        self.cfg = cfg
        self.fill = resolve_fill(cfg, history)
        self.names = list(cfg.features)
        for name in self.names:  # fail now on a bad feature name or model parameter
            resolve(name)
        self._served: list[_Served] = []
        for mc in (cfg.model, *cfg.strategy.models):
            if mc.inputs:
                raise ConfigError(
                    f"paper and live trading cannot serve a stacked model yet ({_label(mc)!r} "
                    f"reads the predictions of {', '.join(mc.inputs)}: model.inputs); "
                    "backtest it with `mltrader backtest`, or drop inputs to trade it")
            if mc.name in PANEL_MODELS:  # checks its target, lags and cost (plan.panel_plan)
                self._served.append(_Served(mc, panel=PanelPolicy(cfg, mc, self.fill)))
            else:
                make_model(mc.name, dict(mc.params), cfg.seed)
                self._served.append(_Served(mc))
        self.tail = fast_tail(self.names)
        self.last_features: dict[str, dict[str, float]] = {}
        self._last_window: Bars | None = None
        self._last_rows: dict[str, pd.Series] = {}

    # ------------------------------------------------------------------ journal attributes
    @property
    def artifact_hash(self) -> str:
        """sha256 of the main model's saved form; "" before the first fit."""
        return self._served[0].artifact_hash

    @property
    def artifact_hashes(self) -> dict[str, str]:
        """Label -> artifact hash of every served model (main first)."""
        return {_label(s.mc): s.artifact_hash for s in self._served}

    @property
    def last_fit(self) -> pd.Timestamp | None:
        """The first bar of the walk-forward period the main model serves."""
        return self._served[0].period_start

    @property
    def params(self) -> dict[str, object] | None:
        """The main model's parameters (tuned when `model.tune` is set); None before a fit."""
        return self._served[0].params

    # ------------------------------------------------------------------ predictions
    def __call__(self, window: Bars) -> pd.Series:
        """The main model's prediction of the newest bar of `window`."""
        return self._rows(window)["model"].copy()

    def members(self, window: Bars) -> dict[str, pd.Series]:
        """Every prediction of the newest bar the strategy sees, keyed as `compute_signals`
        keys `Signals.members`."""
        return {k: v.copy() for k, v in self._rows(window).items()}

    def _rows(self, window: Bars) -> dict[str, pd.Series]:
        if window is self._last_window:  # members() then __call__() on one bar: once
            return self._last_rows
        symbols = list(window.symbols)
        bar = _Bar(window, self.names, self.tail)
        first = pd.Timestamp(year=self.cfg.walk_forward.test_year, month=1, day=1,
                             tz=window.index.tz)
        preds = []
        if window.index[-1] < first:  # before the first test bar the backtest has no model
            preds = [np.full(len(symbols), np.nan) for _ in self._served]
        else:
            bar.folds = run_folds(window, self.cfg)
            fold = bar.folds[-1]  # the fold whose test period holds the newest bar
            for served in self._served:
                if served.period_start != window.index[fold.test_start]:
                    self._fit(served, bar, fold)
                preds.append(self._predict(served, bar))
            main = self._served[0]
            feats = bar.x[-1] if main.sequence or main.panel is not None else bar.row
            self.last_features = {s: {n: float(v) for n, v in zip(self.names, feats[j],
                                                                   strict=True)}
                                  for j, s in enumerate(symbols)}
        rows: dict[str, pd.Series] = {}
        main = pd.Series(preds[0], index=symbols)
        rows["model"] = rows[_label(self.cfg.model)] = main
        for served, p in zip(self._served[1:], preds[1:], strict=True):
            rows[_label(served.mc)] = pd.Series(p, index=symbols)
        self._last_window, self._last_rows = window, rows
        return rows

    def _fit(self, served: _Served, bar: _Bar, fold: Fold) -> None:
        """Train `served` on the fold's training rows, exactly as `pipeline._predict` (or,
        for a panel model, `pipeline._predict_panel`) does."""
        mc, w = served.mc, bar.window
        if served.panel is not None:
            # the fit's pass over the fold also gives this bar's position: kept for _predict
            bar.panel_rows[id(served)] = served.panel.fit(w, bar.x, bar.folds, fold)
            served.model = served.panel.model
            served.params, served.n_trials = served.panel.params, served.panel.n_trials
            served.train_rows = served.panel.train_rows
        else:
            self._fit_stacked(served, bar, fold)
        served.period_start = w.index[fold.test_start]
        served.artifact_hash = model_hash(served.model)
        log.info("retrained %s for the period from %s: %d training rows (bars %s..%s)",
                 _label(mc), served.period_start.date(), served.train_rows,
                 w.index[fold.train_start].date(), w.index[fold.train_stop - 1].date())

    def _fit_stacked(self, served: _Served, bar: _Bar, fold: Fold) -> None:
        """A stacked or sequence model through `walk_forward_predict` on this fold alone."""
        cfg, mc, w = self.cfg, served.mc, bar.window
        price = cfg.target.kind == "price"
        if served.params is None:  # tuned once, on the first training window only
            labels = forward_return(w, self.fill, cfg.target.horizon).to_numpy(np.float64)
            served.params, served.n_trials = tuned_params(mc, bar.x, labels, bar.folds[0], cfg)
        train_on = (forward_price if price else forward_return)(
            w, self.fill, cfg.target.horizon).to_numpy(np.float64)
        params = served.params
        fitted: list[BaseEstimator] = []
        _, reports = walk_forward_predict(
            bar.x, train_on, [fold], lambda: make_model(mc.name, params, cfg.seed),
            min_train_rows=cfg.walk_forward.min_train_rows, index=w.index,
            direction=cfg.target.kind == "direction",
            window=mc.window if served.sequence else None,
            on_fit=lambda _fold, model: fitted.append(model),
            clip_quantile=0.0 if price else 0.01,
        )
        served.model = fitted[-1]
        served.classify = cfg.target.kind == "direction" or is_classifier(served.model)
        served.train_rows = reports[0].train_rows

    def _predict(self, served: _Served, bar: _Bar) -> np.ndarray:
        """One model's prediction row for the newest bar, in the backtest's units."""
        w = bar.window
        if served.panel is not None:
            row = bar.panel_rows.pop(id(served), None)  # computed by this bar's fit
            return row if row is not None else served.panel.predict(w, bar.x, bar.folds[-1])
        out = np.full(len(w.symbols), np.nan)
        if served.sequence:
            t = len(w)
            xt, _, pos = sequence_samples(bar.x, None, t - 1, t, served.mc.window)
            if len(xt):
                out[pos[:, 1]] = _score(served.model, xt, served.classify)
        else:
            x = bar.row
            ok = ~np.isnan(x).any(axis=1)  # the backtest's rule (walk_forward_predict)
            if ok.any():
                out[ok] = _score(served.model, x[ok], served.classify)
        if self.cfg.target.kind == "price":
            with np.errstate(invalid="ignore", divide="ignore"):
                out = out / w.close[-1] - 1.0
        return out
