"""Replaying history through the runner and the paper broker trades what the backtest trades."""

from __future__ import annotations

import itertools

import pytest

from mltrader.config import config_from_dict
from mltrader.data.feeds import ReplayFeed
from mltrader.live.brokers.paper import PaperBroker
from mltrader.live.journal import Journal
from mltrader.live.runner import Runner
from mltrader.pipeline import engine_settings, resolve_fill, run, run_folds
from mltrader.testing import synthetic_bars

BARS = synthetic_bars(1300, 4, seed=21, ohlc=True, start="2000-01-03")


def _replay(cfg, journal=None):
    start = run_folds(BARS, cfg)[0].test_start
    history = BARS.select(None, None, BARS.index[start - 1])
    broker = PaperBroker(engine_settings(cfg, resolve_fill(cfg, BARS)))
    runner = Runner(cfg, broker, history, journal=journal)
    feed = ReplayFeed(BARS, start=BARS.index[start])
    for t, group in itertools.groupby(feed.bars(), key=lambda e: e.time):
        group = {e.symbol: e for e in group}
        broker.on_bar(t, group)
        runner.on_bar(t, group)
    runner.finish()
    return broker, runner


@pytest.mark.parametrize("whole", [False, True])
def test_crossover_replay_equals_the_backtest(whole, tmp_path):
    cfg = config_from_dict({
        "strategy": {"name": "crossover", "fast": 10, "slow": 40},
        "walk_forward": {"first_test_year": 2002},
        "execution": {"size_at": "decision", "whole_shares": whole, "rebalance_band": 0.0},
        "costs": {"commission_bps": 1, "slippage_bps": 5}})
    backtest = run(cfg, bars=BARS)
    journal = Journal(f"sqlite:///{tmp_path / 'j.db'}")
    broker, runner = _replay(cfg, journal)
    ef = backtest.strategy.fills
    fills = journal.fills_for()
    assert len(fills) == len(ef) > 10
    assert broker.cash == pytest.approx(backtest.strategy.cash.iloc[-1], rel=1e-9)
    assert broker.account().equity == pytest.approx(backtest.strategy.equity.iloc[-1],
                                                    rel=1e-9)
    got = sorted(zip(fills["symbol"], fills["qty"].round(9), strict=True))
    want = sorted(zip(ef["symbol"].astype(str), ef["qty"].abs().round(9), strict=True))
    assert got == want
    # every order was journaled before it was sent, each once
    orders = journal.orders_frame()
    assert len(orders) == len(runner.sent) and orders["client_order_id"].is_unique


def test_a_model_strategy_replays_end_to_end_with_a_model_trained_on_history():
    cfg = config_from_dict({
        "model": {"name": "ridge"}, "strategy": {"name": "threshold", "threshold": 0.0},
        "walk_forward": {"first_test_year": 2004, "min_train_rows": 100},
        "execution": {"size_at": "decision"}})
    broker, runner = _replay(cfg)
    assert len(runner.sent) > 10 and broker.account().equity > 0
    # one prediction row per replayed bar, computed from the window up to that bar
    start = run_folds(BARS, cfg)[0].test_start
    assert len(runner._pred_rows) == len(BARS) - start


def test_a_strategy_that_needs_regimes_gets_them_in_the_runner():
    cfg = config_from_dict({
        "model": {"name": "ridge"},
        "strategy": {"name": "regime_filter", "buy_above": 0.0, "sell_below": -0.001},
        "walk_forward": {"first_test_year": 2004, "min_train_rows": 100},
        "execution": {"size_at": "decision"}})
    broker, runner = _replay(cfg)
    assert len(runner.sent) > 0


RISK_CASES = [{"stop_loss": 0.03}, {"take_profit": 0.05},
              {"stop_loss": 0.04, "take_profit": 0.06}, {"trailing_stop": 0.05},
              {"daily_loss_limit": 0.02}, {"kill_switch_drawdown": 0.08},
              {"max_trades_per_day": 1}, {"time_stop": 5}, {"price_sanity": 0.005},
              {"stop_loss": 0.05, "trailing_stop": 0.04, "daily_loss_limit": 0.03,
               "time_stop": 30}]


def _risk_cfg(risk):
    return config_from_dict({
        "strategy": {"name": "crossover", "fast": 10, "slow": 40},
        "walk_forward": {"first_test_year": 2002},
        "execution": {"size_at": "decision", "rebalance_band": 0.0},
        "costs": {"commission_bps": 1, "slippage_bps": 5}, "risk": risk})


@pytest.fixture(scope="module")
def unguarded_equity():
    return run(_risk_cfg({}), bars=BARS).strategy.equity.iloc[-1]


@pytest.mark.parametrize("risk", RISK_CASES, ids=lambda r: ",".join(r))
def test_every_exit_and_guard_acts_in_the_runner_as_in_the_backtest(risk, tmp_path,
                                                                     unguarded_equity):
    cfg = _risk_cfg(risk)
    backtest = run(cfg, bars=BARS)
    journal = Journal(f"sqlite:///{tmp_path / 'j.db'}")
    broker, _ = _replay(cfg, journal)
    ef = backtest.strategy.fills
    fills = journal.fills_for()
    # the rule bites: the run differs from the same strategy without it
    assert backtest.strategy.equity.iloc[-1] != pytest.approx(unguarded_equity, rel=1e-9)
    assert len(fills) == len(ef) > 10
    got = sorted(zip(fills["symbol"], fills["qty"].round(9), fills["price"].round(9),
                     strict=True))
    want = sorted(zip(ef["symbol"].astype(str), ef["qty"].abs().round(9),
                      ef["price"].round(9), strict=True))
    assert got == want
    assert broker.cash == pytest.approx(backtest.strategy.cash.iloc[-1], rel=1e-9)
    assert broker.account().equity == pytest.approx(backtest.strategy.equity.iloc[-1],
                                                    rel=1e-9)
    journal.close()
