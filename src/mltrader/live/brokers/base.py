"""The broker interface every adapter implements (paper, Alpaca, Interactive Brokers).

Domain objects are frozen dataclasses; money in the account currency, quantities signed
where said (positions), unsigned with a side on orders. Every order carries a deterministic
client order id from (strategy, bar time, symbol, intent), so a restarted runner that
re-derives an order it already sent finds it at the broker instead of sending it twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import pandas as pd

from mltrader.errors import MltraderError

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["day", "gtc"]
OrderStatus = Literal["new", "accepted", "partially_filled", "filled", "cancelled",
                      "rejected", "expired", "replaced", "pending"]
FINAL_STATUSES: frozenset[str] = frozenset({"filled", "cancelled", "rejected", "expired",
                                            "replaced"})


class BrokerError(MltraderError):
    """A broker call failed for good (after bounded retries): one line with the fix."""


class OrderRejected(BrokerError):
    """The broker refused an order (buying power, shorting, bad price, ...)."""


class TransientBrokerError(BrokerError):
    """A failure worth retrying (timeout, 429, 5xx, dropped connection)."""


def client_order_id(strategy: str, bar_time: pd.Timestamp, symbol: str, intent: str) -> str:
    """Deterministic id: the same decision always maps to the same id (max 48 chars, the
    tightest broker limit), readable prefix + hash of the full key."""
    key = f"{strategy}|{pd.Timestamp(bar_time).isoformat()}|{symbol}|{intent}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    prefix = "".join(ch for ch in f"{strategy[:8]}-{symbol[:8]}" if ch.isalnum() or ch == "-")
    return f"mlt-{prefix}-{digest}"[:48]


# A take-profit alone rides on a stop that cannot trigger: 0 for a long's sell stop, this or
# more for a short's buy stop (the runner sends 1e12); brokers then send only the limit leg.
UNTRIGGERABLE_BUY_STOP = 1e11


def us_tick(price: float) -> float:
    """A US stock price on the minimum tick: $0.01, or $0.0001 below $1 (brokers refuse
    sub-penny prices); for the exit levels the runner computes."""
    if price >= 1:
        return round(round(price * 100) / 100, 2)
    return round(round(price * 10_000) / 10_000, 4)


def exit_kind(request: OrderRequest) -> Literal["plain", "bracket", "take_profit"]:
    """How a broker must send an order: plain, a protective stop + take-profit pair
    (one-cancels-other), or a take-profit alone (its stop cannot trigger)."""
    if request.type != "stop" or request.take_profit is None:
        return "plain"
    stop = request.stop_price
    if stop is None or (request.side == "sell" and stop <= 0) or (
            request.side == "buy" and stop >= UNTRIGGERABLE_BUY_STOP):
        return "take_profit"
    return "bracket"


@dataclass(frozen=True)
class Account:
    cash: float
    equity: float
    buying_power: float
    currency: str = "USD"


@dataclass(frozen=True)
class Position:
    symbol: str
    qty: float  # signed: > 0 long, < 0 short
    avg_price: float
    market_value: float | None = None


@dataclass(frozen=True)
class OrderRequest:
    """What the runner asks for. `qty` > 0; `side` gives the direction."""

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    type: OrderType = "market"
    time_in_force: TimeInForce = "day"
    limit_price: float | None = None
    stop_price: float | None = None
    # a protective exit: a stop order (sell below / buy above) that may also carry a
    # take-profit level, one-cancels-other (Alpaca's OCO, IB's OCA group); reduce-only
    take_profit: float | None = None

    def __post_init__(self) -> None:
        if not self.qty > 0:
            raise MltraderError(f"order {self.client_order_id}: qty must be > 0, got {self.qty}")
        if self.type in ("limit", "stop_limit") and self.limit_price is None:
            raise MltraderError(f"order {self.client_order_id}: a {self.type} order needs "
                                "limit_price")
        if self.type in ("stop", "stop_limit") and self.stop_price is None:
            raise MltraderError(f"order {self.client_order_id}: a {self.type} order needs "
                                "stop_price")
        if self.take_profit is not None and self.type != "stop":
            raise MltraderError(f"order {self.client_order_id}: take_profit rides on a stop "
                                "order (a protective exit); use type='stop'")


@dataclass(frozen=True)
class Order:
    """The broker's view of an order."""

    client_order_id: str
    broker_id: str
    symbol: str
    side: Side
    qty: float
    filled_qty: float
    status: str
    type: str = "market"
    avg_fill_price: float | None = None
    limit_price: float | None = None
    stop_price: float | None = None
    submitted_at: pd.Timestamp | None = None
    reason: str = ""  # why rejected / cancelled, when the broker says
    commission: float = 0.0  # cumulative commission of its fills, when the broker says

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES


