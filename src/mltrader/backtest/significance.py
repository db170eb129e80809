"""Did the strategy beat its benchmark, significantly? Tests on per-bar returns r and b.

Inputs everywhere are per-bar simple returns ``r`` (strategy) and ``b`` (benchmark, e.g.
equal-weight buy-and-hold with the same costs) over the same out-of-sample bars, and ``ppy``
the bars a year. Conventions:

* Sharpe ratios are mean / standard deviation with no risk-free rate. In the Sharpe
  difference test the standard deviation is the population one (ddof=0), as in Ledoit & Wolf's
  moment formula; elsewhere (levered benchmark) ddof=1, as in `mltrader.backtest.metrics`.
* Annualised values: Sharpe x sqrt(ppy), alpha x ppy (simple, like `metrics.benchmark_metrics`).
* Long-run (HAC) variances use the Bartlett kernel (Newey & West 1987) with the automatic
  bandwidth floor(4 (T/100)^(2/9)) lags (Newey & West 1994), which allows for autocorrelated,
  fat-tailed, heteroskedastic and mutually correlated returns. p-values are two-sided, from the
  normal distribution (asymptotic inference).
* Degenerate inputs (fewer than `MIN_OBS` bars, a constant series, non-finite values, an exact
  linear relation between r and b) raise ValueError with a message naming the problem.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm

from mltrader.backtest.deflated import deflated_sharpe_ratio

MIN_OBS = 30
# Standard deviations (per bar) below this are floating-point noise, as in metrics._MIN_STD.
_MIN_STD = 1e-12
# A standard error (per bar) below this means the statistic is an exact function of the data.
_MIN_SE = 1e-10

SHARPE_METHOD = (
    "Ledoit-Wolf (2008) HAC delta method on (mean r, mean b, mean r^2, mean b^2); "
    "Bartlett kernel (Newey-West), {lags} lags = floor(4 (T/100)^(2/9)), T/(T-4) "
    "small-sample factor; normal p-value and interval"
)
ALPHA_METHOD = (
    "OLS r = a + beta b; Newey-West HAC standard errors (Bartlett kernel, {lags} lags = "
    "floor(4 (T/100)^(2/9)), T/(T-2) small-sample factor); normal p-value"
)
BOOTSTRAP_METHOD = (
    "Ledoit-Wolf (2008) studentised circular block bootstrap, block {block} bars, "
    "{n_boot} resamples; HAC (Bartlett, {lags} lags) standard error for the sample statistic"
)


def newey_west_lags(n_obs: int) -> int:
    """Newey & West's (1994) automatic Bartlett bandwidth: floor(4 (T/100)^(2/9)) lags."""
    return int(math.floor(4.0 * (n_obs / 100.0) ** (2.0 / 9.0)))


def long_run_variance(z: np.ndarray, lags: int) -> float:
    """Bartlett-kernel (Newey-West) long-run variance of a series, demeaned; no df factor."""
    z = np.asarray(z, dtype=np.float64) - np.mean(z)
    n = z.size
    total = float(z @ z) / n
    for j in range(1, min(lags, n - 1) + 1):
        total += 2.0 * (1.0 - j / (lags + 1.0)) * float(z[j:] @ z[:-j]) / n
    return total


def _as_returns(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as a 1-D float array of finite returns, or ValueError naming ``name``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-bar returns, got shape {a.shape}")
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise ValueError(f"{name} has {bad} non-finite (NaN/inf) returns; drop warm-up bars first")
    return a


def _check_inputs(r: np.ndarray, b: np.ndarray, ppy: float) -> tuple[np.ndarray, np.ndarray]:
    """Validated (r, b): same length, finite, at least MIN_OBS bars, neither constant."""
    r, b = _as_returns(r, "strategy returns r"), _as_returns(b, "benchmark returns b")
    if r.size != b.size:
        raise ValueError(f"r and b must cover the same bars: {r.size} vs {b.size} returns")
    if r.size < MIN_OBS:
        raise ValueError(
            f"too few bars for a significance test: T = {r.size} < {MIN_OBS} returns"
        )
    if not (math.isfinite(ppy) and ppy > 0):
        raise ValueError(f"ppy (bars per year) must be positive and finite, got {ppy}")
    for a, name in ((r, "strategy returns r"), (b, "benchmark returns b")):
        if not float(np.std(a)) > _MIN_STD:
            raise ValueError(
                f"{name} are constant (zero variance), so the Sharpe ratio is undefined; "
                "is the strategy ever in the market?"
            )
    return r, b


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level}")
    return float(level)


