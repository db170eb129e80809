"""Risk guards: the ONE implementation the backtest kernel and the live runner both call.

The checks are numba functions over a small float state vector (`GS_*` slots) and a per-symbol
order counter, so the compiled backtest loop calls them per bar at full speed and the live
runner calls the very same functions from Python through `RiskGate`. Backtest and live
cannot drift apart on what a guard does.

A session is a calendar day of the bar timestamps (in the index's time zone). Guards:
- daily loss limit: when equity at a close is `daily_loss_limit` below the session's start
  equity, every position is flattened at the next fill and orders that add exposure are
  blocked until the next session (with daily bars: the next bar);
- kill switch: when equity at a close is `kill_switch_drawdown` below its running peak (or
  when the live operator trips it), flatten everything and block new exposure for good;
- max trades per day: fills that add exposure beyond this many per session are blocked;
- max orders per symbol per day: strategy orders beyond this many per symbol and session
  are rejected when they are created;
- price sanity: an order whose fill price is more than `price_sanity` away from the last
  known close is rejected (a bad tick or a fat finger, not a market move to trade on);
- max position: the value of one position is capped at `max_position` x equity (resized);
- time stop: a position is closed `time_stop` bars after its entry fill.
Orders that reduce exposure are never blocked by the daily-loss, kill or trade-count guards:
a guard may stop you adding risk, never stop you cutting it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from mltrader.errors import MltraderError

# guard parameters (a float vector; 0 switches a guard off)
(GP_DAILY_LOSS, GP_KILL_DD, GP_MAX_TRADES_DAY, GP_MAX_ORDERS_SYMBOL, GP_PRICE_SANITY,
 GP_MAX_POSITION, GP_TIME_STOP) = range(7)
N_GP = 7
# guard state (a float vector)
GS_DAY, GS_DAY_START_EQ, GS_PEAK, GS_HALTED, GS_KILLED, GS_TRADES = range(6)
N_GS = 6
# what acted (0: nothing)
(G_NONE, G_DAILY_LOSS, G_KILL, G_TRADES_DAY, G_ORDERS_SYMBOL, G_PRICE_SANITY,
 G_MAX_POSITION) = range(7)
GUARD_NAMES = {
    G_DAILY_LOSS: "daily loss limit", G_KILL: "kill switch",
    G_TRADES_DAY: "max trades per day", G_ORDERS_SYMBOL: "max orders per symbol per day",
    G_PRICE_SANITY: "price sanity check", G_MAX_POSITION: "max position size",
}


@dataclass(frozen=True)
class Guards:
    """Guard settings; None switches a guard off. Fractions are plain (0.03 = 3%)."""

    daily_loss_limit: float | None = None
    kill_switch_drawdown: float | None = None
    max_trades_per_day: int | None = None
    max_orders_per_symbol_per_day: int | None = None
    price_sanity: float | None = None
    max_position: float | None = None
    time_stop: int | None = None

    def __post_init__(self) -> None:
        for name in ("daily_loss_limit", "kill_switch_drawdown"):
            v = getattr(self, name)
            if v is not None and not 0 < v < 1:
                raise MltraderError(f"risk: {name} must be a fraction in (0, 1), e.g. 0.03")
        for name in ("max_trades_per_day", "max_orders_per_symbol_per_day", "time_stop"):
            v = getattr(self, name)
            if v is not None and (int(v) != v or v < 1):
                raise MltraderError(f"risk: {name} must be a whole number >= 1")
        if self.price_sanity is not None and not self.price_sanity > 0:
            raise MltraderError("risk: price_sanity must be > 0, e.g. 0.2 (20% from last close)")
        if self.max_position is not None and not self.max_position > 0:
            raise MltraderError("risk: max_position must be > 0, e.g. 0.1 (10% of equity)")

    @property
    def active(self) -> bool:
        return any(v is not None for v in self.__dict__.values())

    def vector(self) -> np.ndarray:
        """The parameters as the float vector the compiled functions read."""
        gp = np.zeros(N_GP)
        gp[GP_DAILY_LOSS] = self.daily_loss_limit or 0.0
        gp[GP_KILL_DD] = self.kill_switch_drawdown or 0.0
        gp[GP_MAX_TRADES_DAY] = self.max_trades_per_day or 0
        gp[GP_MAX_ORDERS_SYMBOL] = self.max_orders_per_symbol_per_day or 0
        gp[GP_PRICE_SANITY] = self.price_sanity or 0.0
        gp[GP_MAX_POSITION] = self.max_position or 0.0
        gp[GP_TIME_STOP] = self.time_stop or 0
        return gp


@njit(cache=True)
def new_state(initial_equity: float, n_symbols: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh guard state and per-symbol order counters."""
    gs = np.zeros(N_GS)
    gs[GS_DAY] = -1.0
    gs[GS_DAY_START_EQ] = initial_equity
    gs[GS_PEAK] = initial_equity
    return gs, np.zeros(n_symbols, dtype=np.int64)


