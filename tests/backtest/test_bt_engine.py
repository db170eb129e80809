"""`--engine backtrader`: the same targets through backtrader agree with our engine.

(a) generic costs on real A-share prices: equity at every bar and every fill agree; (b) the
A-share scheme in backtrader, by hand: 5 CNY minimum, stamp duty by date, transfer fee,
board lots; (c) a suspended fill bar: no fill that day in either engine; (d) share-count
targets with stops and targets under the A-share rules on real prices (and the same with
weights): share for share, with stops, targets, limit-down and T+1 hold-backs and a payout;
by hand, each way a bar can hit the stop or the target; plus the one difference by design
(backtrader rejects an order it cannot pay, ours resizes it).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("backtrader")

from mltrader.backtest.bt_engine import (  # noqa: E402
    COMPARE_ROWS,
    compare_engines,
    run_backtrader,
)
from mltrader.backtest.engine import run_backtest  # noqa: E402
from mltrader.core.market import CN_A, RuleArrays, rule_arrays  # noqa: E402
from mltrader.core.settings import EngineSettings  # noqa: E402
from mltrader.data.ashare import load_ashare  # noqa: E402
from mltrader.data.bars import Bars  # noqa: E402
from mltrader.errors import MltraderError  # noqa: E402

SYMS = ["000001.SZ", "600036.SH", "600690.SH"]  # 600690 is suspended 2020-07-30 and -31
SUSPENDED = pd.Timestamp("2020-07-30", tz="UTC")


@pytest.fixture(scope="module")
def panel() -> Bars:
    return load_ashare().select(SYMS, "2020-01-01", "2020-12-31").exec_bars


def monthly_targets(bars: Bars) -> pd.DataFrame:
    """Rotate 50/30/10 % among the three at each month's last bar (10 % cash: no gap can
    make a buy overdraw, so neither engine's cash rule acts)."""
    idx = bars.index
    tg = pd.DataFrame(np.nan, index=idx, columns=list(bars.symbols))
    ends = np.flatnonzero(np.r_[idx.month[1:] != idx.month[:-1], True])
    for k, r in enumerate(ends):
        tg.iloc[r] = np.roll([0.5, 0.3, 0.1], k)
    return tg


def generic(fill: str, **kw: float) -> EngineSettings:
    return EngineSettings(fill=fill, size_at="decision", whole_shares=True,
                          commission_bps=kw.pop("commission_bps", 5), slippage_bps=0,
                          rebalance_band=0, **kw)