def _finite_or_none(value: object) -> object:
    """Floats made JSON-safe: NaN and inf become None; numpy scalars become Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_dict(obj: SharpeDifference | AlphaTest) -> dict:
    return {k: _finite_or_none(v) for k, v in asdict(obj).items()}


def _two_sided_p(z: float) -> float:
    return float(2.0 * norm.sf(abs(z)))


@dataclass(frozen=True)
class SharpeDifference:
    """Sharpe(strategy) - Sharpe(benchmark), H0: equal Sharpe; its standard error, p and interval.
    Per-bar fields have no suffix; ``*_annual`` are per-bar x sqrt(ppy)."""

    sharpe_strategy: float
    sharpe_benchmark: float
    difference: float
    std_error: float
    z_stat: float
    p_value: float
    ci_low: float
    ci_high: float
    sharpe_strategy_annual: float
    sharpe_benchmark_annual: float
    difference_annual: float
    ci_low_annual: float
    ci_high_annual: float
    level: float
    n_obs: int
    lags: int
    method: str

    def to_dict(self) -> dict:
        """Plain JSON-safe dict of the fields (no NaN)."""
        return _json_dict(self)


@dataclass(frozen=True)
class AlphaTest:
    """OLS r = a + beta b with Newey-West t-statistics; alpha per bar and x ppy (annual)."""

    alpha: float
    alpha_annual: float
    beta: float
    alpha_std_error: float
    beta_std_error: float
    t_stat: float
    p_value: float
    n_obs: int
    lags: int
    method: str

    def to_dict(self) -> dict:
        """Plain JSON-safe dict of the fields (no NaN)."""
        return _json_dict(self)


def _sharpe_moments(r: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """Ledoit-Wolf moments v = (mean r, mean b, mean r^2, mean b^2)."""
    return float(r.mean()), float(b.mean()), float(np.mean(r * r)), float(np.mean(b * b))


def _sharpe_gradient(v: tuple[float, float, float, float]) -> np.ndarray:
    """Gradient of f(v) = mu_r / sqrt(g_r - mu_r^2) - mu_b / sqrt(g_b - mu_b^2) (LW eq. 3)."""
    mu_r, mu_b, g_r, g_b = v
    var_r, var_b = g_r - mu_r**2, g_b - mu_b**2
    return np.array([
        g_r / var_r**1.5,
        -g_b / var_b**1.5,
        -0.5 * mu_r / var_r**1.5,
        0.5 * mu_b / var_b**1.5,
    ])


def _influence(r: np.ndarray, b: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Per-bar series grad' y_t, y_t = (r, b, r^2, b^2): its long-run variance is grad' Psi grad."""
    return grad[0] * r + grad[1] * b + grad[2] * r * r + grad[3] * b * b


def _sharpe_diff_and_se(
    r: np.ndarray, b: np.ndarray, lags: int
) -> tuple[float, float, float, float]:
    """(Sharpe r, Sharpe b, difference, HAC standard error), all per bar."""
    v = _sharpe_moments(r, b)
    sr_r = v[0] / math.sqrt(v[2] - v[0] ** 2)
    sr_b = v[1] / math.sqrt(v[3] - v[1] ** 2)
    n = r.size
    z = _influence(r, b, _sharpe_gradient(v))
    psi = long_run_variance(z, lags) * n / (n - 4.0)
    return sr_r, sr_b, sr_r - sr_b, math.sqrt(max(psi, 0.0) / n)


def _check_se(se: float, what: str) -> None:
    if not se > _MIN_SE:
        raise ValueError(
            f"{what}: the standard error is zero, so there is nothing to test; the strategy's "
            "returns are an exact linear function of the benchmark's (identical, or a scaled "
            "copy, or the benchmark plus a constant)"
        )


