"""Each guard acts at the bar it should, in the compiled engine and in the live-side RiskGate."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltrader.backtest.engine import EngineSettings, run_backtest, session_days
from mltrader.data.bars import Bars
from mltrader.errors import MltraderError
from mltrader.risk.guards import Guards, RiskGate


def _bars(close, freq="B", symbols=None) -> Bars:
    close = np.asarray(close, dtype=float)
    if close.ndim == 1:
        close = close[:, None]
    index = pd.date_range("2021-01-04 10:00", periods=len(close), freq=freq, tz="America/New_York")
    syms = tuple(symbols or [f"S{i}" for i in range(close.shape[1])])
    return Bars(index=index, symbols=syms, close=close, source="test")


def _const(bars, w) -> pd.DataFrame:
    t = np.tile(np.asarray(w, dtype=float), (len(bars), 1))
    return pd.DataFrame(t, index=bars.index, columns=list(bars.symbols))


def _run(bars, targets, unit="weight", **guards):
    s = EngineSettings(fill="next_close", guards=Guards(**guards))
    return run_backtest(bars, targets, s, unit=unit)


def test_daily_loss_limit_flattens_next_bar_then_resumes_next_day():
    bars = _bars([100, 100, 100, 90, 92, 93, 94])  # -10% on bar 3's close
    res = _run(bars, _const(bars, [1.0]), daily_loss_limit=0.05)
    t = res.trades
    first = t.iloc[0]
    assert first.exit_reason == "daily_loss_limit"
    assert (first.entry_bar, first.exit_bar) == (1, 4)  # tripped at bar 3's close, out at bar 4
    # a new session: the strategy's order at bar 4's close fills at bar 5
    assert t.iloc[1].entry_bar == 5
    flat = res.orders[res.orders.origin == "daily loss limit"]
    assert len(flat) == 1 and flat.iloc[0].created == bars.index[3]


def test_daily_loss_limit_blocks_new_exposure_for_the_rest_of_the_session():
    # hourly bars: two sessions of 6 bars; the loss comes at session 1's third bar
    day1 = [100, 100, 94, 95, 96, 97]
    day2 = [97, 98, 99, 100, 101, 102]
    idx = pd.DatetimeIndex(
        [pd.Timestamp("2021-01-04 10:00") + pd.Timedelta(hours=h) for h in range(6)]
        + [pd.Timestamp("2021-01-05 10:00") + pd.Timedelta(hours=h) for h in range(6)],
        tz="America/New_York")
    bars = Bars(index=idx, symbols=("A",), close=np.array(day1 + day2, float)[:, None],
                source="test")
    res = _run(bars, _const(bars, [1.0]), daily_loss_limit=0.05)
    o = res.orders
    assert res.trades.iloc[0].exit_bar == 3 and res.trades.iloc[0].exit_reason == "daily_loss_limit"
    blocked = o[o.reason == "risk: daily loss limit"]
    # flat from bar 3 on: the strategy's buy orders on bars 3, 4, 5 are rejected
    assert list(blocked.created) == list(idx[3:6])
    assert (blocked.status == "rejected").all()
    assert res.trades.iloc[1].entry_bar == 7  # decided on session 2's first bar (6)
    assert (res.positions.iloc[4:7, 0] == 0).all()


def test_kill_switch_flattens_and_never_trades_again():
    close = [100, 100, 110, 95, 85, 90, 120, 130]
    bars = _bars(close)
    res = _run(bars, _const(bars, [1.0]), kill_switch_drawdown=0.2)
    # peak 110 at bar 2; bar 4's close 85 is 22.7% below it -> out at bar 5, never back
    assert len(res.trades) == 1
    assert res.trades.iloc[0].exit_reason == "kill_switch" and res.trades.iloc[0].exit_bar == 5
    assert (res.positions.iloc[5:, 0] == 0).all()
    later = res.orders[res.orders.created > bars.index[4]]
    assert (later.reason == "risk: kill switch").all() and len(later) >= 2


def test_max_trades_per_day_blocks_the_third_buy():
    bars = _bars(np.full((5, 3), 50.0))
    res = _run(bars, _const(bars, [0.3, 0.3, 0.3]), max_trades_per_day=2)
    f = res.fills
    on_bar1 = f[f.date == bars.index[1]]
    assert list(on_bar1.symbol) == ["S0", "S1"]  # in symbol order; the third is over the limit
    rej = res.orders[res.orders.reason == "risk: max trades per day"]
    assert rej.iloc[0].symbol == "S2" and rej.iloc[0].closed == bars.index[1]
    # next session it may try again, and fills
    s2 = res.positions["S2"]
    assert s2.iloc[1] == 0 and s2.iloc[2] > 0


def test_max_orders_per_symbol_per_day_rejects_at_creation():
    idx = pd.date_range("2021-01-04 10:00", periods=6, freq="h", tz="America/New_York")
    bars = Bars(index=idx, symbols=("A",), close=np.full((6, 1), 10.0), source="test")
    tgt = pd.DataFrame({"A": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]}, index=idx)
    res = _run(bars, tgt, max_orders_per_symbol_per_day=2)
    o = res.orders
    assert list(o.status[:2]) != ["rejected", "rejected"]
    rej = o[o.reason == "risk: max orders per symbol per day"]
    # the 3rd order (bar 2) on is refused; bar 3 says "flat" while flat: no order at all
    assert list(rej.created) == [idx[2], idx[4]]
    assert len(res.fills) == 2


def test_price_sanity_rejects_a_fill_far_from_the_last_close():
    bars = _bars([100, 100, 300, 100, 101])  # a bad tick: 3x on bar 2
    tgt = _const(bars, [1.0])
    tgt.iloc[0] = np.nan  # first decision on bar 1
    res = _run(bars, tgt, price_sanity=0.5)
    rej = res.orders[res.orders.reason == "risk: price sanity check"]
    # bar 2 would fill at 300 (last close 100), bar 3 at 100 (last close 300): both refused
    assert list(rej.closed) == [bars.index[2], bars.index[3]]
    assert (rej.status == "rejected").all()
    assert list(res.positions.iloc[:4, 0]) == [0, 0, 0, 0] and res.positions.iloc[4, 0] > 0
    # without the guard the bad tick is bought
    plain = _run(bars, tgt)
    assert plain.fills.iloc[0].price == 300


def test_max_position_resizes_and_records_the_rule():
    bars = _bars(np.full((4, 2), 20.0))
    res = _run(bars, _const(bars, [0.5, 0.3]), max_position=0.2)
    w = res.weights.iloc[-1]
    assert w.max() == pytest.approx(0.2, rel=1e-9)
    assert (res.orders.reason == "risk: max position size").sum() >= 2


def test_time_stop_closes_n_bars_after_entry():
    bars = _bars(np.linspace(100, 110, 12))
    res = _run(bars, _const(bars, [1.0]), time_stop=3)
    t = res.trades
    assert t.iloc[0].exit_reason == "time_stop"
    assert t.iloc[0].exit_bar - t.iloc[0].entry_bar == 3
    assert t.iloc[1].entry_bar == t.iloc[0].exit_bar + 1  # the strategy may re-enter


def test_share_targets_trade_share_counts():
    bars = _bars([10.0, 11, 12, 13])
    tgt = _const(bars, [400.0])
    res = run_backtest(bars, tgt, EngineSettings(fill="next_close"), unit="shares")
    assert res.positions.iloc[-1, 0] == 400


def test_guard_settings_are_checked():
    with pytest.raises(MltraderError, match="daily_loss_limit"):
        Guards(daily_loss_limit=1.5)
    with pytest.raises(MltraderError, match="max_trades_per_day"):
        Guards(max_trades_per_day=0)


def test_risk_gate_is_the_same_rules_for_the_live_runner():
    gate = RiskGate(Guards(daily_loss_limit=0.05, max_orders_per_symbol_per_day=1),
                    100_000, ["A", "B"])
    gate.start_bar(day=1, equity=100_000)
    assert gate.check_order("A", adds=True) is None
    assert gate.check_order("A", adds=True) == "max orders per symbol per day"
    assert gate.close(94_000) == "daily loss limit"
    assert gate.must_flatten() == "daily loss limit"
    assert gate.check_order("B", adds=True) == "daily loss limit"
    assert gate.check_fill(adds=False, price=10, last_close=10) is None  # cutting risk is ok
    gate.start_bar(day=2, equity=94_000)
    assert gate.must_flatten() is None and gate.check_order("B", adds=True) is None
    gate.kill()
    assert gate.check_fill(adds=True, price=10, last_close=10) == "kill switch"
    with pytest.raises(MltraderError, match="unknown symbol"):
        gate.check_order("ZZZ", adds=True)


def test_session_days_use_the_index_time_zone():
    idx = pd.DatetimeIndex(["2021-01-04 15:00", "2021-01-04 23:30", "2021-01-05 09:30"],
                           tz="America/New_York")
    d = session_days(idx)
    assert d[0] == d[1] != d[2]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), dd=st.floats(0.02, 0.2))
def test_after_the_kill_switch_no_position_ever_grows(seed, dd):
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.03, size=(80, 3)), axis=0))
    bars = _bars(close)
    w = rng.dirichlet(np.ones(4), size=80)[:, :3]
    tgt = pd.DataFrame(w, index=bars.index, columns=list(bars.symbols))
    res = _run(bars, tgt, kill_switch_drawdown=dd)
    eq = res.equity.to_numpy()
    peak = np.maximum.accumulate(np.r_[100_000.0, eq])[1:]
    hit = np.nonzero(eq <= peak * (1 - dd))[0]
    pos = np.abs(res.positions.to_numpy())
    if len(hit):
        k = hit[0]
        assert (pos[k + 1:] <= pos[k:-1] + 1e-9).all()  # never adds after the trip
        assert (pos[k + 1:] == 0).all()  # flat from the next fill on
