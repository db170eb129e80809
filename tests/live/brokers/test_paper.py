"""The paper broker fills like the backtest engine: same prices, costs and cash."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from mltrader.backtest.engine import EngineSettings, run_backtest
from mltrader.data.feeds import ReplayFeed
from mltrader.live.brokers.base import Broker, OrderRejected, OrderRequest
from mltrader.live.brokers.paper import PaperBroker
from mltrader.testing import synthetic_bars

COSTS = dict(slippage_bps=5, half_spread_bps=2, commission_bps=1, commission_per_share=0.005,
             commission_min=1.0, slippage_range_frac=0.1)


def _by_time(bars):
    feed = ReplayFeed(bars)
    for t, group in itertools.groupby(feed.bars(), key=lambda e: e.time):
        yield t, {e.symbol: e for e in group}


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_paper_fills_equal_the_engine_fills(fill):
    bars = synthetic_bars(12, 2, seed=4, ohlc=True)
    settings = EngineSettings(fill=fill, **COSTS)
    plan = {0: {"S00": 100, "S01": 40}, 4: {"S00": 30}, 7: {"S00": 0, "S01": 0}}
    tgt = pd.DataFrame(np.nan, index=bars.index, columns=list(bars.symbols))
    for r, row in plan.items():
        for s, q in row.items():
            tgt.loc[bars.index[r], s] = q
    engine = run_backtest(bars, tgt, settings, unit="shares")

    broker = PaperBroker(settings)
    assert isinstance(broker, Broker)
    held = {s: 0.0 for s in bars.symbols}
    fills = []
    for i, (t, group) in enumerate(_by_time(bars)):
        broker.on_bar(t, group)
        fills += [u.fill for u in broker.updates() if u.fill is not None]
        for s, q in plan.get(i, {}).items():  # decided on this bar's close
            delta = q - held[s]
            if delta:
                broker.submit(OrderRequest(f"o{i}{s}", s, "buy" if delta > 0 else "sell",
                                           abs(delta)))
                held[s] = q
    ef = engine.fills
    assert len(fills) == len(ef) == 5
    got = sorted((f.time, f.symbol, f.qty * (1 if f.side == "buy" else -1), f.price,
                  f.commission) for f in fills)
    want = sorted(zip(ef["date"], ef["symbol"].astype(str), ef["qty"], ef["price"],
                      ef["commission"], strict=True))
    for g, w in zip(got, want, strict=True):
        assert g[:3] == tuple(w[:3])
        assert g[3] == pytest.approx(w[3], rel=1e-12) and g[4] == pytest.approx(w[4], rel=1e-12)
    assert broker.cash == pytest.approx(engine.cash.iloc[-1], rel=1e-12)
    assert broker.account().equity == pytest.approx(engine.equity.iloc[-1], rel=1e-12)


def test_submit_is_idempotent_and_buys_are_cut_to_cash_like_the_engine():
    bars = synthetic_bars(3, 1, seed=0, ohlc=True)
    steps = list(_by_time(bars))
    broker = PaperBroker(EngineSettings(fill="next_open", initial_cash=1_000))
    broker.on_bar(*steps[0])
    a = broker.submit(OrderRequest("x1", "S00", "buy", 5))
    assert broker.submit(OrderRequest("x1", "S00", "buy", 5)) == a
    assert len(broker.open_orders()) == 1
    with pytest.raises(OrderRejected, match="not allowed to short"):
        broker.submit(OrderRequest("x3", "S00", "sell", 1))
    assert broker.get_order("x3").status == "rejected"
    broker.submit(OrderRequest("x2", "S00", "buy", 10_000))
    broker.on_bar(*steps[1])
    assert broker.get_order("x1").filled_qty == 5
    big = broker.get_order("x2")
    assert 0 < big.filled_qty < 10_000 and broker.cash >= 0  # resized to the cash left
    strict = PaperBroker(EngineSettings(fill="next_open", initial_cash=1_000,
                                        oversize="reject"))
    strict.on_bar(*steps[0])
    strict.submit(OrderRequest("y", "S00", "buy", 10_000))
    strict.on_bar(*steps[1])
    assert strict.get_order("y").status == "rejected" and strict.cash == 1_000


def test_volume_cap_fills_in_parts_and_a_day_order_is_cancelled():
    bars = synthetic_bars(4, 1, seed=0, ohlc=True)
    s = EngineSettings(fill="next_open", max_volume_share=0.001, initial_cash=1e9)
    broker = PaperBroker(s)
    steps = list(_by_time(bars))
    broker.on_bar(*steps[0])
    broker.submit(OrderRequest("gtc", "S00", "buy", 1000, time_in_force="gtc"))
    broker.submit(OrderRequest("day", "S00", "buy", 1000))
    broker.on_bar(*steps[1])
    vol = bars.volume[1, 0] * 0.001
    assert broker.get_order("gtc").filled_qty == pytest.approx(min(vol, 1000))
    assert broker.get_order("day").status == "cancelled"
    assert [o.client_order_id for o in broker.open_orders()] == ["gtc"]


def test_limit_orders_fill_only_when_reached():
    bars = synthetic_bars(3, 1, seed=1, ohlc=True)
    broker = PaperBroker(EngineSettings(fill="next_open"))
    steps = list(_by_time(bars))
    broker.on_bar(*steps[0])
    low = bars.low[1, 0]
    broker.submit(OrderRequest("lo", "S00", "buy", 1, type="limit", limit_price=low * 0.9))
    broker.submit(OrderRequest("hi", "S00", "buy", 1, type="limit", limit_price=low * 1.0001))
    broker.on_bar(*steps[1])
    assert broker.get_order("lo").status == "cancelled"
    assert broker.get_order("hi").status == "filled"


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
@pytest.mark.parametrize("whole", [False, True])
def test_weights_sized_at_the_decision_close_trade_the_same_in_paper_and_backtest(fill, whole):
    from mltrader.core.orders import decision_orders

    bars = synthetic_bars(120, 4, seed=9, ohlc=True)
    settings = EngineSettings(fill=fill, whole_shares=whole, rebalance_band=0.02,
                              size_at="decision", **COSTS)
    rng = np.random.default_rng(2)
    w = rng.dirichlet(np.ones(5), size=len(bars))[:, :4]
    w[rng.random(len(bars)) < 0.6] = np.nan  # decisions on ~40% of the bars
    tgt = pd.DataFrame(w, index=bars.index, columns=list(bars.symbols))
    engine = run_backtest(bars, tgt, settings)

    broker = PaperBroker(settings)
    buy_bps = COSTS["slippage_bps"] + COSTS["half_spread_bps"] + COSTS["commission_bps"]
    n_fills = 0
    for i, (t, group) in enumerate(_by_time(bars)):
        broker.on_bar(t, group)
        n_fills += sum(u.fill is not None for u in broker.updates())
        if i == len(bars) - 1:
            break
        held = {s: p.qty for s, p in broker.positions().items()}
        closes = {s: e.close for s, e in group.items()}
        deltas = decision_orders(tgt.iloc[i].to_dict(), broker.account().equity, closes, held,
                                 buy_bps, settings.rebalance_band, whole)
        for s, d in deltas.items():
            broker.submit(OrderRequest(f"{i}-{s}", s, "buy" if d > 0 else "sell", abs(d)))
    assert n_fills == len(engine.fills) > 20
    assert broker.cash == pytest.approx(engine.cash.iloc[-1], rel=1e-9)
    assert broker.account().equity == pytest.approx(engine.equity.iloc[-1], rel=1e-9)
    final = engine.positions.iloc[-1]
    for s in bars.symbols:
        held = broker.positions().get(s)
        assert (held.qty if held else 0.0) == pytest.approx(final[s], rel=1e-9, abs=1e-9)


def test_a_partly_filled_day_order_ends_cancelled_in_the_events_too():
    """Regression: the event said "partially_filled" (an open status) while the broker said
    "cancelled", so the journal kept the order open forever."""
    bars = synthetic_bars(4, 1, seed=0, ohlc=True)
    broker = PaperBroker(EngineSettings(fill="next_open", initial_cash=1_000.0))
    steps = list(_by_time(bars))
    broker.on_bar(*steps[0])
    broker.submit(OrderRequest("big", "S00", "buy", 1_000))  # far more than the cash buys
    broker.on_bar(*steps[1])
    order = broker.get_order("big")
    assert 0 < order.filled_qty < 1_000 and order.status == "cancelled"
    last = [u for u in broker.updates() if u.order.client_order_id == "big"][-1]
    assert last.order.status == "cancelled" and last.order.done
    assert last.order.filled_qty == order.filled_qty
