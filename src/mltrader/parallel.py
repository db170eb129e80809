"""Independent units of research work (a compared model, a grid cell, ...) run in this
process, on local worker processes, or as Ray tasks: `run_units(fn, units, executor)`.

``fn(shared, unit)`` must be a module-level function (it is pickled). ``shared`` (the bars,
the config) travels once per worker process, or once into Ray's object store, never once per
task. Each unit runs with its share of the cores as its thread budget (`models.threads`), so
the threads of all units together never exceed the cores given. Results come back in the
order of ``units``, whatever order they finish in; ``progress(done, total)`` is called as
each finishes. Ctrl-C cancels what has not started. Ray is imported only when asked for.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from mltrader.config import ExecutorConfig
from mltrader.errors import ConfigError
from mltrader.models.threads import limit_threads, thread_budget

U = TypeVar("U")
R = TypeVar("R")
Progress = Callable[[int, int], None]
RAY_HINT = "pip install 'mltrader[ray]'"

_SHARED: Any = None  # a local worker's copy of the shared data (set once per process)
_THREADS = 1


def run_units(fn: Callable[[Any, U], R], units: Sequence[U], executor: ExecutorConfig,
              shared: Any = None, progress: Progress | None = None) -> list[R]:
    """``[fn(shared, u) for u in units]``, run where ``executor`` says."""
    units = list(units)
    if not units:
        return []
    if executor.kind == "ray":
        return _run_ray(fn, units, executor, shared, progress)
    workers = min(executor.workers, len(units))
    if workers <= 1:
        out = []
        for i, u in enumerate(units, start=1):
            with _unit_threads(thread_budget()):
                out.append(fn(shared, u))
            if progress is not None:
                progress(i, len(units))
        return out
    return _run_local(fn, units, workers, shared, progress)


@contextlib.contextmanager
def _unit_threads(n: int) -> Iterator[None]:
    """A unit's thread budget ``n`` (LightGBM, torch) and BLAS on ONE thread wherever it
    runs: a BLAS sum split over a different number of threads differs in its last bits, and
    results must not depend on the executor (LightGBM's do not: it is deterministic)."""
    with limit_threads(n):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - comes with scikit-learn
            yield
            return
        with threadpool_limits(limits=1, user_api="blas"):
            yield


# --------------------------------------------------------------------------- local
def _init_worker(shared: Any, threads: int) -> None:
    global _SHARED, _THREADS
    _SHARED, _THREADS = shared, threads


def _local_unit(fn: Callable[[Any, Any], Any], unit: Any) -> Any:
    with _unit_threads(_THREADS):
        return fn(_SHARED, unit)


def _run_local(fn: Callable[[Any, U], R], units: list[U], workers: int, shared: Any,
               progress: Progress | None) -> list[R]:
    threads = max(1, thread_budget() // workers)
    # spawn, not fork: a forked child inherits OpenMP / BLAS thread pools mid-state
    ctx = mp.get_context("spawn")
    results: dict[int, R] = {}
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(shared, threads)) as pool:
        futures: dict[Future[R], int] = {pool.submit(_local_unit, fn, u): i
                                         for i, u in enumerate(units)}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    results[futures[f]] = f.result()
                    if progress is not None:
                        progress(len(results), len(units))
        except BaseException:  # Ctrl-C or a failed unit: cancel what has not started
            for f in futures:
                f.cancel()
            raise
    return [results[i] for i in range(len(units))]


# --------------------------------------------------------------------------- ray
def ray_init(executor: ExecutorConfig) -> Any:
    """Ray, connected: to ``executor.address``, or a local Ray bound to 127.0.0.1."""
    # read when Ray is imported: a local Ray listens on 127.0.0.1 only, and writes no
    # auth token file into the user's home
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
    except ImportError:
        raise ConfigError(f"executor.kind ray needs Ray: {RAY_HINT}") from None
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
        if executor.address:
            ray.init(address=executor.address, **kw)
        else:
            ray.init(num_cpus=executor.num_cpus, _node_ip_address="127.0.0.1", **kw)
    return ray


def _ray_unit(fn: Callable[[Any, Any], Any], shared: Any, unit: Any) -> Any:
    with _unit_threads(1):  # each task holds one CPU
        return fn(shared, unit)


def _run_ray(fn: Callable[[Any, U], R], units: list[U], executor: ExecutorConfig,
             shared: Any, progress: Progress | None) -> list[R]:
    ray = ray_init(executor)
    task = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(_ray_unit)
    ref = ray.put(shared)  # once into the object store; numpy arrays are read zero-copy
    refs = [task.remote(fn, ref, u) for u in units]
    index = {r: i for i, r in enumerate(refs)}
    results: dict[int, R] = {}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                results[index[r]] = ray.get(r)
                if progress is not None:
                    progress(len(results), len(units))
    except BaseException:
        for r in pending:
            ray.cancel(r, force=True)
        raise
    return [results[i] for i in range(len(units))]
