"""Nested walk-forward for stacking: a model reading other models' predictions trains only on
their out-of-sample predictions, is judged from the run's own start, and stays causal."""

from __future__ import annotations

import numpy as np
import pytest

from mltrader.config import config_from_dict
from mltrader.errors import ConfigError
from mltrader.pipeline import compute_signals
from mltrader.plan import run_folds
from mltrader.testing import synthetic_bars

pytest.importorskip("torch")

BARS = synthetic_bars(1600, 4, seed=2)


def _raw(rl: dict | None = None, **extra) -> dict:
    return {
        "features": ["ret_5", "vol_20"],
        "model": {"name": "ridge", "label": "a"},
        "walk_forward": {"first_test_year": 2004, "min_train_rows": 100},
        "strategy": {"name": "ensemble", "members": ["a", "b", "rl"], "models": [
            {"name": "lightgbm", "label": "b", "params": {"n_estimators": 10}},
            {"name": "rl_sharpe", "label": "rl", "inputs": ["a", "b"], "nested_years": 2,
             "params": {"epochs": 5}, **(rl or {})}]},
        **extra,
    }


@pytest.fixture(scope="module")
def sig():
    return compute_signals(BARS, config_from_dict(_raw()))


def test_inputs_are_walked_forward_earlier_and_the_run_is_judged_from_its_own_start(sig):
    cfg = config_from_dict(_raw())
    outer = run_folds(BARS, cfg)
    assert sig.start == outer[0].test_start
    assert [r.fold for r in sig.folds] == outer  # the main (input) model reports outer folds
    for name in ("a", "b", "rl", "model"):
        p = sig.members[name].to_numpy()
        assert np.isnan(p[:sig.start]).all() and np.isfinite(p[sig.start + 25:]).all()
    assert "ran without" not in " ".join(sig.notes)
    assert any("nested walk-forward" in n and "from 2002" in n for n in sig.notes)


def test_the_stacked_model_trains_only_on_out_of_sample_inputs(monkeypatch):
    """Every training row the agent sees holds its inputs' predictions from models fitted
    before that row: the first fold's training rows start at the inner first test bar."""
    import mltrader.models.panel as panel

    seen = []
    real = panel.fit_panel

    def spy(model, x, y, rows, market=None):
        seen.append((rows, np.isfinite(x[rows]).all(axis=2)))
        return real(model, x, y, rows, market)

    monkeypatch.setattr(panel, "fit_panel", spy)
    compute_signals(BARS, config_from_dict(_raw()))
    inner = run_folds(BARS, config_from_dict(
        {**_raw(), "walk_forward": {"first_test_year": 2002, "min_train_rows": 100}}))
    rows, complete = seen[0]
    usable = np.flatnonzero(complete.any(axis=1)) + rows.start
    assert usable.min() >= inner[0].test_start  # no in-sample fit of an input reaches it
    assert complete.sum() >= 100


def test_stacking_is_causal():
    from tests.test_lookahead import changed_after, first_leak, perturb

    cfg = config_from_dict(_raw())
    t = 1300
    base = compute_signals(BARS, cfg)
    other = compute_signals(perturb(BARS, t + 1, 1, 1.5, tail=True), cfg)
    assert first_leak(base, other, t) is None
    assert changed_after(base, other, t)
    for name in ("rl", "a", "b"):
        np.testing.assert_array_equal(base.members[name].to_numpy()[:t + 1],
                                      other.members[name].to_numpy()[:t + 1])


@pytest.mark.parametrize(("rl", "needle"), [
    ({"inputs": ["rl"]}, "lists itself"),
    ({"inputs": ["zz"]}, "input 'zz' is not a model of this run"),
])
def test_bad_inputs_are_one_line_errors(rl, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        compute_signals(BARS, config_from_dict(_raw(rl)))
    assert "\n" not in str(e.value)


def test_one_level_of_stacking_only():
    raw = _raw()
    raw["strategy"]["models"][0]["inputs"] = ["a"]  # b reads a, and rl reads b
    with pytest.raises(ConfigError, match="one level of stacking only"):
        compute_signals(BARS, config_from_dict(raw))