@njit(cache=True)
def start_bar(gs: np.ndarray, sym_orders: np.ndarray, day: int, equity: float) -> None:
    """Call before a bar's fills: a new session resets the day's counters and halt."""
    if gs[GS_DAY] != day:
        gs[GS_DAY] = day
        gs[GS_DAY_START_EQ] = equity
        gs[GS_HALTED] = 0.0
        gs[GS_TRADES] = 0.0
        sym_orders[:] = 0


@njit(cache=True)
def gate_order(gs: np.ndarray, gp: np.ndarray, sym_orders: np.ndarray, i: int,
               adds: bool) -> int:
    """Check a strategy order as it is created; counts it when allowed. Returns a G_ code."""
    if adds and gs[GS_KILLED] != 0.0:
        return G_KILL
    if adds and gs[GS_HALTED] != 0.0:
        return G_DAILY_LOSS
    if gp[GP_MAX_ORDERS_SYMBOL] > 0 and sym_orders[i] >= gp[GP_MAX_ORDERS_SYMBOL]:
        return G_ORDERS_SYMBOL
    sym_orders[i] += 1
    return G_NONE


@njit(cache=True)
def gate_fill(gs: np.ndarray, gp: np.ndarray, adds: bool, price: float,
              last_close: float) -> int:
    """Check an order about to fill at `price`. Returns a G_ code (G_NONE: let it fill)."""
    lim = gp[GP_PRICE_SANITY]
    if lim > 0 and last_close == last_close and last_close > 0:
        if abs(price / last_close - 1.0) > lim:
            return G_PRICE_SANITY
    if adds:
        if gs[GS_KILLED] != 0.0:
            return G_KILL
        if gs[GS_HALTED] != 0.0:
            return G_DAILY_LOSS
        if gp[GP_MAX_TRADES_DAY] > 0 and gs[GS_TRADES] >= gp[GP_MAX_TRADES_DAY]:
            return G_TRADES_DAY
    return G_NONE


@njit(cache=True)
def position_room(gp: np.ndarray, shares: float, mark: float, equity: float) -> float:
    """How many more shares (in absolute size) `max_position` allows; inf when off."""
    cap = gp[GP_MAX_POSITION]
    if cap <= 0 or not mark > 0:
        return np.inf
    return max(cap * equity / mark - abs(shares), 0.0)


@njit(cache=True)
def record_fill(gs: np.ndarray) -> None:
    """Count one executed order towards the session's trades."""
    gs[GS_TRADES] += 1.0


