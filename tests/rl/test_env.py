"""PortfolioEnv: gymnasium's checker, equity equal to run_backtest's on the same targets, no
look-ahead, reproducibility and refused settings."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env

from mltrader.backtest.engine import run_backtest
from mltrader.core.fills import commission, slipped
from mltrader.core.orders import cash_room, leverage_room, order_delta, target_shares
from mltrader.core.params import FP_BORROW, MODE_TARGETS, pack
from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.rl import PortfolioEnv, UnsupportedSettingError, find_lookahead
from mltrader.rl.causal import perturb_after
from mltrader.testing import synthetic_bars

N_SYM = 6
T_BARS = 160


def _holes(bars: Bars, seed: int = 4) -> Bars:
    """Bars where a few symbols do not trade on a few bars (NaN in every field)."""
    rng = np.random.default_rng(seed)
    mask = rng.random(bars.shape) < 0.03
    mask[:2] = False
    arrays = {}
    for name in ("open", "high", "low", "close", "volume"):
        a = getattr(bars, name)
        if a is not None:
            a = a.copy()
            a[mask] = np.nan
            arrays[name] = a
    return bars.replace(**arrays)


@pytest.fixture(scope="module")
def ohlc() -> Bars:
    return _holes(synthetic_bars(T_BARS, N_SYM, seed=11, ohlc=True))


@pytest.fixture(scope="module")
def closes() -> Bars:
    return _holes(synthetic_bars(T_BARS, N_SYM, seed=12), seed=5)


def causal_features(bars: Bars) -> np.ndarray:
    """(T, N, 2): the bar's log return and its 5-bar mean; row t uses closes up to t only."""
    c = pd.DataFrame(bars.close).ffill().to_numpy()
    r = np.full(c.shape, np.nan)
    r[1:] = np.log(c[1:] / c[:-1])
    m = pd.DataFrame(r).rolling(5, min_periods=1).mean().to_numpy()
    return np.stack([r, m], axis=2)


def planted_features(bars: Bars) -> np.ndarray:
    """The causal features plus a planted leak: next bar's log return (shifted one bar back)."""
    f = causal_features(bars)
    future = np.full(f.shape[:2], np.nan)
    future[:-1] = f[1:, :, 0]
    return np.concatenate([f, future[:, :, None]], axis=2)


def _actions(n_steps: int, n: int, seed: int, discrete: bool = False) -> np.ndarray:
    """Random actions with repeats (to exercise the band) and exact zeros (to go flat)."""
    rng = np.random.default_rng(seed)
    if discrete:
        return rng.integers(0, 3, size=(n_steps, n))
    a = rng.uniform(-1.0, 1.0, size=(n_steps, n))
    a[rng.random((n_steps, n)) < 0.15] = 0.0
    for k in range(1, n_steps):
        if rng.random() < 0.3:
            a[k] = a[k - 1]
    return a


def _run(env: PortfolioEnv, actions: np.ndarray, options: dict | None = None,
         seed: int | None = None) -> list[tuple]:
    obs, info = env.reset(seed=seed, options=options)
    out = [(obs, 0.0, False, False, info)]
    for a in actions:
        step = env.step(a)
        out.append(step)
        if step[2] or step[3]:
            break
    return out


def _targets_frame(bars: Bars, traj: list[tuple], t0: int) -> pd.DataFrame:
    tw = np.full(bars.shape, np.nan)
    for k, step in enumerate(traj[1:]):
        tw[t0 + k] = step[4]["target_weights"]
    return pd.DataFrame(tw, index=bars.index, columns=list(bars.symbols))