def merge_exit_legs(cid: str, stop: Order, take: Order,
                    lead: Literal["stop", "take"] = "stop") -> Order:
    """A protective exit's two legs (stop, take-profit limit; an Alpaca OCO, an IB OCA group)
    as ONE domain order under `cid`: filled once the legs' fills reach the quantity, working
    while a leg works (the `lead` leg's status first), else how the legs ended; fills,
    commissions and the average price over both legs. `lead` is the leg the broker treats as
    the order (its id and submit time): Alpaca's OCO parent is the take-profit."""
    first, second = (stop, take) if lead == "stop" else (take, stop)
    qty = stop.qty or take.qty
    filled = stop.filled_qty + take.filled_qty
    working = [o for o in (first, second) if o.status not in FINAL_STATUSES]
    if qty and filled >= qty - 1e-9:
        status = "filled"
    elif working:
        status = "partially_filled" if filled > 0 else working[0].status
    elif filled > 0:  # one leg filled in part, then it ended (cancel, day end)
        ended = stop if stop.filled_qty > 0 else take
        status = ended.status if ended.status in ("cancelled", "expired") else "cancelled"
    else:
        ends = {stop.status, take.status}
        status = next((x for x in ("rejected", "expired") if x in ends), "cancelled")
    notional = stop.filled_qty * (stop.avg_fill_price or 0.0) + take.filled_qty * (
        take.avg_fill_price or 0.0)
    reason = ""
    if status in FINAL_STATUSES:
        reason = "; ".join(f"{'stop' if o is stop else 'take-profit'} leg: {o.reason}"
                           for o in (first, second) if o.reason)
    return Order(client_order_id=cid, broker_id=first.broker_id, symbol=stop.symbol,
                 side=stop.side, qty=qty, filled_qty=filled, status=status, type="stop",
                 avg_fill_price=round(notional / filled, 6) if filled > 0 else None,
                 limit_price=take.limit_price, stop_price=stop.stop_price,
                 submitted_at=first.submitted_at or second.submitted_at, reason=reason,
                 commission=stop.commission + take.commission)


@dataclass(frozen=True)
class Fill:
    """One execution (an order may fill in several)."""

    client_order_id: str
    broker_id: str
    fill_id: str  # unique per execution at the broker: the journal's dedup key
    symbol: str
    side: Side
    qty: float
    price: float
    commission: float
    time: pd.Timestamp


@dataclass(frozen=True)
class OrderUpdate:
    """An event from the broker about an order (new, fill, partial fill, cancel, reject)."""

    order: Order
    event: str
    fill: Fill | None = None
    time: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))


@runtime_checkable
class Broker(Protocol):
    """What the runner needs from a broker. Calls raise BrokerError subclasses, never a
    library's own exception type; retries of transient faults happen inside the adapter,
    bounded, and submit is idempotent by client_order_id (an id the broker already knows
    returns that order instead of sending a second one)."""

    name: str

    def account(self) -> Account: ...

    def positions(self) -> dict[str, Position]: ...

    def open_orders(self) -> list[Order]: ...

    def get_order(self, client_order_id: str) -> Order | None: ...

    def submit(self, request: OrderRequest) -> Order: ...

    def cancel(self, client_order_id: str) -> None: ...

    def replace(self, client_order_id: str, qty: float | None = None,
                limit_price: float | None = None, stop_price: float | None = None
                ) -> Order: ...

    def updates(self) -> Iterable[OrderUpdate]:
        """Order events since the last call (polling or a stream behind it)."""
        ...

    def close(self) -> None: ...
