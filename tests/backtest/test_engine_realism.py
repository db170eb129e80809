"""Engine realism: order types, intrabar exits, costs, liquidity, shorts, leverage, books."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrader.backtest.engine import run_backtest, run_signals
from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.errors import MltraderError


def ohlc(rows: list[tuple[float, float, float, float]], volume: float = 1e9) -> Bars:
    """One symbol from (open, high, low, close) rows."""
    a = np.array(rows, dtype=float)
    idx = pd.bdate_range("2021-01-04", periods=len(a), tz="UTC")
    return Bars(index=idx, symbols=("X",), open=a[:, :1], high=a[:, 1:2], low=a[:, 2:3],
                close=a[:, 3:4], volume=np.full((len(a), 1), volume))


def targets(bars: Bars, rows: dict[int, float | list[float]]) -> pd.DataFrame:
    t = np.full(bars.shape, np.nan)
    for r, w in rows.items():
        t[r] = w
    return pd.DataFrame(t, index=bars.index, columns=list(bars.symbols))


FLAT = (100.0, 100.0, 100.0, 100.0)
S = EngineSettings(fill="next_open", initial_cash=10_000.0)


def es(**kw) -> EngineSettings:
    """Settings for these tests: next-open fills and 10,000 of cash unless overridden."""
    kw.setdefault("fill", "next_open")
    kw.setdefault("initial_cash", 10_000.0)
    return EngineSettings(**kw)


def only_fill(res):
    assert len(res.fills) >= 1
    return res.fills.iloc[0]


# ------------------------------------------------------------------ timing and order types
def test_market_order_fills_at_next_open_or_next_close():
    bars = ohlc([FLAT, (101, 103, 99, 102), (102, 104, 100, 103)])
    res = run_backtest(bars, targets(bars, {0: 1.0}), S)
    assert only_fill(res)["price"] == 101 and only_fill(res)["date"] == bars.index[1]
    res = run_backtest(bars, targets(bars, {0: 1.0}), es(fill="next_close"))
    assert only_fill(res)["price"] == 102


def test_buy_limit_fills_at_limit_or_better_open_and_day_orders_expire():
    # limit 1% below the decision close of 100 -> 99
    s = es(order_type="limit", limit_offset_bps=100)
    bars = ohlc([FLAT, (100, 101, 98.5, 100), FLAT])
    assert only_fill(run_backtest(bars, targets(bars, {0: 1.0}), s))["price"] == 99.0
    gap = ohlc([FLAT, (97, 98, 96, 97), FLAT])
    assert only_fill(run_backtest(gap, targets(gap, {0: 1.0}), s))["price"] == 97.0
    miss = ohlc([FLAT, (100, 101, 99.5, 100), (100, 101, 98, 100)])
    res = run_backtest(miss, targets(miss, {0: 1.0}), s)
    assert res.fills.empty
    assert res.orders["status"].iloc[0] == "cancelled"
    assert "not reached" in res.orders["reason"].iloc[0]
    gtc = es(order_type="limit", limit_offset_bps=100, tif="gtc")
    res = run_backtest(miss, targets(miss, {0: 1.0}), gtc)
    assert only_fill(res)["date"] == miss.index[2] and only_fill(res)["price"] == 99.0


def test_buy_stop_and_stop_limit():
    s = es(order_type="stop", stop_offset_bps=200)  # stop 102
    bars = ohlc([FLAT, (100, 103, 99, 101), FLAT])
    assert only_fill(run_backtest(bars, targets(bars, {0: 1.0}), s))["price"] == 102.0
    gap = ohlc([FLAT, (105, 106, 104, 105), FLAT])
    assert only_fill(run_backtest(gap, targets(gap, {0: 1.0}), s))["price"] == 105.0
    # stop-limit: stop 102, limit 101 (limit offset 100 bps below the close): a gap to 105
    # triggers the stop but the limit is not reached, so nothing fills
    sl = es(order_type="stop_limit", stop_offset_bps=200,
                        limit_offset_bps=100)
    assert run_backtest(gap, targets(gap, {0: 1.0}), sl).fills.empty


def test_no_fill_when_the_symbol_did_not_trade():
    idx = pd.bdate_range("2021-01-04", periods=3, tz="UTC")
    close = np.array([[100.0, 50.0], [np.nan, 51.0], [101.0, 52.0]])
    bars = Bars(index=idx, symbols=("A", "B"), close=close)
    res = run_backtest(bars, targets(bars, {0: [0.5, 0.5]}), es(fill="next_close"))
    assert list(res.fills["symbol"]) == ["B"]
    assert res.orders.set_index("symbol").loc["A", "reason"].startswith("symbol did not trade")


# ------------------------------------------------------------------ intrabar exits
def _long_then(rows, **kw):
    bars = ohlc([FLAT, FLAT, *rows])  # decided at bar 0, entry at bar 1's open = 100
    entries = np.zeros((len(bars), 1), bool)
    entries[0] = True
    s = es(**kw)
    return run_signals(bars, entries, np.zeros_like(entries), s)


def test_stop_loss_intrabar_gap_and_pessimistic_order():
    res = _long_then([(99, 100, 96, 98)], stop_loss=0.03)
    tr = res.trades.iloc[0]
    assert tr["exit_price"] == 97.0 and tr["exit_reason"] == "stop_loss" and tr["exit_bar"] == 2
    res = _long_then([(95, 96, 94, 95)], stop_loss=0.03)  # gap through the stop: the open
    assert res.trades.iloc[0]["exit_price"] == 95.0
    res = _long_then([(100, 106, 96, 100)], stop_loss=0.03, take_profit=0.05)  # both inside
    assert res.trades.iloc[0]["exit_reason"] == "stop_loss"


def test_exits_are_not_checked_on_the_entry_bar():
    bars = ohlc([FLAT, (100, 100, 90, 100), FLAT])  # the entry bar itself falls 10%
    entries = np.array([[True], [False], [False]])
    res = run_signals(bars, entries, np.zeros_like(entries), es(stop_loss=0.03))
    assert res.trades.iloc[0]["open"]


def test_take_profit_and_trailing_stop():
    res = _long_then([(101, 106, 100, 104)], take_profit=0.05)
    tr = res.trades.iloc[0]
    assert tr["exit_price"] == 105.0 and tr["exit_reason"] == "take_profit"
    res = _long_then([(107, 108, 106, 107)], take_profit=0.05)  # gap above the target
    assert res.trades.iloc[0]["exit_price"] == 107.0
    # trailing 5%: best high 110 -> level 104.5, hit on the next bar
    res = _long_then([(101, 110, 100, 109), (108, 108, 104, 105)], trailing_stop=0.05)
    tr = res.trades.iloc[0]
    assert tr["exit_reason"] == "trailing_stop" and tr["exit_price"] == pytest.approx(104.5)


def test_signal_exit_wins_over_the_stop_on_its_bar():
    bars = ohlc([FLAT, FLAT, (90, 91, 89, 90)])
    entries = np.array([[True], [False], [False]])
    exits = np.array([[False], [True], [False]])
    res = run_signals(bars, entries, exits, es(stop_loss=0.03))
    assert res.trades.iloc[0]["exit_reason"] == "order"
    assert res.trades.iloc[0]["exit_price"] == 90.0


def test_mae_and_mfe():
    res = _long_then([(100, 104, 98, 103), (103, 107, 101, 106)])
    tr = res.trades.iloc[0]  # still open: worst low 98, best high 107 after entry at 100
    assert tr["mae"] == pytest.approx(-0.02) and tr["mfe"] == pytest.approx(0.07)


# ------------------------------------------------------------------ costs
def test_commission_models():
    bars = ohlc([FLAT, FLAT, FLAT])
    s = es(commission_per_share=0.005, commission_min=1.0,
                       whole_shares=True)
    f = only_fill(run_backtest(bars, targets(bars, {0: 0.01}), s))  # 1 share
    assert f["qty"] == 1 and f["commission"] == 1.0  # the minimum
    f = only_fill(run_backtest(bars, targets(bars, {0: 0.9}), s))  # 90 shares
    assert f["commission"] == pytest.approx(1.0)  # 90 x 0.005 = 0.45 < min
    s = es(commission_fixed=2.5, commission_bps=10)
    f = only_fill(run_backtest(bars, targets(bars, {0: 0.5}), s))
    assert f["commission"] == pytest.approx(2.5 + f["notional"] * 1e-3)


def test_slippage_range_fraction_and_half_spread():
    bars = ohlc([FLAT, (100, 104, 96, 100), FLAT])
    s = es(slippage_range_frac=0.1, half_spread_bps=10)
    f = only_fill(run_backtest(bars, targets(bars, {0: 0.5}), s))
    assert f["price"] == pytest.approx(100 + 0.8 + 0.1)
    assert f["slippage"] == pytest.approx(f["qty"] * 0.9)


def test_borrow_fee_on_shorts():
    bars = ohlc([FLAT] * 12)
    s = es(allow_short=True, borrow_bps_per_year=252 * 10)
    res = run_backtest(bars, targets(bars, {0: -0.5}), s)  # 10 bps of short value per bar
    short_value = 0.5 * 10_000
    assert res.positions["X"].iloc[-1] == pytest.approx(-50)
    assert res.borrow_costs == pytest.approx(10 * short_value * 1e-3)
    assert res.equity.iloc[-1] == pytest.approx(10_000 - res.borrow_costs)


def test_short_profits_when_price_falls():
    bars = ohlc([FLAT, FLAT, (90, 90, 90, 90)])
    s = es(allow_short=True)
    res = run_backtest(bars, targets(bars, {0: -1.0}), s)
    assert res.equity.iloc[-1] == pytest.approx(11_000)
    assert res.trades.iloc[0]["qty"] == pytest.approx(-100)


def test_shorts_need_permission():
    bars = ohlc([FLAT, FLAT])
    with pytest.raises(MltraderError, match="short selling is off"):
        run_backtest(bars, targets(bars, {0: -0.5}), EngineSettings())


# ------------------------------------------------------------------ liquidity and cash
def test_volume_limit_partial_fills_wait_or_cancel():
    bars = ohlc([FLAT] * 5, volume=200)  # 10% of volume = 20 shares per bar
    wait = es(max_volume_share=0.1, remainder="wait")
    res = run_backtest(bars, targets(bars, {0: 0.5}), wait)  # wants 50 shares
    assert list(res.fills["qty"]) == [20, 20, 10]
    assert res.orders["status"].iloc[0] == "filled"
    cancel = es(max_volume_share=0.1, remainder="cancel")
    res = run_backtest(bars, targets(bars, {0: 0.5}), cancel)
    assert list(res.fills["qty"]) == [20]
    assert res.orders["status"].iloc[0] == "partially_filled"
    assert res.orders["reason"].iloc[0].startswith("volume limit")


def test_orders_that_would_overdraw_cash_are_resized_or_rejected():
    bars = ohlc([FLAT, FLAT, FLAT])
    resize = es(commission_fixed=50, whole_shares=True)
    res = run_backtest(bars, targets(bars, {0: 1.0}), resize)
    f = only_fill(res)
    assert f["qty"] == 99  # 100 shares + 50 fee would overdraw 10,000
    assert res.orders["reason"].iloc[0].startswith("resized")
    assert res.cash.min() >= 0
    reject = es(commission_fixed=50, oversize="reject")
    res = run_backtest(bars, targets(bars, {0: 1.0}), reject)
    assert res.fills.empty
    assert res.orders["status"].iloc[0] == "rejected"
    assert res.orders["reason"].iloc[0] == "not enough cash"


def test_gross_leverage_limit():
    bars = ohlc([FLAT, FLAT])
    with pytest.raises(MltraderError, match="max_gross_leverage"):
        run_backtest(bars, targets(bars, {0: 1.5}), EngineSettings())
    res = run_backtest(bars, targets(bars, {0: 1.5}),
                       es(max_gross_leverage=2.0))
    assert res.positions["X"].iloc[-1] == pytest.approx(150)
    assert res.cash.iloc[-1] == pytest.approx(-5_000)


def test_newer_decision_replaces_a_working_order():
    s = es(order_type="limit", limit_offset_bps=500, tif="gtc")
    bars = ohlc([FLAT, FLAT, FLAT, FLAT])
    res = run_backtest(bars, targets(bars, {0: 1.0, 1: 0.5}), s)
    assert list(res.orders["status"][:2]) == ["replaced", "working"]


def test_whole_shares():
    bars = ohlc([FLAT, (33.3, 33.3, 33.3, 33.3), FLAT])
    res = run_backtest(bars, targets(bars, {0: 1.0}),
                       es(whole_shares=True))
    assert only_fill(res)["qty"] == 300


def test_independent_books():
    idx = pd.bdate_range("2021-01-04", periods=3, tz="UTC")
    close = np.array([[100.0, 10.0], [100.0, 10.0], [110.0, 5.0]])
    bars = Bars(index=idx, symbols=("A", "B"), close=close)
    entries = np.array([[True, True], [False, False], [False, False]])
    res = run_signals(bars, entries, np.zeros_like(entries), es(fill="next_close"),
                      independent=True)
    assert res.book_equity is not None
    # each book put its own 10,000 in at bar 1's close: A gains 10%, B loses half
    np.testing.assert_allclose(res.book_equity.iloc[-1], [11_000, 5_000])
    assert res.initial_cash == 20_000
    assert res.equity.iloc[-1] == pytest.approx(16_000)


def test_event_tables_are_built_once_and_behave_like_frames():
    bars = ohlc([FLAT, (101, 103, 99, 102), FLAT])
    res = run_backtest(bars, targets(bars, {0: 1.0}), S)
    assert res.fills is res.fills and res.trades is res.trades and res.orders is res.orders
    assert list(res.orders["status"]) == ["filled"]
    assert "fills=" in repr(res)
