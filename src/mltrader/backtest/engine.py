"""The backtest engine: targets or signals in, fills and books out, via the compiled kernel.

Timing: a decision on bar t's close becomes an order that can fill from bar t+1, at its open
("next_open") or its close ("next_close", the only choice for close-only data). Stops and
targets are checked intrabar from the bar after entry (see `EngineSettings`). Equity is
marked at every close: equity = cash + sum(shares x last close).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mltrader.backtest import kernel as K
from mltrader.backtest.result import BacktestResult, LazyBacktestResult
from mltrader.core.market import RuleArrays, rule_arrays
from mltrader.core.params import (
    LIMIT,
    MODE_SIGNALS,
    MODE_TARGETS,
    ORDER_TYPES,
    STOP,
    STOP_LIMIT,
    pack,
)
from mltrader.core.sessions import session_days
from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.errors import MltraderError
from mltrader.risk.guards import G_DAILY_LOSS, G_KILL, GUARD_NAMES

__all__ = ["EngineSettings", "run_backtest", "run_signals"]

_TYPE_NAMES = {v: k for k, v in ORDER_TYPES.items()}
FILL_REASONS = {K.R_ORDER: "order", K.R_STOP: "stop_loss", K.R_TARGET: "take_profit",
                K.R_TRAIL: "trailing_stop", K.R_END: "end", K.R_DAILY_LOSS: "daily_loss_limit",
                K.R_KILL: "kill_switch", K.R_TIME: "time_stop"}
STATUS = {K.S_WORKING: "working", K.S_FILLED: "filled", K.S_CANCELLED: "cancelled",
          K.S_REJECTED: "rejected", K.S_REPLACED: "replaced", K.S_PARTIAL: "partially_filled"}
REASONS = {
    K.W_NONE: "", K.W_NO_PRICE: "symbol did not trade on the fill bar",
    K.W_NOT_REACHED: "limit/stop price not reached (day order)",
    K.W_CASH: "not enough cash", K.W_LEVERAGE: "gross leverage limit",
    K.W_NO_SHORT: "short selling not allowed", K.W_REPLACED: "replaced by a newer decision",
    K.W_EXITED: "position closed by a stop/target", K.W_VOLUME: "volume limit: rest cancelled",
    K.W_ZERO: "nothing to trade", K.W_RESIZED: "resized to fit cash / leverage",
    **{K.W_GUARD + g: f"risk: {name}" for g, name in GUARD_NAMES.items()},
    K.W_LIMIT_UP: "market: limit-up lock (no buy at the limit price)",
    K.W_LIMIT_DOWN: "market: limit-down lock (no sell at the limit price)",
    K.W_T1: "market: T+1 (shares bought this session cannot be sold)",
    K.W_LOT: "market: board lot (under one lot to trade)",
}
MARKET_REASONS = tuple(REASONS[k] for k in (K.W_LIMIT_UP, K.W_LIMIT_DOWN, K.W_T1, K.W_LOT))
HELD_BACK = {K.X_T1: "stop/target held back by T+1 (bought this session)",
             K.X_LIMIT_DOWN: "stop held back by a limit-down lock"}
ORIGINS = {K.ORIGIN_STRATEGY: "strategy", G_DAILY_LOSS: "daily loss limit",
           G_KILL: "kill switch"}


def _prices(bars: Bars) -> tuple[np.ndarray, ...]:
    c = bars.close
    if bars.close_only:
        return c, c, c, c
    return bars.open, bars.high, bars.low, c  # type: ignore[return-value]


def _simulate(bars: Bars, settings: EngineSettings, mode: int, tw: np.ndarray,
              sig: tuple[np.ndarray, ...], independent: bool, start: int,
              unit_shares: bool = False, sessions: np.ndarray | None = None,
              rules: RuleArrays | None = None) -> BacktestResult:
    if settings.fill == "next_open" and bars.close_only:
        raise MltraderError("execution.fill is next_open but the data has closes only; "
                            "use fill: next_close (or auto)")
    if settings.max_volume_share and bars.volume is None:
        raise MltraderError("max_volume_share is set but the data has no volume; "
                            "remove the limit or load OHLCV data")
    if not 0 <= start < len(bars):
        raise MltraderError(f"start bar {start} is outside the data (0..{len(bars) - 1})")
    o, h, lo, c = _prices(bars)
    vol = bars.volume if bars.volume is not None else np.full(bars.shape, np.nan)
    n = bars.shape[1]
    book_of = np.arange(n, dtype=np.int64) if independent else np.zeros(n, dtype=np.int64)
    n_books = n if independent else 1
    ip, fp = pack(settings, mode, bars.close_only, unit_shares)
    cap = _capacity(mode, tw, sig, n, settings)
    day = session_days(bars.index, sessions)
    gp = settings.guards.vector()
    if rules is None:
        rules = rule_arrays(settings.market, None, bars.index, n)
    if settings.market.price_limits and rules.limit_up.shape != bars.shape:
        raise MltraderError(f"market {settings.market.name} has price limits but no limit "
                            "prices were given for these bars; load the data as an A-share "
                            "panel (data.market: cn_a)")
    while True:
        out = K.simulate(o, h, lo, c, vol, tw, *sig, book_of, n_books, start, ip, fp, cap, day,
                         gp, rules.limit_up, rules.limit_down, rules.sell_tax_bps,
                         rules.buy_tax_bps, rules.payout)
        if not out[0]:
            return _result(bars, settings, start, independent, *out[1:])
        cap *= 4  # more events than the estimate: run again with bigger record tables


def _capacity(mode: int, tw: np.ndarray, sig: tuple[np.ndarray, ...], n: int,
              s: EngineSettings) -> int:
    """Room for orders, fills and trades: an upper bound in the usual cases, so one run does."""
    if mode == MODE_SIGNALS:
        decisions = sum(int(np.count_nonzero(a)) for a in sig)
    else:
        decisions = int(np.count_nonzero(~np.isnan(tw)))
    per_order = 8 if s.remainder == "wait" and s.max_volume_share else 2
    return 64 + 2 * n + per_order * decisions


def _result(bars: Bars, s: EngineSettings, start: int, independent: bool, eq: np.ndarray,
            cash: np.ndarray, pos: np.ndarray, borrow: np.ndarray,
            f_i: np.ndarray, f_f: np.ndarray, tr_i: np.ndarray, tr_f: np.ndarray,
            od_i: np.ndarray, od_f: np.ndarray, held_back: np.ndarray, paid_out: float
            ) -> BacktestResult:
    idx = bars.index[start:]
    cols = list(bars.symbols)
    equity = pd.Series(eq[:, 0] if eq.shape[1] == 1 else eq.sum(axis=1), index=idx,
                       name="equity", copy=False)

    def positions() -> pd.DataFrame:
        return pd.DataFrame(pos, index=idx, columns=cols, copy=False)

    def weights() -> pd.DataFrame:
        """Position value at the last known close over its book's equity."""
        last = bars.frame("close").iloc[start:].ffill().to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(pos != 0, pos * last, 0.0)
            value /= eq if independent else eq[:, :1]
        return pd.DataFrame(value, index=idx, columns=cols, copy=False)

    sym_cat = list(bars.symbols)

    def symbols_of(codes: np.ndarray) -> pd.Categorical:
        return pd.Categorical.from_codes(codes, categories=sym_cat)

    def names(codes: np.ndarray, table: dict[int, str]) -> pd.Categorical:
        return pd.Categorical.from_codes(codes, categories=[table[k] for k in sorted(table)])

    def fills() -> pd.DataFrame:
        return pd.DataFrame({
            "date": bars.index[f_i[:, 0]],
            "symbol": symbols_of(f_i[:, 1]),
            "qty": f_f[:, 0],
            "price": f_f[:, 1],
            "notional": np.abs(f_f[:, 0]) * f_f[:, 1],
            "commission": f_f[:, 2],
            "slippage": f_f[:, 3],
            "order_id": f_i[:, 2],
            "reason": names(f_i[:, 3], FILL_REASONS),
        })

    def trades() -> pd.DataFrame:
        order = np.lexsort((tr_i[:, 0], tr_i[:, 1]))  # by entry bar, then symbol
        ti, tf = tr_i[order], tr_f[order]
        return pd.DataFrame({
            "symbol": symbols_of(ti[:, 0]),
            "entry_date": bars.index[ti[:, 1]],
            "exit_date": bars.index[ti[:, 2]],
            "entry_price": tf[:, 0],
            "exit_price": tf[:, 1],
            "max_qty": np.abs(tf[:, 2]),
            "pnl": tf[:, 3],
            "return": tf[:, 4],
            "bars_held": ti[:, 2] - ti[:, 1],
            "open": ti[:, 4].astype(bool),
            "entry_bar": ti[:, 1],
            "exit_bar": ti[:, 2],
            "qty": tf[:, 2],
            "mae": tf[:, 5],
            "mfe": tf[:, 6],
            "exit_reason": names(ti[:, 3], FILL_REASONS),
        })

    def orders() -> pd.DataFrame:
        typ = od_i[:, 3]
        return pd.DataFrame({
            "order_id": od_i[:, 0],
            "symbol": symbols_of(od_i[:, 1]),
            "created": bars.index[od_i[:, 2]],
            "type": names(typ, _TYPE_NAMES),
            "intent": pd.Categorical.from_codes(od_i[:, 4],
                                                categories=["target_weight", "enter"]),
            "value": od_f[:, 0],
            "limit_price": np.where((typ == LIMIT) | (typ == STOP_LIMIT), od_f[:, 1],
                                    np.nan),
            "stop_price": np.where((typ == STOP) | (typ == STOP_LIMIT), od_f[:, 2],
                                   np.nan),
            "filled_qty": od_f[:, 3],
            "status": names(od_i[:, 5], STATUS),
            "reason": names(od_i[:, 6], REASONS),
            "closed": bars.index[od_i[:, 7]],
            "origin": names(od_i[:, 8], ORIGINS),
        })


    def book_equity() -> pd.DataFrame | None:
        return pd.DataFrame(eq, index=idx, columns=cols, copy=False) if independent else None

    return LazyBacktestResult(
        builders={"fills": fills, "trades": trades, "orders": orders, "weights": weights,
                  "positions": positions, "book_equity": book_equity},
        equity=equity,
        cash=pd.Series(cash, index=idx, name="cash", copy=False),
        initial_cash=float(s.initial_cash) * (bars.shape[1] if independent else 1),
        fill_timing="next bar's open" if s.fill == "next_open" else "next bar's close",
        borrow_costs=float(borrow.sum()),
        held_back=tuple((HELD_BACK[k], int(v)) for k, v in enumerate(held_back) if v),
        payouts=float(paid_out),
    )