@njit(cache=True)
def on_close(gs: np.ndarray, gp: np.ndarray, equity: float) -> int:
    """Call with the equity at each close; returns the guard that trips now (or G_NONE)."""
    if equity > gs[GS_PEAK]:
        gs[GS_PEAK] = equity
    kill = gp[GP_KILL_DD]
    if kill > 0 and gs[GS_KILLED] == 0.0 and equity <= gs[GS_PEAK] * (1.0 - kill):
        gs[GS_KILLED] = 1.0
        return G_KILL
    if (gp[GP_DAILY_LOSS] > 0 and gs[GS_HALTED] == 0.0 and gs[GS_KILLED] == 0.0
            and equity <= gs[GS_DAY_START_EQ] * (1.0 - gp[GP_DAILY_LOSS])):
        gs[GS_HALTED] = 1.0
        return G_DAILY_LOSS
    return G_NONE


@njit(cache=True)
def flatten_reason(gs: np.ndarray) -> int:
    """G_KILL or G_DAILY_LOSS while positions must be flattened, else G_NONE."""
    if gs[GS_KILLED] != 0.0:
        return G_KILL
    if gs[GS_HALTED] != 0.0:
        return G_DAILY_LOSS
    return G_NONE


@njit(cache=True)
def time_stop_due(gp: np.ndarray, entry_bar: int, t: int) -> bool:
    """True when a position entered on `entry_bar` must be closed at bar t's fill."""
    return gp[GP_TIME_STOP] > 0 and entry_bar >= 0 and t - entry_bar >= gp[GP_TIME_STOP]


class RiskGate:
    """The guards with their state, for a caller that steps bar by bar (the live runner)."""

    def __init__(self, guards: Guards, initial_equity: float, symbols: list[str]) -> None:
        self.guards = guards
        self.symbols = list(symbols)
        self._gp = guards.vector()
        self._gs, self._orders = new_state(initial_equity, len(self.symbols))

    def _i(self, symbol: str) -> int:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise MltraderError(f"risk gate: unknown symbol {symbol!r}; "
                                f"known: {', '.join(self.symbols)}") from None

    def start_bar(self, day: int, equity: float) -> None:
        start_bar(self._gs, self._orders, int(day), float(equity))

    def check_order(self, symbol: str, adds: bool) -> str | None:
        """None if the order may be sent, else the name of the guard that blocks it."""
        return GUARD_NAMES.get(gate_order(self._gs, self._gp, self._orders, self._i(symbol),
                                          bool(adds)))

    def check_fill(self, adds: bool, price: float, last_close: float) -> str | None:
        return GUARD_NAMES.get(gate_fill(self._gs, self._gp, bool(adds), float(price),
                                         float(last_close)))

    def room(self, shares: float, mark: float, equity: float) -> float:
        return float(position_room(self._gp, float(shares), float(mark), float(equity)))

    def filled(self) -> None:
        record_fill(self._gs)

    def close(self, equity: float) -> str | None:
        """Feed the equity at a close; the name of a guard that trips now, else None."""
        return GUARD_NAMES.get(on_close(self._gs, self._gp, float(equity)))

    def must_flatten(self) -> str | None:
        return GUARD_NAMES.get(flatten_reason(self._gs))

    def time_stop_due(self, entry_bar: int, bar: int) -> bool:
        return bool(time_stop_due(self._gp, int(entry_bar), int(bar)))

    def state(self) -> tuple[list[float], list[int]]:
        """The guard state and per-symbol order counters (for the runner's restart)."""
        return [float(v) for v in self._gs], [int(v) for v in self._orders]

    def restore(self, gs: np.ndarray, orders: np.ndarray) -> None:
        """Put back a state saved by `state()` (same guards, same symbols)."""
        if len(gs) != N_GS or len(orders) != len(self.symbols):
            raise MltraderError("risk gate: the saved state does not fit these guards and "
                                "symbols; start a new run instead of resuming this one")
        self._gs[:] = gs
        self._orders[:] = orders

    def kill(self) -> None:
        """The operator's kill switch: flatten and stop adding exposure for good."""
        self._gs[GS_KILLED] = 1.0