VARIANTS = {
    "close_frictionless": dict(),
    "open_costs": dict(fill="next_open", commission_bps=5, slippage_bps=3, half_spread_bps=2,
                       slippage_range_frac=0.05),
    "open_decision_whole": dict(fill="next_open", size_at="decision", whole_shares=True,
                                commission_per_share=0.01, commission_min=1.0,
                                commission_fixed=0.5, slippage_bps=2),
    "close_decision_band": dict(size_at="decision", rebalance_band=0.05, commission_bps=3,
                                whole_shares=True),
    "open_decision_band_gtc": dict(fill="next_open", size_at="decision", rebalance_band=0.05,
                                   tif="gtc", commission_bps=2),
    "open_fill_band_reject": dict(fill="next_open", rebalance_band=0.03, oversize="reject",
                                  commission_bps=10, half_spread_bps=5, tif="gtc"),
    "short_lev1_costs": dict(fill="next_open", allow_short=True, commission_bps=4,
                             slippage_bps=2, borrow_bps_per_year=100),
    "short_lev2_decision": dict(allow_short=True, max_gross_leverage=2.0, size_at="decision",
                                whole_shares=True, commission_per_share=0.005,
                                commission_min=1.0, borrow_bps_per_year=50),
    "short_lev1_5_open": dict(fill="next_open", allow_short=True, max_gross_leverage=1.5,
                              half_spread_bps=3, commission_fixed=1.0, tif="gtc"),
}


def _check_equal_to_backtest(bars, settings, actions, t0, t1, discrete=False, min_fills=20):
    feats = causal_features(bars)
    env = PortfolioEnv(bars, feats, settings, window=4, discrete=discrete)
    traj = _run(env, actions, options={"start": t0, "end": t1})
    assert len(traj) == t1 - t0 + 1 and traj[-1][3]  # truncated at the window's end
    eq = np.array([step[4]["equity"] for step in traj])
    res = run_backtest(bars, _targets_frame(bars, traj, t0), settings, start=t0)
    ref = res.equity.to_numpy()[:len(eq)]
    np.testing.assert_allclose(eq, ref, rtol=1e-9, atol=0)
    assert len(res.fills) >= min_fills  # it really traded
    return traj, res


@pytest.mark.parametrize("name", list(VARIANTS))
def test_equity_equals_run_backtest_after_every_step(ohlc, name):
    s = EngineSettings(**VARIANTS[name])
    traj, res = _check_equal_to_backtest(ohlc, s, _actions(200, N_SYM, seed=3), t0=7, t1=150)
    # the positions behind that equity are the backtest's too
    shares = res.positions.to_numpy()[len(traj) - 1]
    np.testing.assert_allclose(traj[-1][0]["weights"], res.weights.fillna(0.0).to_numpy()
                               [len(traj) - 1], rtol=1e-5, atol=1e-7)
    assert (shares != 0).any()
    if s.allow_short:
        assert (res.positions.to_numpy() < 0).any()  # the short actions were traded


@pytest.mark.parametrize("name", ["close_frictionless", "close_decision_band"])
def test_equity_equals_run_backtest_close_only(closes, name):
    s = EngineSettings(**VARIANTS[name])
    _check_equal_to_backtest(closes, s, _actions(200, N_SYM, seed=8), t0=3, t1=159)


@pytest.mark.parametrize("name", ["open_costs", "short_lev1_costs", "short_lev2_decision"])
def test_equity_equals_run_backtest_discrete(ohlc, name):
    s = EngineSettings(**VARIANTS[name])
    _check_equal_to_backtest(ohlc, s, _actions(200, N_SYM, seed=5, discrete=True), t0=20,
                             t1=140, discrete=True)


@pytest.mark.parametrize(("discrete", "short"), [(False, True), (True, True), (False, False)])
def test_scaled_actions_trade_what_the_positions_rule_trades(ohlc, discrete, short):
    """With action_scale = allocation / N, the equity the env gives a sequence of positions
    is the backtest's equity on the positions rule's weights for those positions."""
    from mltrader.strategy.positions import position_weights

    s = EngineSettings(**{**VARIANTS["short_lev1_costs"], "allow_short": short})
    alloc, t0, t1 = 0.8, 10, 150
    env = PortfolioEnv(ohlc, causal_features(ohlc), s, window=4, discrete=discrete,
                       action_scale=alloc / N_SYM)
    acts = _actions(t1 - t0, N_SYM, seed=9, discrete=discrete) * (1 if discrete else 1.3)
    traj = _run(env, acts, options={"start": t0, "end": t1})
    eq = np.array([step[4]["equity"] for step in traj])
    pos = np.full(ohlc.shape, np.nan)
    pos[t0:t1] = acts - 1.0 if discrete else acts
    w = pd.DataFrame(position_weights(pos, alloc, short), index=ohlc.index,
                     columns=list(ohlc.symbols))
    res = run_backtest(ohlc, w, s, start=t0)
    np.testing.assert_allclose(eq, res.equity.to_numpy()[:len(eq)], rtol=1e-9, atol=0)
    assert len(res.fills) >= 20