def same_fills(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    a, b = ours.reset_index(drop=True), theirs.reset_index(drop=True)
    assert len(a) == len(b) > 0
    assert (a["date"] == b["date"]).all()
    assert (a["symbol"].astype(str) == b["symbol"].astype(str)).all()
    np.testing.assert_array_equal(a["qty"].to_numpy(), b["qty"].to_numpy())
    np.testing.assert_allclose(a["price"], b["price"], rtol=1e-12)
    np.testing.assert_allclose(a["commission"], b["commission"], rtol=1e-9)
    np.testing.assert_allclose(a["slippage"], b["slippage"], rtol=1e-9, atol=1e-9)
    assert (a["reason"].astype(str) == b["reason"].astype(str)).all()


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
@pytest.mark.parametrize("costs", [
    {},
    {"commission_per_share": 0.01, "commission_min": 1.0, "commission_fixed": 0.5,
     "slippage_bps": 10.0, "half_spread_bps": 2.0, "rebalance_band": 0.02},
], ids=["bps", "all_generic_costs"])
def test_generic_rules_agree_share_for_share(panel, fill, costs):
    s = replace(generic(fill), **costs)
    tg = monthly_targets(panel)
    ours, theirs = run_backtest(panel, tg, s), run_backtrader(panel, tg, s)
    np.testing.assert_allclose(theirs.equity.to_numpy(), ours.equity.to_numpy(), rtol=1e-6)
    assert theirs.equity.iloc[-1] == pytest.approx(ours.equity.iloc[-1], rel=1e-9)
    same_fills(ours.fills, theirs.fills)
    assert theirs.orders_blocked["cash"] == 0
    np.testing.assert_array_equal(theirs.positions.to_numpy(), ours.positions.to_numpy())

    table = compare_engines(ours, theirs, ppy=244)
    assert list(table.index) == list(COMPARE_ROWS)
    assert list(table.columns) == ["mltrader", "backtrader", "difference"]
    assert table.loc["fills", "mltrader"] == len(ours.fills) >= 30
    np.testing.assert_allclose(table["difference"].to_numpy(), 0.0, atol=1e-6)
    assert table.loc["final equity", "backtrader"] == theirs.equity.iloc[-1]


# ------------------------------------------------------------------ (b) A-share by hand
def three_bars(days: list[str]) -> Bars:
    """A, B, C at 10 CNY; A opens at 11 on the third bar, where it is sold."""
    o = np.array([[10.0, 10.0, 10.0], [10.0, 10.0, 10.0], [11.0, 10.0, 10.0]])
    c = np.array([[10.0, 10.0, 10.0], [10.5, 10.0, 10.0], [11.0, 10.2, 10.0]])
    return Bars(index=pd.DatetimeIndex(days, tz="UTC"), symbols=("A", "B", "C"), close=c,
                open=o, high=np.maximum(o, c), low=np.minimum(o, c),
                volume=np.full_like(c, 1e6))


@pytest.mark.parametrize(("days", "sell_tax_bps"), [
    (["2023-08-23", "2023-08-24", "2023-08-25"], 10.0 + 0.1),  # stamp duty 0.1 %
    (["2023-08-24", "2023-08-25", "2023-08-28"], 5.0 + 0.1),  # halved from 2023-08-28
], ids=["before_2023_08_28", "from_2023_08_28"])
def test_ashare_costs_and_lots_by_hand(days, sell_tax_bps):
    bars = three_bars(days)
    s = EngineSettings(initial_cash=10_000, fill="next_open", size_at="decision",
                       whole_shares=True, commission_bps=2.5)
    # bar 0: A 0.2506 -> 250.5 shares at 10 x 1.00025 -> 250 -> 200 (lots of 100);
    # B 0.1001 -> 100 shares (a 1,000 CNY buy); C 0.005 -> 4 shares -> 0 lots: no order.
    # bar 1: sell all of A.
    tg = pd.DataFrame([[0.2506, 0.1001, 0.005], [0.0, np.nan, np.nan], [np.nan] * 3],
                      index=bars.index, columns=["A", "B", "C"])
    res = run_backtrader(bars, tg, s, rules=CN_A)
    f = res.fills
    assert list(f["symbol"].astype(str)) == ["A", "B", "A"]
    assert list(f["qty"]) == [200.0, 100.0, -200.0]
    assert list(f["date"]) == [bars.index[1], bars.index[1], bars.index[2]]
    transfer = 0.1e-4  # 0.001 % both sides from 2022-04-29
    buy_a = 5.0 + 2000 * transfer  # 2.5 bps of 2,000 is 0.50 < the 5 CNY minimum
    buy_b = 5.0 + 1000 * transfer  # the 1,000 CNY buy pays the minimum
    sell_a = 5.0 + 2200 * sell_tax_bps * 1e-4
    np.testing.assert_allclose(f["commission"], [buy_a, buy_b, sell_a], rtol=1e-12)
    assert res.orders_blocked == {"cash": 0, "no_price": 0, "lot": 1, "limit_up": 0,
                                  "limit_down": 0, "rejected": 0}
    eq1 = 10_000 - 2000 - buy_a - 1000 - buy_b + 200 * 10.5 + 100 * 10.0
    eq2 = 10_000 - 2000 - buy_a - 1000 - buy_b + 2200 - sell_a + 100 * 10.2
    np.testing.assert_allclose(res.equity, [10_000, eq1, eq2], rtol=1e-12)
    assert eq2 == pytest.approx(10_202.748 if sell_tax_bps > 10 else 10_203.848, abs=1e-9)


def test_ashare_sell_of_an_odd_lot_goes_whole():
    bars = three_bars(["2023-08-24", "2023-08-25", "2023-08-28"])
    s = EngineSettings(initial_cash=10_000, fill="next_open", size_at="decision",
                       whole_shares=True, commission_bps=2.5)
    # 3,000 CNY with 5 CNY minimum costs buys 299 shares -> 200; then a cut to 0.05 wants
    # -150, cut to -100 (a sell is whole lots unless it sells everything)
    tg = pd.DataFrame([[0.3, np.nan, np.nan], [0.05, np.nan, np.nan], [np.nan] * 3],
                      index=bars.index, columns=["A", "B", "C"])
    res = run_backtrader(bars, tg, s, rules=CN_A)
    assert list(res.fills["qty"]) == [200.0, -100.0]


def test_ashare_limit_up_lock_and_ex_rights_payout_by_hand():
    bars = three_bars(["2023-08-24", "2023-08-25", "2023-08-28"])
    s = EngineSettings(initial_cash=10_000, fill="next_open", size_at="decision",
                       whole_shares=True, commission_bps=2.5)
    taxes = rule_arrays(CN_A, None, bars.index, 3)
    up, down = np.full((3, 3), np.nan), np.full((3, 3), np.nan)
    up[1, 0] = 10.0  # A opens at its limit-up price on the fill bar: no buy fills
    payout = np.zeros((3, 3))
    payout[2, 1] = 0.5  # B goes ex-dividend on the third bar: 0.50 CNY a share
    arrays = RuleArrays(up, down, taxes.sell_tax_bps, taxes.buy_tax_bps, payout)
    tg = pd.DataFrame([[0.2506, 0.1001, np.nan], [np.nan] * 3, [np.nan] * 3],
                      index=bars.index, columns=["A", "B", "C"])
    res = run_backtrader(bars, tg, s, rules=CN_A, arrays=arrays)
    assert list(res.fills["symbol"].astype(str)) == ["B"]
    assert res.orders_blocked["limit_up"] == 1
    assert res.payouts == pytest.approx(50.0)
    buy_b = 5.0 + 1000 * 0.1e-4
    assert res.equity.iloc[-1] == pytest.approx(10_000 - 1000 - buy_b + 50 + 100 * 10.2,
                                                abs=1e-9)


# ------------------------------------------------------------------ (c) suspended fill bar
def test_suspended_fill_bar_has_no_fill_in_either_engine():
    bars = load_ashare().select(SYMS, "2020-07-01", "2020-08-31").exec_bars
    assert np.isnan(bars.open[bars.index.get_loc(SUSPENDED), 2])
    tg = pd.DataFrame(np.nan, index=bars.index, columns=SYMS)
    tg.iloc[0] = [0.3, 0.3, 0.3]
    tg.loc[pd.Timestamp("2020-07-29", tz="UTC")] = [0.2, 0.2, 0.5]  # 600690 cannot trade
    for fill in ("next_open", "next_close"):
        s = generic(fill)
        ours, theirs = run_backtest(bars, tg, s), run_backtrader(bars, tg, s)
        for f in (ours.fills, theirs.fills):
            day = f[f["date"] == SUSPENDED]
            assert sorted(day["symbol"].astype(str)) == ["000001.SZ", "600036.SH"]
            assert "600690.SH" not in set(f[f["date"] > SUSPENDED]["symbol"].astype(str))
        assert theirs.orders_blocked["no_price"] == 1
        o = ours.orders
        assert (o["reason"] == "symbol did not trade on the fill bar").sum() == 1
        same_fills(ours.fills, theirs.fills)
        np.testing.assert_allclose(theirs.equity, ours.equity, rtol=1e-9)


# ------------------------------------------------------------------ differences by design
def test_an_unaffordable_buy_is_rejected_by_backtrader_and_resized_by_ours():
    idx = pd.DatetimeIndex(["2021-01-04", "2021-01-05", "2021-01-06"], tz="UTC")
    c = np.array([[10.0], [11.0], [11.0]])
    o = np.array([[10.0], [11.0], [11.0]])  # gaps up 10 % after a 100 % decision
    bars = Bars(index=idx, symbols=("A",), close=c, open=o, high=c, low=o)
    tg = pd.DataFrame([[1.0], [np.nan], [np.nan]], index=idx, columns=["A"])
    s = generic("next_open")
    ours, theirs = run_backtest(bars, tg, s), run_backtrader(bars, tg, s)
    assert theirs.orders_blocked["cash"] == 1 and theirs.fills.empty
    assert len(ours.fills) == 1 and ours.fills["qty"].iloc[0] == 9086  # resized to the cash
    table = compare_engines(ours, theirs, ppy=252)
    assert table.loc["fills", "difference"] == -1


def test_unsupported_settings_and_bad_input_are_one_line_errors(panel):
    tg = monthly_targets(panel)
    with pytest.raises(MltraderError, match="order_type"):
        run_backtrader(panel, tg, EngineSettings(order_type="limit"))
    with pytest.raises(MltraderError, match="unit must be"):
        run_backtrader(panel, tg, EngineSettings(), unit="lots")
    with pytest.raises(MltraderError, match="long only"):
        run_backtrader(panel, -tg, EngineSettings(allow_short=False))
    with pytest.raises(MltraderError, match="start bar"):
        run_backtrader(panel, tg, EngineSettings(), start=10_000)


# ------------------------------------------------------------------ (d) stops and targets
CN5 = ["000001.SZ", "000063.SZ", "000333.SZ", "000568.SZ", "000725.SZ"]  # all limit-down
EVE = pd.Timestamp("2020-01-22", tz="UTC")  # entered on 01-23, the next bar is 02-03


@pytest.fixture(scope="module")
def cn_panel() -> tuple[Bars, RuleArrays]:
    data = load_ashare("none").select(CN5, "2020-01-01", "2021-12-31")
    return data.exec_bars, rule_arrays(CN_A, data, data.bars.index, len(CN5))


def in_and_out(bars: Bars, on: float) -> pd.DataFrame:
    """A deterministic pseudo-random signal: `on` at 10 % of the bars, 0 (out) at 10 %, no
    decision at the rest; all in on the eve of the 2020 Spring Festival, before the crash."""
    u = np.random.default_rng(7).random(bars.shape)
    tg = pd.DataFrame(np.where(u > 0.9, on, np.where(u < 0.1, 0.0, np.nan)),
                      index=bars.index, columns=list(bars.symbols))
    tg.loc[EVE] = on
    return tg


def cn_exits(**kw: object) -> EngineSettings:
    base = {"initial_cash": 1_000_000.0, "fill": "next_open", "whole_shares": True,
            "market": CN_A, "commission_bps": 2.5, "slippage_bps": 5.0, "stop_loss": 0.03,
            "take_profit": 0.05, "size_at": "decision"}
    base.update(kw)
    return EngineSettings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("unit", "on"), [("shares", 400.0), ("weight", 0.15)])
