"""Hourly bars run through the whole pipeline; annualisation follows the bar interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mltrader.backtest.metrics import bar_returns
from mltrader.config import config_from_dict
from mltrader.data.bars import Bars
from mltrader.data.calendars import bars_per_year, periods_per_year
from mltrader.pipeline import run


def _hourly(days: int = 252 * 4, n: int = 3, seed: int = 0) -> Bars:
    sessions = pd.bdate_range("2001-01-02", periods=days)
    idx = pd.DatetimeIndex([d + pd.Timedelta(hours=14, minutes=30) + pd.Timedelta(hours=h)
                            for d in sessions for h in range(7)], tz="UTC")
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0001, 0.004, (len(idx), n)), axis=0))
    return Bars(index=idx, symbols=tuple(f"S{i}" for i in range(n)), close=close, source="t")


def test_hourly_bars_annualise_with_seven_bars_a_session():
    bars = _hourly()
    assert periods_per_year(bars.index) == 7 * 252
    cfg = config_from_dict({
        "model": {"name": "ridge"}, "walk_forward": {"first_test_year": 2003,
                                                     "min_train_rows": 100},
        "strategy": {"threshold": 0.0, "rebalance": "daily"},
        "risk": {"daily_loss_limit": 0.01}})
    out = run(cfg, bars=bars)
    m = out.metrics
    # with the run's calendar (S0.. default to XNYS): its sessions a year x 7 hourly bars
    ppy = bars_per_year("XNYS", "1h")
    assert m["periods_per_year"] == ppy and m["calendar"] == "XNYS" and m["interval"] == "1h"
    assert abs(ppy - 7 * 252) < 7 * 1.0
    r = bar_returns(out.benchmark.equity, out.benchmark.initial_cash)
    expected = np.std(r, ddof=1) * np.sqrt(ppy)
    assert abs(m["buy_and_hold"]["annual_volatility"] - expected) < 1e-9
    # a session is a calendar day: the daily loss guard can act within it
    t = out.strategy.trades
    hit = t[t["exit_reason"].astype(str) == "daily_loss_limit"]
    assert len(hit) > 0
    blocked = out.strategy.orders
    blocked = blocked[blocked["reason"].astype(str) == "risk: daily loss limit"]
    eq = out.strategy.equity
    day = eq.index.date
    start_eq = eq.groupby(day).last().shift(1).fillna(out.strategy.initial_cash)
    tripped = {d for d, lo in eq.groupby(day).min().items() if lo <= start_eq[d] * 0.99}
    assert len(blocked) and {pd.Timestamp(c).date() for c in blocked["created"]} <= tripped
