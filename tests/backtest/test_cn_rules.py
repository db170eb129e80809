"""China A-share rules in the engine: each acts on its bar, in a hand case and on real data.

Limit-up / limit-down locks, T+1, board lots (odd lots sold whole), suspensions, the minimum
commission, stamp duty with its 2023-08-28 change, the transfer fee and ex-rights payouts.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltrader.backtest.engine import run_backtest
from mltrader.core.market import CN_A, US, lot_round, price_limits, rule_arrays
from mltrader.core.settings import EngineSettings
from mltrader.data.ashare import AshareData, ashare_panel, load_ashare
from mltrader.data.bars import Bars
from mltrader.errors import MltraderError

SYM = "600000.SH"


def panel(closes: list[float], start: str = "2021-03-01", opens: list[float] | None = None,
          suspended: tuple[int, ...] = (), preclose: list[float] | None = None,
          symbol: str = SYM, **extra: list[float]) -> AshareData:
    """One stock's days: flat bars at the given prices unless opens say otherwise."""
    dates = pd.bdate_range(start, periods=len(closes))
    opens = opens or closes
    rows = []
    for k, (d, c, o) in enumerate(zip(dates, closes, opens, strict=True)):
        rows.append({"date": d, "symbol": symbol, "open": o, "high": max(o, c),
                     "low": min(o, c), "close": c, "volume": 1e6,
                     "trade_status": 0 if k in suspended else 1,
                     **({"preclose": preclose[k]} if preclose else {}),
                     **{k2: v[k] for k2, v in extra.items()}})
    return ashare_panel(pd.DataFrame(rows), "none")


def settings_cn(**kw: object) -> EngineSettings:
    base = {"fill": "next_open", "whole_shares": True, "market": CN_A, "initial_cash": 100_000.0}
    base.update(kw)
    return EngineSettings(**base)  # type: ignore[arg-type]


def run(data: AshareData, weights: list[float], s: EngineSettings | None = None, **kw: object):
    tg = pd.DataFrame({data.symbols[0]: weights}, index=data.bars.index)
    s = s or settings_cn()
    rules = rule_arrays(s.market, data, data.bars.index, 1)
    return run_backtest(data.exec_bars, tg, s, rules=rules, **kw)


def reasons(res) -> list[str]:
    return [str(r) for r in res.orders["reason"]]


# ---------------------------------------------------------------- price limits
def test_no_buy_fills_at_a_limit_up_price():
    # day 1 opens at 11.00 = 10.00 x 1.10: locked up, the buy decided on day 0 is refused
    data = panel([10.0, 11.0, 11.5, 11.5], opens=[10.0, 11.0, 11.2, 11.5])
    res = run(data, [0.5, 0.5, 0.5, 0.5])
    assert reasons(res)[0].startswith("market: limit-up lock")
    assert res.orders["status"].astype(str).iloc[0] == "rejected"
    first = res.fills.iloc[0]
    assert first["date"] == data.bars.index[2] and first["price"] == 11.2  # retried, filled


def test_no_sell_fills_at_a_limit_down_price():
    data = panel([10.0, 10.0, 10.0, 9.0, 9.2], opens=[10.0, 10.0, 10.0, 9.0, 9.1])
    res = run(data, [0.5, 0.5, 0.0, 0.0, 0.0])
    sells = res.orders[res.orders["value"] == 0.0]
    assert str(sells["reason"].iloc[0]).startswith("market: limit-down lock")
    sold = res.fills[res.fills["qty"] < 0]
    assert sold["date"].iloc[0] == data.bars.index[4] and sold["price"].iloc[0] == 9.1


def test_a_stop_is_held_back_at_a_limit_down_lock():
    # entry at 10 on day 1; day 2 locks limit-down (9.00) all day: the 3% stop cannot sell
    data = panel([10.0, 10.0, 9.0, 9.5], opens=[10.0, 10.0, 9.0, 9.3])
    res = run(data, [0.5, np.nan, np.nan, np.nan], settings_cn(stop_loss=0.03))
    assert dict(res.held_back) == {"stop held back by a limit-down lock": 1}
    exit_fill = res.fills[res.fills["qty"] < 0].iloc[0]
    assert exit_fill["date"] == data.bars.index[3] and exit_fill["price"] == 9.3


def test_limit_bands_by_board_and_date():
    idx = pd.DatetimeIndex(["2020-08-21", "2020-08-24"])
    from mltrader.core.market import limit_pct

    st_flags = np.zeros(2, dtype=bool)
    assert list(limit_pct("chinext", st_flags, idx)) == [0.10, 0.20]  # the 2020 reform
    assert list(limit_pct("star", st_flags, idx)) == [0.20, 0.20]
    assert list(limit_pct("main", np.array([True, False]), idx)) == [0.05, 0.10]  # ST


def test_limit_prices_round_half_up_to_the_tick():
    data = panel([10.05, 10.05], preclose=[10.05, 10.05])
    up, dn = price_limits(data)
    assert up[1, 0] == pytest.approx(11.06) and dn[1, 0] == pytest.approx(9.05)  # 11.055, 9.045


