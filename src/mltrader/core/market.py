"""A market's own trading rules, as settings and per-bar arrays the execution core reads.

`MarketRules` says what a market imposes beyond the generic engine: board lots (buys in
multiples of `lot_size`, an odd lot only sold whole), T+1 (shares bought in a session cannot
be sold in it), daily price limits (no buy fills at a limit-up price, no sell at limit-down),
a minimum commission per order, and taxes with their historical rates (stamp duty on sells,
a transfer fee on both sides). `US` imposes none of them; `CN_A` is China's A-share market.

`rule_arrays` turns the rules and an A-share panel into what the compiled code reads per bar:
the limit prices of each symbol and day (from the exchange's reference previous close), the
tax rates of each day, and the cash each share receives on an ex-rights day. The backtest
kernel, the RL environment and the paper broker all take these, so none re-implements them.

A-share price limits (SSE / SZSE rules): +-10% main board, +-5% for ST stocks, +-20% STAR and
ChiNext (ChiNext +-10% before the registration reform of 2020-08-24); new listings: on the
main board (and ChiNext before the reform) the first day is bounded by +44% / -36% of the
issue price, STAR and post-reform ChiNext (and the main board from 2023-04-10) trade
unlimited for their first five sessions. Limit prices round half up to the 0.01 CNY tick.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numba import njit

from mltrader.errors import ConfigError

if TYPE_CHECKING:
    from mltrader.data.ashare import AshareData

HALF_TICK = 0.005  # a price within half a tick of its limit is at the limit
CHINEXT_REFORM = dt.date(2020, 8, 24)
MAIN_BOARD_REFORM = dt.date(2023, 4, 10)
TICK = 0.01


@dataclass(frozen=True)
class MarketRules:
    """The rules of one market. Rates are bps of traded value, each from its start date."""

    name: str = "us"
    lot_size: int = 1
    t_plus_one: bool = False
    price_limits: bool = False
    min_commission: float = 0.0
    # (from date, sell bps, buy bps): stamp duty; the last entry on or before a day applies
    stamp_duty: tuple[tuple[dt.date, float, float], ...] = ()
    # (from date, bps on both sides): exchange transfer fee
    transfer_fee: tuple[tuple[dt.date, float], ...] = ()
    currency: str = "USD"
    calendar: str = "XNYS"
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.lot_size < 1:
            raise ConfigError("market: lot_size must be a whole number >= 1")
        if self.min_commission < 0:
            raise ConfigError("market: min_commission must be >= 0")

    @property
    def active(self) -> bool:
        """Whether any rule beyond the generic engine's applies."""
        return (self.lot_size > 1 or self.t_plus_one or self.price_limits
                or bool(self.stamp_duty) or bool(self.transfer_fee))

    def rates(self, day: dt.date) -> tuple[float, float]:
        """(sell bps, buy bps) of taxes on `day`: stamp duty plus the transfer fee."""
        sell = buy = 0.0
        for start, s, b in self.stamp_duty:
            if day >= start:
                sell, buy = s, b
        fee = 0.0
        for start, f in self.transfer_fee:
            if day >= start:
                fee = f
        return sell + fee, buy + fee


US = MarketRules()
CN_A = MarketRules(
    name="cn_a", lot_size=100, t_plus_one=True, price_limits=True, min_commission=5.0,
    # stamp duty: both sides 0.1% from 2008-04-24, sells only from 2008-09-19, halved to
    # 0.05% from 2023-08-28
    stamp_duty=((dt.date(2008, 4, 24), 10.0, 10.0), (dt.date(2008, 9, 19), 10.0, 0.0),
                (dt.date(2023, 8, 28), 5.0, 0.0)),
    # transfer fee: 0.002% of value on both exchanges from 2015-08-01, 0.001% from 2022-04-29
    transfer_fee=((dt.date(2015, 8, 1), 0.2), (dt.date(2022, 4, 29), 0.1)),
    currency="CNY", calendar="XSHG",
)
MARKETS: dict[str, MarketRules] = {"us": US, "cn_a": CN_A}


def market_rules(name: str) -> MarketRules:
    """The rules of a market by name (`market:` in a config)."""
    if name not in MARKETS:
        raise ConfigError(f"unknown market {name!r}; choose one of {', '.join(MARKETS)}")
    return MARKETS[name]


@dataclass(frozen=True, eq=False)
class RuleArrays:
    """What the compiled code reads per bar: (T, N) limit prices (NaN: no limit), (T,) tax
    rates in bps, (T, N) cash per share paid to holders at bar t (ex-rights days)."""

    limit_up: np.ndarray
    limit_down: np.ndarray
    sell_tax_bps: np.ndarray
    buy_tax_bps: np.ndarray
    payout: np.ndarray

    @classmethod
    def none(cls, n_bars: int = 1) -> RuleArrays:
        """No limits, no taxes, no payouts (what a market without such rules passes)."""
        z = np.zeros((1, 1))
        return cls(np.full((1, 1), np.nan), np.full((1, 1), np.nan), np.zeros(n_bars),
                   np.zeros(n_bars), z)


