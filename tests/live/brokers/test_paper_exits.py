"""Protective exits in the paper broker fill like the backtest kernel's stops and targets."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from mltrader.backtest.engine import EngineSettings, run_backtest
from mltrader.data.bars import Bars
from mltrader.data.feeds import ReplayFeed
from mltrader.live.brokers.base import OrderRequest
from mltrader.live.brokers.paper import PaperBroker

COSTS = dict(slippage_bps=5, half_spread_bps=2, commission_bps=1, commission_per_share=0.005,
             commission_min=1.0, slippage_range_frac=0.1)
FLAT = (100.0, 100.0, 100.0, 100.0)
ENTRY = (100.0, 101.0, 99.0, 100.0)
QUIET = (100.0, 101.0, 99.5, 100.0)


def ohlc(rows: list[tuple[float, ...]], close_only: bool = False) -> Bars:
    a = np.array(rows, dtype=float)
    idx = pd.bdate_range("2021-01-04", periods=len(a), tz="UTC")
    if close_only:
        return Bars(index=idx, symbols=("X",), close=a[:, 3:4])
    return Bars(index=idx, symbols=("X",), open=a[:, :1], high=a[:, 1:2], low=a[:, 2:3],
                close=a[:, 3:4], volume=np.full((len(a), 1), 1e9))


def steps(bars: Bars) -> list:
    return [(t, {e.symbol: e for e in g})
            for t, g in itertools.groupby(ReplayFeed(bars).bars(), key=lambda e: e.time)]


def mirror(rows: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    """The same path reflected around 100 (high and low swap): a short's mirror image."""
    return [(200 - o, 200 - lo, 200 - h, 200 - c) for o, h, lo, c in rows]


PATHS = {  # rows after the decision bar and the entry bar, expected exit reason
    "gap_through_stop": ([QUIET, (90, 92, 88, 91)], "stop_loss"),
    "intrabar_stop": ([(99, 100, 94, 96)], "stop_loss"),
    "take_profit": ([QUIET, (104, 112, 103, 108)], "take_profit"),
    "gap_through_target": ([(115, 116, 113, 114)], "take_profit"),
    "both_in_one_bar": ([(100, 115, 90, 101)], "stop_loss"),
    "no_exit": ([QUIET, QUIET], None),
}


def drive(bars: Bars, settings: EngineSettings, short: bool, close_only: bool = False
          ) -> PaperBroker:
    """A market entry after bar 0, the protective stop after the entry bar."""
    broker = PaperBroker(settings, close_only)
    sl, tp = settings.stop_loss, settings.take_profit
    for i, (t, group) in enumerate(steps(bars)):
        broker.on_bar(t, group)
        if i == 0:
            broker.submit(OrderRequest("entry", "X", "sell" if short else "buy", 50))
        if i == 1:
            e = broker.fills("entry")[0].price
            if short:
                stop = e * (1.0 + sl) if sl else 1e12
                target = e * (1.0 - tp) if tp else None
            else:
                stop = e * (1.0 - sl) if sl else 0.0
                target = e * (1.0 + tp) if tp else None
            broker.submit(OrderRequest("exit", "X", "buy" if short else "sell", 50, "stop",
                                       "gtc", stop_price=stop, take_profit=target))
    return broker


def assert_same_as_engine(bars: Bars, settings: EngineSettings, short: bool,
                          reason: str | None, close_only: bool = False) -> None:
    tgt = pd.DataFrame(np.nan, index=bars.index, columns=["X"])
    tgt.iloc[0, 0] = -50.0 if short else 50.0
    engine = run_backtest(bars, tgt, settings, unit="shares")
    broker = drive(bars, settings, short, close_only)
    ef = engine.fills
    assert list(ef["reason"].iloc[1:]) == ([reason] if reason else [])
    fills = broker.fills()
    assert len(fills) == len(ef)
    for f, (_, w) in zip(fills, ef.iterrows(), strict=True):
        assert f.time == w["date"]
        assert f.qty * (1 if f.side == "buy" else -1) == w["qty"]
        assert f.price == pytest.approx(w["price"], rel=1e-12)
        assert f.commission == pytest.approx(w["commission"], rel=1e-12)
    assert broker.cash == pytest.approx(engine.cash.iloc[-1], rel=1e-12)
    assert broker.account().equity == pytest.approx(engine.equity.iloc[-1], rel=1e-12)
    exit_order = broker.get_order("exit")
    assert exit_order.status == ("filled" if reason else "accepted")
    if reason:
        assert exit_order.commission == fills[-1].commission
        assert broker.positions() == {} and broker.open_orders() == []