def test_real_data_never_trades_outside_its_limits_and_the_known_lock_blocks_a_buy():
    """601088.SH opened and stayed at limit-up on 2017-03-20: a buy decided on the 17th
    gets no fill that day; and the real highs and lows never cross the computed limits."""
    full = load_ashare("none")
    up, dn = price_limits(full)
    with np.errstate(invalid="ignore"):
        assert not (full.exec_bars.high > up + 1e-6).any()
        assert not (full.exec_bars.low < dn - 1e-6).any()
    data = full.select(["601088.SH"], "2017-03-10", "2017-03-24")
    day = data.bars.index.get_loc(pd.Timestamp("2017-03-20", tz="UTC"))
    w = [np.nan] * len(data.bars.index)
    w[day - 1] = 0.5
    res = run(data, w)
    assert reasons(res)[0].startswith("market: limit-up lock")
    assert res.fills.empty or (res.fills["date"] != data.bars.index[day]).all()


# ---------------------------------------------------------------- T+1
def intraday(prices: list[float], per_day: int) -> tuple[Bars, np.ndarray]:
    days = len(prices) // per_day
    idx = pd.DatetimeIndex([pd.Timestamp("2021-03-01 01:30", tz="UTC") + pd.Timedelta(days=d)
                            + pd.Timedelta(minutes=30 * k)
                            for d in range(days) for k in range(per_day)])
    a = np.asarray(prices, dtype=float)[:, None]
    sessions = np.repeat(np.arange(days), per_day)
    return Bars(index=idx, symbols=(SYM,), open=a, high=a, low=a, close=a, volume=a * 0 + 1e6), \
        sessions


