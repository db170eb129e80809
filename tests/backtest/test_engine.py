import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltrader.backtest.engine import EngineSettings, run_backtest
from mltrader.errors import MltraderError
from mltrader.testing import synthetic_bars


def _targets(bars, rows: dict[int, list[float]]) -> pd.DataFrame:
    t = np.full(bars.shape, np.nan)
    for r, w in rows.items():
        t[r] = w
    return pd.DataFrame(t, index=bars.index, columns=list(bars.symbols))


def _holdings_value(res, bars, start=0):
    close = pd.DataFrame(bars.close, index=bars.index, columns=list(bars.symbols)).iloc[start:]
    return (res.positions * close.ffill()).fillna(0.0).sum(axis=1)


@pytest.mark.parametrize("fill", ["next_close", "next_open"])
def test_full_target_with_zero_costs_follows_execution_price_exactly(fill):
    bars = synthetic_bars(300, 2, seed=3, ohlc=True)
    tgt = _targets(bars, {r: [1.0, 0.0] for r in range(300)})
    res = run_backtest(bars, tgt, EngineSettings(fill=fill))
    entry = bars.open[1, 0] if fill == "next_open" else bars.close[1, 0]
    # From the first fill on, equity is all-in symbol 0: it follows its price exactly.
    expected = 100_000.0 / entry * bars.close[1:, 0]
    np.testing.assert_allclose(res.equity.to_numpy()[1:], expected, rtol=1e-12)
    assert res.equity.iloc[0] == 100_000.0  # decided at bar 0, nothing filled yet
    assert len(res.fills) == 1  # constant target, no re-trading


def test_every_fill_pays_its_costs_and_cash_adds_up():
    bars = synthetic_bars(200, 3, seed=5)
    rng = np.random.default_rng(0)
    rows = {r: list(rng.dirichlet(np.ones(4))[:3]) for r in range(0, 200, 7)}
    s = EngineSettings(commission_bps=10, slippage_bps=20)
    res = run_backtest(bars, _targets(bars, rows), s)
    f = res.fills
    assert len(f) > 20
    np.testing.assert_allclose(f["commission"], f["notional"] * 10e-4, rtol=1e-12)
    np.testing.assert_allclose(f["notional"], f["qty"].abs() * f["price"], rtol=1e-12)
    assert (f["slippage"] > 0).all()
    # Cash = initial - buys + sells - commissions, exactly.
    flows = -(f["qty"] * f["price"]).sum() - f["commission"].sum()
    assert res.cash.iloc[-1] == pytest.approx(100_000 + flows, rel=1e-12)
    # Slippage moved each fill price against us relative to the bar's close.
    close = pd.DataFrame(bars.close, index=bars.index, columns=list(bars.symbols))
    ref = np.array([close.at[d, s] for d, s in zip(f["date"], f["symbol"], strict=True)])
    side = np.sign(f["qty"].to_numpy())
    np.testing.assert_allclose(f["price"], ref * (1 + side * 20e-4), rtol=1e-12)


def test_costs_reduce_equity_against_frictionless_run():
    bars = synthetic_bars(200, 2, seed=1)
    tgt = _targets(bars, {r: ([0.5, 0.5] if r % 10 < 5 else [0.0, 1.0]) for r in range(200)})
    free = run_backtest(bars, tgt, EngineSettings())
    costly = run_backtest(bars, tgt, EngineSettings(commission_bps=5, slippage_bps=5))
    assert costly.equity.iloc[-1] < free.equity.iloc[-1]


def test_symbol_without_price_gets_no_fill():
    bars = synthetic_bars(10, 2, seed=2)
    close = bars.close.copy()
    close[1:4, 1] = np.nan
    bars = bars.replace(close=close)
    res = run_backtest(bars, _targets(bars, {0: [0.5, 0.5]}), EngineSettings())
    assert list(res.fills["symbol"]) == ["S00"]  # S01 did not trade on bar 1


def test_round_trip_trades_are_recorded():
    bars = synthetic_bars(50, 1, seed=4)
    tgt = _targets(bars, {0: [1.0], 10: [0.0], 20: [1.0]})
    res = run_backtest(bars, tgt, EngineSettings(commission_bps=1))
    tr = res.trades
    assert list(tr["open"]) == [False, True]
    first = tr.iloc[0]
    assert first["entry_date"] == bars.index[1] and first["exit_date"] == bars.index[11]
    assert first["bars_held"] == 10
    buy, sell = res.fills.iloc[0], res.fills.iloc[1]
    expected = sell["notional"] - sell["commission"] - buy["notional"] - buy["commission"]
    assert first["pnl"] == pytest.approx(expected, rel=1e-12)


def test_bad_targets_are_rejected():
    bars = synthetic_bars(10, 2)
    with pytest.raises(MltraderError, match="leverage"):
        run_backtest(bars, _targets(bars, {0: [0.8, 0.8]}), EngineSettings())
    with pytest.raises(MltraderError, match="short"):
        run_backtest(bars, _targets(bars, {0: [-0.5, 0.0]}), EngineSettings())
    with pytest.raises(MltraderError, match="closes only"):
        run_backtest(bars, _targets(bars, {0: [0.5, 0.0]}), EngineSettings(fill="next_open"))


weights = st.lists(st.floats(0, 1), min_size=3, max_size=3).map(
    lambda w: [x / max(1.0, sum(w)) for x in w])


@settings(max_examples=40, deadline=None)
@given(
    rows=st.dictionaries(st.integers(0, 59), weights, max_size=15),
    comm=st.floats(0, 50), slip=st.floats(0, 50), band=st.floats(0, 0.05),
    fill=st.sampled_from(["next_close", "next_open"]), seed=st.integers(0, 5),
)
def test_accounting_invariants(rows, comm, slip, band, fill, seed):
    bars = synthetic_bars(60, 3, seed=seed, ohlc=True)
    res = run_backtest(bars, _targets(bars, rows),
                       EngineSettings(commission_bps=comm, slippage_bps=slip, fill=fill,
                                      rebalance_band=band))
    # cash + holdings == equity at every bar
    np.testing.assert_allclose(res.cash + _holdings_value(res, bars), res.equity, rtol=1e-10)
    # no leverage: cash never negative, positions never short
    assert (res.cash >= -1e-9).all()
    assert (res.positions >= -1e-12).all().all()
    # every fill paid its commission
    if len(res.fills):
        np.testing.assert_allclose(res.fills["commission"], res.fills["notional"] * comm * 1e-4)
    # trades' P&L adds up to the total P&L (open trades marked at the last close)
    assert res.trades["pnl"].sum() == pytest.approx(res.equity.iloc[-1] - 100_000, abs=1e-6)
