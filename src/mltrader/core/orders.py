"""Target weight -> share count: the one sizing rule the engine and the live runner share.

`target_shares` turns a weight of equity into shares at a price (a buy's weight also pays
its costs, so a 100% target never overdraws cash; within that cost margin the position is
held rather than churned); `order_delta` drops re-weighting trades inside the rebalance band
and dust; `leverage_room` and `cash_room` cut a buy to the limits. The backtest kernel calls
them all, at the fill price (`size_at="fill"`) or at the
decision close (`size_at="decision"`, what a live bot can do); `decision_orders` applies the
decision-close rule to a row of targets for the live runner, so a replay through the paper
broker trades the same shares as the backtest.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit


@njit(cache=True)
def target_shares(weight: float, equity: float, price: float, held: float,
                  buy_cost_bps: float, whole: bool) -> float:
    """Shares for `weight` of `equity` at `price` (truncated to whole shares when asked)."""
    desired = weight * equity / price
    if desired > held and desired > 0:  # buying to a weight: the weight pays the costs too
        desired = weight * equity / (price * (1.0 + buy_cost_bps * 1e-4))
        if desired < held:  # within the cost margin: hold, don't churn
            desired = held
    if whole:
        desired = np.trunc(desired)
    return desired


@njit(cache=True)
def order_delta(desired: float, held: float, price: float, equity: float, band: float
                ) -> float:
    """Shares to trade; 0 for a same-side re-weighting smaller than `band` x equity, or dust."""
    delta = desired - held
    if (band > 0 and held != 0 and desired != 0 and (held > 0) == (desired > 0)
            and abs(delta) * price < band * equity):
        return 0.0
    if abs(delta) * price < 1e-9 * abs(equity) + 1e-12:
        return 0.0
    return delta


@njit(cache=True)
def leverage_room(held: float, delta: float, mark: float, equity: float, gross: float,
                  leverage: float) -> float:
    """Largest |delta| the gross leverage limit allows (inf when it does not bind); `gross`
    is the book's gross exposure at `mark` prices, this position included."""
    room = leverage * equity - (gross - abs(held) * mark)
    if abs(held + delta) * mark > room:
        return max(room / mark - abs(held), 0.0)
    return np.inf


@njit(cache=True)
def cash_room(cash: float, fill_price: float, commission_bps: float, per_share: float,
              minimum: float, fixed: float) -> float:
    """Largest buy whose cost q x price + fixed + max(minimum, per_share x q) + bps of value
    fits in `cash` (a hair under it, so rounding never overdraws)."""
    a = fill_price * (1.0 + commission_bps * 1e-4)
    room_cash = cash - fixed
    afford = min(room_cash / (a + per_share), (room_cash - minimum) / a)
    return max(afford * (1.0 - 1e-12), 0.0)


def decision_orders(targets: Mapping[str, float], equity: float, closes: Mapping[str, float],
                    held: Mapping[str, float], buy_cost_bps: float, band: float,
                    whole: bool, unit: str = "weight") -> dict[str, float]:
    """Signed share deltas for one bar's targets (NaN = no decision), sized at the close."""
    out: dict[str, float] = {}
    for sym, w in targets.items():
        if w != w:  # NaN: keep what you hold
            continue
        h = float(held.get(sym, 0.0))
        px = float(closes[sym])
        if w == 0.0 and h == 0.0:
            continue
        if unit == "shares":
            desired = float(np.trunc(w)) if whole else float(w)
        else:
            desired = target_shares(float(w), float(equity), px, h, float(buy_cost_bps), whole)
        delta = order_delta(desired, h, px, float(equity), float(band))
        if delta != 0.0:
            out[sym] = float(delta)
    return out