def test_action_scale_must_be_positive(ohlc):
    with pytest.raises(ValueError, match="action_scale"):
        PortfolioEnv(ohlc, causal_features(ohlc), action_scale=0.0)


def test_a_gtc_order_waits_through_a_missing_bar_as_in_the_backtest():
    """Decided on bar 19, no price on bar 20: a day order is cancelled, a gtc one works on,
    and a decision back inside the band on bar 20 still replaces it (no order when day)."""
    bars = synthetic_bars(40, 2, seed=2, ohlc=True)
    arrays = {k: getattr(bars, k).copy() for k in ("open", "high", "low", "close", "volume")}
    for a in arrays.values():
        a[20, 0] = np.nan
    bars = bars.replace(**arrays)
    acts = np.array([[0.5, 0.2]] * 38)
    acts[19 - 3] = [0.3, 0.2]  # the decision on bar 19 (the episode starts on bar 3)
    final = {}
    for tif in ("day", "gtc"):
        s = EngineSettings(fill="next_open", size_at="decision", rebalance_band=0.05, tif=tif,
                           commission_bps=2)
        traj, res = _check_equal_to_backtest(bars, s, acts, t0=3, t1=39, min_fills=2)
        final[tif] = traj[-1][4]["equity"]
    assert final["day"] != final["gtc"]


def test_log_return_rewards_sum_to_the_episode_log_return(ohlc):
    s = EngineSettings(**VARIANTS["open_costs"])
    env = PortfolioEnv(ohlc, causal_features(ohlc), s, window=3)
    traj = _run(env, _actions(300, N_SYM, seed=1))
    total = sum(step[1] for step in traj)
    assert total == pytest.approx(math.log(traj[-1][4]["equity"] / s.initial_cash), rel=1e-12)
    assert sum(step[4]["commission"] for step in traj) > 0


def test_drawdown_and_differential_sharpe_rewards(ohlc):
    acts = _actions(300, N_SYM, seed=2)
    feats = causal_features(ohlc)
    base = _run(PortfolioEnv(ohlc, feats, window=2), acts)
    dd = _run(PortfolioEnv(ohlc, feats, window=2, reward="drawdown_penalised",
                           drawdown_penalty=2.0), acts)
    eq = np.array([s[4]["equity"] for s in base])
    peak = np.maximum.accumulate(eq)
    draw = 1.0 - eq / peak
    want = np.diff(np.log(eq)) - 2.0 * np.maximum(np.diff(draw), 0.0)
    np.testing.assert_allclose([s[1] for s in dd[1:]], want, rtol=1e-9, atol=1e-15)
    ds = _run(PortfolioEnv(ohlc, feats, window=2, reward="differential_sharpe", eta=0.05), acts)
    # Moody & Saffell, eq. 10, recomputed by hand
    a = b = 0.0
    for k, step in enumerate(ds[1:], start=1):
        r = eq[k] / eq[k - 1] - 1.0
        var = b - a * a
        d = (b * (r - a) - 0.5 * a * (r * r - b)) / var ** 1.5 if var > 1e-12 else 0.0
        assert step[1] == pytest.approx(d, rel=1e-9, abs=1e-12)
        a, b = a + 0.05 * (r - a), b + 0.05 * (r * r - b)
    assert any(step[1] != 0.0 for step in ds[1:])


