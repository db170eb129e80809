"""Market regimes: causal (the future never changes the past), thresholds equal a brute-force
expanding quantile, a planted uptrend/crash is labelled as such, HMM states are ordered."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mltrader.errors import ConfigError
from mltrader.features import regimes as rg
from mltrader.features.registry import compute_features
from mltrader.testing import synthetic_bars

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _panel(seed: int, t: int = 400, n: int = 3, nan_frac: float = 0.1) -> pd.DataFrame:
    """Random-walk closes with NaN holes (suspensions), never a zero."""
    rng = np.random.default_rng(seed)
    close = 20.0 * np.exp(np.cumsum(rng.normal(0, 0.02, (t, n)), axis=0))
    close[rng.random((t, n)) < nan_frac] = np.nan
    return pd.DataFrame(close, index=pd.bdate_range("2001-01-01", periods=t, tz="UTC"),
                        columns=[f"S{i}" for i in range(n)])


def _same_upto(a: pd.DataFrame | pd.Series, b: pd.DataFrame | pd.Series, t: int) -> None:
    np.testing.assert_array_equal(a.to_numpy()[: t + 1], b.to_numpy()[: t + 1])


# ----------------------------------------------------------------- causality
@FAST
@given(seed=st.integers(0, 10_000), data=st.data())
def test_rule_regimes_are_causal(seed, data):
    close = _panel(seed)
    t = data.draw(st.integers(60, len(close) - 10), label="t")
    factor = data.draw(st.sampled_from([0.3, 0.8, 1.25, 4.0]), label="factor")
    bumped = close.copy()
    noise = np.random.default_rng(seed).normal(0, 0.3, bumped.iloc[t + 1:].shape)
    bumped.iloc[t + 1:] *= factor * np.exp(noise)
    for fn in (lambda c: rg.rolling_regimes(c, 10, 20), lambda c: rg.market_regime(c, 10, 20)):
        base = fn(close)
        _same_upto(base, fn(bumped), t)
        _same_upto(base, fn(close.iloc[: t + 1]), t)  # truncating the future: same past
    if factor < 1:  # a fall moves a trend state (a rise may leave a bull state as it is)
        assert not np.array_equal(rg.rolling_regimes(close, 10, 20).to_numpy()[t + 1:],
                                  rg.rolling_regimes(bumped, 10, 20).to_numpy()[t + 1:],
                                  equal_nan=True)  # the perturbation was real


def _two_regime_returns(n: int, seed: int, block: int = 60) -> pd.Series:
    """Alternating calm-up / volatile-down blocks of daily returns, on business days."""
    rng = np.random.default_rng(seed)
    bear = (np.arange(n) // block) % 2 == 1
    r = np.where(bear, rng.normal(-0.004, 0.02, n), rng.normal(0.003, 0.005, n))
    idx = pd.bdate_range("2001-01-01", periods=n, tz="UTC")
    return pd.Series(100.0 * np.exp(np.cumsum(r)), index=idx), pd.Series(bear, index=idx)


def test_hmm_regimes_are_causal():
    price, _ = _two_regime_returns(800, seed=3)  # 2001..2004-01: fits at 2002, 2003, 2004

    def run(p: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
        return (rg.hmm_probabilities(p, n_states=2, min_train=250),
                rg.hmm_regimes(p, n_states=2, min_train=250))

    base = run(price)
    assert base[1].notna().sum() > 400
    for t in (300, 700):  # inside the first fitted year, and the third
        bumped = price.copy()
        bumped.iloc[t + 1:] *= np.exp(np.linspace(0.0, -0.5, len(price) - t - 1))
        moved = run(bumped)
        for other in (moved, run(price.iloc[: t + 1])):
            for a, b in zip(base, other, strict=True):
                _same_upto(a, b, t)
        assert not np.array_equal(base[0].to_numpy()[t + 1:], moved[0].to_numpy()[t + 1:])


# ----------------------------------------------------------------- correctness
@settings(max_examples=60, deadline=None)
@given(xs=st.lists(st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]) | st.floats(-5, 5),
                   min_size=1, max_size=80),
       q=st.sampled_from([1 / 3, 2 / 3, 0.5, 0.0, 1.0, 0.1]))
def test_expanding_quantile_is_numpy_quantile_bit_for_bit(xs, q):
    x = np.array(xs)
    ref = np.array([np.quantile(x[: i + 1], q) for i in range(len(x))])
    np.testing.assert_array_equal(rg._expanding_quantile(x, q), ref)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), window=st.integers(2, 12))
def test_thresholds_and_codes_match_brute_force(seed, window):
    close = _panel(seed, t=200, n=2, nan_frac=0.15)
    got = rg.regime_thresholds(close, window)
    codes = rg.rolling_regimes(close, window, min_history=15)
    for sym in close:
        s = close[sym].dropna()  # NaN closes are skipped: the window counts traded bars
        ret = (s / s.shift(window) - 1).to_numpy()
        vol = np.log(s / s.shift(1)).rolling(window).std().to_numpy()
        ok = np.flatnonzero(~np.isnan(ret))
        r, v = ret[ok], vol[ok]
        ref = {"ret": r, "vol": v,
               "ret_q1": [np.quantile(r[: i + 1], 1 / 3) for i in range(len(r))],
               "ret_q2": [np.quantile(r[: i + 1], 2 / 3) for i in range(len(r))],
               "vol_median": [np.quantile(v[: i + 1], 0.5) for i in range(len(v))]}
        rows = close.index.get_indexer(s.index[ok])
        for name, want in ref.items():
            col = got[name][sym].to_numpy()
            np.testing.assert_allclose(col[rows], want, rtol=1e-9, atol=1e-12, err_msg=name)
            assert np.isnan(np.delete(col, rows)).all()  # nothing where no 60-bar value
        trend = np.where(r < ref["ret_q1"], 0, np.where(r > ref["ret_q2"], 2, 1))
        want = (2 * trend + (v > np.array(ref["vol_median"]))).astype(float)
        want[:14] = np.nan  # min_history = 15 valid values
        np.testing.assert_array_equal(codes[sym].to_numpy()[rows], want)
        assert np.isnan(np.delete(codes[sym].to_numpy(), rows)).all()


def test_planted_uptrend_then_crash():
    """Two years of an accelerating calm rise, then a volatile crash."""
    n_up, n_crash = 504, 120
    zig = np.where(np.arange(n_up + n_crash) % 2 == 0, 1.0, -1.0)
    up = np.linspace(0.0005, 0.003, n_up) + zig[:n_up] * np.linspace(0.004, 0.002, n_up)
    crash = -0.02 + 0.04 * zig[n_up:]
    logret = np.r_[0.0, up[1:], crash]
    idx = pd.bdate_range("2001-01-01", periods=len(logret), tz="UTC")
    close = pd.DataFrame({"X": 10.0 * np.exp(np.cumsum(logret))}, index=idx)
    codes = rg.rolling_regimes(close)["X"].to_numpy()
    assert np.isnan(codes[: 60 + 251]).all() and not np.isnan(codes[60 + 251]).any()
    assert (codes[311:n_up] == 4).all()  # bull / low vol
    assert (codes[n_up + 20:] == 1).all()  # bear / high vol
    assert rg.is_bearish(codes[n_up + 20:]).all() and not rg.is_bearish(codes[:n_up]).any()
    np.testing.assert_array_equal(rg.market_regime(close).to_numpy(), codes)  # one symbol


@pytest.fixture(scope="module")
def two_regimes() -> tuple[pd.Series, pd.Series, pd.Series]:
    price, bear = _two_regime_returns(1040, seed=10)
    return price, bear, rg.hmm_regimes(price, n_states=2, min_train=250)


def test_hmm_state_zero_is_the_bear_state(two_regimes):
    price, bear, labels = two_regimes
    tested = labels.notna().to_numpy()
    assert tested.sum() > 700 and np.isnan(labels.to_numpy()[:250]).all()
    hit = (labels[tested] == 0).to_numpy() == bear[tested].to_numpy()
    assert hit.mean() > 0.85  # state 0 = the falling, volatile blocks
    three = rg.hmm_regimes(price, n_states=3, min_train=250, seed=1)
    r = price.pct_change().to_numpy()
    assert np.nanmean(r[three.to_numpy() == 0]) < np.nanmean(r[three.to_numpy() == 2])


def test_hmm_relabels_whatever_order_the_fit_returns(two_regimes, monkeypatch):
    """A fit that returns its states in reverse order must give the same labels."""
    import hmmlearn.hmm

    class Reversed(hmmlearn.hmm.GaussianHMM):
        def fit(self, X, lengths=None):
            super().fit(X, lengths)
            rev = np.arange(self.n_components)[::-1]
            self.startprob_ = self.startprob_[rev]
            self.transmat_ = self.transmat_[rev][:, rev]
            self.means_ = self.means_[rev]
            self._covars_ = self._covars_[rev]
            assert self.means_[0, 0] > self.means_[-1, 0]
            return self

    monkeypatch.setattr(hmmlearn.hmm, "GaussianHMM", Reversed)
    price, _, labels = two_regimes
    pd.testing.assert_series_equal(rg.hmm_regimes(price, n_states=2, min_train=250), labels)


def test_hmm_regimes_on_a_panel_and_bad_args():
    bars = synthetic_bars(700, 3, seed=5)
    labels = rg.hmm_regimes(bars.frame("close"), n_states=2, min_train=300, refit="quarterly")
    assert set(np.unique(labels.dropna())) <= {0.0, 1.0} and labels.notna().sum() > 300
    with pytest.raises(ConfigError, match="refit"):
        rg.hmm_regimes(bars.frame("close"), refit="weekly")


def test_missing_hmmlearn_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "hmmlearn", None)
    monkeypatch.setitem(sys.modules, "hmmlearn.hmm", None)
    with pytest.raises(ConfigError, match="pip install hmmlearn"):
        rg.hmm_regimes(synthetic_bars(600, 2).frame("close"))


def test_is_bearish_treats_nan_as_not_bearish():
    codes = np.array([0.0, 1.0, 2.0, 5.0, np.nan])
    np.testing.assert_array_equal(rg.is_bearish(codes), [True, True, False, False, False])
    frame = pd.DataFrame({"a": codes})
    assert rg.is_bearish(frame)["a"].tolist() == [True, True, False, False, False]
    assert len(rg.REGIME_NAMES) == 6 and rg.REGIME_NAMES[2 * 0 + 1] == "bear/high vol"


def test_registry_features():
    bars = synthetic_bars(600, 3, seed=2)
    out = compute_features(bars, ["regime_60", "market_regime_60"])
    reg, mkt = out["regime_60"], out["market_regime_60"]
    assert reg.shape == mkt.shape == bars.shape and tuple(reg.columns) == bars.symbols
    pd.testing.assert_frame_equal(reg, rg.rolling_regimes(bars.frame("close"), 60))
    want = rg.market_regime(bars.frame("close"), 60).to_numpy()
    for sym in bars.symbols:  # the market's code, broadcast to every symbol
        np.testing.assert_array_equal(mkt[sym].to_numpy(), want)
    valid = reg.to_numpy()[311:]
    assert not np.isnan(valid).any() and set(np.unique(valid)) <= set(range(6))
    assert np.isnan(reg.to_numpy()[:311]).all()
    with pytest.raises(ConfigError):
        compute_features(bars, ["regime_1"])


def test_market_returns_skip_missing_closes():
    """A suspended symbol drops out of the mean; its gap is neither a zero nor a jump."""
    close = pd.DataFrame({"a": [10.0, 11.0, np.nan, 12.1, 13.31],
                          "b": [20.0, 19.0, 19.0, 19.0, 20.9]},
                         index=pd.bdate_range("2001-01-01", periods=5, tz="UTC"))
    np.testing.assert_allclose(rg.market_returns(close).to_numpy(),
                               [np.nan, (0.1 - 0.05) / 2, 0.0, 0.0, (0.1 + 0.1) / 2])
    np.testing.assert_allclose(rg.market_index(close).to_numpy(),
                               np.cumprod([1.0, 1.025, 1.0, 1.0, 1.1]))
