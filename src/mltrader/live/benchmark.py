"""A live run's buy-and-hold comparison: what its starting equity would be worth had it been
spread equally over the universe at the first bar's closes and held (no costs, fractional
shares), so the dashboard can draw the strategy against doing nothing clever."""

from __future__ import annotations

import math
from collections.abc import Mapping


def buy_and_hold_shares(equity: float, closes: Mapping[str, float]) -> dict[str, float]:
    """Equal-weight shares of every symbol with a positive finite close; {} when none has
    one yet (the next bar tries again) or the equity is not positive."""
    priced = {s: c for s, c in closes.items() if math.isfinite(c) and c > 0}
    if not priced or not math.isfinite(equity) or equity <= 0:
        return {}
    each = equity / len(priced)
    return {s: each / c for s, c in priced.items()}


def marked_value(shares: Mapping[str, float], closes: Mapping[str, float]) -> float | None:
    """The basket at the latest known closes; None before it is bought."""
    if not shares:
        return None
    total = 0.0
    for sym, qty in shares.items():
        c = closes.get(sym, math.nan)
        if not math.isfinite(c):
            return None
        total += qty * c
    return total