class PandasReferenceEnv:
    """The same fill rules written plainly: pandas Series state, one symbol at a time in
    Python, the execution core's functions called one by one (tests only, for equality)."""

    def __init__(self, bars: Bars, s: EngineSettings) -> None:
        self.s, self.syms = s, list(bars.symbols)
        self.close = bars.frame("close")
        self.ref = self.close if s.fill == "next_close" else bars.frame("open")
        self.high = self.close if s.fill == "next_close" else bars.frame("high")
        self.low = self.close if s.fill == "next_close" else bars.frame("low")
        _, self.fp = pack(s, MODE_TARGETS, bars.close_only)
        self.buy_bps = s.slippage_bps + s.half_spread_bps + s.commission_bps

    def reset(self, t0: int) -> float:
        self.t, self.cash, self.equity = t0, self.s.initial_cash, self.s.initial_cash
        self.shares = pd.Series(0.0, index=self.syms)
        self.last = self.close.iloc[t0].copy()
        self.orders: dict[str, tuple[float, bool]] = {}
        return self.equity

    def step(self, action: np.ndarray) -> float:
        s, t = self.s, self.t
        w = pd.Series(np.clip(np.asarray(action, dtype=float), -1.0, 1.0), index=self.syms)
        w = w if s.allow_short else w.clip(lower=0.0)
        if w.abs().sum() > s.max_gross_leverage:
            w = w * (s.max_gross_leverage / w.abs().sum())
        for sym in self.syms:  # decisions on t's close
            x, held = float(w[sym]), float(self.shares[sym])
            if x == 0.0 and held == 0.0 and sym not in self.orders:
                continue
            px = self.close.iloc[t][sym]
            px = self.last[sym] if np.isnan(px) else px
            if s.size_at == "decision" and px > 0:
                want = target_shares(x, self.equity, px, held, self.buy_bps, s.whole_shares)
                if (sym not in self.orders
                        and order_delta(want, held, px, self.equity, s.rebalance_band) == 0):
                    continue
                self.orders[sym] = (want, True)
            else:
                self.orders[sym] = (x, False)
        u = t + 1
        short = self.shares < 0
        self.cash -= float((-self.shares * self.last)[short].sum()) * float(self.fp[FP_BORROW])
        mark = self.ref.iloc[u].fillna(self.last)
        value = self.cash + float((self.shares * mark).sum())
        gross = float((self.shares.abs() * mark).sum())
        for phase in (0, 1):
            for sym in [x for x in self.syms if x in self.orders]:
                v, sized = self.orders[sym]
                bo, h = self.ref.iloc[u][sym], float(self.shares[sym])
                if np.isnan(bo):
                    if phase == 1 and s.tif == "day":
                        del self.orders[sym]
                    continue
                if sized:
                    delta = order_delta(np.trunc(v) if s.whole_shares else v, h, bo, value, 0.0)
                else:
                    want = target_shares(v, value, bo, h, self.buy_bps, s.whole_shares)
                    delta = order_delta(want, h, bo, value, s.rebalance_band)
                reduces = delta != 0 and abs(h + delta) < abs(h)
                if (phase == 0) != reduces:
                    continue
                del self.orders[sym]
                if delta == 0:
                    continue
                side = 1.0 if delta > 0 else -1.0
                fpx = slipped(bo, side, self.high.iloc[u][sym], self.low.iloc[u][sym], self.fp)
                if not reduces:
                    q_ok = min(abs(delta), leverage_room(h, delta, mark[sym], value, gross,
                                                         s.max_gross_leverage))
                    if side > 0 and s.max_gross_leverage <= 1.0 + 1e-12:
                        q_ok = min(q_ok, cash_room(self.cash, fpx, s.commission_bps,
                                                   s.commission_per_share, s.commission_min,
                                                   s.commission_fixed))
                    if q_ok < abs(delta):
                        if s.oversize == "reject":
                            continue
                        delta = side * (np.floor(q_ok) if s.whole_shares else q_ok)
                if delta == 0:
                    continue
                fee = commission(delta, abs(delta) * fpx, self.fp)
                self.cash -= delta * fpx + fee
                value -= delta * fpx + fee - delta * mark[sym]
                gross += (abs(h + delta) - abs(h)) * mark[sym]
                new = h + delta
                self.shares[sym] = 0.0 if abs(new) < 1e-10 * max(1.0, abs(delta)) else new
        self.last = self.close.iloc[u].fillna(self.last)
        held = self.shares != 0
        self.equity = self.cash + float((self.shares * self.last)[held].sum())
        self.t = u
        return self.equity


