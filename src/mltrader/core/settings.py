"""`EngineSettings`: every execution, cost, liquidity and exit rule of the execution core.

The backtest engine and the paper broker take the same object, so one config trades one way.

Money amounts are in the account currency; rates in bps are basis points (1e-4) of traded
value unless said otherwise; fractions are plain (0.03 = 3%).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mltrader.core.market import US, MarketRules
from mltrader.errors import MltraderError
from mltrader.risk.guards import Guards

Fill = Literal["next_open", "next_close"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]


@dataclass(frozen=True)
class EngineSettings:
    """How orders fill and what they cost. Defaults: frictionless market orders, long only.

    Timing: a decision on bar t's close becomes an order that can fill from bar t+1 on, at
    its open (`next_open`) or close (`next_close`, the only choice for close-only data).

    Orders (entries and target changes): `order_type` market, or limit / stop / stop-limit
    priced `limit_offset_bps` / `stop_offset_bps` away from the decision close (a buy limit
    below it, a buy stop above it; mirrored for sells); `tif` "day" cancels an unfilled
    order after its first bar, "gtc" keeps it working until filled or replaced.

    Exits on an open position, checked intrabar on high/low from the bar after entry:
    `stop_loss`, `take_profit`, `trailing_stop` as fractions of the entry (trailing: of the
    best price since entry). A gap through a level fills at the open; when the stop and the
    target both lie inside one bar the stop is assumed to fill first (pessimistic).

    Costs: commission = max(`commission_min`, `commission_per_share` x shares) +
    `commission_bps` of value + `commission_fixed` per order; slippage `slippage_bps` of the
    price plus `slippage_range_frac` of the bar's high-low range; `half_spread_bps` paid on
    every fill; `borrow_bps_per_year` on the value of short positions, charged per bar.

    Liquidity: at most `max_volume_share` of the bar's volume fills per bar; the remainder
    is `remainder` = "wait" (keeps working, filling partially on later bars) or "cancel".

    Portfolio: one cash account; gross exposure at most `max_gross_leverage` x equity; orders
    that would exceed it or overdraw cash are resized (`oversize` = "resize") or rejected
    ("reject"), with the reason recorded.

    Sizing for signal entries: floor?(`size_fraction` x cash / (price x (1 + `size_buffer`))).
    Target weights become shares at the fill price (`size_at="fill"`) or at the decision close
    (`"decision"`: what a live bot can do; the live runner uses the same rule, core/orders.py).

    Guards (`guards`, risk/guards.py): daily loss limit, kill switch, trade and order limits,
    price sanity, max position, time stop; the same compiled checks the live runner calls.

    Market (`market`, core/market.py): a market's own rules on top, e.g. China A-shares:
    board lots, T+1, price limits (with the per-bar arrays of `core.market.RuleArrays`), a
    minimum commission per order, stamp duty and transfer fee.
    """

    initial_cash: float = 100_000.0
    fill: Fill = "next_close"
    whole_shares: bool = False
    allow_short: bool = False
    # orders
    order_type: OrderType = "market"
    limit_offset_bps: float = 0.0
    stop_offset_bps: float = 0.0
    tif: Literal["day", "gtc"] = "day"
    # exits
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing_stop: float | None = None
    # costs
    commission_bps: float = 0.0
    commission_per_share: float = 0.0
    commission_min: float = 0.0
    commission_fixed: float = 0.0
    slippage_bps: float = 0.0
    slippage_range_frac: float = 0.0
    half_spread_bps: float = 0.0
    borrow_bps_per_year: float = 0.0
    periods_per_year: float = 252.0
    # liquidity and portfolio
    max_volume_share: float | None = None
    remainder: Literal["wait", "cancel"] = "cancel"
    max_gross_leverage: float = 1.0
    oversize: Literal["resize", "reject"] = "resize"
    # sizing
    size_fraction: float = 1.0
    size_buffer: float = 0.0
    rebalance_band: float = 0.0
    size_at: Literal["fill", "decision"] = "fill"
    guards: Guards = Guards()
    market: MarketRules = US

    def __post_init__(self) -> None:
        checks = [
            (self.initial_cash > 0, "initial_cash must be > 0"),
            (self.fill in ("next_open", "next_close"), "fill must be next_open or next_close"),
            (self.order_type in ("market", "limit", "stop", "stop_limit"),
             "order_type must be market, limit, stop or stop_limit"),
            (self.tif in ("day", "gtc"), "tif must be day or gtc"),
            (self.remainder in ("wait", "cancel"), "remainder must be wait or cancel"),
            (self.oversize in ("resize", "reject"), "oversize must be resize or reject"),
            (self.size_at in ("fill", "decision"), "size_at must be fill or decision"),
            (self.max_gross_leverage > 0, "max_gross_leverage must be > 0"),
            (0 < self.size_fraction <= self.max_gross_leverage,
             "size_fraction must be in (0, max_gross_leverage]"),
            (self.max_volume_share is None or 0 < self.max_volume_share <= 1,
             "max_volume_share must be in (0, 1]"),
        ]
        for name in ("stop_loss", "take_profit", "trailing_stop"):
            v = getattr(self, name)
            checks.append((v is None or 0 < v < 10, f"{name} must be a fraction > 0, e.g. 0.03"))
        for name in ("limit_offset_bps", "stop_offset_bps", "commission_bps",
                     "commission_per_share", "commission_min", "commission_fixed",
                     "slippage_bps", "slippage_range_frac", "half_spread_bps",
                     "borrow_bps_per_year", "size_buffer", "rebalance_band"):
            checks.append((getattr(self, name) >= 0, f"{name} must be >= 0"))
        if self.market.lot_size > 1 and not self.whole_shares:
            checks.append((False, f"market {self.market.name} trades board lots of "
                           f"{self.market.lot_size} shares; set whole_shares"))
        for ok, msg in checks:
            if not ok:
                raise MltraderError(f"engine settings: {msg}")
