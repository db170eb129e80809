import math

import numpy as np
import pytest
from scipy.stats import norm

from mltrader.backtest.deflated import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
)

GAMMA = 0.5772156649015329


def _psr_by_hand(sr, sr_star, n, skew, kurt):
    # Bailey & López de Prado (2012): Φ((SR-SR*)√(n-1) / √(1 - γ3 SR + (γ4-1)/4 SR²))
    return norm.cdf((sr - sr_star) * math.sqrt(n - 1)
                    / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr * sr))


def test_psr_matches_the_formula():
    for sr, bench, n, sk, ku in [(0.1, 0.0, 250, 0.0, 3.0), (0.05, 0.02, 1000, -0.8, 7.5),
                                 (-0.03, 0.0, 500, 0.4, 4.0), (0.2, 0.1, 60, -2.0, 12.0)]:
        assert probabilistic_sharpe_ratio(sr, bench, n, sk, ku) == pytest.approx(
            _psr_by_hand(sr, bench, n, sk, ku), rel=1e-12)


def test_psr_known_value_normal_returns():
    # Normal returns: denominator is √(1 + SR²/2). SR=0.1, n=101 → z = 0.1*10/√1.005.
    z = 1.0 / math.sqrt(1.005)
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101, 0.0, 3.0) == pytest.approx(norm.cdf(z))
    assert probabilistic_sharpe_ratio(0.0, 0.0, 101, 0.0, 3.0) == pytest.approx(0.5)


def test_psr_penalises_negative_skew_and_fat_tails():
    base = probabilistic_sharpe_ratio(0.1, 0.0, 500, 0.0, 3.0)
    assert probabilistic_sharpe_ratio(0.1, 0.0, 500, -1.0, 3.0) < base
    assert probabilistic_sharpe_ratio(0.1, 0.0, 500, 0.0, 10.0) < base


def test_expected_max_sharpe_matches_the_formula():
    for n, v in [(2, 0.01), (10, 0.002), (100, 0.5 / 252), (1000, 1e-4)]:
        ref = math.sqrt(v) * ((1 - GAMMA) * norm.ppf(1 - 1 / n)
                              + GAMMA * norm.ppf(1 - 1 / (n * math.e)))
        assert expected_max_sharpe(n, v) == pytest.approx(ref, rel=1e-12)


def test_expected_max_sharpe_close_to_simulated_maximum():
    rng = np.random.default_rng(0)
    n, sd = 100, 0.05
    sim = rng.normal(0, sd, size=(20_000, n)).max(axis=1).mean()
    assert expected_max_sharpe(n, sd**2) == pytest.approx(sim, rel=0.03)


def test_expected_max_sharpe_edges():
    assert expected_max_sharpe(1, 0.3) == 0.0
    assert expected_max_sharpe(50, 0.0) == 0.0
    with pytest.raises(ValueError, match="n_trials"):
        expected_max_sharpe(0, 0.1)
    with pytest.raises(ValueError, match="sr_variance"):
        expected_max_sharpe(10, -1.0)