@pytest.mark.parametrize("name", ["open_costs", "close_decision_band", "short_lev2_decision",
                                  "open_fill_band_reject"])
def test_pandas_reference_env_agrees(ohlc, name):
    s = EngineSettings(**VARIANTS[name])
    acts = _actions(80, N_SYM, seed=9)
    traj = _run(PortfolioEnv(ohlc, causal_features(ohlc), s, window=2),
                acts, options={"start": 10, "end": 90})
    ref = PandasReferenceEnv(ohlc, s)
    got = [ref.reset(10)] + [ref.step(a) for a in acts]
    np.testing.assert_allclose([step[4]["equity"] for step in traj], got, rtol=1e-9)


# ---------------------------------------------------------------------------- gymnasium checks
@pytest.mark.parametrize("discrete,flat", [(False, False), (True, False), (False, True),
                                           (True, True)])
def test_gymnasium_check_env_passes(ohlc, discrete, flat):
    s = EngineSettings(fill="next_open", allow_short=True, commission_bps=2)
    env = PortfolioEnv(ohlc, causal_features(ohlc), s, window=8, discrete=discrete, flat=flat,
                       episode_length=40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    # the only remarks: features and weights are unbounded Boxes (-inf, inf), on purpose
    other = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert not other, other
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    if flat:
        assert obs.shape == (8 * N_SYM * 2 + N_SYM,)
    else:
        assert obs["features"].shape == (8, N_SYM, 2) and obs["weights"].shape == (N_SYM,)


def test_long_only_clips_negative_targets_and_leverage_scales_gross(ohlc):
    env = PortfolioEnv(ohlc, causal_features(ohlc), window=2)
    w = env.target_weights([-0.5, 0.5, 0.5, 0.5, 0.0, 1.0])
    np.testing.assert_allclose(w, [0.0, 0.2, 0.2, 0.2, 0.0, 0.4])
    env2 = PortfolioEnv(ohlc, causal_features(ohlc), EngineSettings(allow_short=True), window=2,
                        discrete=True)
    np.testing.assert_allclose(env2.target_weights([0, 1, 2, 1, 1, 1]),
                               [-0.5, 0, 0.5, 0, 0, 0])
    env.reset()
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(N_SYM, np.nan))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(N_SYM + 1))


# ---------------------------------------------------------------------------- look-ahead
def test_observations_do_not_change_when_only_the_future_changes(ohlc):
    cut = 70
    feats = causal_features(ohlc)
    other_bars = perturb_after(ohlc, cut, np.random.default_rng(1), scale=0.1)
    other_feats = feats.copy()
    other_feats[cut + 1:] = np.random.default_rng(2).normal(size=other_feats[cut + 1:].shape)
    s = EngineSettings(**VARIANTS["open_costs"])
    acts = _actions(200, N_SYM, seed=4)
    a = _run(PortfolioEnv(ohlc, feats, s, window=5), acts)
    b = _run(PortfolioEnv(other_bars, other_feats, s, window=5), acts)
    for sa, sb in zip(a, b, strict=True):
        bar = sa[4]["bar"]
        same = (np.array_equal(sa[0]["features"], sb[0]["features"])
                and np.array_equal(sa[0]["weights"], sb[0]["weights"])
                and sa[1] == sb[1] and sa[4]["equity"] == sb[4]["equity"])
        assert same == (bar <= cut), bar  # identical up to the cut, different after it


