"""backtrader's commission schemes and broker for `--engine backtrader` (see bt_engine.py).

`GenericCommission` is our engine's scheme (max(minimum, per share) + bps + fixed),
`AshareCommission` adds the A-share minimum per order and the fill day's taxes; `_Broker`
is backtrader's BackBroker with what our fill rules need on top (slipped Close orders, exit
orders executed at their own price after the working orders, held back by T+1 or a
limit-down lock).
"""

from __future__ import annotations

import backtrader as bt
import numpy as np

from mltrader.backtest import kernel as K
from mltrader.core.market import MarketRules
from mltrader.core.settings import EngineSettings


# ----------------------------------------------------------------------------- commissions
class GenericCommission(bt.CommInfoBase):
    """Our generic scheme: max(min, per share x |q|) + bps of value + fixed, per order."""

    params = (("stocklike", True), ("commtype", bt.CommInfoBase.COMM_FIXED),
              ("percabs", True), ("bps", 0.0), ("per_share", 0.0), ("minimum", 0.0),
              ("fixed", 0.0))

    def _getcommission(self, size: float, price: float, pseudoexec: bool) -> float:
        per_share = max(abs(size) * self.p.per_share, self.p.minimum)
        return per_share + abs(size) * price * self.p.bps * 1e-4 + self.p.fixed


class AshareCommission(GenericCommission):
    """China A-shares: the generic scheme with max(bps of value, `min_order`) per order, plus
    the fill day's taxes (stamp duty on sells, transfer fee on both sides).

    `rates` is (T, 2) sell / buy tax bps per bar of `data` (backtrader charges on the fill
    bar, the feed's current one); a negative size is a sell. With the A-share defaults
    (no per-share or fixed part) an order pays max(bps x value, 5 CNY) + taxes.
    """

    params = (("min_order", 0.0), ("rates", None), ("data", None))

    def _getcommission(self, size: float, price: float, pseudoexec: bool) -> float:
        value = abs(size) * price
        per_share = max(abs(size) * self.p.per_share, self.p.minimum)
        on_value = max(value * self.p.bps * 1e-4, self.p.min_order)
        tax = self.p.rates[len(self.p.data) - 1, 0 if size < 0 else 1]
        return per_share + on_value + self.p.fixed + value * tax * 1e-4


def _ashare_scheme(rules: MarketRules) -> bool:
    return rules.min_commission > 0 or bool(rules.stamp_duty) or bool(rules.transfer_fee)


def buy_cost_bps(settings: EngineSettings) -> float:
    """The costs a buy's weight pays for (slippage + half-spread + commission bps), as ours."""
    return settings.slippage_bps + settings.half_spread_bps + settings.commission_bps


# ----------------------------------------------------------------------------- broker
class _Broker(bt.brokers.BackBroker):
    """backtrader's broker with what our rules need on top:

    - its percentage slippage on Close orders too (it applies it to market, limit and stop
      fills only; our engine slips every fill);
    - exit orders (their info carries ``exit_px``, see the module doc): tried after the
      working orders, they sell what is held then (void when nothing is), are held back by
      T+1 (bought this session) or a limit-down lock and counted, and a target executes at
      its price; one that does not fill on its bar is cancelled (counted in ``missed``);
    - payouts paid into cash at once (`add_cash` waits for the end of the bar).
    """

    def __init__(self) -> None:
        super().__init__()
        self.t1 = False
        self.session = -1  # the bar's session, set by the strategy at each open
        self.bought: dict[object, int] = {}  # data -> session of its last buy
        self.held = np.zeros(2, dtype=np.int64)  # exits held back (kernel's X_T1, X_LIMIT_DOWN)
        self.missed = 0

    def pay(self, cash: float) -> None:
        self.cash += cash

    def _try_exec_close(self, order: bt.Order, pclose: float) -> None:
        data = order.data
        if order.isbuy():
            p = self._slip_up(data.high[0], pclose, doslip=self.p.slip_open)
        else:
            p = self._slip_down(data.low[0], pclose, doslip=self.p.slip_open)
        super()._try_exec_close(order, p)

    def _execute(self, order: bt.Order, ago: int | None = None, price: float | None = None,
                 cash: float | None = None, position: object = None,
                 dtcoc: object = None) -> object:
        done = order.executed.size
        out = super()._execute(order, ago=ago, price=price, cash=cash, position=position,
                               dtcoc=dtcoc)
        if ago is not None and order.isbuy() and order.executed.size != done:
            self.bought[order.data] = self.session
        return out

    def _try_exec(self, order: bt.Order) -> None:
        info = order.info
        if "exit_px" not in info:
            super()._try_exec(order)
            return
        data = order.data
        held = self.positions[data].size
        if held <= 0:  # the working orders sold it: nothing to exit
            order.cancel()
            return
        if self.t1 and self.bought.get(data) == self.session:
            self.held[K.X_T1] += 1  # bought this session: it cannot go today
            order.cancel()
            return
        if info["hold_ld"]:
            self.held[K.X_LIMIT_DOWN] += 1  # locked at limit-down: no buyer
            order.cancel()
            return
        if held != -order.size:  # the working orders changed the position: sell all of it
            order.size = order.created.size = order.executed.remsize = -held
        if order.exectype == bt.Order.Stop:
            super()._try_exec(order)  # backtrader's stop rule: a gap fills at the open
        else:
            p = self._slip_down(data.low[0], info["exit_px"])
            self._execute(order, ago=0, price=p)
        if order.alive():  # valid for its bar only
            order.cancel()
            self.missed += 1