def test_expected_max_sharpe_grows_with_trials():
    values = [expected_max_sharpe(n, 0.01) for n in (2, 5, 10, 100, 1000)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


def test_dsr_result_matches_hand_computation():
    rng = np.random.default_rng(1)
    r = rng.standard_t(5, 1500) * 0.01 + 0.0008
    trials = rng.normal(0.0, 0.03, 40)
    out = deflated_sharpe_ratio(r, n_trials=40, trial_sharpes=trials)
    sr = r.mean() / r.std(ddof=1)
    m = r - r.mean()
    skew = (m**3).mean() / (m**2).mean() ** 1.5
    kurt = (m**4).mean() / (m**2).mean() ** 2
    v = trials.var(ddof=1)
    sr_star = math.sqrt(v) * ((1 - GAMMA) * norm.ppf(1 - 1 / 40)
                              + GAMMA * norm.ppf(1 - 1 / (40 * math.e)))
    assert out["sharpe"] == pytest.approx(sr)
    assert out["sharpe_annual"] == pytest.approx(sr * math.sqrt(252))
    assert out["skew"] == pytest.approx(skew)
    assert out["kurtosis"] == pytest.approx(kurt)
    assert out["n_trials"] == 40
    assert out["expected_max_sharpe"] == pytest.approx(sr_star)
    assert out["dsr"] == pytest.approx(_psr_by_hand(sr, sr_star, 1500, skew, kurt))
    # sr_variance gives the same answer as the trials it summarises
    same = deflated_sharpe_ratio(r, n_trials=40, sr_variance=v)
    assert same["dsr"] == pytest.approx(out["dsr"])
    # trial_sharpes wins over sr_variance when both are given
    both = deflated_sharpe_ratio(r, n_trials=40, trial_sharpes=trials, sr_variance=10.0)
    assert both["dsr"] == pytest.approx(out["dsr"])


def test_more_trials_lower_dsr():
    rng = np.random.default_rng(2)
    r = rng.normal(0.001, 0.01, 1000)
    dsrs = [deflated_sharpe_ratio(r, n, sr_variance=0.001)["dsr"] for n in (1, 2, 10, 100, 1000)]
    assert all(a > b for a, b in zip(dsrs, dsrs[1:], strict=False))


def test_longer_sample_moves_psr_away_from_half():
    for sr in (0.05, -0.05):
        psrs = [probabilistic_sharpe_ratio(sr, 0.0, n, 0.0, 3.0) for n in (20, 100, 500, 2500)]
        gaps = [abs(p - 0.5) for p in psrs]
        assert all(a < b for a, b in zip(gaps, gaps[1:], strict=False))


def test_normal_returns_have_normal_moments():
    r = np.random.default_rng(3).normal(0.0005, 0.01, 200_000)
    out = deflated_sharpe_ratio(r, n_trials=1)
    assert out["skew"] == pytest.approx(0.0, abs=0.03)
    assert out["kurtosis"] == pytest.approx(3.0, abs=0.05)


def test_single_trial_is_psr_against_zero():
    rng = np.random.default_rng(4)
    r = rng.normal(0.0005, 0.01, 750)
    out = deflated_sharpe_ratio(r, n_trials=1)
    assert out["expected_max_sharpe"] == 0.0
    assert out["dsr"] == pytest.approx(
        probabilistic_sharpe_ratio(out["sharpe"], 0.0, 750, out["skew"], out["kurtosis"]))
    # neither trial_sharpes nor sr_variance is needed for one trial, and both are ignored
    assert deflated_sharpe_ratio(r, 1, sr_variance=5.0)["dsr"] == pytest.approx(out["dsr"])


def test_nan_returns_are_dropped():
    rng = np.random.default_rng(5)
    r = rng.normal(0.0005, 0.01, 300)
    padded = np.concatenate([[np.nan] * 20, r])
    assert deflated_sharpe_ratio(padded, 1)["dsr"] == pytest.approx(
        deflated_sharpe_ratio(r, 1)["dsr"])


def test_errors_are_clear():
    with pytest.raises(ValueError, match="zero variance"):
        deflated_sharpe_ratio(np.zeros(100), 1)
    with pytest.raises(ValueError, match="zero variance"):
        deflated_sharpe_ratio(np.full(100, 0.01), 5, sr_variance=0.01)
    r = np.random.default_rng(6).normal(0, 0.01, 100)
    with pytest.raises(ValueError, match="trial_sharpes"):
        deflated_sharpe_ratio(r, 10)
    with pytest.raises(ValueError, match="at least 2 finite"):
        deflated_sharpe_ratio(r, 10, trial_sharpes=np.array([0.1]))
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio(r, 0)
    with pytest.raises(ValueError, match="at least 2"):
        deflated_sharpe_ratio(np.array([0.01]), 1)
    with pytest.raises(ValueError, match="n_obs"):
        probabilistic_sharpe_ratio(0.1, 0.0, 1, 0.0, 3.0)
    with pytest.raises(ValueError, match="variance term"):
        probabilistic_sharpe_ratio(1.0, 0.0, 100, 5.0, 3.0)