def test_t_plus_one_blocks_a_same_session_sell_then_lets_it_go_next_session():
    bars, sessions = intraday([10.0] * 8, per_day=4)
    s = settings_cn(market=dataclasses.replace(CN_A, price_limits=False))
    # buy decided at bar 0 fills at bar 1; sell decided at bar 1 would fill at bar 2, same day
    tg = pd.DataFrame({SYM: [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}, index=bars.index)
    res = run_backtest(bars, tg, s, sessions=sessions)
    rs = [str(r) for r in res.orders["reason"]]
    assert rs[1].startswith("market: T+1") and rs[2].startswith("market: T+1")
    sell = res.fills[res.fills["qty"] < 0].iloc[0]
    assert sessions[bars.index.get_loc(sell["date"])] == 1  # the next session, bar 4
    assert bars.index.get_loc(sell["date"]) == 4
    # without T+1 the same targets sell at bar 2
    free = run_backtest(bars, tg, settings_cn(market=dataclasses.replace(
        CN_A, price_limits=False, t_plus_one=False)), sessions=sessions)
    assert bars.index.get_loc(free.fills[free.fills["qty"] < 0].iloc[0]["date"]) == 2


def test_t_plus_one_sells_yesterdays_shares_but_not_todays():
    bars, sessions = intraday([10.0] * 8, per_day=4)
    s = settings_cn(market=dataclasses.replace(CN_A, price_limits=False))
    # day 0 buys ~0.3; day 1 adds to 0.6 at bar 4 and asks for 0 at bar 5: only day 0's go
    w = [0.3, np.nan, np.nan, 0.6, 0.0, np.nan, np.nan, np.nan]
    res = run_backtest(bars, pd.DataFrame({SYM: w}, index=bars.index), s, sessions=sessions)
    fills = res.fills
    bought0 = fills["qty"].iloc[0]
    assert fills["qty"].iloc[1] > 0 and fills["date"].iloc[1] == bars.index[4]
    assert fills["qty"].iloc[2] == -bought0 and fills["date"].iloc[2] == bars.index[5]
    assert str(res.orders["reason"].iloc[2]).startswith("market: T+1")


# ---------------------------------------------------------------- board lots
@settings(max_examples=200, deadline=None)
@given(held=st.integers(0, 5000), delta=st.integers(-5000, 5000))
def test_lot_round_buys_whole_lots_and_sells_odd_lots_only_whole(held, delta):
    delta = max(delta, -held)  # long only: never sell more than held
    out = lot_round(float(delta), float(held), 100.0)
    if delta > 0:
        assert out % 100 == 0 and 0 <= out <= delta and delta - out < 100
    elif delta < 0:
        if held + delta == 0:
            assert out == -held  # the whole position, odd lot included
        else:
            assert out % 100 == 0 and delta <= out <= 0 and out - delta < 100


def test_lots_in_the_engine_and_an_order_under_one_lot_is_refused():
    data = panel([10.0] * 6)
    # 0.025 x 100,000 / 10 = 250 shares -> 200; then 0.026 wants 260: +60 is under a lot
    res = run(data, [0.025, 0.026, 0.0, np.nan, np.nan, np.nan])
    assert list(res.fills["qty"]) == [200.0, -200.0]
    assert reasons(res)[1] == "market: board lot (under one lot to trade)"


def test_an_odd_lot_is_sold_whole():
    data = panel([10.0] * 5)
    res = run(data, [350.0, 120.0, 0.0, np.nan, np.nan], unit="shares")
    # 350 -> 300 bought; to 120 sells 100 (200 kept: a sell of 180 is not whole lots); to 0
    assert list(res.fills["qty"]) == [300.0, -100.0, -200.0]


# ---------------------------------------------------------------- suspensions
def test_a_suspension_freezes_the_position_and_marks_at_the_last_price():
    data = panel([10.0, 10.0, 11.0, 11.0, 11.0, 12.0], suspended=(3, 4))
    res = run(data, [0.5, np.nan, 0.0, 0.0, 0.0, 0.0])
    pos = res.positions[SYM].to_numpy()
    assert pos[2] == pos[3] == pos[4] > 0  # held through the halt, no fill possible
    assert res.fills[res.fills["qty"] < 0]["date"].iloc[0] == data.bars.index[5]
    eq = res.equity.to_numpy()
    assert eq[3] == eq[4] == eq[2]  # marked at the last traded close (11.0)


def test_real_suspension_freezes_zte_in_2018():
    """000063.SZ (ZTE) was suspended from 2018-04-17 to 2018-06-12: a position held into it
    cannot be sold until trading resumes, and it is marked at the last price meanwhile."""
    data = load_ashare("none").select(["000063.SZ"], "2018-03-01", "2018-07-31")
    halted = data.suspended[:, 0]
    assert halted.sum() > 30
    first_halt = int(np.argmax(halted))
    resume = first_halt + int(np.argmax(~halted[first_halt:]))
    w = [np.nan] * len(data.bars.index)
    w[0] = 0.5
    for k in range(first_halt - 1, len(w)):
        w[k] = 0.0  # try to sell from the day before the halt on
    res = run(data, w)
    pos = res.positions["000063.SZ"].to_numpy()
    sells = res.fills[res.fills["qty"] < 0]
    assert (pos[first_halt:resume] == pos[first_halt - 1]).all()
    assert data.bars.index.get_loc(sells["date"].iloc[0]) >= resume
    eq = res.equity.to_numpy()[first_halt:resume]
    assert np.ptp(eq) == 0.0  # nothing moves the book during the halt


# ---------------------------------------------------------------- costs
def test_minimum_commission_stamp_duty_and_transfer_fee():
    # a 1,000 CNY buy pays the 5 CNY minimum plus 0.1 bps transfer fee (after 2022-04-29)
    data = panel([10.0] * 4, start="2023-08-24")
    res = run(data, [0.0105, 0.0, np.nan, np.nan], settings_cn(commission_bps=2.5))
    buy, sell = res.fills.iloc[0], res.fills.iloc[1]
    assert buy["qty"] == 100 and buy["commission"] == pytest.approx(5.0 + 1000 * 0.1e-4)
    # sold on Monday 2023-08-28: stamp duty 5 bps from that day (10 bps the day before)
    assert sell["date"] == pd.Timestamp("2023-08-28", tz="UTC")
    assert sell["commission"] == pytest.approx(5.0 + 1000 * (5 + 0.1) * 1e-4)
    assert CN_A.rates(pd.Timestamp("2023-08-25").date()) == (10.1, 0.1)
    assert CN_A.rates(pd.Timestamp("2021-01-04").date()) == (10.2, 0.2)


def test_us_rules_change_nothing():
    bars = panel([10.0, 10.5, 11.0, 10.0]).exec_bars
    tg = pd.DataFrame({SYM: [0.5, 0.5, 0.0, 0.0]}, index=bars.index)
    s = EngineSettings(fill="next_open", commission_bps=3)
    a = run_backtest(bars, tg, s)
    b = run_backtest(bars, tg, dataclasses.replace(s, market=US))
    assert a.equity.equals(b.equity) and a.fills.equals(b.fills)


# ---------------------------------------------------------------- ex-rights
def test_an_ex_rights_day_pays_holders_so_value_follows_the_adjusted_price():
    # a 1.00 cash dividend: close 10.00, then the reference close 9.00 and a flat day
    data = panel([10.0, 10.0, 10.0, 9.0, 9.0], preclose=[10.0, 10.0, 10.0, 9.0, 9.0])
    res = run(data, [0.5, np.nan, np.nan, np.nan, np.nan], settings_cn(stop_loss=0.05))
    shares = res.positions[SYM].iloc[-1]
    assert res.payouts == pytest.approx(shares * 1.0)
    assert res.equity.iloc[3] == pytest.approx(res.equity.iloc[2])  # no loss on the ex-date
    assert res.fills["qty"].lt(0).sum() == 0  # the 10% drop in price is no 5% stop


def test_price_limits_need_their_arrays():
    bars = panel([10.0, 10.0]).exec_bars
    tg = pd.DataFrame({SYM: [0.5, 0.5]}, index=bars.index)
    with pytest.raises(MltraderError, match="no limit prices"):
        run_backtest(bars, tg, settings_cn())


def test_lots_need_whole_shares():
    with pytest.raises(MltraderError, match="whole_shares"):
        EngineSettings(market=CN_A)