@njit(cache=True, inline="always")
def lot_round(delta: float, held: float, lot: float) -> float:
    """A share change cut to board lots: a buy to a multiple of `lot` (down), a sell to a
    multiple of `lot` unless it sells the whole position (an odd lot may only go whole)."""
    if lot <= 1.0 or delta == 0.0:
        return delta
    if delta > 0.0:
        return np.floor(delta / lot + 1e-9) * lot
    if held > 0.0 and held + delta <= 1e-9 * max(1.0, held):
        return -held  # selling out: the whole position, odd lot included
    return -np.floor(-delta / lot + 1e-9) * lot


@njit(cache=True, inline="always")
def at_limit_up(price: float, limit_up: float) -> bool:
    """A buy at `price` would fill at the day's limit-up (locked: no seller); False when
    the day has no limit (NaN)."""
    return price >= limit_up - HALF_TICK


@njit(cache=True, inline="always")
def at_limit_down(price: float, limit_down: float) -> bool:
    """A sell (or a stop) at `price` would fill at the day's limit-down (locked: no buyer)."""
    return price <= limit_down + HALF_TICK


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x / TICK + 0.5 + 1e-9) * TICK


def limit_pct(board: str, st: np.ndarray, days: pd.DatetimeIndex) -> np.ndarray:
    """The daily limit as a fraction of the reference close, per bar, for one symbol."""
    d = days.date if hasattr(days, "date") else days
    pct = np.full(len(days), 0.10)
    if board == "star":
        pct[:] = 0.20
    elif board == "chinext":
        pct[np.asarray([x >= CHINEXT_REFORM for x in d])] = 0.20
    elif board == "bse":
        pct[:] = 0.30
    if board in ("main", "chinext"):
        pct[st & (pct == 0.10)] = 0.05
    return pct


def price_limits(data: AshareData) -> tuple[np.ndarray, np.ndarray]:
    """(limit_up, limit_down) traded prices of each symbol and day; NaN where unlimited
    (a new listing's free sessions) or the symbol has no reference price."""
    days = data.bars.index.tz_convert(None).normalize()
    dates = days.date
    t_len, n = data.preclose.shape
    up = np.full((t_len, n), np.nan)
    dn = np.full((t_len, n), np.nan)
    for j, board in enumerate(data.boards):
        pc = data.preclose[:, j]
        pct = limit_pct(board, data.is_st[:, j], days)
        up[:, j] = _round_half_up(pc * (1.0 + pct))
        dn[:, j] = _round_half_up(pc * (1.0 - pct))
        first = int(data.listing[j])
        if not data.ipo_in_data[j] or not 0 <= first < t_len:
            continue
        listed = dates[first]
        free = (board == "star" or (board == "chinext" and listed >= CHINEXT_REFORM)
                or (board == "main" and listed >= MAIN_BOARD_REFORM))
        if free:  # the first five sessions trade without a limit
            rows = np.flatnonzero(~np.isnan(data.exec_bars.close[first:, j]))[:5] + first
            up[rows, j] = np.nan
            dn[rows, j] = np.nan
        else:  # day one: +44% / -36% of the issue price
            up[first, j] = _round_half_up(pc[first] * 1.44)
            dn[first, j] = _round_half_up(pc[first] * 0.64)
    return up, dn


def ex_rights_payout(data: AshareData) -> np.ndarray:
    """Cash per held share at each bar: the drop from the last traded close to the exchange's
    reference close on an ex-rights day (a cash dividend exactly; bonus shares and rights
    issues by their value), so holding through an ex-date neither gains nor loses value
    against the adjusted prices; 0 elsewhere."""
    close = data.exec_bars.frame("close").ffill().to_numpy()
    prev = np.vstack([np.full((1, close.shape[1]), np.nan), close[:-1]])
    pay = prev - data.preclose
    pay[~np.isfinite(pay) | (np.abs(pay) < 1e-6)] = 0.0
    pay[np.isnan(data.exec_bars.close)] = 0.0  # paid on the next traded day, not in a halt
    # a payout during a suspension lands on the first traded day, where preclose shows it
    return np.ascontiguousarray(pay)


def rule_arrays(rules: MarketRules, data: AshareData | None, index: pd.DatetimeIndex,
                n_symbols: int) -> RuleArrays:
    """The per-bar arrays for `rules` on a panel (`data` None: no limits, no payouts)."""
    dates = index.tz_convert(None).normalize().date if index.tz is not None else index.date
    rates = np.array([rules.rates(d) for d in dates]).reshape(len(dates), 2)
    base = RuleArrays.none(len(index))
    sell, buy = np.ascontiguousarray(rates[:, 0]), np.ascontiguousarray(rates[:, 1])
    if data is None or not rules.price_limits:
        return RuleArrays(base.limit_up, base.limit_down, sell, buy, base.payout)
    up, dn = price_limits(data)
    return RuleArrays(up, dn, sell, buy, ex_rights_payout(data))
