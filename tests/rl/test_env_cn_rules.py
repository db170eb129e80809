"""PortfolioEnv under a market's own rules (China A-shares): board lots, T+1, limit-up /
limit-down locks, taxes, the minimum commission and ex-rights payouts act in the env as in
the backtest, so its equity equals run_backtest's with the same rule arrays after every step."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env

from mltrader.backtest.engine import run_backtest
from mltrader.core.market import CN_A, RuleArrays, rule_arrays
from mltrader.core.settings import EngineSettings
from mltrader.data.ashare import AshareData, load_ashare
from mltrader.data.bars import Bars
from mltrader.risk.guards import Guards
from mltrader.rl import PortfolioEnv
from mltrader.rl import execution as X
from tests.rl.test_env import _run, _targets_frame, causal_features

# 601088.SH opens locked at limit-up on a few 2017 days; 000063.SZ (ZTE) is suspended from
# 2018-04-17 to 2018-06-12 and opens locked at limit-down for days after it resumes
SYMS = ["601088.SH", "000063.SZ", "600036.SH", "000001.SZ", "600519.SH"]
CN = EngineSettings(fill="next_open", whole_shares=True, market=CN_A, commission_bps=2.5,
                    slippage_bps=5)


@pytest.fixture(scope="module")
def cn() -> tuple[AshareData, RuleArrays]:
    data = load_ashare("none").select(SYMS, "2017-01-01", "2018-12-31")
    return data, rule_arrays(CN_A, data, data.bars.index, len(data.symbols))


def _long_actions(n_steps: int, n: int, seed: int) -> np.ndarray:
    """Random long / flat targets that often hold a while (to live through ex-dates and
    limit days) and often change (to trade, sell and hit a lock)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-0.3, 1.0, size=(n_steps, n))
    for k in range(1, n_steps):
        keep = rng.random(n) < 0.6
        a[k, keep] = a[k - 1, keep]
    return a


def _market_totals(traj: list[tuple]) -> dict[str, float]:
    out: dict[str, float] = {}
    for step in traj[1:]:
        for k, v in step[4]["market"].items():
            out[k] = out.get(k, 0.0) + v
    return out


def _check_equal(data: AshareData, rules: RuleArrays, s: EngineSettings
                 ) -> tuple[list[tuple], object]:
    """Random long targets stepped through the env over the whole panel, the same target
    rows through run_backtest: equity equal after every step, positions equal at the end."""
    bars = data.exec_bars
    t0, t1 = 4, len(bars) - 1
    env = PortfolioEnv(bars, causal_features(data.bars), s, window=5, rules=rules)
    traj = _run(env, _long_actions(t1 - t0, len(SYMS), seed=17), options={"start": t0, "end": t1})
    assert len(traj) == t1 - t0 + 1 and traj[-1][3]
    eq = np.array([step[4]["equity"] for step in traj])
    res = run_backtest(bars, _targets_frame(bars, traj, t0), s, start=t0, rules=rules)
    np.testing.assert_allclose(eq, res.equity.to_numpy(), rtol=1e-9, atol=0)
    np.testing.assert_array_equal(env.positions, res.positions.to_numpy()[-1])
    return traj, res


@pytest.mark.parametrize("variant", [
    dict(),
    dict(size_at="decision", rebalance_band=0.02, initial_cash=1_000_000.0),
    dict(oversize="reject", half_spread_bps=3, commission_per_share=0.001, tif="gtc"),
])
def test_equity_equals_run_backtest_under_a_share_rules(cn, variant):
    data, rules = cn
    traj, res = _check_equal(data, rules, dataclasses.replace(CN, **variant))
    # every rule acted, in the env and in the backtest alike
    done = _market_totals(traj)
    reasons = res.orders["reason"].astype(str)
    locks = int(reasons.str.startswith("market: limit-").sum())
    assert done["limit_up"] + done["limit_down"] == locks
    assert done["limit_up"] >= 1 and done["limit_down"] >= 1  # 601088.SH up, 000063.SZ down
    assert done["lot"] >= 1 and (res.fills["qty"].abs() % 100 == 0).all()
    assert (reasons == "market: board lot (under one lot to trade)").sum() >= 1
    assert done["payout"] > 0 and done["payout"] == pytest.approx(res.payouts, rel=1e-12)
    assert done["tax"] > 0  # stamp duty and the transfer fee
    assert float(sum(step[4]["commission"] for step in traj[1:])) == pytest.approx(
        float(res.fills["commission"].sum()), rel=1e-9)
    assert res.fills["commission"].min() >= 5.0  # the minimum commission per order


