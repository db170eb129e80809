"""The canonical strategy in mltrader: `sma_cross_signals` + `run_signals`."""

from __future__ import annotations

import numpy as np
from reference import (
    COMMISSION,
    FAST,
    SIZE_BUFFER,
    SIZE_FRACTION,
    SLOW,
    STOP_LOSS,
    TAKE_PROFIT,
)

from peers import PeerResult


def available() -> tuple[bool, str]:
    """(True, "") when mltrader's signal engine can be imported, else (False, why)."""
    try:
        from mltrader.backtest.engine import run_signals  # noqa: F401
    except Exception as e:  # ImportError, or a half-written module
        return False, f"mltrader.backtest.engine.run_signals not importable: {e!r}"
    return True, ""


def settings(initial_cash: float):
    from mltrader.core.settings import EngineSettings

    return EngineSettings(initial_cash=initial_cash, fill="next_open", whole_shares=True,
                          commission_bps=COMMISSION * 1e4, size_fraction=SIZE_FRACTION,
                          size_buffer=SIZE_BUFFER, stop_loss=STOP_LOSS,
                          take_profit=TAKE_PROFIT)


def bars_of(index, open_, high, low, close, symbols=None):
    from mltrader.data.bars import Bars

    c = np.asarray(close, dtype=np.float64).reshape(len(close), -1)
    o, h, lo = (np.asarray(a, dtype=np.float64).reshape(c.shape) for a in (open_, high, low))
    syms = tuple(symbols) if symbols is not None else tuple(f"S{j}" for j in range(c.shape[1]))
    return Bars(index=index, symbols=syms, close=c, open=o, high=h, low=lo)


def run_bars(bars, initial_cash: float):
    """The timed part: signals from closes, then the engine, every symbol its own book."""
    from mltrader.backtest.engine import run_signals
    from mltrader.strategy.crossover import sma_cross_signals

    entries, exits = sma_cross_signals(bars.close, FAST, SLOW)
    return run_signals(bars, entries, exits, settings(initial_cash), independent=True)


def _reason(r: str, is_open: bool) -> str:
    r = str(r).lower()
    if is_open:
        return "open"
    if "stop" in r or "loss" in r:
        return "stop"
    if "profit" in r or "target" in r:
        return "target"
    return "signal"


def to_peer(res, bars) -> PeerResult:
    col = {s: j for j, s in enumerate(bars.symbols)}
    t = res.trades
    open_col = t["open"] if "open" in t.columns else np.zeros(len(t), dtype=bool)
    reasons = t["exit_reason"] if "exit_reason" in t.columns else [""] * len(t)
    rows = [
        (col[str(s)], int(eb), int(xb), float(pe), float(px), int(round(q)), _reason(r, bool(op)))
        for s, eb, xb, pe, px, q, r, op in zip(
            t["symbol"], t["entry_bar"], t["exit_bar"], t["entry_price"], t["exit_price"],
            t["qty"], reasons, open_col, strict=True)
    ]
    rows.sort(key=lambda r: (r[0], r[1]))
    if res.book_equity is not None:
        final = res.book_equity.iloc[-1].to_numpy(dtype=np.float64)
    else:
        final = np.array([float(res.equity.iloc[-1])])
    return PeerResult(rows, final)


def run(index, open_, high, low, close, initial_cash: float) -> PeerResult:
    bars = bars_of(index, open_, high, low, close)
    return to_peer(run_bars(bars, initial_cash), bars)
