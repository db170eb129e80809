"""`mltrader sensitivity`'s grid cells as units of work: the same table whether the cells run
in this process or on local workers, and the trials recorded in the grid's order whatever
order the cells finished in."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from mltrader.data.files import save_file
from mltrader.models.units import using
from mltrader.sensitivity import parse_grid
from mltrader.sweep import plan, sensitivity
from mltrader.testing import synthetic_bars
from mltrader.trials import Trial

WORKERS = {"executor.workers": 2}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sweep_parallel")
    data = d / "close.csv"
    save_file(synthetic_bars(1500, 4, seed=2), data)
    path = d / "s.yaml"
    path.write_text(
        "model: {name: ridge}\n"
        f"data: {{source: file, path: {data}}}\n"
        "walk_forward: {first_test_year: 2003, min_train_rows: 100}\n"
        "strategy: {name: threshold, threshold: 0.0}\n"
        f"output_dir: {d / 'runs'}\n", encoding="utf-8")
    return path


def _tables(config: Path, grids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    axes = [parse_grid(g) for g in grids]
    serial_plan = plan(config, axes)
    workers_plan = plan(config, axes, WORKERS)
    assert serial_plan.base.executor.workers == 1 and workers_plan.base.executor.workers == 2
    messages: list[str] = []
    serial = sensitivity(serial_plan).table
    workers = sensitivity(workers_plan, on_cell=messages.append).table
    assert len(messages) == len(serial)
    return serial, workers


def test_a_cheap_grid_on_workers_matches_one_process(config: Path) -> None:
    serial, workers = _tables(config, ["threshold=0.0,0.0005,0.001", "stop_loss=0.02,0.05"])
    assert len(serial) == 6 and serial["sharpe_is"].notna().all()
    pd.testing.assert_frame_equal(serial, workers, check_exact=True)


def test_a_retraining_grid_on_workers_matches_one_process(config: Path) -> None:
    axes = [parse_grid("model.params.alpha=0.5,50")]
    assert plan(config, axes).retrain
    serial, workers = _tables(config, ["model.params.alpha=0.5,50"])
    assert len(serial) == 2 and serial["sharpe_is"].notna().all()
    assert serial["sharpe_oos"].iloc[0] != serial["sharpe_oos"].iloc[1]  # really retrained
    pd.testing.assert_frame_equal(serial, workers, check_exact=True)


class _Registry:
    def __init__(self) -> None:
        self.recorded: list[Trial] = []

    def record_many(self, trials: list[Trial]) -> None:
        self.recorded.extend(trials)


def _backwards(fn, shared, units, on_result=None):
    """A unit map whose units finish last first (as workers may)."""
    out: dict[int, object] = {}
    for i in reversed(range(len(units))):
        out[i] = fn(shared, units[i])
        if on_result is not None:
            on_result(i, out[i])
    return [out[i] for i in range(len(units))]


def test_trials_are_recorded_in_grid_order_whatever_order_cells_finish(config: Path) -> None:
    p = plan(config, [parse_grid("threshold=0.0,0.001,0.003")])
    in_order, backwards = _Registry(), _Registry()
    messages: list[str] = []
    table = sensitivity(p, registry=in_order).table  # type: ignore[arg-type]
    with using(_backwards):  # an open session: sensitivity runs its cells on it
        table_back = sensitivity(p, on_cell=messages.append,
                                 registry=backwards).table  # type: ignore[arg-type]
    labels = [t.label for t in backwards.recorded]
    assert labels == ["strategy.threshold=0.0", "strategy.threshold=0.001",
                      "strategy.threshold=0.003"]
    def untimed(trials):  # `time` is the clock at recording: the rest must agree
        return [dataclasses.replace(t, time="") for t in trials]

    assert untimed(backwards.recorded) == untimed(in_order.recorded)
    assert {t.kind for t in backwards.recorded} == {"sensitivity"}
    # progress follows completion; the table stays in grid order
    assert messages[0].startswith("cell 1/3: strategy.threshold=0.003:")
    assert messages[-1].startswith("cell 3/3: strategy.threshold=0.0:")
    assert list(table_back["strategy.threshold"]) == [0.0, 0.001, 0.003]
    pd.testing.assert_frame_equal(table, table_back, check_exact=True)
