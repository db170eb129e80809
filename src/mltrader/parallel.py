"""Independent units of research work (walk-forward folds, compared models, grid cells,
tuning folds, seeds) run in this process, on local worker processes, or as Ray tasks.

`session(executor)` opens the executor for one command and installs it as the current unit
map (`models.units`), so every `map_units` inside the block runs there: the worker processes
(or the Ray connection) start once and serve every map of the command. Each map ships its
``shared`` data once: into Ray's object store (numpy arrays read zero-copy), or, for local
workers, into one temporary pickle that each worker loads once; never once per unit. Each
unit runs with its share of the cores as its thread budget (`models.threads`) and BLAS on
one thread, so results are byte-identical whichever executor runs them. Ctrl-C cancels what
has not started and stops the workers. Ray is imported only when asked for.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing as mp
import os
import pickle
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from mltrader.config import ExecutorConfig
from mltrader.errors import ConfigError
from mltrader.models.threads import limit_threads, thread_budget
from mltrader.models.units import OnResult, current, in_session, unit_map, using

U = TypeVar("U")
R = TypeVar("R")
Progress = Callable[[int, int], None]
RAY_HINT = "pip install 'mltrader[ray]'"


def run_units(fn: Callable[[Any, U], R], units: Sequence[U], executor: ExecutorConfig,
              shared: Any = None, progress: Progress | None = None) -> list[R]:
    """``[fn(shared, u) for u in units]``, run where ``executor`` says (one map, one
    session); ``progress(done, total)`` as each finishes."""
    units = list(units)
    if not units:
        return []
    done = itertools.count(1)

    def on_result(_i: int, _r: Any) -> None:
        if progress is not None:
            progress(next(done), len(units))

    with session(executor) as mapper:
        return mapper(fn, shared, units, on_result)


@contextlib.contextmanager
def session(executor: ExecutorConfig) -> Iterator[Any]:
    """The executor, open for this block and installed as the current unit map; inside an
    open session (or inside one of its units, on a worker) the one already open."""
    if in_session():
        yield current()
        return
    mapper = _open(executor)
    try:
        with using(mapper):
            yield mapper
    except BaseException:
        mapper.close(cancel=True)
        raise
    mapper.close()


def _open(executor: ExecutorConfig) -> Any:
    if executor.kind == "ray":
        return _RayMap(executor)
    if executor.workers <= 1:
        return _SerialMap()
    return _LocalMap(executor.workers)


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


def _collect(futures: dict[Any, int], wait_one: Callable[[list[Any]], tuple[list[Any], list[Any]]],
             get: Callable[[Any], Any], on_result: OnResult | None) -> list[Any]:
    """Results in unit order, reporting each as it finishes."""
    results: dict[int, Any] = {}
    pending = list(futures)
    while pending:
        done, pending = wait_one(pending)
        for f in done:
            i = futures[f]
            results[i] = get(f)
            if on_result is not None:
                on_result(i, results[i])
    return [results[i] for i in range(len(futures))]


# --------------------------------------------------------------------------- serial
class _SerialMap:
    """Units in this process, one after another, each under the whole thread budget."""

    parallel = False

    def __call__(self, fn: Callable[[Any, Any], Any], shared: Any, units: Sequence[Any],
                 on_result: OnResult | None = None) -> list[Any]:
        out = []
        for i, u in enumerate(units):
            with _unit_threads(thread_budget()):
                out.append(fn(shared, u))
            if on_result is not None:
                on_result(i, out[-1])
        return out

    def close(self, cancel: bool = False) -> None:
        pass


# --------------------------------------------------------------------------- local
_THREADS = 1
_LOADED: collections.OrderedDict[str, Any] = collections.OrderedDict()  # a worker's shared data
_KEEP = 4  # shared objects a worker keeps loaded (compare's models map concurrently)


def _init_worker(threads: int) -> None:
    global _THREADS
    _THREADS = threads


def _load_shared(path: str) -> Any:
    if path not in _LOADED:
        with open(path, "rb") as f:
            _LOADED[path] = pickle.load(f)
        while len(_LOADED) > _KEEP:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(path)
    return _LOADED[path]


def _local_unit(fn: Callable[[Any, Any], Any], path: str, unit: Any) -> Any:
    with using(unit_map), _unit_threads(_THREADS):
        return fn(_load_shared(path), unit)


class _LocalMap:
    """Units on `workers` spawned processes (spawn, not fork: a forked child inherits
    OpenMP / BLAS thread pools mid-state), each with cores // workers threads."""

    parallel = True

    def __init__(self, workers: int) -> None:
        threads = max(1, thread_budget() // workers)
        self._pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                         initializer=_init_worker, initargs=(threads,))
        self._dir = tempfile.mkdtemp(prefix="mltrader-units-")
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def __call__(self, fn: Callable[[Any, Any], Any], shared: Any, units: Sequence[Any],
                 on_result: OnResult | None = None) -> list[Any]:
        if not units:
            return []
        with self._lock:
            path = os.path.join(self._dir, f"{next(self._ids)}.pkl")
        with open(path, "wb") as f:
            pickle.dump(shared, f, protocol=pickle.HIGHEST_PROTOCOL)
        futures: dict[Future[Any], int] = {}
        try:
            for i, u in enumerate(units):
                futures[self._pool.submit(_local_unit, fn, path, u)] = i
            return _collect(futures, _wait_local, lambda f: f.result(), on_result)
        except BaseException:  # Ctrl-C or a failed unit: cancel what has not started
            for f in futures:
                f.cancel()
            raise
        finally:
            with contextlib.suppress(OSError):
                os.remove(path)

    def close(self, cancel: bool = False) -> None:
        if cancel:  # stop the units that are running too
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                with contextlib.suppress(Exception):
                    proc.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._dir, ignore_errors=True)


