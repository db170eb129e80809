"""How an order fills on a bar and what it costs: the compiled rules of the execution core.

Prices: a market order takes its reference price (the open, or the close for close-only
data); a limit fills at the open when already better, else at the limit if the bar touches
it; a stop triggers at the open on a gap through it, else at the stop price, and a stop-limit
then fills only within its limit. Every fill pays slippage (bps of the price plus a share of
the bar's high-low range) and the half-spread; commission is per share with a minimum, bps of
value and a fixed amount per order. Parameters come in `params.pack`'s float vector.

Compiled with ``inline="always"``: numba inlines them into the backtest kernel's loop. Called
across modules without it, the kernel ran about 1.6x slower (1M bars, one book: 44 vs 28 ms;
bench/engine_vs_peers.py's (b) workload). Python callers (`costs.CostModel`) are unaffected.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mltrader.core.params import (
    FP_COMM_BPS,
    FP_COMM_FIXED,
    FP_COMM_MIN,
    FP_COMM_PS,
    FP_MIN_ORDER,
    FP_SLIP_BPS,
    FP_SLIP_RANGE,
    FP_SPREAD,
    LIMIT,
    MARKET,
    STOP,
)


@njit(cache=True, error_model="numpy", inline="always")
def commission(qty: float, value: float, fp: np.ndarray) -> float:
    per_share = abs(qty) * fp[FP_COMM_PS]
    if per_share < fp[FP_COMM_MIN]:
        per_share = fp[FP_COMM_MIN]
    on_value = value * fp[FP_COMM_BPS] * 1e-4
    if on_value < fp[FP_MIN_ORDER]:  # a market's minimum per order (A-shares: 5 CNY)
        on_value = fp[FP_MIN_ORDER]
    return per_share + on_value + fp[FP_COMM_FIXED]


@njit(cache=True, error_model="numpy", inline="always")
def slipped(price: float, side: float, hi: float, lo: float, fp: np.ndarray) -> float:
    """Fill price after slippage (bps + share of the bar's range) and the half-spread."""
    rng = hi - lo
    if not rng > 0.0:
        rng = 0.0
    adj = price * (fp[FP_SLIP_BPS] + fp[FP_SPREAD]) * 1e-4 + fp[FP_SLIP_RANGE] * rng
    return price + side * adj


@njit(cache=True, error_model="numpy", inline="always")
def limit_price(side: float, lim: float, o: float, h: float, lo: float) -> float:
    """A limit order's fill: the open if it is already better, else the limit if touched."""
    if side > 0:
        if o <= lim:
            return o
        if lo <= lim:
            return lim
    else:
        if o >= lim:
            return o
        if h >= lim:
            return lim
    return np.nan


@njit(cache=True, error_model="numpy", inline="always")
def order_price(typ: int, side: float, lim: float, stp: float, trig: np.ndarray, i: int,
                 o: float, h: float, lo: float) -> float:
    """Reference fill price of a working order on a bar (NaN if it does not fill)."""
    if typ == MARKET:
        return o
    if typ == LIMIT:
        return limit_price(side, lim, o, h, lo)
    if trig[i] == 1:  # an already triggered stop fills at the open; a stop-limit is a limit
        return o if typ == STOP else limit_price(side, lim, o, h, lo)
    # the stop triggers first: at the open on a gap through it, else at the stop price
    if side > 0:
        if o >= stp:
            px = o
        elif h >= stp:
            px = stp
        else:
            return np.nan
    else:
        if o <= stp:
            px = o
        elif lo <= stp:
            px = stp
        else:
            return np.nan
    trig[i] = 1
    if typ == STOP:
        return px
    # stop-limit: fill at the trigger price only if it is within the limit
    if (side > 0 and px <= lim) or (side < 0 and px >= lim):
        return px
    return np.nan
