"""`--engine backtrader`: the same targets traded by backtrader, to check our engine.

`run_backtrader` feeds a panel to a backtrader Cerebro (one PandasData feed per symbol) and
trades a row of targets per bar the way `run_backtest` does. Weights (`unit="weight"`) are
sized as with `size_at="decision"`: at bar t's close they become share deltas with the
shared rule (`core.orders.decision_orders`, then `core.market.lot_round` for board lots).
Share counts (`unit="shares"`, fixed-size rules) become whole shares (with `whole_shares`),
less what is held, then board lots, as our kernel's `unit_shares` orders; their rebalance
band is judged at the fill bar's price and the book's value there, as ours. Sells are
submitted before buys, and the orders fill at bar t+1's open (`fill="next_open"`: backtrader
Market orders, its default timing) or close (`"next_close"`: backtrader Close orders, "the
closing price of the next bar"). Commission, taxes and the cash check are backtrader's own
(`CommInfoBase` subclasses below; an order the cash cannot pay is rejected as Margin and
counted), so agreement with our kernel is a real cross-check, not the same code run twice.

Stops, targets and trailing stops (`stop_loss`, `take_profit`, `trailing_stop`) as our
kernel: the levels come from `risk.exits.exit_levels` on the entry fill price (times the
ex-rights factor after payouts; the trailing stop from the best high since entry), checked
on each bar after the entry bar. The strategy decides them in Cerebro's cheat-on-open hook,
which sees the new bar's open / high / low before the broker does, and hands backtrader one
sell for the whole position, submitted after the working orders so the broker tries it
after them (ours: orders fill first, reducing ones first, then exits, then marks):

- stop / trailing stop -> a backtrader Stop order at the level: backtrader's own rule, a gap
  through it fills at the open, else at the level, is ours; slipped like every fill;
- target -> a Market order that carries its price (our rule: the open when it gaps above
  the target, else the target): the broker subclass executes it at that price, slipped. A
  backtrader Limit order would fill at the target without slippage, ours slips it;
- both inside one bar: the stop, as ours. An exit sells what is held when the broker gets
  to it (the working orders may have changed it) and is void when nothing is; on A-shares
  it is held back (counted in `held_back`, as ours) when the stock was bought this session
  (T+1) or the exit price is at or below limit-down (the half-tick rule).

Suspended bars (NaN prices): feeds carry the last traded price so positions are marked at
it; an order whose fill bar has no price is cancelled before the broker sees that bar
(Cerebro's cheat-on-open hook runs first), like our day orders; so is a buy at the day's
limit-up price or a sell at limit-down, when the limit prices are given (`RuleArrays`, as
`run_backtest` takes them), and ex-rights payouts are paid into cash at the open, before
the orders, as ours. T+1 never binds on orders: a daily decision fills on the next session,
a sell of it a session later; it can hold back an exit (above).
The one difference by design: backtrader rejects an order it cannot pay, ours resizes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import backtrader as bt
import numpy as np
import pandas as pd

from mltrader.backtest import kernel as K
from mltrader.backtest.engine import FILL_REASONS, HELD_BACK
from mltrader.backtest.metrics import compute_metrics
from mltrader.backtest.result import TRADE_COLUMNS, BacktestResult
from mltrader.core.market import US, MarketRules, RuleArrays, lot_round, rule_arrays
from mltrader.core.orders import decision_orders, order_delta
from mltrader.core.sessions import session_days
from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.errors import MltraderError
from mltrader.risk.exits import exit_levels

__all__ = ["BLOCK_REASONS", "AshareCommission", "BtResult", "GenericCommission",
           "buy_cost_bps", "compare_engines", "run_backtrader"]

BLOCK_REASONS: tuple[str, ...] = ("cash", "no_price", "lot", "limit_up", "limit_down",
                                  "rejected")
_HALF_TICK = 0.005  # a price within half a tick of its limit is at it (as the kernel)
FILL_COLUMNS = ("date", "symbol", "qty", "price", "notional", "commission", "slippage",
                "reason")
COMPARE_ROWS = ("total return", "CAGR", "Sharpe", "max drawdown", "fills",
                "total commission", "final equity")


@dataclass(frozen=True)
class BtResult:
    """What a backtrader run produced, on `bars.index[start:]`.

    ``fills``: one row per execution (FILL_COLUMNS; ``qty`` signed, ``price`` after
    slippage, ``commission`` includes taxes, ``slippage`` the money it took, ``reason`` as
    ours: "order", "stop_loss", "take_profit", "trailing_stop");
    ``orders_blocked``: orders not traded by reason: "cash" (backtrader: Margin), "no_price"
    (the fill bar had no price, or no price yet to size with), "lot" (the board lot cut it
    to zero), "limit_up" / "limit_down" (a buy / sell at the day's price limit), "rejected"
    (other); ``payouts``: ex-rights cash received; ``held_back``: exits a market's rule held
    back, (name, count) as `BacktestResult.held_back`.
    """

    equity: pd.Series
    fills: pd.DataFrame
    orders_blocked: dict[str, int]
    cash: pd.Series
    positions: pd.DataFrame
    weights: pd.DataFrame
    initial_cash: float
    fill_timing: str = "next bar's open"
    payouts: float = 0.0
    held_back: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    def as_backtest_result(self) -> BacktestResult:
        """The run as a `BacktestResult` (no round-trip trades), for metrics and reports."""
        trades = pd.DataFrame({c: [] for c in TRADE_COLUMNS})
        return BacktestResult(equity=self.equity, cash=self.cash, positions=self.positions,
                              weights=self.weights, fills=self.fills, trades=trades,
                              initial_cash=self.initial_cash, fill_timing=self.fill_timing,
                              held_back=self.held_back, payouts=self.payouts)


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


# ----------------------------------------------------------------------------- strategy
@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything the strategy reads, as (T, N) arrays on the traded bars."""

    targets: np.ndarray
    closes: np.ndarray  # last traded close (NaN before a symbol's first price)
    ref: np.ndarray  # raw fill price of each bar (NaN: no fill possible)
    symbols: tuple[str, ...]
    buy_bps: float
    band: float
    whole: bool
    lot: float
    exectype: int
    unit_shares: bool = False
    limit_up: np.ndarray | None = None  # (T, N) limit prices, NaN: no limit
    limit_down: np.ndarray | None = None
    payout: np.ndarray | None = None  # (T, N) cash per held share (ex-rights days)
    # exits: stop / target / trailing fractions (0: off) and the raw bars they are judged on
    sl: float = 0.0
    tp: float = 0.0
    ts: float = 0.0
    ohlc: tuple[np.ndarray, ...] = ()
    day: np.ndarray | None = None  # each bar's session (T+1)

    @property
    def exits(self) -> bool:
        return self.sl > 0 or self.tp > 0 or self.ts > 0


class _TargetWeights(bt.Strategy):
    """Trades to a row of targets per bar (weights sized at the decision close, or share
    counts), with our stops and targets."""

    params = (("plan", None),)

    def __init__(self) -> None:
        self.plan: _Plan = self.p.plan
        self.bar = -1
        self.working: dict[int, tuple[bt.Order, float, float]] = {}
        self.blocked = dict.fromkeys(BLOCK_REASONS, 0)
        self.fill_rows: list[tuple] = []
        self.paid_out = 0.0
        n_bars, n = self.plan.targets.shape
        self.rec_equity = np.full(n_bars, np.nan)
        self.rec_cash = np.full(n_bars, np.nan)
        self.rec_positions = np.zeros((n_bars, n))
        self.rec_weights = np.zeros((n_bars, n))
        self.index_of = {d: i for i, d in enumerate(self.datas)}
        # each position as our kernel keeps it: shares, entry bar and fill price, ex-rights
        # factor since entry, best high since entry
        self.sh = np.zeros(n)
        self.e_bar = np.full(n, -1, dtype=np.int64)
        self.e_px = np.zeros(n)
        self.xr = np.ones(n)
        self.best = np.zeros(n)

    def next_open(self) -> None:
        """Bar t+1 opened, the broker has not tried the orders yet: payouts of the day, then
        the orders its prices rule out (suspended; a buy at limit-up, a sell at limit-down;
        a share order inside the rebalance band), then the exits the bar triggers."""
        t = self.bar = len(self.datas[0]) - 1
        p = self.plan
        if p.day is not None:
            self.broker.session = int(p.day[t])
        if p.payout is not None and t > 0:
            cash_in = 0.0
            for i, d in enumerate(self.datas):
                held = self.getposition(d).size
                if held != 0.0 and p.payout[t, i] != 0.0:
                    cash_in += held * p.payout[t, i]
                    last = p.closes[t - 1, i]
                    if last > 0.0:  # stops and targets move with the ex-rights price
                        ratio = 1.0 - p.payout[t, i] / last
                        self.xr[i] *= ratio
                        self.best[i] *= ratio
            if cash_in:
                self.broker.pay(cash_in)
                self.paid_out += cash_in
        after = {i: self.getposition(d).size for i, d in enumerate(self.datas)}
        value = None
        for i, (order, delta, desired) in self.working.items():
            px = p.ref[t, i]
            why = ""
            if not px == px:
                why = "no_price"  # suspended: the order placed at the close cannot fill
            elif p.limit_up is not None and delta > 0 and px >= p.limit_up[t, i] - _HALF_TICK:
                why = "limit_up"
            elif (p.limit_down is not None and delta < 0
                  and px <= p.limit_down[t, i] + _HALF_TICK):
                why = "limit_down"
            elif p.unit_shares and p.band > 0:
                if value is None:
                    value = self._value_at(t)
                if order_delta(desired, after[i], px, value, p.band) == 0.0:
                    self.cancel(order)  # inside the band at the fill price: no order
                    continue
            if why:
                self.cancel(order)
                self.blocked[why] += 1
            else:
                after[i] += delta
        self.working = {}
        if p.exits:
            self._exits(t, after)

    def _value_at(self, t: int) -> float:
        """The book's value at this bar's fill prices (the last close where there is none)."""
        p = self.plan
        value = self.broker.getcash()
        for i, d in enumerate(self.datas):
            held = self.getposition(d).size
            if held:
                px = p.ref[t, i]
                value += held * (px if px == px else p.closes[t - 1, i])
        return value

    def _exits(self, t: int, after: dict[int, float]) -> None:
        """Stops, targets and trailing stops of the positions held before bar t (kernel.py,
        "exits and marks"), each handed to the broker as one sell (see the module doc)."""
        p = self.plan
        o, h, lo, c = p.ohlc
        for i, d in enumerate(self.datas):
            if self.getposition(d).size <= 0.0 or after[i] <= 0.0 or not c[t, i] == c[t, i]:
                continue
            oi, hi, li = o[t, i], h[t, i], lo[t, i]
            lvl, trailing, tgt = exit_levels(True, self.e_px[i] * self.xr[i], self.best[i],
                                             p.sl, p.tp, p.ts)
            px, why, stop = math.nan, K.R_TRAIL if trailing else K.R_STOP, True
            if oi <= lvl:
                px = oi
            elif li <= lvl:
                px = lvl
            elif tgt == tgt:
                why, stop = K.R_TARGET, False
                if oi >= tgt:
                    px = oi
                elif hi >= tgt:
                    px = tgt
            if not px == px:
                continue
            hold_ld = p.limit_down is not None and px <= p.limit_down[t, i] + _HALF_TICK
            if stop:
                self.sell(data=d, size=after[i], exectype=bt.Order.Stop, price=float(lvl),
                          exit_px=float(px), why=why, hold_ld=hold_ld)
            else:
                self.sell(data=d, size=after[i], exectype=bt.Order.Market, exit_px=float(px),
                          why=why, hold_ld=hold_ld)

    def notify_order(self, order: bt.Order) -> None:
        if order.status in (order.Completed, order.Partial):
            i = self.index_of[order.data]
            ex = order.executed
            q, px = float(ex.size), float(ex.price)
            info = order.info
            ref = info["exit_px"] if "exit_px" in info else self.plan.ref[self.bar, i]
            why = info["why"] if "why" in info else K.R_ORDER
            self.fill_rows.append((self.bar, i, q, px, abs(q) * px, float(ex.comm),
                                   abs(q) * abs(px - ref), why))
            before = self.sh[i]
            self.sh[i] = before + q
            if before == 0.0:  # a new position: its entry, as ours
                self.e_bar[i] = self.bar
                self.e_px[i] = px
                self.xr[i] = 1.0
                self.best[i] = px
            if self.sh[i] == 0.0:
                self.e_bar[i] = -1
        elif order.status == order.Margin:
            self.blocked["cash"] += 1
        elif order.status == order.Rejected:
            self.blocked["rejected"] += 1

    def next(self) -> None:
        """Bar t closed: the best price of each position since entry, record the marks, then
        turn the target row into orders."""
        t = self.bar = len(self.datas[0]) - 1
        p = self.plan
        if p.ts > 0:
            c, h = p.ohlc[3], p.ohlc[1]
            for i in range(len(self.datas)):
                if self.sh[i] > 0 and self.e_bar[i] < t and c[t, i] == c[t, i]:
                    if h[t, i] > self.best[i]:
                        self.best[i] = h[t, i]
        self.rec_equity[t] = equity = self.broker.getvalue()
        self.rec_cash[t] = self.broker.getcash()
        held = {}
        for i, d in enumerate(self.datas):
            self.rec_positions[t, i] = held[p.symbols[i]] = float(self.getposition(d).size)
            if equity:
                self.rec_weights[t, i] = self.rec_positions[t, i] * d.close[0] / equity
        if t == len(p.targets) - 1:
            return  # no bar left to fill a decision
        row, closes = {}, {}
        for i, sym in enumerate(p.symbols):
            w = p.targets[t, i]
            if w != w:
                continue
            if not p.closes[t, i] == p.closes[t, i] and not p.unit_shares:
                self.blocked["no_price"] += 1  # no price yet: nothing to size with
                continue
            row[sym], closes[sym] = float(w), float(p.closes[t, i])
        if p.unit_shares:  # share counts: the band is judged at the fill (next_open)
            deltas = decision_orders(row, equity, closes, held, p.buy_bps, 0.0, p.whole,
                                     unit="shares")
        else:
            deltas = decision_orders(row, equity, closes, held, p.buy_bps, p.band, p.whole)
        orders = []
        for sym, delta in deltas.items():
            if p.lot > 1:
                delta = float(lot_round(delta, held[sym], p.lot))
                if delta == 0.0:
                    self.blocked["lot"] += 1
                    continue
            orders.append((delta > 0, p.symbols.index(sym), delta, held[sym] + deltas[sym]))
        for _, i, delta, desired in sorted(orders):  # sells first, then buys; by symbol
            d = self.datas[i]
            if delta < 0:
                o = self.sell(data=d, size=-delta, exectype=p.exectype)
            else:
                o = self.buy(data=d, size=delta, exectype=p.exectype)
            self.working[i] = (o, delta, desired)


# ----------------------------------------------------------------------------- runner
_UNSUPPORTED = (
    ("order_type", lambda s: s.order_type != "market", "order_type: market"),
    ("max_volume_share", lambda s: s.max_volume_share is not None, "no volume limit"),
    ("slippage_range_frac", lambda s: s.slippage_range_frac > 0, "slippage_range_frac: 0"),
    ("allow_short", lambda s: s.allow_short, "allow_short: false"),
    ("max_gross_leverage", lambda s: s.max_gross_leverage > 1, "max_gross_leverage <= 1"),
    ("guards", lambda s: s.guards.active, "no risk guards"),
)


def _check_settings(s: EngineSettings) -> None:
    for name, bad, fix in _UNSUPPORTED:
        if bad(s):
            raise MltraderError(f"--engine backtrader does not model {name}; run it with "
                                f"{fix}, or use the mltrader engine alone")


def _frame(bars: Bars, j: int, rows: slice) -> pd.DataFrame:
    """One symbol's OHLCV for backtrader: tz-naive index, NaN carried from the last price."""
    idx = bars.index[rows]
    idx = idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx
    close = bars.close[rows, j]
    cols = {}
    for name in ("open", "high", "low", "close"):
        a = getattr(bars, name)
        cols[name] = (a if a is not None else bars.close)[rows, j]
    df = pd.DataFrame(cols, index=idx)
    mark = pd.Series(close, index=idx).ffill()
    for name in ("open", "high", "low", "close"):  # no trade: the bar is the last close
        df[name] = df[name].where(~np.isnan(close), mark)
    df = df.ffill().bfill().fillna(1.0)  # before the first price: any number, nothing held
    vol = bars.volume[rows, j] if bars.volume is not None else np.zeros(len(idx))
    df["volume"] = np.nan_to_num(vol)
    return df


def _per_bar(a: np.ndarray, bars: Bars, rows: slice) -> np.ndarray | None:
    """`a` on the traded rows when it is a full (T, N) array for `bars`, else None."""
    return np.asarray(a)[rows] if np.shape(a) == bars.shape else None


def run_backtrader(bars: Bars, targets: pd.DataFrame, settings: EngineSettings, start: int = 0,
                   rules: MarketRules | None = None, arrays: RuleArrays | None = None,
                   unit: str = "weight") -> BtResult:
    """Trade targets (T x N; NaN = no decision) from `start` through backtrader.

    `unit` "weight": fractions of equity, sized at the decision close as `run_backtest` with
    `size_at="decision"`; "shares": share counts, as `run_backtest(..., unit="shares")`.
    Fills at the next bar's open or close (`settings.fill`); stops, targets and trailing
    stops as ours (module doc). `rules` (default: the settings' market):
    board lots via `lot_round` when `lot_size > 1`; the A-share commission (minimum per
    order, stamp duty and transfer fee by date) when it has a minimum or taxes, else the
    generic one. `arrays` (`core.market.rule_arrays` on `bars`, as `run_backtest` takes):
    the taxes per bar and, when given for the panel, the limit-up / limit-down locks and the
    ex-rights payouts; None: the market's taxes only.
    """
    rules = rules if rules is not None else getattr(settings, "market", US)
    if unit not in ("weight", "shares"):
        raise MltraderError(f"unit must be 'weight' or 'shares'; got {unit!r}")
    _check_settings(settings)
    if not 0 <= start < len(bars):
        raise MltraderError(f"start bar {start} is outside the data (0..{len(bars) - 1})")
    if settings.fill == "next_open" and bars.close_only:
        raise MltraderError("execution.fill is next_open but the data has closes only; "
                            "use fill: next_close (or auto)")
    rows = slice(start, None)
    index = bars.index[rows]
    if settings.fill == "next_close" and not (index == index.normalize()).all():
        raise MltraderError("--engine backtrader fills next_close orders at the session close, "
                            "so it needs daily bars; use fill: next_open for intraday bars")
    syms = list(bars.symbols)
    tgt = targets.reindex(index=bars.index, columns=syms).to_numpy(np.float64)[rows]
    with np.errstate(invalid="ignore"):
        if (tgt < -1e-12).any():
            raise MltraderError(f"target {'share counts' if unit == 'shares' else 'weights'} "
                                "are negative but --engine backtrader trades long only; use "
                                "targets >= 0")
    if arrays is None:
        arrays = rule_arrays(rules, None, bars.index, len(syms))
    limits = rules.price_limits and _per_bar(arrays.limit_up, bars, rows) is not None
    raw_ref = bars.close if settings.fill == "next_close" or bars.close_only else bars.open
    ohlc = tuple(np.asarray(bars.close if bars.close_only or getattr(bars, k) is None
                            else getattr(bars, k))[rows] for k in ("open", "high", "low", "close"))
    plan = _Plan(
        targets=tgt, closes=pd.DataFrame(bars.close[rows]).ffill().to_numpy(),
        ref=np.asarray(raw_ref[rows]), symbols=tuple(syms), buy_bps=buy_cost_bps(settings),
        band=float(settings.rebalance_band), whole=bool(settings.whole_shares),
        lot=float(rules.lot_size),
        exectype=bt.Order.Close if settings.fill == "next_close" else bt.Order.Market,
        unit_shares=unit == "shares",
        limit_up=_per_bar(arrays.limit_up, bars, rows) if limits else None,
        limit_down=_per_bar(arrays.limit_down, bars, rows) if limits else None,
        payout=_per_bar(arrays.payout, bars, rows),
        sl=float(settings.stop_loss or 0.0), tp=float(settings.take_profit or 0.0),
        ts=float(settings.trailing_stop or 0.0), ohlc=ohlc,
        day=session_days(bars.index)[rows])

    cerebro = bt.Cerebro(cheat_on_open=True, broker_coo=False, stdstats=False)
    broker = _Broker()
    broker.t1 = bool(rules.t_plus_one)
    cerebro.setbroker(broker)
    broker.setcash(float(settings.initial_cash))
    broker.set_checksubmit(False)  # cash is checked at the fill, at the fill price
    slip = (settings.slippage_bps + settings.half_spread_bps) * 1e-4
    if slip > 0:  # uncapped by the bar's range, like ours
        broker.set_slippage_perc(slip, slip_open=True, slip_match=True, slip_out=True)
    taxes = np.column_stack([np.broadcast_to(arrays.sell_tax_bps, len(bars)),
                             np.broadcast_to(arrays.buy_tax_bps, len(bars))])[rows]
    generic = {"bps": settings.commission_bps, "per_share": settings.commission_per_share,
               "minimum": settings.commission_min, "fixed": settings.commission_fixed}
    for j, sym in enumerate(syms):
        feed = bt.feeds.PandasData(dataname=_frame(bars, j, rows), name=sym, openinterest=None)
        cerebro.adddata(feed)
        if _ashare_scheme(rules):
            comm = AshareCommission(**generic, min_order=rules.min_commission, rates=taxes,
                                    data=feed)
        else:
            comm = GenericCommission(**generic)
        broker.addcommissioninfo(comm, name=sym)
    cerebro.addstrategy(_TargetWeights, plan=plan)
    strat = cerebro.run()[0]

    f = np.array(strat.fill_rows, dtype=np.float64).reshape(-1, 8)
    fi = f[:, [0, 1, 7]].astype(np.int64)
    fills = pd.DataFrame({
        "date": index[fi[:, 0]],
        "symbol": pd.Categorical.from_codes(fi[:, 1], categories=syms),
        "qty": f[:, 2], "price": f[:, 3], "notional": f[:, 4], "commission": f[:, 5],
        "slippage": f[:, 6],
        "reason": pd.Categorical.from_codes(
            fi[:, 2], categories=[FILL_REASONS[k] for k in sorted(FILL_REASONS)]),
    })
    notes = ["backtrader rejects an order it cannot pay (Margin); ours resizes it"]
    if rules.price_limits and not limits:
        notes.append("price limits not checked: no limit prices were given (arrays)")
    if broker.missed:
        notes.append(f"{broker.missed} exit(s) did not fill on their bar in backtrader")
    return BtResult(
        equity=pd.Series(strat.rec_equity, index=index, name="equity"),
        fills=fills, orders_blocked=dict(strat.blocked),
        cash=pd.Series(strat.rec_cash, index=index, name="cash"),
        positions=pd.DataFrame(strat.rec_positions, index=index, columns=syms),
        weights=pd.DataFrame(strat.rec_weights, index=index, columns=syms),
        initial_cash=float(settings.initial_cash),
        fill_timing="next bar's open" if settings.fill == "next_open" else "next bar's close",
        payouts=float(strat.paid_out),
        held_back=tuple((HELD_BACK[k], int(v)) for k, v in enumerate(broker.held) if v),
        notes=tuple(notes))


# ----------------------------------------------------------------------------- comparison
def _summary(result: BacktestResult, ppy: float) -> list[float]:
    m = compute_metrics(result, ppy)
    fills = result.fills
    comm = float(fills["commission"].to_numpy(dtype=float).sum()) if len(fills) else 0.0
    vals = [m["total_return"], m["cagr"], m["sharpe"], m["max_drawdown"], len(fills), comm,
            float(result.equity.iloc[-1])]
    return [math.nan if v is None else float(v) for v in vals]


def compare_engines(ours: BacktestResult, theirs: BtResult, ppy: float) -> pd.DataFrame:
    """Both engines' results side by side: rows COMPARE_ROWS, columns mltrader / backtrader /
    difference (backtrader minus mltrader), measured by the same `compute_metrics`."""
    if not ours.equity.index.equals(theirs.equity.index):
        raise MltraderError("compare_engines needs both runs on the same bars; run both "
                            "engines with the same data and start bar")
    a = _summary(ours, ppy)
    b = _summary(theirs.as_backtest_result(), ppy)
    out = pd.DataFrame({"mltrader": a, "backtrader": b}, index=list(COMPARE_ROWS))
    out["difference"] = out["backtrader"] - out["mltrader"]
    return out
