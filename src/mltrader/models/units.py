"""Where independent units of work run: ``map_units(fn, shared, units)`` asks the current
unit map (a context variable), so walk-forward folds, tuning folds and grid cells do not
need to know whether they run in this process, on local workers or as Ray tasks.

The default map runs them here, one after another. `mltrader.parallel.session` installs a
map over local worker processes or Ray for the duration of a command; inside a unit (on a
worker) the default applies again, so units never nest across processes. ``fn(shared, unit)``
must be a module-level function (it is pickled) and ``shared`` is shipped once per map call,
not once per unit. Results come back in the order of ``units``; ``on_result(i, result)`` is
called in this process as each finishes (progress bars).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

U = TypeVar("U")
R = TypeVar("R")
OnResult = Callable[[int, Any], None]


class UnitMap(Protocol):
    """``[fn(shared, u) for u in units]``, run somewhere; results in the order of units."""

    def __call__(self, fn: Callable[[Any, Any], Any], shared: Any, units: Sequence[Any],
                 on_result: OnResult | None = None) -> list[Any]: ...


def serial_map(fn: Callable[[Any, U], R], shared: Any, units: Sequence[U],
               on_result: OnResult | None = None) -> list[R]:
    """The units in this process, in order."""
    out: list[R] = []
    for i, unit in enumerate(units):
        out.append(fn(shared, unit))
        if on_result is not None:
            on_result(i, out[-1])
    return out


_current: ContextVar[UnitMap] = ContextVar("mltrader_unit_map", default=serial_map)


def map_units(fn: Callable[[Any, U], R], shared: Any, units: Sequence[U],
              on_result: OnResult | None = None) -> list[R]:
    """``[fn(shared, u) for u in units]`` on the current unit map."""
    return _current.get()(fn, shared, list(units), on_result)


def unit_map(fn: Callable[[Any, U], R], shared: Any, units: Sequence[U],
             on_result: OnResult | None = None) -> list[R]:
    """The map inside a unit that runs on a worker: in that process, one after another (a
    distinct object from `serial_map`, so `in_session` knows a unit is running)."""
    return serial_map(fn, shared, units, on_result)


def in_session() -> bool:
    """Whether an executor session (or a unit of one) is open: a nested command (a seed's
    run) then uses it instead of opening its own."""
    return _current.get() is not serial_map


def current() -> UnitMap:
    """The current unit map."""
    return _current.get()


def parallel_active() -> bool:
    """Whether the current map runs units at the same time (on workers or Ray): a caller
    with several independent jobs (compare's models) then submits them together."""
    return bool(getattr(_current.get(), "parallel", False))


@contextmanager
def using(mapper: UnitMap) -> Iterator[None]:
    """Run the units of this block (this thread's context) on ``mapper``."""
    token = _current.set(mapper)
    try:
        yield
    finally:
        _current.reset(token)