def sharpe_difference(
    r: np.ndarray, b: np.ndarray, ppy: float, level: float = 0.95
) -> SharpeDifference:
    """Ledoit-Wolf (2008) test of equal Sharpe: delta method on (mean r, mean b, mean r^2, mean
    b^2), Bartlett (Newey-West) HAC covariance with floor(4 (T/100)^(2/9)) lags and T/(T-4)."""
    r, b = _check_inputs(r, b, ppy)
    level = _check_level(level)
    lags = newey_west_lags(r.size)
    sr_r, sr_b, diff, se = _sharpe_diff_and_se(r, b, lags)
    _check_se(se, "sharpe_difference")
    half = float(norm.ppf(0.5 + level / 2.0)) * se
    root = math.sqrt(ppy)
    return SharpeDifference(
        sharpe_strategy=sr_r, sharpe_benchmark=sr_b, difference=diff, std_error=se,
        z_stat=diff / se, p_value=_two_sided_p(diff / se),
        ci_low=diff - half, ci_high=diff + half,
        sharpe_strategy_annual=sr_r * root, sharpe_benchmark_annual=sr_b * root,
        difference_annual=diff * root,
        ci_low_annual=(diff - half) * root, ci_high_annual=(diff + half) * root,
        level=level, n_obs=int(r.size), lags=lags, method=SHARPE_METHOD.format(lags=lags),
    )