def test_stops_and_targets_on_ashares_agree_share_for_share(cn_panel, unit, on):
    bars, arrays = cn_panel
    tg, s = in_and_out(bars, on), cn_exits()
    ours = run_backtest(bars, tg, s, unit=unit, rules=arrays)
    theirs = run_backtrader(bars, tg, s, rules=CN_A, arrays=arrays, unit=unit)
    same_fills(ours.fills, theirs.fills)
    np.testing.assert_allclose(theirs.equity.to_numpy(), ours.equity.to_numpy(), rtol=1e-9)
    np.testing.assert_array_equal(theirs.positions.to_numpy(), ours.positions.to_numpy())
    why = theirs.fills["reason"].astype(str).value_counts()
    assert why["stop_loss"] >= 20 and why["take_profit"] >= 20
    held = dict(theirs.held_back)
    assert theirs.held_back == ours.held_back
    assert held["stop held back by a limit-down lock"] >= 2  # 2020-02-03 opened limit-down
    if unit == "shares":
        assert set(np.abs(theirs.fills["qty"])) == {400.0}
    else:  # a re-weighting buy on a held stock holds back its exit that day (T+1)
        assert held["stop/target held back by T+1 (bought this session)"] >= 1
    assert theirs.payouts == pytest.approx(ours.payouts, rel=1e-12) and theirs.payouts > 0
    assert theirs.orders_blocked["cash"] == 0 and not theirs.notes[1:]


