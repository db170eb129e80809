"""Strategy vs benchmark significance: size under the null, power on a planted edge, formulas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.signal import lfilter
from scipy.stats import norm

from mltrader.backtest.significance import (
    alpha_test,
    benchmark_verdict,
    levered_benchmark,
    newey_west_lags,
    sharpe_difference,
    sharpe_difference_bootstrap,
)

PPY = 252.0


def equal_sharpe_pair(
    rng: np.random.Generator, n: int, sr: float = 0.05, rho: float = 0.9, phi: float = 0.2,
    df: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(r, b) with the SAME true per-bar Sharpe ``sr``: correlated (rho), fat-tailed (Student t
    with ``df``), AR(1) autocorrelated (phi), and with different volatilities (1.5% vs 1%)."""
    e = rng.standard_t(df, size=(2, n)) / math.sqrt(df / (df - 2.0))
    u = np.vstack([e[0], rho * e[0] + math.sqrt(1.0 - rho**2) * e[1]])
    u = lfilter([1.0], [1.0, -phi], u, axis=1) * math.sqrt(1.0 - phi**2)  # unit variance
    return 0.015 * (sr + u[1]), 0.01 * (sr + u[0])


def market(rng: np.random.Generator, n: int) -> np.ndarray:
    """Benchmark-like returns: 0.03% a bar drift, 1% a bar volatility (Sharpe ~0.5 a year)."""
    return 0.0003 + 0.01 * rng.standard_normal(n)


def bartlett_weights(n: int, lags: int) -> np.ndarray:
    """W[t, s] = max(0, 1 - |t - s| / (lags + 1)): the Bartlett kernel as one T x T matrix."""
    d = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    return np.clip(1.0 - d / (lags + 1.0), 0.0, None)


# --- size and power -------------------------------------------------------------------------

def test_size_under_equal_sharpe_null_is_about_five_percent():
    # 1000 null simulations (equal true Sharpe; correlated, fat-tailed, AR(1) returns), T=1000.
    # With a true size of 5% the rejection count is Binomial(1000, 0.05): mean 50, sd 6.9, so
    # [25, 90] is -3.6 to +5.8 sd and a correct test essentially never fails (the seed is also
    # fixed). HAC's Bartlett kernel runs slightly liberal with AR(1) phi = 0.2 (~5.8% measured
    # over 2000 sims), still well inside; the same test without the HAC correction (0 lags)
    # rejects ~11% here, so the upper bound catches a missing autocorrelation correction.
    rng = np.random.default_rng(20260101)
    n_sims, n = 1000, 1000
    rejections = 0
    for _ in range(n_sims):
        r, b = equal_sharpe_pair(rng, n)
        rejections += sharpe_difference(r, b, PPY).p_value < 0.05
    assert 0.025 <= rejections / n_sims <= 0.09


def test_benchmark_plus_noise_does_not_beat_it():
    rng = np.random.default_rng(1)
    b = market(rng, 1000)
    # Zero-mean noise: same mean, more risk, so a lower true Sharpe (by ~11%, too little to
    # detect: over 200 seeds p < 0.05 in 4%, and then only as "worse"; this seed gives 0.30).
    r = b + 0.005 * rng.standard_normal(b.size)
    sd = sharpe_difference(r, b, PPY)
    assert sd.p_value > 0.05
    v = benchmark_verdict(r, b, PPY)
    assert v["beats_benchmark"] is False
    assert v["summary"].startswith("The strategy did NOT beat buy-and-hold significantly")
    assert v["alpha"]["p_value"] > 0.05


def test_planted_edge_beats_the_benchmark():
    # The strategy holds the benchmark and also trades a signal x it knows one bar ahead,
    # capturing 5% of |x| (0.04%/bar) minus 1 bp/bar of costs, plus 0.2%/bar of its own noise:
    # a net edge of ~7.6%/yr. Over 300 seeds the largest p was 0.006, so any seed passes.
    rng = np.random.default_rng(2)
    n = 2000
    b = market(rng, n)
    x = 0.01 * rng.standard_normal(n)
    r = b + 0.05 * np.abs(x) - 0.0001 + 0.002 * rng.standard_normal(n)
    v = benchmark_verdict(r, b, PPY)
    assert v["sharpe_difference"]["difference"] > 0
    assert v["sharpe_difference"]["p_value"] < 0.05
    assert v["beats_benchmark"] is True
    assert v["summary"].startswith("The strategy beat buy-and-hold significantly")
    assert v["alpha"]["t_stat"] > 1.96
    assert v["sharpe_difference"]["ci_low"] > 0


