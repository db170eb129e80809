"""Units of work in this process, on local worker processes, or on Ray: the same results in
the same order; `mltrader compare` with workers gives the same leaderboard and equity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrader.compare import compare
from mltrader.config import ExecutorConfig, config_from_dict
from mltrader.data.files import save_file
from mltrader.parallel import run_units
from mltrader.testing import synthetic_bars


def square_plus(shared, unit):
    """A unit: reads the shared array (shipped once per worker) and its own argument."""
    from mltrader.models.threads import thread_budget

    return float(shared[unit] ** 2 + unit), thread_budget()


def test_local_workers_return_the_serial_results_in_order():
    shared = np.arange(10.0)
    seen = []
    serial = run_units(square_plus, range(10), ExecutorConfig(), shared)
    par = run_units(square_plus, range(10), ExecutorConfig(workers=2), shared,
                    progress=lambda done, total: seen.append((done, total)))
    assert [r[0] for r in par] == [r[0] for r in serial] == [i * i + i for i in range(10)]
    assert {r[1] for r in par} == {1}  # 2 workers on 2 cores: one thread each
    assert seen[-1] == (10, 10) and len(seen) == 10


def boom(shared, unit):
    if unit == 3:
        raise ValueError("unit 3 failed")
    return unit


def test_a_failing_unit_fails_the_run():
    with pytest.raises(ValueError, match="unit 3 failed"):
        run_units(boom, range(6), ExecutorConfig(workers=2))


def _cfg(tmp_path, **executor):
    path = save_file(synthetic_bars(700, 4, seed=5, start="2000-01-03"), tmp_path / "bars.csv")
    return config_from_dict({
        "features": ["ret_1", "ret_5", "sma_ratio_20", "vol_20"],
        "walk_forward": {"first_test_year": 2001, "min_train_rows": 100},
        "data": {"source": "file", "path": str(path)},
        "compare": [{"name": "ridge"}, {"name": "lightgbm", "params": {"n_estimators": 30}},
                    {"name": "random_forest", "params": {"n_estimators": 20}}],
        "executor": executor})


def test_compare_with_workers_matches_one_process(tmp_path):
    import contextlib

    ticks: list[tuple[int, str]] = []

    @contextlib.contextmanager
    def bar(total):  # the CLI's progress bar: one tick as each model finishes
        yield lambda msg: ticks.append((total, msg))

    one = compare(_cfg(tmp_path))
    two = compare(_cfg(tmp_path, workers=2), unit_progress=bar)
    assert [(total, msg.split(" (")[1]) for total, msg in ticks] == [
        (3, "1 of 3)"), (3, "2 of 3)"), (3, "3 of 3)")]
    assert sorted(msg.split(" (")[0] for _, msg in ticks) == ["lightgbm", "random_forest",
                                                              "ridge"]
    pd.testing.assert_frame_equal(one.leaderboard, two.leaderboard, check_exact=True)
    for name, res in one.results.items():
        pd.testing.assert_series_equal(res.equity, two.results[name].equity, check_exact=True)
    assert one.oos == two.oos


def test_a_lazy_backtest_result_pickles_as_the_same_eager_result(tmp_path):
    """A worker's backtest comes back through pickle: the lazy tables' builders are
    closures, so it travels as the eager result with every table built."""
    import pickle

    from mltrader.backtest.result import BacktestResult

    res = compare(_cfg(tmp_path)).results["ridge"]
    back = pickle.loads(pickle.dumps(res))
    assert type(back) is BacktestResult
    for name in ("equity", "cash"):
        pd.testing.assert_series_equal(getattr(back, name), getattr(res, name))
    for name in ("positions", "weights", "fills", "trades", "orders"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(res, name))


def sleepy(marker_dir, unit):
    """A long unit that leaves a file when it starts and another when it finishes."""
    import time
    from pathlib import Path

    Path(marker_dir, f"start-{unit}").touch()
    time.sleep(30)
    Path(marker_dir, f"done-{unit}").touch()
    return unit


def interrupt_when_started(marker_dir, n: int):
    """Ctrl-C (SIGINT to this process) once `n` units have started."""
    import os
    import signal
    import threading
    import time
    from pathlib import Path

    def watch():
        deadline = time.monotonic() + 60
        while len(list(Path(marker_dir).glob("start-*"))) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, daemon=True).start()


def test_ctrl_c_cancels_the_units_and_stops_the_workers(tmp_path):
    import multiprocessing
    import time

    interrupt_when_started(tmp_path, 2)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_units(sleepy, range(6), ExecutorConfig(workers=2), str(tmp_path))
    assert time.monotonic() - t0 < 20  # not the 30 s the running units would take
    time.sleep(1)
    assert len(list(tmp_path.glob("start-*"))) == 2  # the queued units never started
    assert not list(tmp_path.glob("done-*"))  # the running ones were stopped
    assert not multiprocessing.active_children()  # no worker left behind


def test_a_local_ray_is_our_own_even_when_another_runs_here(monkeypatch):
    """No address: ray.init(address="local"), so a Ray already started on this machine
    (`ray start`) is not joined (it would also refuse num_cpus)."""
    import sys
    import types

    from mltrader.parallel import ray_init

    calls = []
    fake = types.SimpleNamespace(is_initialized=lambda: False,
                                 init=lambda **kw: calls.append(kw))
    monkeypatch.setitem(sys.modules, "ray", fake)
    ray_init(ExecutorConfig(kind="ray", num_cpus=2))
    ray_init(ExecutorConfig(kind="ray", address="auto"))
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2
    assert calls[1]["address"] == "auto" and "num_cpus" not in calls[1]


def test_num_cpus_with_a_cluster_address_is_refused():
    from mltrader.errors import ConfigError

    with pytest.raises((ValueError, ConfigError), match="num_cpus sizes a local Ray"):
        config_from_dict({"executor": {"kind": "ray", "address": "auto", "num_cpus": 2}})
