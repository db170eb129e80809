"""`mltrader seeds` with each seed a unit: on local workers the table, the summary and the
trials recorded (in seed order, by the driver) are exactly those of one process, and the
trials are those `pipeline.run` records for a seed itself."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("torch")

from mltrader.config import ExecutorConfig, config_from_dict  # noqa: E402
from mltrader.models import units  # noqa: E402
from mltrader.pipeline import run  # noqa: E402
from mltrader.seeds import run_seeds  # noqa: E402
from mltrader.testing import synthetic_bars  # noqa: E402
from mltrader.trials import TrialRegistry, data_fingerprint  # noqa: E402

BARS = synthetic_bars(900, 4, seed=5)
DS = data_fingerprint(BARS)
RAW = {"name": "tiny", "features": ["ret_5", "vol_20"],
       "model": {"name": "rl_sharpe", "params": {"lags": 2, "epochs": 5}},
       "walk_forward": {"first_test_year": 2002, "min_train_rows": 100},
       "strategy": {"name": "positions"}}
CFG = config_from_dict(RAW)
SEEDS = [0, 1, 2]


def _trials(reg: TrialRegistry) -> list[tuple]:
    """Every recorded trial but its time, in file order."""
    return [(t.dataset, t.config, t.kind, t.label, t.sharpe, t.n_obs) for t in reg.trials(DS)]


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.runs, b.runs, check_exact=True)
    assert a.summary == b.summary
    assert a.out_of_sample == b.out_of_sample


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    reg = TrialRegistry(tmp_path_factory.mktemp("serial") / "trials.jsonl")
    return run_seeds(CFG, SEEDS, registry=reg, bars=BARS), reg


def test_workers_give_the_serial_seeds_and_trials_exactly(serial, tmp_path):
    one, one_reg = serial
    reg = TrialRegistry(tmp_path / "trials.jsonl")
    steps: list[str] = []

    class _Steps:
        def __init__(self, total: int) -> None:
            assert total == len(SEEDS)

        def __enter__(self):
            return steps.append

        def __exit__(self, *exc):
            return False

    cfg = CFG.model_copy(update={"executor": ExecutorConfig(workers=2)})
    two = run_seeds(cfg, SEEDS, registry=reg, bars=BARS, progress=_Steps)
    _same(one, two)
    assert _trials(reg) == _trials(one_reg)
    assert [t[2] for t in _trials(reg)] == ["rl_seed"] * len(SEEDS)
    assert sorted(s.split(":")[0] for s in steps) == [f"seed {s}" for s in SEEDS]


def test_trials_are_recorded_in_seed_order_whatever_order_seeds_finish(serial, tmp_path):
    one, one_reg = serial
    order: list[int] = []

    def backwards(fn, shared, us, on_result=None):
        """A map whose units finish last first (inside a unit: one after another, as on a
        worker)."""
        with units.using(units.unit_map):
            out = [fn(shared, u) for u in us]
        for i in reversed(range(len(us))):
            order.append(i)
            if on_result is not None:
                on_result(i, out[i])
        return out

    reg = TrialRegistry(tmp_path / "trials.jsonl")
    with units.using(backwards):  # an open session: run_seeds uses it
        again = run_seeds(CFG, SEEDS, registry=reg, bars=BARS)
    assert order == [2, 1, 0]
    _same(one, again)
    assert _trials(reg) == _trials(one_reg)


def test_each_seed_records_what_its_own_run_would(tmp_path):
    """A tuned model: each seed is an rl_seed trial plus its count-only tuning trials, with the
    label and config hash `pipeline.run(..., registry, trial_kind="rl_seed")` gives it."""
    raw = {**RAW, "model": {"name": "ridge", "tune": {
        "n_trials": 3, "cv_splits": 2, "space": {"alpha": ["float_log", 0.01, 10.0]}}}}
    cfg = config_from_dict(raw)
    mine = TrialRegistry(tmp_path / "mine.jsonl")
    run_seeds(cfg, [3, 4], registry=mine, bars=BARS)
    theirs = TrialRegistry(tmp_path / "theirs.jsonl")
    for seed in (3, 4):
        run(cfg.model_copy(update={"seed": seed}), bars=BARS, registry=theirs,
            trial_kind="rl_seed")
    assert _trials(mine) == _trials(theirs)
    assert [t[2] for t in _trials(mine)] == ["rl_seed", "tuning", "tuning"] * 2
