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

from mltrader.backtest.bt_broker import (
    AshareCommission,
    GenericCommission,
    _ashare_scheme,
    _Broker,
    buy_cost_bps,
)
from mltrader.backtest.bt_strategy import BLOCK_REASONS, _Plan, _TargetWeights
from mltrader.backtest.engine import FILL_REASONS, HELD_BACK
from mltrader.backtest.metrics import compute_metrics
from mltrader.backtest.result import TRADE_COLUMNS, BacktestResult
from mltrader.core.market import US, MarketRules, RuleArrays, rule_arrays
from mltrader.core.sessions import session_days
from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.errors import MltraderError

__all__ = ["BLOCK_REASONS", "AshareCommission", "BtResult", "GenericCommission",
           "buy_cost_bps", "compare_engines", "run_backtrader"]

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