@pytest.mark.parametrize("short", [False, True], ids=["long", "short"])
@pytest.mark.parametrize("fill", ["next_open", "next_close"])
@pytest.mark.parametrize("path", list(PATHS))
def test_exits_fill_like_the_kernel(path, fill, short):
    rows, reason = PATHS[path]
    rows = [FLAT, ENTRY, *rows]
    bars = ohlc(mirror(rows) if short else rows)
    settings = EngineSettings(fill=fill, stop_loss=0.05, take_profit=0.1, allow_short=short,
                              initial_cash=10_000.0, **COSTS)
    assert_same_as_engine(bars, settings, short, reason)


@pytest.mark.parametrize("sl, tp, rows, reason", [
    (0.05, None, [(104, 112, 103, 108), (99, 100, 94, 96)], "stop_loss"),
    (None, 0.1, [(99, 100, 80, 96), (104, 112, 103, 108)], "take_profit"),
])
def test_a_stop_alone_or_a_target_alone(sl, tp, rows, reason):
    bars = ohlc([FLAT, ENTRY, *rows])
    settings = EngineSettings(fill="next_open", stop_loss=sl, take_profit=tp,
                              initial_cash=10_000.0, **COSTS)
    assert_same_as_engine(bars, settings, False, reason)


@pytest.mark.parametrize("closes, reason", [
    ([100, 100, 99, 94], "stop_loss"), ([100, 100, 104, 111], "take_profit"),
    ([100, 100, 101, 99], None)])
def test_close_only_exits_at_the_close(closes, reason):
    bars = ohlc([(c, c, c, c) for c in closes], close_only=True)
    settings = EngineSettings(fill="next_close", stop_loss=0.05, take_profit=0.1,
                              initial_cash=10_000.0, **COSTS)
    assert_same_as_engine(bars, settings, False, reason, close_only=True)


def _entered(rows: list[tuple[float, ...]], qty: float = 50) -> tuple[PaperBroker, list]:
    broker = PaperBroker(EngineSettings(fill="next_open", initial_cash=10_000.0))
    st = steps(ohlc([FLAT, ENTRY, *rows]))
    broker.on_bar(*st[0])
    broker.submit(OrderRequest("entry", "X", "buy", qty))
    broker.on_bar(*st[1])
    return broker, st


def test_an_exit_is_reduce_only_and_voids_the_other_orders():
    broker, st = _entered([(99, 100, 94, 96)])
    broker.submit(OrderRequest("exit", "X", "sell", 80, "stop", "gtc", stop_price=95.0))
    broker.submit(OrderRequest("dip", "X", "buy", 5, "limit", "gtc", limit_price=50.0))
    broker.on_bar(*st[2])
    exit_order = broker.get_order("exit")
    assert exit_order.filled_qty == 50 and exit_order.avg_fill_price == 95.0
    assert exit_order.status == "cancelled" and exit_order.reason == "position exited"
    dip = broker.get_order("dip")
    assert dip.status == "cancelled" and dip.reason == "position exited"
    assert broker.positions() == {} and broker.open_orders() == []
    assert broker.cash == pytest.approx(10_000.0 - 50 * 100.0 + 50 * 95.0)


def test_exits_run_after_the_bars_market_orders():
    broker, st = _entered([(99, 100, 94, 96)])
    broker.submit(OrderRequest("exit", "X", "sell", 50, "stop", "gtc", stop_price=95.0))
    broker.submit(OrderRequest("out", "X", "sell", 50))  # closes at the open of 99 first
    broker.on_bar(*st[2])
    assert broker.get_order("out").avg_fill_price == 99.0
    exit_order = broker.get_order("exit")
    assert exit_order.status == "cancelled" and exit_order.reason == "position is flat"
    assert exit_order.filled_qty == 0


def test_a_stop_with_no_position_is_cancelled():
    broker = PaperBroker(EngineSettings(fill="next_open"))
    st = steps(ohlc([FLAT, ENTRY]))
    broker.on_bar(*st[0])
    broker.submit(OrderRequest("exit", "X", "sell", 5, "stop", "gtc", stop_price=95.0))
    broker.on_bar(*st[1])
    assert broker.get_order("exit").status == "cancelled"
    assert broker.get_order("exit").reason == "position is flat"


