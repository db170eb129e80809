"""Hypothesis properties of the engine's books under random settings, targets and signals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltrader.backtest.engine import run_backtest, run_signals
from mltrader.core.settings import EngineSettings
from mltrader.testing import synthetic_bars

T, N = 80, 3


def _bars(seed: int, holes: bool):
    bars = synthetic_bars(T, N, seed=seed, ohlc=True, vol=0.03)
    if not holes:
        return bars
    rng = np.random.default_rng(seed)
    mask = rng.random(bars.shape) < 0.05
    arrays = {}
    for name in ("open", "high", "low", "close", "volume"):
        a = getattr(bars, name).copy()
        a[mask] = np.nan
        arrays[name] = a
    return bars.replace(**arrays)


engine_settings = st.builds(
    EngineSettings,
    initial_cash=st.just(100_000.0),
    fill=st.sampled_from(["next_open", "next_close"]),
    whole_shares=st.booleans(),
    order_type=st.sampled_from(["market", "limit", "stop", "stop_limit"]),
    limit_offset_bps=st.floats(0, 200),
    stop_offset_bps=st.floats(0, 200),
    tif=st.sampled_from(["day", "gtc"]),
    stop_loss=st.one_of(st.none(), st.floats(0.01, 0.1)),
    take_profit=st.one_of(st.none(), st.floats(0.01, 0.2)),
    trailing_stop=st.one_of(st.none(), st.floats(0.01, 0.1)),
    commission_bps=st.floats(0, 30),
    commission_per_share=st.floats(0, 0.01),
    commission_min=st.floats(0, 2),
    commission_fixed=st.floats(0, 5),
    slippage_bps=st.floats(0, 30),
    slippage_range_frac=st.floats(0, 0.2),
    half_spread_bps=st.floats(0, 10),
    max_volume_share=st.one_of(st.none(), st.floats(0.001, 1)),
    remainder=st.sampled_from(["wait", "cancel"]),
    oversize=st.sampled_from(["resize", "reject"]),
    rebalance_band=st.floats(0, 0.05),
)
weights = st.lists(st.floats(0, 1), min_size=N, max_size=N).map(
    lambda w: [x / max(1.0, sum(w)) for x in w])


def _targets(bars, rows):
    t = np.full(bars.shape, np.nan)
    for r, w in rows.items():
        t[r] = w
    return pd.DataFrame(t, index=bars.index, columns=list(bars.symbols))


def _check_books(res, bars, lev_ok: bool) -> None:
    close = pd.DataFrame(bars.close, index=bars.index, columns=list(bars.symbols)).ffill()
    value = (res.positions * close.loc[res.positions.index]).fillna(0.0).sum(axis=1)
    # the accounting identity, at every bar
    np.testing.assert_allclose(res.cash + value, res.equity, rtol=1e-9, atol=1e-6)
    f = res.fills
    if not lev_ok:
        # buys never overdraw cash; a stop or target exit must fill even when its fee
        # (e.g. a fixed $1 on a tiny position) takes cash below zero, as a broker would
        exit_fees = f.loc[f["reason"].astype(str) != "order", "commission"].sum() if len(f) else 0
        assert (res.cash >= -1e-6 - exit_fees).all()
    if len(f):
        # costs are non-negative and every fill price lies in its bar's range before slippage
        assert (f["commission"] >= 0).all() and (f["slippage"] >= -1e-9).all()
        lo = pd.DataFrame(bars.low, index=bars.index, columns=list(bars.symbols))
        hi = pd.DataFrame(bars.high, index=bars.index, columns=list(bars.symbols))
        side = np.sign(f["qty"].to_numpy())
        before = f["price"].to_numpy() - side * f["slippage"].to_numpy() / f["qty"].abs()
        low = np.array([lo.at[d, s] for d, s in zip(f["date"], f["symbol"], strict=True)])
        high = np.array([hi.at[d, s] for d, s in zip(f["date"], f["symbol"], strict=True)])
        assert (before >= low * (1 - 1e-12)).all() and (before <= high * (1 + 1e-12)).all()
    # trade P&L adds up to the account's P&L (less borrow fees, charged outside trades)
    assert res.trades["pnl"].sum() == pytest.approx(
        res.equity.iloc[-1] - res.initial_cash, abs=1e-6 * res.initial_cash)


@settings(max_examples=60, deadline=None)
@given(s=engine_settings, rows=st.dictionaries(st.integers(0, T - 2), weights, max_size=20),
       seed=st.integers(0, 20), holes=st.booleans())
def test_target_books_balance(s, rows, seed, holes):
    bars = _bars(seed, holes)
    res = run_backtest(bars, _targets(bars, rows), s)
    _check_books(res, bars, lev_ok=False)
    # no position beyond its target: at each order fill the position's value at the fill
    # price is at most the target weight of the equity the order was sized from (+ a cent)
    assert (res.positions >= -1e-12).all().all()  # long only


@settings(max_examples=40, deadline=None)
@given(s=engine_settings, seed=st.integers(0, 20), frac=st.floats(0.1, 1.0),
       holes=st.booleans())
def test_signal_entries_respect_the_sizing_limit(s, seed, frac, holes):
    bars = _bars(seed, holes)
    rng = np.random.default_rng(seed)
    entries = rng.random(bars.shape) < 0.1
    exits = rng.random(bars.shape) < 0.1
    s = EngineSettings(**{**s.__dict__, "size_fraction": frac, "size_buffer": 0.001,
                          "order_type": "market"})
    res = run_signals(bars, entries, exits, s, independent=True)
    _check_books(res, bars, lev_ok=False)
    f = res.fills
    # an entry from flat costs at most size_fraction of the cash its book had before
    for sym in bars.symbols:
        fs = f[(f["symbol"] == sym) & (f["reason"] == "order")]
        cash = res.book_equity[sym]  # flat before an entry: equity == cash
        for _, row in fs[fs["qty"] > 0].iterrows():
            pos = res.book_equity.index.get_loc(row["date"])
            before = cash.iloc[pos - 1] if pos > 0 else res.initial_cash / N
            assert row["notional"] <= frac * before * (1 + 1e-9)


@settings(max_examples=40, deadline=None)
@given(s=engine_settings, rows=st.dictionaries(st.integers(0, T - 10), weights, max_size=10),
       seed=st.integers(0, 20), short=st.booleans())
def test_closing_every_position_returns_to_cash(s, rows, seed, short):
    bars = _bars(seed, holes=False)
    if short:
        rows = {r: [-x for x in w] for r, w in rows.items()}
        s = EngineSettings(**{**s.__dict__, "allow_short": True, "borrow_bps_per_year": 50.0})
    # market orders, no volume cap, so the final flatten is sure to fill in full
    s = EngineSettings(**{**s.__dict__, "order_type": "market", "max_volume_share": None})
    rows[T - 3] = [0.0] * N
    res = run_backtest(bars, _targets(bars, rows), s)
    assert (res.positions.iloc[-1] == 0).all()
    assert res.equity.iloc[-1] == pytest.approx(res.cash.iloc[-1], abs=1e-9)
    if short:
        close = pd.DataFrame(bars.close, index=bars.index, columns=list(bars.symbols))
        value = (res.positions * close.loc[res.positions.index]).sum(axis=1)
        np.testing.assert_allclose(res.cash + value, res.equity, rtol=1e-9, atol=1e-6)
    assert not res.trades["open"].any()