def test_a_trailing_stop_agrees_too(cn_panel):
    bars, arrays = cn_panel
    tg, s = in_and_out(bars, 400.0), cn_exits(trailing_stop=0.04)
    ours = run_backtest(bars, tg, s, unit="shares", rules=arrays)
    theirs = run_backtrader(bars, tg, s, rules=CN_A, arrays=arrays, unit="shares")
    same_fills(ours.fills, theirs.fills)
    np.testing.assert_allclose(theirs.equity.to_numpy(), ours.equity.to_numpy(), rtol=1e-9)
    assert (theirs.fills["reason"] == "trailing_stop").sum() >= 10


def one_trade(bar2: tuple[float, float, float, float]) -> Bars:
    """Enter 100 shares of A at 10 on bar 1 (whose range would hit both levels: not checked,
    it is the entry bar); bar 2 is (open, high, low, close)."""
    o = np.array([[10.0], [10.0], [bar2[0]], [10.0]])
    h = np.array([[10.0], [11.0], [bar2[1]], [10.0]])
    lo = np.array([[10.0], [9.0], [bar2[2]], [10.0]])
    c = np.array([[10.0], [10.0], [bar2[3]], [10.0]])
    idx = pd.DatetimeIndex(["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07"], tz="UTC")
    return Bars(index=idx, symbols=("A",), close=c, open=o, high=h, low=lo,
                volume=np.full_like(c, 1e6))


