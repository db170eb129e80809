"""What a fill does to the book: its legs, cost, cash flow, shares and valuation.

One set of rules for the backtest kernel (`backtest/kernel.py`: order fills and exits) and the
RL environment's step (`rl/execution.py`), so the two cannot drift apart. A fill of `delta`
shares that flips the position's sign (long to short or back) is booked as two legs, a close
of the old position and an open of the new one; the order's commission is charged once on the
whole quantity and shared by the legs in proportion to their shares. Each leg moves cash by
``-q * fill_price - commission``, the book's value at the fill bar's prices by that flow plus
``q * mark``, its gross exposure by the change in ``|shares| * mark``; a position within 1e-10
(relative) of zero becomes exactly zero.

Compiled with ``inline="always"`` like `core.fills` (see there: numba inlines them into the
callers' loops; a cross-module call per fill is much slower). An inlined function that takes
an array and uses it last inside a branch makes numba count references to it on every call:
in the RL step's fill loop that cost about 20 %, so only `split_fill` (once per fill, the
array used unconditionally) takes `fp`, and `book_leg` takes the fee. They return tuples
and write nothing, so each caller keeps its own state layout (the kernel's per-book arrays,
the environment's scalars) and its own records (fills, trades, cost sums).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mltrader.core.fills import commission


@njit(cache=True, error_model="numpy", inline="always")
def split_fill(s0: float, delta: float, fpx: float, fp: np.ndarray) -> tuple[int, float]:
    """How a fill of `delta` shares at `fpx` on a position of `s0` shares is booked:
    ``(legs, fee)``. 2 legs if it flips the position's sign (a close, then an open), else 1;
    `fee` is the order's commission (`fp`: `params.pack`'s float vector), which the legs
    share in proportion to their shares."""
    legs = 1
    if s0 != 0.0 and (s0 + delta) != 0.0 and ((s0 + delta) > 0) != (s0 > 0):
        legs = 2
    return legs, commission(delta, abs(delta) * fpx, fp)


@njit(cache=True, error_model="numpy", inline="always")
def book_leg(leg: int, legs: int, s0: float, delta: float, s: float, fpx: float, mark: float,
             fee: float) -> tuple[float, float, float, float, float, float, float]:
    """Book leg `leg` (0-based) of a fill of `delta` shares at `fpx`, split by `split_fill`
    into `legs` legs and charged `fee`, on a position that held `s0` shares before the fill
    and holds `s` now.

    `mark` is the symbol's price in the book's valuation at the fill bar. Returns ``(q,
    shares_after, value, commission, flow, d_value, d_gross)``: the leg's signed shares, the
    position after it, its traded value, its share of the fee, the cash flow (add it to
    cash), and the changes of the book's value and gross exposure at the fill bar's prices.
    Takes no arrays: inlined in a loop, it adds no reference counting there."""
    if legs == 1:
        q = delta
        comm = fee
    else:
        q = -s0 if leg == 0 else delta + s0  # close the old position, then open the new one
        comm = fee * abs(q) / abs(delta)
    value = abs(q) * fpx
    flow = -q * fpx - comm
    d_value = flow + q * mark
    d_gross = (abs(s + q) - abs(s)) * mark
    after = s + q
    if abs(after) < 1e-10 * max(1.0, abs(q)):
        after = 0.0
    return q, after, value, comm, flow, d_value, d_gross