def _wait_local(pending: list[Any]) -> tuple[list[Any], list[Any]]:
    done, rest = wait(pending, return_when=FIRST_COMPLETED)
    return list(done), list(rest)


# --------------------------------------------------------------------------- ray
def ray_init(executor: ExecutorConfig) -> tuple[Any, bool]:
    """(Ray, connected: to ``executor.address``, or a local Ray bound to 127.0.0.1; whether
    this call connected it, and so should disconnect it)."""
    # read when Ray is imported: a local Ray listens on 127.0.0.1 only, and writes no
    # auth token file into the user's home
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
    except ImportError:
        raise ConfigError(f"executor.kind ray needs Ray: {RAY_HINT}") from None
    if ray.is_initialized():
        return ray, False
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                          "configure_logging": False}
    if executor.address:
        ray.init(address=executor.address, **kw)
    else:
        # "local": a new Ray of our own even when another runs here (`ray start`); without
        # it ray.init would join that one, and refuse num_cpus
        ray.init(address="local", num_cpus=executor.num_cpus, _node_ip_address="127.0.0.1",
                 **kw)
    return ray, True


def _ray_unit(fn: Callable[[Any, Any], Any], shared: Any, unit: Any) -> Any:
    with using(unit_map), _unit_threads(1):  # each task holds one CPU
        return fn(shared, unit)


class _RayMap:
    """Units as Ray tasks of one CPU each, retried when their worker dies."""

    parallel = True

    def __init__(self, executor: ExecutorConfig) -> None:
        self._ray, self._owns = ray_init(executor)
        self._task = self._ray.remote(num_cpus=1, max_retries=3,
                                      retry_exceptions=False)(_ray_unit)
        self._refs: set[Any] = set()

    def __call__(self, fn: Callable[[Any, Any], Any], shared: Any, units: Sequence[Any],
                 on_result: OnResult | None = None) -> list[Any]:
        if not units:
            return []
        ray = self._ray
        ref = ray.put(shared)  # once into the object store; numpy arrays are read zero-copy
        refs = {self._task.remote(fn, ref, u): i for i, u in enumerate(units)}
        self._refs.update(refs)
        try:
            return _collect(refs, lambda p: ray.wait(p, num_returns=1), ray.get, on_result)
        except BaseException:
            for r in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(r, force=True)
            raise
        finally:
            self._refs.difference_update(refs)

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for r in list(self._refs):
                with contextlib.suppress(Exception):
                    self._ray.cancel(r, force=True)
        if self._owns:
            self._ray.shutdown()
