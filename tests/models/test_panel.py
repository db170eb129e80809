"""Walk-forward for panel models: each fold fits the (T, N, F) block of its training rows only
(the label horizon and embargo cut as for every model), runs its policy from a warm-up before
the test period and keeps the test rows; online models get labels, causally used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator

from mltrader.errors import ConfigError
from mltrader.models.panel import panel_inputs, split_params, walk_forward_panel
from mltrader.models.registry import (
    CLASSIFIERS,
    MODELS,
    PANEL_MODELS,
    SEQUENCE_MODELS,
    make_model,
)
from mltrader.models.walkforward import make_folds

INDEX = pd.bdate_range("2000-01-03", "2004-12-31", tz="UTC")


class _Recorder(BaseEstimator):
    """A panel model that remembers what it was given (feature 0 is the bar position) and
    predicts the bar position of each row it is asked about."""

    calls: list[tuple[str, np.ndarray, np.ndarray | None]] = []

    def __init__(self, online: bool = False) -> None:
        self.online = online

    def fit(self, x, y):
        _Recorder.calls.append(("fit", x[:, 0, 0].copy(), y.copy()))
        return self

    def predict(self, x, y=None):
        _Recorder.calls.append(("predict", x[:, 0, 0].copy(), None if y is None else y.copy()))
        return np.repeat(x[:, :1, 0], x.shape[1], axis=1)


def _panel(n: int = 3, seed: int = 0):
    t = len(INDEX)
    x = np.repeat(np.arange(t, dtype=float)[:, None, None], n, axis=1)
    y = np.random.default_rng(seed).normal(0, 0.01, (t, n))
    return x, y


@pytest.mark.parametrize("embargo", [0, 4])
def test_each_fold_fits_its_training_block_and_keeps_only_test_rows(embargo):
    x, y = _panel()
    y[:5] = np.nan  # NaN labels are passed on, not dropped
    folds = make_folds(INDEX, first_test_year=2002, retrain="yearly", lookahead=2,
                       embargo=embargo)
    _Recorder.calls = []
    pred, reports = walk_forward_panel(x, y, folds, _Recorder, min_train_rows=10, warmup=30)
    fits = [c for c in _Recorder.calls if c[0] == "fit"]
    predicts = [c for c in _Recorder.calls if c[0] == "predict"]
    assert len(fits) == len(predicts) == len(reports) == len(folds)
    for fold, (_, rows, labels), (_, span, given_y) in zip(folds, fits, predicts, strict=True):
        # the whole training block, in order, up to the embargoed stop: the label of the
        # last training row (fill t+1 -> t+2) is realised by bar test_start - 1 - embargo
        np.testing.assert_array_equal(rows, np.arange(fold.train_start, fold.train_stop))
        assert rows[-1] == fold.test_start - 3 - embargo
        np.testing.assert_array_equal(labels, y[fold.train_start:fold.train_stop])  # unclipped
        # the policy runs from 30 bars before the test period to its end
        np.testing.assert_array_equal(span, np.arange(fold.test_start - 30, fold.test_stop))
        assert given_y is None  # a batch policy gets no labels
        test = slice(fold.test_start, fold.test_stop)
        np.testing.assert_array_equal(pred[test], x[test, :, 0])  # the test rows, aligned
    assert np.isnan(pred[: folds[0].test_start]).all()
    assert not np.isnan(pred[folds[0].test_start:]).any()


def test_an_online_policy_gets_the_labels_of_the_rows_it_runs_on():
    x, y = _panel()
    folds = make_folds(INDEX, first_test_year=2003, retrain="yearly", lookahead=2)
    _Recorder.calls = []
    walk_forward_panel(x, y, folds, lambda: _Recorder(online=True), min_train_rows=10,
                       warmup=1000)
    predicts = [c for c in _Recorder.calls if c[0] == "predict"]
    for fold, (_, span, given_y) in zip(folds, predicts, strict=True):
        lo = max(0, fold.test_start - 1000)  # the warm-up stops at the first bar
        np.testing.assert_array_equal(span, np.arange(lo, fold.test_stop))
        np.testing.assert_array_equal(given_y, y[lo:fold.test_stop])


def test_missing_features_give_nan_positions_and_short_history_is_refused():
    x, y = _panel()
    x[800:820, 1, 0] = np.nan
    folds = make_folds(INDEX, first_test_year=2003, retrain="yearly", lookahead=2)
    _Recorder.calls = []
    pred, reports = walk_forward_panel(x, y, folds, _Recorder, min_train_rows=10)
    assert np.isnan(pred[800:820, 1]).all() and np.isfinite(pred[800:820, [0, 2]]).all()
    assert reports[0].train_rows == 3 * folds[0].train_stop  # complete cells with a label
    with pytest.raises(ConfigError, match=r"only 2340 complete training rows .*\(min_train_rows"):
        walk_forward_panel(x, y, folds, _Recorder, min_train_rows=10_000, index=INDEX)


def test_lags_are_split_from_the_estimator_params_and_checked():
    assert split_params("rl_sharpe", {"lags": 3, "epochs": 5}) == ({"epochs": 5}, 3)
    assert split_params("rl_sharpe", {}) == ({}, 0)
    for bad in (-1, 2.5, "5", True):
        with pytest.raises(ConfigError, match="model.params.lags for rl_sharpe") as e:
            split_params("rl_sharpe", {"lags": bad})
        assert "\n" not in str(e.value)


def test_inputs_append_the_last_returns_causally():
    pytest.importorskip("torch")
    close = np.exp(np.cumsum(np.random.default_rng(2).normal(0, 0.01, (50, 2)), axis=0))
    x = np.ones((50, 2, 1))
    x[3, 0, 0] = np.inf
    out = panel_inputs(x, close, 2)
    assert out.shape == (50, 2, 3)
    assert np.isnan(out[3, 0, 0])  # inf is unknown, not a huge value
    np.testing.assert_allclose(out[10, :, 1], close[10] / close[9] - 1)
    np.testing.assert_allclose(out[10, :, 2], close[9] / close[8] - 1)
    assert np.array_equal(panel_inputs(x, close, 0)[..., :1], out[..., :1], equal_nan=True)


def test_the_policies_are_registered_as_panel_models_only():
    pytest.importorskip("torch")
    assert PANEL_MODELS == {"rl_sharpe", "ppo", "a2c", "sac", "dqn"} <= set(MODELS)
    assert not PANEL_MODELS & (CLASSIFIERS | SEQUENCE_MODELS)
    model = make_model("rl_sharpe", {"epochs": 3, "cost_bps": 2.0}, 7)
    assert type(model).__name__ == "DirectReinforcement"
    assert (model.epochs, model.cost_bps, model.seed) == (3, 2.0, 7)
    with pytest.raises(ConfigError, match="'lags' is not a parameter of rl_sharpe"):
        make_model("rl_sharpe", {"lags": 3}, 0)  # the caller splits it off first