def test_significantly_worse_strategy_is_called_worse():
    rng = np.random.default_rng(3)
    b = market(rng, 2000)
    r = b - 0.0008 + 0.002 * rng.standard_normal(b.size)  # pays 20%/yr of drag
    v = benchmark_verdict(r, b, PPY)
    assert v["beats_benchmark"] is False
    assert v["sharpe_difference"]["p_value"] < 0.05
    assert "WORSE" in v["summary"]


# --- formulas, checked independently -----------------------------------------------------

def _sharpe_diff(v: np.ndarray) -> float:
    return v[0] / math.sqrt(v[2] - v[0] ** 2) - v[1] / math.sqrt(v[3] - v[1] ** 2)


def test_hac_delta_method_matches_matrix_form_with_numeric_gradient():
    # Ledoit-Wolf's matrix form: se^2 = grad' Psi grad / T, with Psi = T/(T-4) Y' W Y / T
    # (Y the demeaned moment terms (r, b, r^2, b^2), W the Bartlett weight matrix) and the
    # gradient by central finite differences: shares no code with the module.
    rng = np.random.default_rng(4)
    n = 200
    r, b = equal_sharpe_pair(rng, n, sr=0.1, rho=0.6)
    y = np.column_stack([r, b, r * r, b * b])
    v = y.mean(axis=0)
    grad = np.empty(4)
    for i in range(4):
        h = np.zeros(4)
        h[i] = 1e-6 * max(abs(v[i]), 1e-4)
        grad[i] = (_sharpe_diff(v + h) - _sharpe_diff(v - h)) / (2 * h[i])
    lags = newey_west_lags(n)
    assert lags == math.floor(4 * (n / 100) ** (2 / 9)) == 4
    yc = y - v
    psi = yc.T @ bartlett_weights(n, lags) @ yc / n * n / (n - 4)
    se = math.sqrt(grad @ psi @ grad / n)

    sd = sharpe_difference(r, b, PPY)
    assert sd.difference == pytest.approx(_sharpe_diff(v), rel=1e-12)
    assert sd.std_error == pytest.approx(se, rel=1e-6)
    assert sd.p_value == pytest.approx(2 * norm.sf(abs(sd.difference) / se), rel=1e-6)
    assert sd.difference_annual == pytest.approx(sd.difference * math.sqrt(PPY))
    assert sd.ci_high - sd.ci_low == pytest.approx(2 * 1.959963985 * se, rel=1e-6)
    assert sd.lags == lags
    assert "Bartlett" in sd.method and "Ledoit-Wolf" in sd.method


def test_hac_variance_matches_memmel_formula_for_iid_normal_returns():
    # For iid normal returns the delta-method variance has a closed form (Jobson-Korkie as
    # corrected by Memmel 2003): T Var = 2 - 2 rho + (SR_r^2 + SR_b^2 - 2 SR_r SR_b rho^2) / 2.
    # Large SRs (0.5, 0.2 a bar) make the Sharpe terms ~12% of it, so a wrong gradient shows.
    rng = np.random.default_rng(5)
    n, rho, sr_r, sr_b = 200_000, 0.5, 0.5, 0.2
    z = rng.standard_normal((2, n))
    r = 0.02 * (sr_r + z[0])
    b = 0.01 * (sr_b + rho * z[0] + math.sqrt(1 - rho**2) * z[1])
    t_var = 2 - 2 * rho + 0.5 * (sr_r**2 + sr_b**2 - 2 * sr_r * sr_b * rho**2)
    sd = sharpe_difference(r, b, PPY)
    assert sd.difference == pytest.approx(sr_r - sr_b, abs=0.01)
    assert sd.std_error == pytest.approx(math.sqrt(t_var / n), rel=0.03)


