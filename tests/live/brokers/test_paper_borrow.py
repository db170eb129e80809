"""The paper broker charges the engine's borrow fee on shorts: same bars, same rate, same
price, so a short strategy's paper session keeps parity with its backtest."""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3

import numpy as np
import pandas as pd
import pytest

from mltrader.backtest.engine import EngineSettings, run_backtest
from mltrader.config import config_from_dict
from mltrader.data.feeds import ReplayFeed
from mltrader.data.files import save_file
from mltrader.live.brokers.base import OrderRequest
from mltrader.live.brokers.paper import PaperBroker
from mltrader.live.session import paper_session
from mltrader.parity import parity_report
from mltrader.pipeline import load_data
from mltrader.testing import synthetic_bars

COSTS = dict(slippage_bps=5, half_spread_bps=2, commission_bps=1, commission_per_share=0.005,
             commission_min=1.0, slippage_range_frac=0.1)
# a high rate and an odd year length, so a wrong basis, bar or rate shows
BORROW = dict(borrow_bps_per_year=500.0, periods_per_year=251.6, allow_short=True)
# bar -> target shares, decided on that bar's close: two shorts, a partial cover, a short
# flipped long, a cover; S00 has no bar on bar 6 (valued at bar 5's close meanwhile)
PLAN = {0: {"S00": -100, "S01": -40}, 4: {"S00": -30}, 8: {"S01": 20}, 10: {"S00": 0}}
GAP = (6, 0)


def _bars():
    bars = synthetic_bars(14, 2, seed=4, ohlc=True)
    arrays = {f: getattr(bars, f).copy() for f in ("open", "high", "low", "close", "volume")}
    for a in arrays.values():
        a[GAP] = np.nan
    return dataclasses.replace(bars, **arrays)


def _steps(bars):
    return [(t, {e.symbol: e for e in g})
            for t, g in itertools.groupby(ReplayFeed(bars).bars(), key=lambda e: e.time)]


def _drive(broker, steps, reopen=None):
    """Feed the bars and submit PLAN's orders; per bar the account's equity."""
    held: dict[str, float] = {}
    equity = []
    for i, (t, group) in enumerate(steps):
        broker.on_bar(t, group)
        list(broker.updates())
        equity.append(broker.account().equity)
        for s, q in PLAN.get(i, {}).items():
            delta = q - held.get(s, 0.0)
            broker.submit(OrderRequest(f"o{i}{s}", s, "buy" if delta > 0 else "sell",
                                       abs(delta)))
            held[s] = q
        if reopen is not None:
            broker = reopen(broker)
    return broker, equity


def _engine(bars, settings):
    tgt = pd.DataFrame(np.nan, index=bars.index, columns=list(bars.symbols))
    for r, row in PLAN.items():
        for s, q in row.items():
            tgt.loc[bars.index[r], s] = q
    return run_backtest(bars, tgt, settings, unit="shares")


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_a_short_pays_the_engines_borrow_fee_on_every_bar(fill):
    bars = _bars()
    settings = EngineSettings(fill=fill, **COSTS, **BORROW)
    engine = _engine(bars, settings)
    broker, equity = _drive(PaperBroker(settings), _steps(bars))

    # the fee by hand from the engine's positions: each bar after the first pays the rate
    # on the shorts held at the previous close, valued at that symbol's last close
    rate = 500.0 * 1e-4 / 251.6
    last = bars.frame("close").ffill()
    shorts = engine.positions.clip(upper=0.0)
    by_hand = float((-shorts.shift(1) * last.shift(1)).sum().sum() * rate)
    assert by_hand > 1.0
    assert engine.borrow_costs == pytest.approx(by_hand, rel=1e-12)
    assert broker.borrow_paid == pytest.approx(engine.borrow_costs, rel=1e-12)
    # the fee is in the cash, so every bar's equity is the engine's
    assert broker.cash == pytest.approx(engine.cash.iloc[-1], rel=1e-12)
    np.testing.assert_allclose(equity, engine.equity.to_numpy(), rtol=1e-12)
    # without a rate nothing is charged and the equity is higher by the fee (and what the
    # fee's absence changed in the sizing: nothing here, orders are share counts)
    free = PaperBroker(dataclasses.replace(settings, borrow_bps_per_year=0.0))
    free, _ = _drive(free, _steps(bars))
    assert free.borrow_paid == 0.0
    assert free.cash - broker.cash == pytest.approx(engine.borrow_costs, rel=1e-9)


def test_the_fee_total_survives_a_restart_and_an_old_state_file_resumes(tmp_path):
    bars = _bars()
    settings = EngineSettings(fill="next_open", **COSTS, **BORROW)
    ref, _ = _drive(PaperBroker(settings), _steps(bars))
    path = tmp_path / "paper.db"

    def reopen(b):
        b.close()
        return PaperBroker(settings, state_path=path)

    live, _ = _drive(PaperBroker(settings, state_path=path), _steps(bars), reopen)
    assert live.borrow_paid == ref.borrow_paid > 0 and live.cash == ref.cash
    live.close()

    # a file written before the fee was charged: no borrow_paid column, periods_per_year
    # 252 in its settings; it opens (the column added at 0) and goes on charging
    old = tmp_path / "old.db"
    first = PaperBroker(dataclasses.replace(settings, periods_per_year=252.0), state_path=old)
    first.on_bar(*_steps(bars)[0])
    first.close()
    with sqlite3.connect(old) as db:
        db.execute("ALTER TABLE state DROP COLUMN borrow_paid")
    resumed = PaperBroker(settings, state_path=old)
    assert resumed.borrow_paid == 0.0 and resumed.cash == settings.initial_cash
    resumed.submit(OrderRequest("s", "S00", "sell", 10))
    for step in _steps(bars)[1:4]:
        resumed.on_bar(*step)
    assert resumed.borrow_paid > 0
    resumed.close()
    assert PaperBroker(settings, state_path=old).borrow_paid == resumed.borrow_paid


CONFIG = {
    "name": "parity-borrow",
    "strategy": {"name": "crossover", "fast": 3, "slow": 12, "allow_short": True},
    "walk_forward": {"first_test_year": 2001},
    "execution": {"size_at": "decision", "rebalance_band": 0.0},
    "costs": {"commission_bps": 1, "slippage_bps": 5, "borrow_bps_per_year": 300},
}


def test_a_short_crossover_session_keeps_parity_with_borrow_fees(tmp_path):
    path = save_file(synthetic_bars(330, 3, seed=8, ohlc=True, start="2000-01-03"),
                     tmp_path / "bars.csv")
    cfg = config_from_dict({**CONFIG, "data": {"source": "file", "path": str(path)}})
    bars, _ = load_data(cfg)
    folder = tmp_path / "sess"
    res = paper_session(cfg, bars, folder)
    with sqlite3.connect(folder / "broker.db") as db:
        (paid,), = db.execute("SELECT borrow_paid FROM state")
    assert paid > 20.0  # enough to fail parity if it were missing (tolerance ~0.1 here)
    rep = parity_report(folder)
    assert rep.ok, rep.summary()
    assert rep.matched == res.fills > 10
    assert rep.equity_journal == pytest.approx(rep.equity_backtest, rel=1e-9)