def _check_targets(targets: np.ndarray, symbols: tuple[str, ...], s: EngineSettings) -> None:
    with np.errstate(invalid="ignore"):
        neg = targets < -1e-12
        if neg.any() and not s.allow_short:
            r, c = np.argwhere(neg)[0]
            raise MltraderError(f"target weight for {symbols[c]} at row {r} is negative but "
                                "short selling is off; set allow_short or use weights >= 0")
        gross = np.nansum(np.abs(targets), axis=1)
    limit = s.max_gross_leverage + 1e-9
    if (gross > limit).any():
        r = int(np.argmax(gross > limit))
        raise MltraderError(f"target weights at row {r} have gross exposure {gross[r]:.4f} > "
                            f"max_gross_leverage {s.max_gross_leverage:g}; scale them down")


def run_backtest(bars: Bars, targets: pd.DataFrame, settings: EngineSettings, start: int = 0,
                 independent: bool = False, unit: str = "weight",
                 sessions: np.ndarray | None = None, rules: RuleArrays | None = None
                 ) -> BacktestResult:
    """Trade to targets (T x N; NaN = no decision) from `start`.

    `unit` "weight": fractions of equity; "shares": signed share counts (fixed-size rules).
    `sessions`: each bar's trading session for the daily guards (see `session_days`).
    `rules`: the per-bar arrays of `settings.market` (`core.market.rule_arrays`): limit
    prices, taxes, ex-rights payouts; None: the market's taxes only.
    """
    if unit not in ("weight", "shares"):
        raise MltraderError(f"unit must be 'weight' or 'shares'; got {unit!r}")
    tgt = targets.reindex(index=bars.index, columns=list(bars.symbols)).to_numpy(np.float64)
    if unit == "weight":
        _check_targets(tgt, bars.symbols, settings)
    elif not settings.allow_short and (np.nan_to_num(tgt) < 0).any():
        raise MltraderError("share targets are negative but short selling is off; set "
                            "allow_short or use targets >= 0")
    empty = np.zeros((1, 1), dtype=np.bool_)
    return _simulate(bars, settings, MODE_TARGETS, np.ascontiguousarray(tgt),
                     (empty, empty, empty, empty), independent, start, unit == "shares",
                     sessions, rules)


