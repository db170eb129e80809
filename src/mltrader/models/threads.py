"""How many threads one unit of work may use: the thread budget.

`thread_budget()` is the number every model that runs threads reads when it is built or fit
(LightGBM's ``n_jobs``, a random forest's ``n_jobs``, torch's thread count): the
``MLTRADER_THREADS`` environment variable if it is set, else the cores this process may run
on (its CPU affinity, so ``taskset -c 0 mltrader ...`` gives 1).

`limit_threads(n)` is for executors that run several units at once: each worker calls
``limit_threads(cores // workers)`` so that the threads of all units together never exceed
the cores given. Inside the block `thread_budget()` returns ``n``, and the BLAS/OpenMP pools
already loaded (threadpoolctl) and torch's intra-op pool (only if torch is already imported)
are limited to ``n``; everything is restored afterwards. Blocks nest.

The budget lives in a context variable, so two threads of one process may hold different
budgets; the BLAS/OpenMP and torch limits are process-wide, as those libraries' are.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

from mltrader.errors import ConfigError

ENV_VAR = "MLTRADER_THREADS"

# Before LightGBM (or torch) loads its OpenMP runtime, which reads this once: idle OpenMP
# threads sleep instead of spinning. Spinning made two default backtests side by side on 2
# cores 6.7x slower than one (four spinning threads on two cores); one alone under other
# load took 361 s with n_jobs=2 spinning against 57 s passive (bench/RESULTS.md, "Threads").
# An explicit OMP_WAIT_POLICY in the environment wins. models.registry imports this module
# and imports lightgbm only when a LightGBM model is built, so LightGBM's libgomp (the
# system one) always starts passive; the torch models set the same default themselves.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_limit: ContextVar[int | None] = ContextVar("mltrader_thread_limit", default=None)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS / Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _from_env() -> int | None:
    raw = os.environ.get(ENV_VAR)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{ENV_VAR}={raw!r} is not a whole number >= 1; set it to the "
                          f"threads one run may use (e.g. {ENV_VAR}=1) or unset it")
    return value


def thread_budget() -> int:
    """Threads one unit of work may use: the innermost `limit_threads` block's n, else
    ``MLTRADER_THREADS``, else the cores this process may run on."""
    limit = _limit.get()
    if limit is not None:
        return limit
    env = _from_env()
    return env if env is not None else available_cores()


@contextmanager
def limit_threads(n: int) -> Iterator[int]:
    """For the block: `thread_budget()` returns `n`, and BLAS/OpenMP pools (threadpoolctl) and
    torch (if already imported) use at most `n` threads. Restored on exit; yields `n`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"limit_threads: n must be an int >= 1, got {n!r}")
    token = _limit.set(n)
    try:
        with ExitStack() as stack:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # pragma: no cover - comes with scikit-learn
                pass
            else:
                stack.enter_context(threadpool_limits(limits=n))
            torch = sys.modules.get("torch")  # never import torch just for this
            if torch is not None and hasattr(torch, "set_num_threads"):
                prev = torch.get_num_threads()
                torch.set_num_threads(n)
                stack.callback(torch.set_num_threads, prev)
            yield n
    finally:
        _limit.reset(token)
