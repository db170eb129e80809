"""The runner resets its daily guards on the backtest's sessions: an FX replay with a daily
loss limit trades exactly what the backtest trades, and UTC days would trade otherwise."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mltrader.backtest.engine import run_backtest
from mltrader.config import config_from_dict
from mltrader.data.bars import Bars
from mltrader.data.calendars import MarketCalendar, expected_bars, session_ids
from mltrader.data.feeds import ReplayFeed
from mltrader.live.brokers.paper import PaperBroker
from mltrader.live.runner import Runner, _day
from mltrader.pipeline import engine_settings, resolve_fill, run, trade_targets


def _fx_hourly() -> Bars:
    idx = expected_bars("24/5", "2023-12-01", "2024-01-31 23:00", "1h")
    rng = np.random.default_rng(3)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.002, (len(idx), 2)), axis=0))
    return Bars(index=idx, symbols=("EURUSD", "GBPUSD"), close=close, source="t")


def test_the_runner_day_is_the_calendar_session_bar_by_bar():
    bars = _fx_hourly()
    fx = MarketCalendar("24/5")
    assert [_day(t, fx) for t in bars.index[:50]] == list(session_ids(fx, bars.index[:50]))


def test_fx_replay_with_a_daily_loss_limit_equals_the_backtest():
    bars = _fx_hourly()
    cfg = config_from_dict({
        "strategy": {"name": "crossover", "fast": 5, "slow": 20},
        "walk_forward": {"first_test_year": 2024},
        "execution": {"size_at": "decision", "rebalance_band": 0.0},
        "risk": {"daily_loss_limit": 0.004}})
    backtest = run(cfg, bars=bars)
    assert backtest.metrics["calendar"] == "24/5"
    start = backtest.signals.start
    ef = backtest.strategy.fills
    assert (ef["reason"].astype(str) == "daily_loss_limit").any()
    # the same run with UTC-date sessions trades differently: the rule matters here
    utc = run_backtest(bars, trade_targets(backtest.signals, bars, cfg).values,
                       engine_settings(cfg, backtest.signals.fill,
                                       backtest.metrics["periods_per_year"]), start=start)
    assert len(utc.fills) != len(ef) or not np.allclose(
        utc.fills["qty"].to_numpy(), ef["qty"].to_numpy())

    history = bars.select(None, None, bars.index[start - 1])
    broker = PaperBroker(engine_settings(cfg, resolve_fill(cfg, bars)))
    runner = Runner(cfg, broker, history)
    assert runner.calendar.name == "24/5"
    for t, group in itertools.groupby(ReplayFeed(bars, start=bars.index[start]).bars(),
                                      key=lambda e: e.time):
        group = {e.symbol: e for e in group}
        broker.on_bar(t, group)
        runner.on_bar(t, group)
    runner.finish()
    got = sorted((f.symbol, round(f.qty, 9), round(f.price, 9)) for f in broker.fills())
    want = sorted(zip(ef["symbol"].astype(str), ef["qty"].abs().round(9),
                      ef["price"].round(9), strict=True))
    assert got == want
    assert broker.account().equity == pytest.approx(backtest.strategy.equity.iloc[-1],
                                                    rel=1e-9)