def test_a_buy_tax_sizes_and_costs_the_buys_as_in_the_backtest(cn):
    """Without lots (fractional shares) a buy-side tax changes every buy's size: the 2008
    stamp duty on both sides (10 bps) added to the buy rate, on a lot-free copy of the rules."""
    data, rules = cn
    taxed = dataclasses.replace(rules, buy_tax_bps=rules.buy_tax_bps + 10.0)
    s = dataclasses.replace(CN, whole_shares=False, commission_bps=3.0,
                            market=dataclasses.replace(CN_A, lot_size=1))
    traj, res = _check_equal(data, taxed, s)
    done = _market_totals(traj)
    assert done["lot"] == 0 and done["tax"] > 0
    assert (res.fills["qty"] % 1 != 0).any()  # fractional: the tax moved the sizes
    _, plain = _check_equal(data, rules, s)
    assert not np.allclose(plain.positions.to_numpy(), res.positions.to_numpy())


def test_guards_and_market_rules_together(cn):
    """Time stops held back by T+1 (a buy on the exit bar) and by limit-down locks, daily loss
    flattening and the trade / position limits, on top of the market's rules: still equal."""
    data, rules = cn
    g = Guards(time_stop=2, max_position=0.3, daily_loss_limit=0.02, max_trades_per_day=3)
    traj, res = _check_equal(data, rules, dataclasses.replace(CN, guards=g))
    done = _market_totals(traj)
    held = dict(res.held_back)
    assert done["held_back"] == sum(held.values()) > 0
    assert held.get("stop held back by a limit-down lock", 0) >= 1
    assert (res.fills["reason"] == "time_stop").sum() > 0


def test_the_known_limit_up_lock_refuses_the_envs_buy(cn):
    """601088.SH opened and stayed at limit-up on 2017-03-20: a buy decided on the 17th
    does not fill that day, in the env as in the backtest; it fills the next day."""
    data, rules = cn
    bars = data.exec_bars
    day = bars.index.get_loc(pd.Timestamp("2017-03-20", tz="UTC"))
    env = PortfolioEnv(bars, causal_features(data.bars), CN, rules=rules)
    env.reset(options={"start": day - 1, "end": day + 1})
    _, _, _, _, info = env.step([0.5, 0.0, 0.0, 0.0, 0.0])
    assert info["market"]["limit_up"] == 1 and env.positions[0] == 0.0
    _, _, _, _, info = env.step([0.5, 0.0, 0.0, 0.0, 0.0])
    assert info["market"]["limit_up"] == 0 and env.positions[0] > 0
    assert env.positions[0] % 100 == 0


def _intraday(prices: list[float], per_day: int) -> tuple[Bars, np.ndarray]:
    days = len(prices) // per_day
    idx = pd.DatetimeIndex([pd.Timestamp("2021-03-01 01:30", tz="UTC") + pd.Timedelta(days=d)
                            + pd.Timedelta(minutes=30 * k)
                            for d in range(days) for k in range(per_day)])
    a = np.asarray(prices, dtype=float)[:, None]
    return (Bars(index=idx, symbols=("600000.SH",), open=a, high=a, low=a, close=a,
                 volume=a * 0 + 1e6), np.repeat(np.arange(days), per_day))


