"""The backtest engine: trade to target weights at the next bar, with costs, and keep the books.

Timing: a target row decided on bar t's close is executed at bar t+1's open ("next_open") or
close ("next_close"; the only choice for close-only data). Equity is marked at every close.
Long-only for now: weights must lie in [0, 1] and sum to at most 1 (no leverage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mltrader.backtest.result import FILL_COLUMNS, TRADE_COLUMNS, BacktestResult
from mltrader.data.bars import Bars
from mltrader.errors import MltraderError

_EPS = 1e-12


@dataclass(frozen=True)
class EngineSettings:
    """Costs and execution rules; bps are basis points of traded value."""

    initial_cash: float = 100_000.0
    commission_bps: float = 0.0
    slippage_bps: float = 0.0
    fill: str = "next_close"  # or "next_open"
    rebalance_band: float = 0.0


def _check_targets(targets: np.ndarray, symbols: tuple[str, ...]) -> None:
    with np.errstate(invalid="ignore"):
        if (targets < -_EPS).any():
            r, c = np.argwhere(targets < -_EPS)[0]
            raise MltraderError(f"target weight for {symbols[c]} at row {r} is negative; "
                                "short selling is not supported by this engine yet")
        gross = np.nansum(targets, axis=1)
    if (gross > 1 + 1e-9).any():
        r = int(np.argmax(gross > 1 + 1e-9))
        raise MltraderError(f"target weights at row {r} sum to {gross[r]:.4f} > 1; "
                            "leverage is not supported: scale the weights down")


class _Books:
    """Round-trip bookkeeping per symbol: flat -> position -> flat."""

    def __init__(self, n: int) -> None:
        self.entry_bar = np.full(n, -1)
        self.entry_price = np.zeros(n)
        self.invested = np.zeros(n)
        self.received = np.zeros(n)
        self.max_qty = np.zeros(n)
        self.rows: list[tuple] = []

    def on_fill(self, i: int, bar: int, qty: float, price: float, cash_flow: float,
                new_shares: float, index: pd.DatetimeIndex, sym: str) -> None:
        if self.entry_bar[i] < 0:
            self.entry_bar[i] = bar
            self.entry_price[i] = price
            self.invested[i] = self.received[i] = self.max_qty[i] = 0.0
        if cash_flow < 0:
            self.invested[i] -= cash_flow
        else:
            self.received[i] += cash_flow
        self.max_qty[i] = max(self.max_qty[i], new_shares)
        if new_shares <= _EPS:
            self._close(i, bar, price, 0.0, index, sym, is_open=False)

    def _close(self, i: int, bar: int, price: float, value_left: float,
               index: pd.DatetimeIndex, sym: str, *, is_open: bool) -> None:
        pnl = self.received[i] + value_left - self.invested[i]
        ret = pnl / self.invested[i] if self.invested[i] > 0 else 0.0
        self.rows.append((sym, index[self.entry_bar[i]], index[bar], self.entry_price[i], price,
                          self.max_qty[i], pnl, ret, bar - self.entry_bar[i], is_open))
        self.entry_bar[i] = -1

    def finish(self, shares: np.ndarray, last_px: np.ndarray, bar: int,
               index: pd.DatetimeIndex, symbols: tuple[str, ...]) -> pd.DataFrame:
        for i in np.flatnonzero(self.entry_bar >= 0):
            self._close(i, bar, last_px[i], shares[i] * last_px[i], index, symbols[i],
                        is_open=True)
        return pd.DataFrame(self.rows, columns=list(TRADE_COLUMNS))


def run_backtest(
    bars: Bars, targets: pd.DataFrame, settings: EngineSettings, start: int = 0
) -> BacktestResult:
    """Simulate trading to `targets` (T x N weights; NaN = no decision) from bar `start` on."""
    if settings.fill == "next_open" and bars.close_only:
        raise MltraderError("execution.fill is next_open but the data has closes only; "
                            "use fill: next_close (or auto)")
    tgt = targets.reindex(index=bars.index, columns=list(bars.symbols)).to_numpy(np.float64)
    _check_targets(tgt, bars.symbols)
    close = bars.close
    exec_px = bars.open if settings.fill == "next_open" else bars.close
    t_len, n = close.shape
    comm = settings.commission_bps * 1e-4
    slip = settings.slippage_bps * 1e-4
    cash = float(settings.initial_cash)
    shares = np.zeros(n)
    last_px = np.full(n, np.nan)  # last known close, for marking symbols that did not trade
    span = range(start, t_len)
    eq_out = np.zeros(len(span))
    cash_out = np.zeros(len(span))
    pos_out = np.zeros((len(span), n))
    val_out = np.zeros((len(span), n))
    fills: list[tuple] = []
    books = _Books(n)
    pending: np.ndarray | None = None
    for k, t in enumerate(span):
        if pending is not None:
            cash = _execute(t, pending, exec_px[t], last_px, shares, cash, comm, slip,
                            settings.rebalance_band, fills, books, bars)
            pending = None
        px = close[t]
        seen = ~np.isnan(px)
        last_px[seen] = px[seen]
        value = np.where(shares != 0, shares * np.nan_to_num(last_px), 0.0)
        eq_out[k] = cash + value.sum()
        cash_out[k] = cash
        pos_out[k] = shares
        val_out[k] = value
        row = tgt[t]
        if not np.isnan(row).all():
            pending = row
    idx = bars.index[start:]
    cols = list(bars.symbols)
    equity = pd.Series(eq_out, index=idx, name="equity")
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = val_out / eq_out[:, None]
    trades = books.finish(shares, np.nan_to_num(last_px), t_len - 1, bars.index, bars.symbols)
    return BacktestResult(
        equity=equity,
        cash=pd.Series(cash_out, index=idx, name="cash"),
        positions=pd.DataFrame(pos_out, index=idx, columns=cols),
        weights=pd.DataFrame(weights, index=idx, columns=cols),
        fills=pd.DataFrame(fills, columns=list(FILL_COLUMNS)),
        trades=trades,
        initial_cash=float(settings.initial_cash),
        fill_timing="next bar's open" if settings.fill == "next_open" else "next bar's close",
    )


def _execute(t: int, target: np.ndarray, px: np.ndarray, last_px: np.ndarray,
             shares: np.ndarray, cash: float, comm: float, slip: float, band: float,
             fills: list[tuple], books: _Books, bars: Bars) -> float:
    """Fill one target row at prices `px`; sells first, then buys scaled to the cash left."""
    mark = np.where(np.isnan(px), last_px, px)
    equity = cash + float(np.nansum(np.where(shares != 0, shares * mark, 0.0)))
    tradable = ~np.isnan(px) & ~np.isnan(target)
    desired = np.where(tradable, target * equity / np.where(tradable, px, 1.0), shares)
    delta = desired - shares
    # Skip small re-weighting trades; opening and closing a position always go through.
    notional = np.abs(delta) * np.nan_to_num(px)
    small = (notional < band * equity) & (shares > 0) & (desired > 0)
    dust = notional < 1e-9 * equity  # floating-point residue, not a trade
    delta[small | dust | ~tradable] = 0.0
    date = bars.index[t]
    for i in np.flatnonzero(delta < 0):  # sells
        qty = -delta[i] if desired[i] > _EPS else shares[i]
        price = px[i] * (1 - slip)
        notional = qty * price
        fee = notional * comm
        cash += notional - fee
        shares[i] = 0.0 if desired[i] <= _EPS else shares[i] - qty
        fills.append((date, bars.symbols[i], -qty, price, notional, fee, qty * px[i] * slip))
        books.on_fill(i, t, -qty, price, notional - fee, shares[i], bars.index, bars.symbols[i])
    buys = np.flatnonzero(delta > 0)
    if len(buys):
        cost = delta[buys] * px[buys] * (1 + slip) * (1 + comm)
        total = float(cost.sum())
        # a hair under the exact ratio, so rounding can never leave cash below zero
        scale = min(1.0, max(cash, 0.0) / total * (1 - 1e-12)) if total > 0 else 1.0
        for i in buys:
            qty = delta[i] * scale
            if qty <= _EPS:
                continue
            price = px[i] * (1 + slip)
            notional = qty * price
            fee = notional * comm
            cash -= notional + fee
            shares[i] += qty
            fills.append((date, bars.symbols[i], qty, price, notional, fee, qty * px[i] * slip))
            books.on_fill(i, t, qty, price, -(notional + fee), shares[i], bars.index,
                          bars.symbols[i])
    return cash