def test_alpha_test_matches_explicit_newey_west_sandwich():
    rng = np.random.default_rng(6)
    n = 150
    b = market(rng, n)
    r = 0.0002 + 0.8 * b + 0.004 * lfilter([1.0], [1.0, -0.3], rng.standard_normal(n))
    x = np.column_stack([np.ones(n), b])
    coef = np.linalg.solve(x.T @ x, x.T @ r)
    e = r - x @ coef
    lags = newey_west_lags(n)
    meat = (x * e[:, None]).T @ bartlett_weights(n, lags) @ (x * e[:, None])
    bread = np.linalg.inv(x.T @ x)
    cov = bread @ meat @ bread * n / (n - 2)
    at = alpha_test(r, b, PPY)
    assert at.alpha == pytest.approx(coef[0], rel=1e-9)
    assert at.beta == pytest.approx(coef[1], rel=1e-9)
    assert at.alpha_std_error == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-9)
    assert at.beta_std_error == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-9)
    assert at.t_stat == pytest.approx(coef[0] / math.sqrt(cov[0, 0]), rel=1e-9)
    assert at.alpha_annual == pytest.approx(coef[0] * PPY)


def test_alpha_test_recovers_planted_alpha_and_beta():
    rng = np.random.default_rng(7)
    n, alpha, beta = 5000, 0.0004, 0.7
    b = market(rng, n)
    r = alpha + beta * b + 0.005 * rng.standard_normal(n)
    at = alpha_test(r, b, PPY)
    # se(alpha) ~ 0.005 / sqrt(5000) = 7e-5 and se(beta) ~ 0.007: 4-sigma tolerances
    assert at.alpha == pytest.approx(alpha, abs=3e-4)
    assert at.alpha_annual == pytest.approx(alpha * PPY, abs=3e-4 * PPY)
    assert at.beta == pytest.approx(beta, abs=0.03)
    assert abs(at.alpha - alpha) < 4 * at.alpha_std_error
    assert at.t_stat > 3 and at.p_value < 0.01
    assert "Newey-West" in at.method


def test_levered_benchmark_matches_strategy_volatility():
    rng = np.random.default_rng(8)
    b = market(rng, 500)
    r = 0.0005 + 1.8 * b + 0.01 * rng.standard_normal(b.size)
    lev = levered_benchmark(r, b, PPY)
    assert lev["leverage"] == pytest.approx(np.std(r, ddof=1) / np.std(b, ddof=1))
    assert lev["annual_volatility"] == pytest.approx(np.std(r, ddof=1) * math.sqrt(PPY))
    bench_sharpe = np.mean(b) / np.std(b, ddof=1) * math.sqrt(PPY)
    assert lev["sharpe"] == pytest.approx(bench_sharpe)
    wealth = np.cumprod(1 + lev["leverage"] * b)
    assert lev["total_return"] == pytest.approx(wealth[-1] - 1)
    assert lev["cagr"] == pytest.approx(wealth[-1] ** (PPY / b.size) - 1)
    peak = np.maximum.accumulate(np.maximum(wealth, 1.0))
    assert lev["max_drawdown"] == pytest.approx(np.min(wealth / peak - 1))
    assert lev["strategy_total_return"] == pytest.approx(np.prod(1 + r) - 1)
    assert lev["financing_cost"] == 0.0


def test_levered_benchmark_wiped_out_is_minus_one_not_nan():
    rng = np.random.default_rng(9)
    b = market(rng, 100)
    b[50] = -0.2  # a crash that a 10x levered book does not survive
    r = 10 * (b - b.mean()) + 0.001 * rng.standard_normal(b.size)
    lev = levered_benchmark(r, b, PPY)
    assert lev["leverage"] > 5
    assert lev["total_return"] == -1.0 and lev["cagr"] == -1.0 and lev["max_drawdown"] == -1.0
    json.dumps(lev, allow_nan=False)


# --- verdict, JSON, degenerate input -----------------------------------------------------

