"""Probabilistic and deflated Sharpe ratios: how much a backtest's Sharpe survives selection.

Conventions used throughout (Bailey & López de Prado 2012, 2014):

* Sharpe ratios are per period (per bar), not annualised: the formulas' standard error uses
  the number of observations in those periods. ``sharpe_annual`` is reported for reading only.
* The sample Sharpe is ``mean / std`` with ``ddof=1`` and no risk-free rate (returns are taken
  as excess returns already).
* Skewness and kurtosis are the plain (biased, population) moment estimates, and kurtosis is
  the full kurtosis (3 for a normal distribution), as in the papers' standard-error formula.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import kurtosis as _kurtosis
from scipy.stats import norm
from scipy.stats import skew as _skew

EULER_GAMMA = 0.5772156649015329
PERIODS_PER_YEAR = 252


def probabilistic_sharpe_ratio(
    sr: float, sr_benchmark: float, n_obs: int, skew: float, kurtosis: float
) -> float:
    """P(true Sharpe > ``sr_benchmark``) given an observed per-period Sharpe ``sr``.

    PSR = Φ((SR - SR*) √(n-1) / √(1 - γ₃ SR + (γ₄ - 1)/4 SR²)), with γ₃ the skewness and γ₄
    the full (non-excess) kurtosis; the denominator widens the Sharpe's standard error for
    fat tails and negative skew (Bailey & López de Prado 2012, eq. 9).
    """
    if n_obs < 2:
        raise ValueError(f"probabilistic_sharpe_ratio: n_obs must be at least 2, got {n_obs}")
    values = (sr, sr_benchmark, skew, kurtosis)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"probabilistic_sharpe_ratio: non-finite input {values}")
    var_term = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2
    if var_term <= 0:
        raise ValueError(
            "probabilistic_sharpe_ratio: the Sharpe's variance term 1 - skew*SR + "
            f"(kurtosis-1)/4*SR^2 is {var_term:.4g} <= 0; check skew/kurtosis (kurtosis is "
            "the full kurtosis, 3 for normal returns)"
        )
    z = (sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var_term)
    return float(norm.cdf(z))


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected maximum of ``n_trials`` independent Sharpe estimates whose true Sharpe is 0.

    E[max] ≈ √V ((1-γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e))), γ the Euler–Mascheroni constant
    and V the variance of the trials' (per-period) Sharpes (Bailey & López de Prado 2014).
    With a single trial there is no selection, so the benchmark is 0.
    """
    if n_trials < 1:
        raise ValueError(f"expected_max_sharpe: n_trials must be at least 1, got {n_trials}")
    if not math.isfinite(sr_variance) or sr_variance < 0:
        raise ValueError(
            f"expected_max_sharpe: sr_variance must be finite and >= 0, got {sr_variance}"
        )
    if n_trials == 1:
        return 0.0
    n = float(n_trials)
    z1 = norm.ppf(1.0 - 1.0 / n)
    z2 = norm.ppf(1.0 - 1.0 / (n * math.e))
    return float(math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe_ratio(
    returns: np.ndarray,
    n_trials: int,
    trial_sharpes: np.ndarray | None = None,
    sr_variance: float | None = None,
) -> dict:
    """The deflated Sharpe ratio of a return series chosen as the best of ``n_trials``.

    DSR = PSR(SR*) with SR* = `expected_max_sharpe(n_trials, V)`: the probability that the
    true Sharpe beats what the best of ``n_trials`` skill-less strategies would show by luck.
    V is the sample variance (ddof=1) of ``trial_sharpes`` (per-period Sharpes of every trial)
    when given, else ``sr_variance``; with ``n_trials == 1`` SR* = 0 and DSR is the PSR
    against 0. NaN returns (e.g. warm-up bars) are dropped before any statistic.
    """
    r = np.asarray(returns, dtype=np.float64).ravel()
    r = r[~np.isnan(r)]
    if not np.isfinite(r).all():
        raise ValueError("deflated_sharpe_ratio: returns contain infinite values")
    if r.size < 2:
        raise ValueError(
            f"deflated_sharpe_ratio: need at least 2 non-NaN returns, got {r.size}"
        )
    std = float(r.std(ddof=1))
    if not std > 0 or np.ptp(r) == 0:
        raise ValueError(
            "deflated_sharpe_ratio: returns have zero variance, so the Sharpe ratio is "
            "undefined; check the return series (is the strategy ever in the market?)"
        )
    if n_trials < 1:
        raise ValueError(f"deflated_sharpe_ratio: n_trials must be at least 1, got {n_trials}")

    if n_trials == 1:
        variance = 0.0
    elif trial_sharpes is not None:
        ts = np.asarray(trial_sharpes, dtype=np.float64).ravel()
        ts = ts[np.isfinite(ts)]
        if ts.size < 2:
            raise ValueError(
                "deflated_sharpe_ratio: trial_sharpes needs at least 2 finite values to "
                "estimate their variance"
            )
        variance = float(ts.var(ddof=1))
    elif sr_variance is not None:
        variance = float(sr_variance)
    else:
        raise ValueError(
            f"deflated_sharpe_ratio: with n_trials={n_trials} > 1, pass trial_sharpes "
            "(per-period Sharpes of all trials) or sr_variance"
        )

    sr = float(r.mean() / std)
    sk = float(_skew(r, bias=True))
    ku = float(_kurtosis(r, fisher=False, bias=True))
    sr_star = expected_max_sharpe(n_trials, variance)
    dsr = probabilistic_sharpe_ratio(sr, sr_star, r.size, sk, ku)
    return {
        "sharpe": sr,
        "sharpe_annual": sr * math.sqrt(PERIODS_PER_YEAR),
        "n_trials": int(n_trials),
        "expected_max_sharpe": sr_star,
        "dsr": dsr,
        "skew": sk,
        "kurtosis": ku,
    }