@pytest.mark.parametrize(("bar2", "price", "reason"), [
    ((9.5, 9.9, 9.4, 9.8), 9.5, "stop_loss"),  # gaps through the stop: the open
    ((9.9, 10.0, 9.6, 9.8), 9.7, "stop_loss"),  # trades through it: the stop
    ((10.0, 10.6, 9.6, 10.0), 9.7, "stop_loss"),  # both inside the bar: the stop first
    ((10.6, 10.8, 10.4, 10.7), 10.6, "take_profit"),  # gaps over the target: the open
    ((10.2, 10.6, 10.1, 10.3), 10.5, "take_profit"),  # trades through it: the target
    ((10.1, 10.4, 9.8, 10.0), None, None),  # neither
], ids=["gap_stop", "stop", "both", "gap_target", "target", "none"])
@pytest.mark.parametrize("slip", [0.0, 10.0])
def test_stop_and_target_fills_by_hand(bar2, price, reason, slip):
    bars = one_trade(bar2)
    s = EngineSettings(initial_cash=10_000, fill="next_open", whole_shares=True,
                       commission_bps=5, slippage_bps=slip, stop_loss=0.03, take_profit=0.05)
    tg = pd.DataFrame([[100.0], [np.nan], [np.nan], [np.nan]], index=bars.index,
                      columns=["A"])
    ours = run_backtest(bars, tg, s, unit="shares")
    theirs = run_backtrader(bars, tg, s, unit="shares")
    same_fills(ours.fills, theirs.fills)
    np.testing.assert_allclose(theirs.equity, ours.equity, rtol=1e-12)
    f = theirs.fills
    assert f["qty"].iloc[0] == 100 and f["date"].iloc[0] == bars.index[1]
    if price is None:
        assert len(f) == 1
        return
    assert list(f["qty"]) == [100.0, -100.0] and f["date"].iloc[1] == bars.index[2]
    assert str(f["reason"].iloc[1]) == reason
    entry = 10.0 * (1 + slip * 1e-4)
    if price in (9.7, 10.5):  # at the level, from the entry fill price
        price = entry * (0.97 if reason == "stop_loss" else 1.05)
    assert f["price"].iloc[1] == pytest.approx(price * (1 - slip * 1e-4), rel=1e-12)