def test_verdict_is_json_safe_and_has_the_documented_keys():
    rng = np.random.default_rng(10)
    r, b = equal_sharpe_pair(rng, 600)
    v = benchmark_verdict(r, b, PPY, n_trials=20)
    text = json.dumps(v, allow_nan=False)
    assert json.loads(text) == v
    assert set(v) >= {"sharpe_difference", "alpha", "levered_benchmark",
                      "active_deflated_sharpe", "beats_benchmark", "summary"}
    ads = v["active_deflated_sharpe"]
    assert set(ads) >= {"dsr", "n_trials", "sharpe_variance"}
    assert ads["n_trials"] == 20 and ads["sharpe_variance"] == pytest.approx(1 / 600)
    assert 0.0 <= ads["dsr"] <= 1.0
    assert isinstance(v["summary"], str) and v["summary"].count(". ") == 0
    json.dumps(sharpe_difference(r, b, PPY).to_dict(), allow_nan=False)
    json.dumps(alpha_test(r, b, PPY).to_dict(), allow_nan=False)


def test_more_trials_deflate_the_active_sharpe():
    rng = np.random.default_rng(11)
    b = market(rng, 1000)
    r = b + 0.0004 + 0.004 * rng.standard_normal(b.size)
    one = benchmark_verdict(r, b, PPY)["active_deflated_sharpe"]["dsr"]
    many = benchmark_verdict(r, b, PPY, n_trials=200, trial_sharpe_variance=0.002)
    assert many["active_deflated_sharpe"]["dsr"] < one
    assert many["active_deflated_sharpe"]["sharpe_variance"] == 0.002


@pytest.mark.parametrize(
    ("r", "b", "match"),
    [
        (np.full(100, 0.001), np.linspace(-0.01, 0.01, 100), "constant"),
        (np.linspace(-0.01, 0.01, 100), np.zeros(100), "constant"),
        (np.linspace(-0.01, 0.02, 20), np.linspace(0.01, -0.01, 20), "too few bars"),
        (np.linspace(-0.01, 0.02, 50), np.linspace(0.01, -0.01, 60), "same bars"),
        (np.r_[np.nan, np.linspace(-0.01, 0.02, 49)], np.linspace(0.01, -0.01, 50),
         "non-finite"),
    ],
)
def test_degenerate_input_raises_a_named_error(r, b, match):
    for fn in (sharpe_difference, alpha_test, levered_benchmark, benchmark_verdict):
        with pytest.raises(ValueError, match=match):
            fn(r, b, PPY)


def test_identical_or_scaled_returns_have_nothing_to_test():
    b = market(np.random.default_rng(12), 300)
    for r in (b.copy(), 2.0 * b):
        with pytest.raises(ValueError, match="standard error is zero"):
            sharpe_difference(r, b, PPY)
    with pytest.raises(ValueError, match="standard error is zero"):
        alpha_test(b + 0.001, b, PPY)
    with pytest.raises(ValueError, match="level"):
        sharpe_difference(b + 0.001 * np.sin(np.arange(300)), b, PPY, level=1.0)


# --- the optional block bootstrap ----------------------------------------------------------

def test_bootstrap_agrees_with_hac_and_detects_an_edge():
    rng = np.random.default_rng(13)
    n = 1000
    b = market(rng, n)
    noisy = b + 0.005 * rng.standard_normal(n)
    edge = b + 0.05 * np.abs(0.01 * rng.standard_normal(n)) + 0.002 * rng.standard_normal(n)
    hac = sharpe_difference(noisy, b, PPY)
    boot = sharpe_difference_bootstrap(noisy, b, PPY, n_boot=500, seed=1)
    assert boot.difference == hac.difference and boot.std_error == hac.std_error
    assert boot.p_value == pytest.approx(hac.p_value, abs=0.1)
    assert boot.p_value > 0.05
    assert boot.ci_low < boot.difference < boot.ci_high
    assert sharpe_difference_bootstrap(noisy, b, PPY, n_boot=500, seed=1) == boot
    won = sharpe_difference_bootstrap(edge, b, PPY, n_boot=500, seed=1)
    assert won.p_value < 0.05 and won.difference > 0
    assert "bootstrap" in won.method
    json.dumps(won.to_dict(), allow_nan=False)