def test_an_exit_works_from_the_bar_after_the_entry_and_across_bars():
    broker = PaperBroker(EngineSettings(fill="next_open", initial_cash=10_000.0))
    st = steps(ohlc([FLAT, (100, 101, 90, 100), QUIET, (99, 100, 94, 96)]))
    broker.on_bar(*st[0])
    broker.submit(OrderRequest("entry", "X", "buy", 10))
    # placed with the entry: the entry bar's low (90) does not trigger it, as in the kernel
    broker.submit(OrderRequest("exit", "X", "sell", 10, "stop", "day", stop_price=95.0,
                               take_profit=120.0))
    broker.on_bar(*st[1])
    broker.on_bar(*st[2])
    assert broker.get_order("exit").status == "accepted"  # exits are GTC whatever the tif
    broker.on_bar(*st[3])
    assert broker.get_order("exit").status == "filled"
    assert broker.get_order("exit").avg_fill_price == 95.0


def test_replace_moves_the_stop_and_keeps_the_take_profit():
    broker, st = _entered([QUIET, (104, 112, 103, 108)])
    broker.submit(OrderRequest("exit", "X", "sell", 50, "stop", "gtc", stop_price=90.0,
                               take_profit=110.0))
    moved = broker.replace("exit", stop_price=99.6)
    assert moved.stop_price == 99.6 and broker.get_order("exit").stop_price == 99.6
    broker.on_bar(*st[2])  # low 99.5 reaches the moved stop
    assert broker.get_order("exit").avg_fill_price == 99.6
    broker, st = _entered([QUIET, (104, 112, 103, 108)])
    broker.submit(OrderRequest("exit", "X", "sell", 50, "stop", "gtc", stop_price=90.0,
                               take_profit=110.0))
    broker.replace("exit", stop_price=95.0)
    broker.on_bar(*st[2])
    broker.on_bar(*st[3])
    assert broker.get_order("exit").avg_fill_price == 110.0  # the take-profit survived


class FakeGate:
    """Refuses added exposure in the symbols in `blocked`; records every call."""

    def __init__(self, blocked: set[str]) -> None:
        self.blocked = blocked
        self.checks: list[tuple[str, bool, float]] = []
        self.fills: list[str] = []

    def check(self, symbol: str, adds: bool, ref_price: float) -> str | None:
        self.checks.append((symbol, adds, ref_price))
        return "risk: kill switch" if adds and symbol in self.blocked else None

    def filled(self, symbol: str) -> None:
        self.fills.append(symbol)


def test_the_fill_gate_vetoes_added_exposure_but_never_an_exit():
    gate = FakeGate(set())
    broker = PaperBroker(EngineSettings(fill="next_open", initial_cash=10_000.0,
                                        slippage_bps=10), fill_gate=gate)
    st = steps(ohlc([FLAT, ENTRY, (101, 102, 100, 101), (100, 101, 94, 96), QUIET]))
    broker.on_bar(*st[0])
    broker.submit(OrderRequest("entry", "X", "buy", 50))
    broker.on_bar(*st[1])
    assert gate.checks == [("X", True, 100.0)] and gate.fills == ["X"]  # before costs
    gate.blocked.add("X")
    broker.submit(OrderRequest("more", "X", "buy", 10))
    broker.submit(OrderRequest("less", "X", "sell", 10))
    broker.updates()
    broker.on_bar(*st[2])
    assert gate.checks[1:] == [("X", False, 101.0), ("X", True, 101.0)]
    more = broker.get_order("more")
    assert more.status == "rejected" and more.reason == "risk: kill switch"
    assert more.filled_qty == 0 and broker.get_order("less").status == "filled"
    assert [(u.order.client_order_id, u.event) for u in broker.updates()] == [
        ("less", "fill"), ("more", "rejected")]
    assert broker.positions()["X"].qty == 40
    broker.submit(OrderRequest("exit", "X", "sell", 40, "stop", "gtc", stop_price=95.0))
    n = len(gate.checks)
    broker.on_bar(*st[3])
    assert broker.get_order("exit").status == "filled"
    assert len(gate.checks) == n and gate.fills == ["X", "X", "X"]  # not gated, counted