def test_observation_rows_are_the_feature_rows_up_to_t_only(ohlc):
    feats = planted_features(ohlc)
    w = 6
    env = PortfolioEnv(ohlc, feats, window=w, nan_fill=0.0)
    filled = np.nan_to_num(feats).astype(np.float32)
    for step in _run(env, _actions(300, N_SYM, seed=6)):
        t = step[4]["bar"]
        np.testing.assert_array_equal(step[0]["features"], filled[t - w + 1:t + 1])
        # the env shows row t and nothing later, so what row t holds is what the agent sees:
        # the planted column carries bar t+1's return, the causal ones bar t's
        if 1 <= t < len(ohlc) - 1:
            c = pd.DataFrame(ohlc.close).ffill().to_numpy()
            np.testing.assert_allclose(step[0]["features"][-1, :, 0],
                                       np.log(c[t] / c[t - 1]).astype(np.float32), rtol=1e-6)
            np.testing.assert_allclose(step[0]["features"][-1, :, 2],
                                       np.log(c[t + 1] / c[t]).astype(np.float32), rtol=1e-6)


def test_find_lookahead_flags_the_planted_future_feature_only(ohlc, closes):
    assert find_lookahead(causal_features, ohlc) == []
    assert find_lookahead(planted_features, ohlc) == [2]
    assert find_lookahead(planted_features, closes, cuts=[10, 100]) == [2]


# ---------------------------------------------------------------------------- reproducibility
def test_same_seed_and_actions_give_identical_trajectories(ohlc):
    feats = causal_features(ohlc)
    s = EngineSettings(**VARIANTS["short_lev1_costs"])
    acts = _actions(60, N_SYM, seed=7)

    def run(seed):
        env = PortfolioEnv(ohlc, feats, s, window=10, episode_length=50,
                           reward="differential_sharpe")
        return [_run(env, acts, seed=seed), _run(env, acts)]  # the second from np_random

    one, two = run(123), run(123)
    for ep1, ep2 in zip(one, two, strict=True):
        assert len(ep1) == len(ep2) == 51
        for x, y in zip(ep1, ep2, strict=True):
            np.testing.assert_array_equal(x[0]["features"], y[0]["features"])
            np.testing.assert_array_equal(x[0]["weights"], y[0]["weights"])
            assert x[1:4] == y[1:4]
            assert {k: v for k, v in x[4].items() if k != "target_weights"} == \
                   {k: v for k, v in y[4].items() if k != "target_weights"}
    starts = {run(seed)[0][0][4]["bar"] for seed in range(6)}
    assert len(starts) > 1  # the seed picks the episode window


def test_reset_window_options(ohlc):
    env = PortfolioEnv(ohlc, causal_features(ohlc), window=5, start=20, end=100)
    _, info = env.reset()
    assert info["bar"] == 20
    _, info = env.reset(options={"start": 4, "end": 10})
    assert info["bar"] == 4
    for bad in ({"start": 3}, {"start": 50, "end": 50}, {"end": T_BARS}):
        with pytest.raises(ValueError, match="start"):
            env.reset(options=bad)
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"begin": 5})
    with pytest.raises(RuntimeError, match="reset"):
        PortfolioEnv(ohlc, causal_features(ohlc)).step(np.zeros(N_SYM))


# ---------------------------------------------------------------------------- settings
@pytest.mark.parametrize("kw,name", [
    (dict(order_type="limit", limit_offset_bps=10), "order_type"),
    (dict(order_type="stop"), "order_type"),
    (dict(max_volume_share=0.1), "max_volume_share"),
    (dict(stop_loss=0.05), "stop_loss"),
    (dict(take_profit=0.1), "take_profit"),
    (dict(trailing_stop=0.05), "trailing_stop"),
])
def test_unsupported_settings_raise_value_error_naming_the_setting(ohlc, kw, name):
    with pytest.raises(ValueError, match=name) as err:
        PortfolioEnv(ohlc, causal_features(ohlc), EngineSettings(**kw))
    assert isinstance(err.value, UnsupportedSettingError)


def test_next_open_on_close_only_bars_is_refused(closes):
    with pytest.raises(ValueError, match="fill"):
        PortfolioEnv(closes, causal_features(closes), EngineSettings(fill="next_open"))


def test_bad_features_shape_is_refused(ohlc):
    with pytest.raises(ValueError, match="features has shape"):
        PortfolioEnv(ohlc, np.zeros((T_BARS - 1, N_SYM, 2)))
