"""The spec oracle: the canonical SMA-crossover strategy in plain Python, one symbol at a time.

Canonical strategy (every library in bench/ must reproduce it trade for trade):

- Long only. Signals from `mltrader.strategy.crossover.sma_cross_signals(close, 20, 100)`:
  cross-up at t = fast[t-1] < slow[t-1] and fast[t] > slow[t]; cross-down mirrored.
- Flat and cross-up on t's close -> buy at t+1's open. Long and cross-down on t's close ->
  sell everything at t+1's open; that exit wins over the stops on that bar.
- Size = floor(0.95 x cash / (open x 1.001)) whole shares, open = the fill bar's open.
- Commission 0.1 % of traded value on entry and on exit. No slippage.
- Stop at entry x 0.97, target at entry x 1.05 (entry = fill price), checked from the bar
  after entry on: stop first (open <= stop -> fill at open, else low <= stop -> fill at the
  stop), then target (open >= target -> fill at open, else high >= target -> at the target).
- After any exit the strategy is flat and waits for the next cross-up; a cross-up while long
  and a cross-down while flat are ignored.
- Final equity = cash + shares x last close (an open position is not sold at the end).

Nothing here is clever on purpose: it is the readable statement of the rules above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# The canonical parameters, shared by every adapter in bench/.
FAST = 20
SLOW = 100
INITIAL_CASH = 100_000.0
SIZE_FRACTION = 0.95
SIZE_BUFFER = 0.001
COMMISSION = 0.001
STOP_LOSS = 0.03
TAKE_PROFIT = 0.05


@dataclass(frozen=True)
class Trade:
    """One round trip. An open trade at the end has reason "open", exit_bar = last bar and
    exit_price = last close (marked, not sold)."""

    entry_bar: int
    exit_bar: int
    entry_price: float
    exit_price: float
    qty: int
    reason: str  # "signal" | "stop" | "target" | "open"


@dataclass
class RefResult:
    trades: list[Trade]
    final_equity: float
    equity: np.ndarray = field(repr=False)  # cash + shares x close, per bar
    cash: float = 0.0
    shares: int = 0


def run_reference(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                  entries: np.ndarray, exits: np.ndarray, *,
                  initial_cash: float = INITIAL_CASH, size_fraction: float = SIZE_FRACTION,
                  size_buffer: float = SIZE_BUFFER, commission: float = COMMISSION,
                  stop_loss: float = STOP_LOSS, take_profit: float = TAKE_PROFIT) -> RefResult:
    """Run the canonical strategy on one symbol's 1-D arrays (entries/exits: bool, decided on
    each bar's close)."""
    o = np.asarray(open_, dtype=np.float64).tolist()
    h = np.asarray(high, dtype=np.float64).tolist()
    lo = np.asarray(low, dtype=np.float64).tolist()
    c = np.asarray(close, dtype=np.float64).tolist()
    ent = np.asarray(entries, dtype=bool).tolist()
    ext = np.asarray(exits, dtype=bool).tolist()
    n = len(c)
    if not (len(o) == len(h) == len(lo) == len(ent) == len(ext) == n):
        raise ValueError("open, high, low, close, entries and exits must have the same length")

    cash = float(initial_cash)
    shares = 0
    entry_bar = -1
    entry_price = stop = target = 0.0
    pending = None  # None | "buy" | "sell": an order decided on the previous close
    trades: list[Trade] = []
    equity = np.empty(n)

    def sell(t: int, price: float, reason: str) -> None:
        nonlocal cash, shares, entry_bar
        value = shares * price
        cash += value - commission * value
        trades.append(Trade(entry_bar, t, entry_price, price, shares, reason))
        shares = 0
        entry_bar = -1

    for t in range(n):
        # 1) the bar opens: fill what the previous close decided, else watch the stops.
        if pending == "buy":
            px = o[t]
            qty = math.floor(size_fraction * cash / (px * (1.0 + size_buffer)))
            if qty > 0:
                value = qty * px
                cash -= value + commission * value
                shares = qty
                entry_bar = t
                entry_price = px
                stop = px * (1.0 - stop_loss)
                target = px * (1.0 + take_profit)
        elif pending == "sell":
            sell(t, o[t], "signal")  # the signal exit wins over the stops on this bar
        elif shares > 0 and t > entry_bar:
            if o[t] <= stop:
                sell(t, o[t], "stop")
            elif lo[t] <= stop:
                sell(t, stop, "stop")
            elif o[t] >= target:
                sell(t, o[t], "target")
            elif h[t] >= target:
                sell(t, target, "target")
        pending = None
        # 2) the bar closes: decide for the next open.
        if t + 1 < n:
            if shares == 0 and ent[t]:
                pending = "buy"
            elif shares > 0 and ext[t]:
                pending = "sell"
        equity[t] = cash + shares * c[t]

    if shares > 0:
        trades.append(Trade(entry_bar, n - 1, entry_price, c[-1], shares, "open"))
    return RefResult(trades=trades, final_equity=cash + shares * c[-1], equity=equity,
                     cash=cash, shares=shares)


def signals(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The canonical signals (mltrader's own function, the single definition)."""
    from mltrader.strategy.crossover import sma_cross_signals

    return sma_cross_signals(close, FAST, SLOW)


def run_reference_books(open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                        close: np.ndarray, **kw) -> list[RefResult]:
    """Independent books: one `run_reference` per column of (T, N) arrays."""
    close = np.asarray(close, dtype=np.float64).reshape(len(close), -1)
    shape = close.shape
    o, h, lo = (np.asarray(a, dtype=np.float64).reshape(shape) for a in (open_, high, low))
    ent, ext = signals(close)
    return [run_reference(o[:, j], h[:, j], lo[:, j], close[:, j], ent[:, j], ext[:, j], **kw)
            for j in range(shape[1])]


def synthetic_ohlc(n_bars: int, seed: int = 7) -> tuple[np.ndarray, ...]:
    """A synthetic OHLC series built to hit every branch of the spec often.

    Calm random-walk closes (positions often live until a cross-down), 3 % of opens gapping
    by ~4 % (gap stops and targets), 5 % wide bars (intrabar stops and targets), and the bar
    after every cross-down made 7 % wide on both sides, so that it reaches both the stop and
    the target of any position still open: there "the signal exit wins" alone decides the
    exit price (the open). Only opens, highs and lows are shaped, so the signals stay those
    of the closes. Returns (open, high, low, close), each (n_bars,).
    """
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.003, n_bars)))
    prev = np.concatenate([[100.0], close[:-1]])
    gap = np.where(rng.random(n_bars) < 0.03, rng.choice([-0.04, 0.04], n_bars), 0.0)
    opn = prev * np.exp(rng.normal(0.0, 0.002, n_bars) + gap)
    reach = np.where(rng.random(n_bars) < 0.05, 0.04, 0.002)
    _, exits = signals(close)
    after_exit = np.zeros(n_bars, dtype=bool)
    after_exit[1:] = exits[:-1]
    reach[after_exit] = 0.0
    extra = np.where(after_exit, 0.07, 0.0)
    up = np.abs(rng.normal(0.0, 1.0, n_bars)) * reach + extra
    down = np.abs(rng.normal(0.0, 1.0, n_bars)) * reach + extra
    high = np.maximum(opn, close) * np.exp(up)
    low = np.minimum(opn, close) * np.exp(-down)
    return opn, high, low, close
