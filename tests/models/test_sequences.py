"""Sequence windows for LSTM / CNN models: per symbol, in time order, causal."""

from __future__ import annotations

import numpy as np
import pytest

from mltrader.compare import compare
from mltrader.config import config_from_dict
from mltrader.models.walkforward import sequence_samples
from mltrader.testing import synthetic_bars


def _panel(t=40, n=3, k=2):
    x = np.zeros((t, n, k))
    for i in range(n):
        x[:, i, 0] = 1000 * i + np.arange(t)  # symbol i, bar t -> 1000 i + t
        x[:, i, 1] = i
    return x


def test_windows_never_mix_symbols_and_end_at_their_bar():
    x = _panel()
    w, _, pos = sequence_samples(x, None, 0, 40, window=5)
    assert w.shape == (36 * 3, 5, 2) and w.dtype == np.float32
    for sample, (bar, sym) in zip(w, pos, strict=True):
        assert (sample[:, 1] == sym).all()
        np.testing.assert_array_equal(sample[:, 0], 1000 * sym + np.arange(bar - 4, bar + 1))
    assert (np.diff(pos[:, 0]) >= 0).all()  # time order, for the validation slice


def test_incomplete_windows_and_missing_targets_are_left_out():
    x = _panel()
    x[10, 1, 0] = np.nan  # symbol 1 did not trade on bar 10
    y = np.ones((40, 3))
    y[20, 2] = np.nan
    _, targets, pos = sequence_samples(x, y, 0, 40, window=5)
    sym1 = pos[pos[:, 1] == 1][:, 0]
    assert not np.isin(np.arange(10, 15), sym1).any()  # every window touching bar 10
    assert not ((pos[:, 0] == 20) & (pos[:, 1] == 2)).any()
    assert np.isfinite(targets).all()


def test_windows_ending_at_or_before_t_ignore_later_bars():
    x = _panel()
    before, _, _ = sequence_samples(x, None, 0, 25, window=6)
    x[25:] *= -1
    after, _, _ = sequence_samples(x, None, 0, 25, window=6)
    np.testing.assert_array_equal(before, after)


def test_lstm_and_cnn_run_walk_forward_in_compare():
    pytest.importorskip("torch")
    cfg = config_from_dict({
        "walk_forward": {"first_test_year": 2004, "min_train_rows": 100},
        "compare": [
            {"name": "lstm", "window": 20,
             "params": {"hidden": 8, "layers": 1, "epochs": 1, "batch_size": 128}},
            {"name": "cnn", "window": 20, "params": {"channels": 4, "epochs": 1}},
        ],
    })
    out = compare(cfg, bars=synthetic_bars(1300, 3, seed=5))
    board = out.leaderboard.set_index("model")
    assert {"lstm", "cnn"} <= set(board.index)
    assert board.loc["lstm", "ic_mean"] == board.loc["lstm", "ic_mean"]  # predictions exist