def test_t_plus_one_blocks_a_same_session_sell_in_the_env_and_the_backtest():
    """Two sessions of four bars: bought at bar 1, asked to go flat from bar 1 on; the sells
    of bars 2 and 3 (same session) are refused, the next session's first bar sells."""
    bars, sessions = _intraday([10.0, 10.0, 10.1, 10.2, 10.3, 10.3, 10.2, 10.2], per_day=4)
    s = dataclasses.replace(CN, initial_cash=100_000.0,
                            market=dataclasses.replace(CN_A, price_limits=False))
    env = PortfolioEnv(bars, np.zeros((8, 1, 1)), s, sessions=sessions)
    assert env.rules is not None  # the taxes, from the rules alone (no limit prices needed)
    traj = _run(env, [[0.5]] + [[0.0]] * 6, options={"start": 0, "end": 7})
    held = [step[0]["weights"][0] > 0 for step in traj]
    assert held == [False, True, True, True, False, False, False, False]
    t1_cut = [step[4]["market"]["t_plus_one"] for step in traj[1:]]
    assert t1_cut == [0, 1, 1, 0, 0, 0, 0]
    res = run_backtest(bars, _targets_frame(bars, traj, 0), s, sessions=sessions)
    np.testing.assert_allclose([step[4]["equity"] for step in traj], res.equity.to_numpy(),
                               rtol=1e-9, atol=0)
    sell = res.fills[res.fills["qty"] < 0]
    assert list(bars.index.get_indexer(sell["date"])) == [4]
    assert (res.orders["reason"].astype(str).str.startswith("market: T+1")).sum() == 2


def test_gymnasium_check_env_passes_with_market_rules(cn):
    data, rules = cn
    env = PortfolioEnv(data.exec_bars, causal_features(data.bars), CN, window=6,
                       episode_length=40, rules=rules)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    other = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert not other, other
    assert env._px.shape[0] == X.N_PLANES_RULES


def test_us_env_has_no_market_planes_and_reports_none(cn):
    data, rules = cn
    bars = data.exec_bars
    env = PortfolioEnv(bars, causal_features(data.bars), EngineSettings(fill="next_open"))
    assert env.rules is None and env._px.shape[0] == X.N_PLANES
    _, info = env.reset()
    assert info["market"] is None


def test_price_limits_need_their_arrays(cn):
    data, _ = cn
    with pytest.raises(ValueError, match="no limit prices"):
        PortfolioEnv(data.exec_bars, causal_features(data.bars), CN)
    bad = dataclasses.replace(rule_arrays(CN_A, data, data.bars.index, len(SYMS)),
                              sell_tax_bps=np.zeros(3))
    with pytest.raises(ValueError, match="sell_tax_bps"):
        PortfolioEnv(data.exec_bars, causal_features(data.bars), CN, rules=bad)


def test_panel_market_trades_a_shares_at_the_traded_prices_under_the_rules():
    """`plan.panel_market` on an A-share config: the env fills at `plan.execution`'s traded
    prices with its rule arrays, while the inputs come from the (adjusted) signal bars."""
    from mltrader.config import config_from_dict
    from mltrader.pipeline import load_data
    from mltrader.plan import execution, panel_market

    cfg = config_from_dict({
        "name": "agent-cn", "market": "cn_a",
        "data": {"source": "bundled", "dataset": "ashare_csi300", "adjust": "qfq",
                 "symbols": SYMS, "start": "2017-01-01", "end": "2018-12-31"},
        "features": ["ret_5"], "model": {"name": "ppo"},
        "walk_forward": {"first_test_year": 2018},
        "strategy": {"name": "positions"}, "execution": {"rebalance_band": 0.0},
        "costs": {"commission_bps": 2.5, "slippage_bps": 5},
    })
    bars, _ = load_data(cfg)
    fill_bars, rules = execution(cfg, bars)
    assert rules is not None and not np.allclose(bars.close, fill_bars.close, equal_nan=True)
    x = np.zeros((len(bars), bars.shape[1], 1))
    env = panel_market(cfg, bars, x, "next_open")(10, len(bars), window=2)
    assert env.bars.symbols == bars.symbols and env.bars.index.equals(bars.index)
    np.testing.assert_array_equal(env.bars.open, fill_bars.open)  # the traded prices
    assert env.rules is not None
    for k in ("limit_up", "limit_down", "payout", "sell_tax_bps", "buy_tax_bps"):
        np.testing.assert_array_equal(getattr(env.rules, k), getattr(rules, k))
    assert env.settings.market is CN_A and env.settings.whole_shares
    env.reset(options={"start": 10, "end": 60})
    _, _, _, _, info = env.step(np.ones(bars.shape[1]))
    assert info["market"]["lot"] >= 1 and info["commission"] > 0
    assert (env.positions % 100 == 0).all()
