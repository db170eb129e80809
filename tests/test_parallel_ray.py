"""A real Ray cluster on 127.0.0.1 (a head and a second node, dashboard off): units run as
Ray tasks give the serial results; a worker process that dies mid-task is retried and the
run completes with the same results; `compare` on Ray matches one process."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# read when Ray is imported: keep every Ray process on 127.0.0.1, no auth token file, no
# usage report (nothing leaves the machine)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from mltrader.compare import compare  # noqa: E402
from mltrader.config import ExecutorConfig  # noqa: E402
from mltrader.parallel import run_units  # noqa: E402
from tests.test_parallel import _cfg, square_plus  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    (tmp / "ray").mkdir()
    root = str(Path(__file__).resolve().parents[1])  # the workers import tests.* units too
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {"RAY_TMPDIR": str(tmp), "PYTHONPATH": path}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    node = {"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
    c = cluster_utils.Cluster(initialize_head=True, head_node_args=node)
    c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_two_nodes_run_the_units_in_order(cluster):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    shared = np.arange(10.0)
    got = run_units(square_plus, range(10), ExecutorConfig(kind="ray"), shared)
    assert [r[0] for r in got] == [i * i + i for i in range(10)]
    assert {r[1] for r in got} == {1}  # one CPU per task, one thread


def die_once(marker_dir, unit):
    """Unit 2's first attempt kills its worker process (as an OOM kill or a crash would)."""
    marker = Path(marker_dir) / f"died-{unit}"
    if unit == 2 and not marker.exists():
        marker.write_text("x")
        os._exit(1)
    return unit * 10


def test_a_killed_worker_is_retried_and_the_run_completes(cluster, tmp_path):
    got = run_units(die_once, range(5), ExecutorConfig(kind="ray"), str(tmp_path))
    assert got == [0, 10, 20, 30, 40]
    assert (tmp_path / "died-2").exists()  # it did die once


def test_compare_on_ray_matches_one_process(cluster, tmp_path):
    one = compare(_cfg(tmp_path))
    on_ray = compare(_cfg(tmp_path, kind="ray"))
    pd.testing.assert_frame_equal(one.leaderboard, on_ray.leaderboard, check_exact=True)
    for name, res in one.results.items():
        pd.testing.assert_series_equal(res.equity, on_ray.results[name].equity,
                                       check_exact=True)


def test_ctrl_c_cancels_the_ray_tasks(cluster, tmp_path):
    import time

    from tests.test_parallel import interrupt_when_started, sleepy

    interrupt_when_started(tmp_path, 2)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_units(sleepy, range(6), ExecutorConfig(kind="ray"), str(tmp_path))
    assert time.monotonic() - t0 < 20
    # the cluster's two CPUs are free again at once: the sleeping tasks were cancelled
    t1 = time.monotonic()
    assert run_units(die_once, [0, 1], ExecutorConfig(kind="ray"), str(tmp_path)) == [0, 10]
    assert time.monotonic() - t1 < 20
    assert not list(tmp_path.glob("done-*"))
    assert len(list(tmp_path.glob("start-*"))) == 2