def _as_bool(name: str, a: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if a is None:
        return np.zeros(shape, dtype=np.bool_)
    arr = np.asarray(a, dtype=np.bool_)
    if arr.ndim == 1 and shape[1] == 1:
        arr = arr[:, None]
    if arr.shape != shape:
        raise MltraderError(f"{name} has shape {arr.shape}, expected {shape} (bars x symbols)")
    return np.ascontiguousarray(arr)


def run_signals(bars: Bars, entries: np.ndarray, exits: np.ndarray, settings: EngineSettings,
                *, short_entries: np.ndarray | None = None,
                short_exits: np.ndarray | None = None, independent: bool = False,
                start: int = 0, sessions: np.ndarray | None = None,
                rules: RuleArrays | None = None) -> BacktestResult:
    """Enter on `entries` when flat, exit on `exits` when long (and mirrored for shorts).

    Entries are sized from cash at the fill price: size_fraction x cash / (price x
    (1 + size_buffer)), floored when whole_shares. Exits are market orders and fill before
    the stops are checked on their bar. `independent=True` gives every symbol its own book
    with `initial_cash` (the result's equity is the sum; `book_equity` has each).
    `sessions`: each bar's trading session for the daily guards (see `session_days`).
    """
    shape = bars.shape
    if (short_entries is not None) and not settings.allow_short:
        raise MltraderError("short_entries given but allow_short is off; set allow_short=True")
    sig = (_as_bool("entries", entries, shape), _as_bool("exits", exits, shape),
           _as_bool("short_entries", short_entries, shape),
           _as_bool("short_exits", short_exits, shape))
    tw = np.zeros((1, 1))
    return _simulate(bars, settings, MODE_SIGNALS, tw, sig, independent, start,
                     sessions=sessions, rules=rules)