def _block_indices(n: int, block: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Circular block bootstrap indices, shape (n_boot, l * block) with l = ceil(n / block)."""
    n_blocks = -(-n // block)
    starts = rng.integers(0, n, size=(n_boot, n_blocks, 1))
    return ((starts + np.arange(block)) % n).reshape(n_boot, n_blocks * block)


def _boot_stats(rs: np.ndarray, bs: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per resample (rows): Sharpe difference and its block-based standard error (LW 3.2)."""
    mu_r, mu_b = rs.mean(axis=1), bs.mean(axis=1)
    g_r, g_b = np.mean(rs * rs, axis=1), np.mean(bs * bs, axis=1)
    var_r, var_b = g_r - mu_r**2, g_b - mu_b**2
    diff = mu_r / np.sqrt(var_r) - mu_b / np.sqrt(var_b)
    grad = (g_r / var_r**1.5, -g_b / var_b**1.5, -0.5 * mu_r / var_r**1.5,
            0.5 * mu_b / var_b**1.5)
    z = (grad[0][:, None] * rs + grad[1][:, None] * bs + grad[2][:, None] * rs * rs
         + grad[3][:, None] * bs * bs)
    z = z - z.mean(axis=1, keepdims=True)
    n_boot, n = z.shape
    zeta = z.reshape(n_boot, n // block, block).sum(axis=2) / math.sqrt(block)
    psi = np.mean(zeta * zeta, axis=1)
    return diff, np.sqrt(psi / n)


def _bootstrap(
    r: np.ndarray, b: np.ndarray, block: int, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap Sharpe differences and standard errors, in chunks of ~2M bars for memory."""
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // r.size)
    parts = []
    for start in range(0, n_boot, chunk):
        idx = _block_indices(r.size, block, min(chunk, n_boot - start), rng)
        parts.append(_boot_stats(r[idx], b[idx], block))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def sharpe_difference_bootstrap(
    r: np.ndarray, b: np.ndarray, ppy: float, level: float = 0.95, *,
    block: int | None = None, n_boot: int = 2000, seed: int = 0,
) -> SharpeDifference:
    """Ledoit-Wolf (2008) studentised circular block bootstrap test of equal Sharpe (better size
    in small, fat-tailed samples); ``block`` defaults to the Newey-West lag count + 1."""
    r, b = _check_inputs(r, b, ppy)
    level = _check_level(level)
    lags = newey_west_lags(r.size)
    block = lags + 1 if block is None else int(block)
    if not 1 <= block <= r.size // 2:
        raise ValueError(f"block must be between 1 and T/2 = {r.size // 2} bars, got {block}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100 resamples, got {n_boot}")
    sr_r, sr_b, diff, se = _sharpe_diff_and_se(r, b, lags)
    _check_se(se, "sharpe_difference_bootstrap")
    d_star, se_star = _bootstrap(r, b, block, n_boot, seed)
    ok = np.isfinite(d_star) & (se_star > 0)
    t_star = np.abs(d_star[ok] - diff) / se_star[ok]
    p = (1.0 + float(np.sum(t_star >= abs(diff) / se))) / (1.0 + t_star.size)
    half = float(np.quantile(t_star, level)) * se
    root = math.sqrt(ppy)
    return SharpeDifference(
        sharpe_strategy=sr_r, sharpe_benchmark=sr_b, difference=diff, std_error=se,
        z_stat=diff / se, p_value=min(p, 1.0),
        ci_low=diff - half, ci_high=diff + half,
        sharpe_strategy_annual=sr_r * root, sharpe_benchmark_annual=sr_b * root,
        difference_annual=diff * root,
        ci_low_annual=(diff - half) * root, ci_high_annual=(diff + half) * root,
        level=level, n_obs=int(r.size), lags=lags,
        method=BOOTSTRAP_METHOD.format(block=block, n_boot=int(t_star.size), lags=lags),
    )


def newey_west_ols(y: np.ndarray, x: np.ndarray, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """OLS of y on [1, x] and its Newey-West covariance (Bartlett, ``lags``, T/(T-2) factor)."""
    n = y.size
    design = np.column_stack([np.ones(n), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    scores = design * (y - design @ coef)[:, None]
    meat = scores.T @ scores / n
    for j in range(1, min(lags, n - 1) + 1):
        gamma = scores[j:].T @ scores[:-j] / n
        meat += (1.0 - j / (lags + 1.0)) * (gamma + gamma.T)
    bread = np.linalg.inv(design.T @ design / n)
    return coef, bread @ meat @ bread / n * n / (n - 2.0)


def alpha_test(r: np.ndarray, b: np.ndarray, ppy: float) -> AlphaTest:
    """Jensen's alpha of r on b (OLS) with a t-test of H0: alpha = 0 using Newey-West standard
    errors (Bartlett kernel, floor(4 (T/100)^(2/9)) lags, T/(T-2) factor)."""
    r, b = _check_inputs(r, b, ppy)
    lags = newey_west_lags(r.size)
    coef, cov = newey_west_ols(r, b, lags)
    se_a, se_b = math.sqrt(max(cov[0, 0], 0.0)), math.sqrt(max(cov[1, 1], 0.0))
    _check_se(se_a, "alpha_test")
    alpha, beta = float(coef[0]), float(coef[1])
    return AlphaTest(
        alpha=alpha, alpha_annual=alpha * ppy, beta=beta,
        alpha_std_error=se_a, beta_std_error=se_b,
        t_stat=alpha / se_a, p_value=_two_sided_p(alpha / se_a),
        n_obs=int(r.size), lags=lags, method=ALPHA_METHOD.format(lags=lags),
    )


def _growth_stats(x: np.ndarray, ppy: float) -> dict[str, float]:
    """total_return, cagr and max_drawdown of compounding per-bar returns from wealth 1."""
    factors = np.maximum(1.0 + x, 0.0)  # a bar losing 100% or more ruins the account
    wealth = np.cumprod(factors)
    total = float(wealth[-1]) - 1.0
    years = x.size / ppy
    cagr = -1.0 if wealth[-1] <= 0 else float(wealth[-1] ** (1.0 / years) - 1.0)
    peak = np.maximum.accumulate(np.maximum(wealth, 1.0))
    return {"total_return": total, "cagr": cagr,
            "max_drawdown": min(float(np.min(wealth / peak - 1.0)), 0.0)}


def levered_benchmark(r: np.ndarray, b: np.ndarray, ppy: float) -> dict:
    """Benchmark x L, L = std(r)/std(b) (ddof=1), rebalanced every bar, NO financing cost: same
    volatility as the strategy, same Sharpe as the benchmark; is the extra return just risk?"""
    r, b = _check_inputs(r, b, ppy)
    lev = float(np.std(r, ddof=1) / np.std(b, ddof=1))
    x = lev * b
    std = float(np.std(x, ddof=1))
    levered = _growth_stats(x, ppy)
    own = _growth_stats(r, ppy)
    out = {
        "leverage": lev,
        "total_return": levered["total_return"],
        "cagr": levered["cagr"],
        "annual_volatility": std * math.sqrt(ppy),
        "sharpe": float(np.mean(x)) / std * math.sqrt(ppy),
        "max_drawdown": levered["max_drawdown"],
        "strategy_total_return": own["total_return"],
        "strategy_cagr": own["cagr"],
        "financing_cost": 0.0,
    }
    return {k: _finite_or_none(v) for k, v in out.items()}


def _active_deflated(
    r: np.ndarray, b: np.ndarray, ppy: float, n_trials: int, variance: float | None
) -> dict:
    """Deflated Sharpe of the active returns r - b; dsr None (with why) if undefined."""
    variance = 1.0 / r.size if variance is None else float(variance)
    out: dict[str, object] = {"dsr": None, "n_trials": int(n_trials), "sharpe_variance": variance}
    try:
        d = deflated_sharpe_ratio(r - b, n_trials, sr_variance=variance)
    except ValueError as e:
        out["why"] = str(e)
        return out
    out.update(dsr=d["dsr"], sharpe=d["sharpe"], sharpe_annual=d["sharpe"] * math.sqrt(ppy),
               expected_max_sharpe=d["expected_max_sharpe"])
    return {k: _finite_or_none(v) for k, v in out.items()}


def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _headline(sd: SharpeDifference, beats: bool) -> str:
    if beats:
        return "The strategy beat buy-and-hold significantly"
    if sd.difference < 0 and sd.p_value < 1.0 - sd.level:
        return "The strategy did significantly WORSE than buy-and-hold"
    return "The strategy did NOT beat buy-and-hold significantly"


def _summary(sd: SharpeDifference, at: AlphaTest, lev: dict, beats: bool) -> str:
    """One plain-English sentence with the numbers behind the verdict."""
    pct = round(100 * sd.level)
    levered = ""
    if lev["cagr"] is not None and lev["strategy_cagr"] is not None:
        levered = (f"; buy-and-hold levered x{lev['leverage']:.2f} to the same volatility "
                   f"made {100 * lev['cagr']:+.1f}%/yr vs the strategy's "
                   f"{100 * lev['strategy_cagr']:+.1f}%/yr")
    return (
        f"{_headline(sd, beats)}: annual Sharpe {sd.sharpe_strategy_annual:.2f} vs "
        f"{sd.sharpe_benchmark_annual:.2f}, difference {sd.difference_annual:+.2f} "
        f"({pct}% CI {sd.ci_low_annual:+.2f} to {sd.ci_high_annual:+.2f}, {_fmt_p(sd.p_value)}, "
        f"Ledoit-Wolf HAC); alpha {100 * at.alpha_annual:+.1f}%/yr (t = {at.t_stat:.2f}, "
        f"beta {at.beta:.2f}){levered}."
    )


def benchmark_verdict(
    r: np.ndarray, b: np.ndarray, ppy: float, n_trials: int = 1,
    trial_sharpe_variance: float | None = None, level: float = 0.95,
) -> dict:
    """Sharpe difference, alpha, levered benchmark, active (r - b) deflated Sharpe: one JSON dict;
    ``beats_benchmark`` only if the difference > 0 AND p < 1 - level. ValueError if degenerate."""
    sd = sharpe_difference(r, b, ppy, level)
    at = alpha_test(r, b, ppy)
    lev = levered_benchmark(r, b, ppy)
    r, b = np.asarray(r, dtype=np.float64), np.asarray(b, dtype=np.float64)
    beats = bool(sd.difference > 0 and sd.p_value < 1.0 - sd.level)
    return {
        "beats_benchmark": beats,
        "summary": _summary(sd, at, lev, beats),
        "sharpe_difference": sd.to_dict(),
        "alpha": at.to_dict(),
        "levered_benchmark": lev,
        "active_deflated_sharpe": _active_deflated(r, b, ppy, n_trials, trial_sharpe_variance),
        "n_obs": int(r.size),
        "periods_per_year": float(ppy),
        "level": sd.level,
    }
