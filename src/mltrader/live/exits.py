"""Protective exits of live positions, with the backtest kernel's levels (`risk.exits`).

The kernel checks stop-loss, trailing stop and take-profit inside bar t+1 for a position
entered before t+1: the stop at entry_fill x (1 - stop_loss), the trailing stop at the best
price since entry x (1 - trailing_stop) (the higher of the two wins), the target at
entry_fill x (1 + take_profit); mirrored for shorts. Live, the runner turns those levels into
one protective order per position after each close (a stop order carrying the take-profit,
one-cancels-other; a take-profit alone is a limit order), and the broker executes it during
the next bar, as the kernel would. `ExitBook` keeps the entry price, entry time and best
price per symbol from the fills, and says which order each position needs now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from mltrader.risk.exits import exit_levels


@dataclass(frozen=True)
class ExitPlan:
    """The protective order a position needs: `stop` (may be None) and `take_profit`."""

    symbol: str
    qty: float  # signed position it protects
    stop: float | None
    take_profit: float | None

    @property
    def side(self) -> str:
        return "sell" if self.qty > 0 else "buy"


@dataclass
class _Entry:
    time: pd.Timestamp
    price: float
    best: float
    qty: float


class ExitBook:
    """Entry prices and best prices per symbol, updated from fills and closes."""

    def __init__(self, stop_loss: float | None, take_profit: float | None,
                 trailing_stop: float | None) -> None:
        self.sl = stop_loss or 0.0
        self.tp = take_profit or 0.0
        self.ts = trailing_stop or 0.0
        self._e: dict[str, _Entry] = {}

    @property
    def active(self) -> bool:
        return self.sl > 0 or self.tp > 0 or self.ts > 0

    def on_fill(self, symbol: str, signed_qty: float, price: float, time: pd.Timestamp,
                held_before: float) -> None:
        """A fill of `signed_qty` when `held_before` was held: opening (or flipping) sets the
        entry at this fill's price, as the kernel's e_px; closing clears it."""
        new = held_before + signed_qty
        if abs(new) < 1e-10 * max(1.0, abs(signed_qty)):
            self._e.pop(symbol, None)
            return
        if held_before == 0.0 or (held_before > 0) != (new > 0) or symbol not in self._e:
            self._e[symbol] = _Entry(pd.Timestamp(time), float(price), float(price), new)
        else:
            self._e[symbol].qty = new

    def on_close(self, symbol: str, time: pd.Timestamp, high: float, low: float) -> None:
        """Best price since entry, from the bars after the entry bar (kernel: e_bar < t)."""
        e = self._e.get(symbol)
        if e is None or not time > e.time or not (math.isfinite(high) and math.isfinite(low)):
            return
        e.best = max(e.best, high) if e.qty > 0 else min(e.best, low)

    def entry_time(self, symbol: str) -> pd.Timestamp | None:
        e = self._e.get(symbol)
        return None if e is None else e.time

    def sync(self, held: dict[str, float]) -> None:
        """Drop entries of positions the broker no longer holds; keep quantities current."""
        for sym in list(self._e):
            q = held.get(sym, 0.0)
            if q == 0.0 or (q > 0) != (self._e[sym].qty > 0):
                self._e.pop(sym)
            else:
                self._e[sym].qty = q

    def plan(self, symbol: str) -> ExitPlan | None:
        """The protective order for a held symbol, or None (no exit rule or no entry)."""
        e = self._e.get(symbol)
        if e is None or not self.active:
            return None
        stop, _, tgt = exit_levels(e.qty > 0, e.price, e.best, self.sl, self.tp, self.ts)
        return ExitPlan(symbol, e.qty, stop if math.isfinite(stop) else None,
                        tgt if math.isfinite(tgt) else None)

    # --- persistence (the runner's state row) ----------------------------------------
    def state(self) -> dict[str, list[object]]:
        return {s: [e.time.isoformat(), e.price, e.best, e.qty] for s, e in self._e.items()}

    def restore(self, state: dict[str, list[object]]) -> None:
        self._e = {s: _Entry(pd.Timestamp(str(v[0])), float(v[1]), float(v[2]),  # type: ignore[arg-type]
                             float(v[3]))  # type: ignore[arg-type]
                   for s, v in state.items()}
