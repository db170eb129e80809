"""Market regimes: trailing return (bear/neutral/bull) x trailing volatility (low/high), causal.

Six states, as in the "A-share LSTM" design: ``code = 2 * trend + vol`` with trend 0 bear,
1 neutral, 2 bull and vol 0 low, 1 high. The thresholds are learned per symbol from its own
history up to and including bar t (expanding quantiles), so row t uses nothing after t's close.
Everything is computed on each symbol's traded bars only: a NaN close is skipped, never zero,
and its row gets a NaN code. `hmm_regimes` is the same idea with a walk-forward Gaussian HMM.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

from mltrader.errors import ConfigError

REGIME_NAMES: tuple[str, ...] = ("bear/low vol", "bear/high vol", "neutral/low vol",
                                 "neutral/high vol", "bull/low vol", "bull/high vol")
BEARISH_CODES: tuple[int, ...] = (0, 1)
_REFIT = {"yearly", "quarterly", "monthly"}
_STATS = ("ret", "vol", "ret_q1", "ret_q2", "vol_median")  # _column_stats' columns


# ----------------------------------------------------------------- numba kernels
@njit(cache=True)
def _push(h: np.ndarray, size: int, v: float) -> int:
    """Push v onto the min-heap h[:size]; returns the new size."""
    i = size
    while i > 0:
        p = (i - 1) >> 1
        if h[p] <= v:
            break
        h[i] = h[p]
        i = p
    h[i] = v
    return size + 1


@njit(cache=True)
def _replace(h: np.ndarray, size: int, v: float) -> float:
    """Pop the smallest item of the min-heap h[:size] and push v in one sift-down."""
    top = h[0]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and h[c + 1] < h[c]:
            c += 1
        if v <= h[c]:
            break
        h[i] = h[c]
        i = c
    h[i] = v
    return top


@njit(cache=True)
def _expanding_quantile(x: np.ndarray, q: float) -> np.ndarray:
    """out[i] = np.quantile(x[:i+1], q) (linear method, bit-for-bit), O(n log n) with two heaps.

    ``lo`` (a max-heap, stored negated) holds the k+1 smallest values and ``hi`` the rest,
    where k = floor(i q) is the lower order statistic numpy interpolates from; k grows by at
    most one per step, so each new value costs one push and at most one replace.
    """
    n = len(x)
    out = np.empty(n)
    lo = np.empty(n)
    hi = np.empty(n)
    nlo = 0
    nhi = 0
    for i in range(n):
        v = x[i]
        vi = i * q  # numpy's virtual index (n - 1) q for the first n = i + 1 values
        k = i if vi >= i else int(np.floor(vi))
        if nlo == k:  # lo grows: it takes v, or hi's smallest if v belongs in hi
            if nhi > 0 and v > hi[0]:
                nlo = _push(lo, nlo, -_replace(hi, nhi, v))
            else:
                nlo = _push(lo, nlo, -v)
        elif v < -lo[0]:  # lo keeps its size: v displaces lo's largest into hi
            nhi = _push(hi, nhi, -_replace(lo, nlo, -v))
        else:
            nhi = _push(hi, nhi, v)
        a = -lo[0]
        if nhi == 0 or vi >= i:
            out[i] = a
            continue
        g = vi - np.floor(vi)
        d = hi[0] - a
        out[i] = hi[0] - d * (1.0 - g) if g >= 0.5 else a + d * g  # numpy's _lerp
    return out


@njit(cache=True)
def _column_stats(x: np.ndarray, window: int) -> np.ndarray:
    """(T, 5): trailing return, vol, its 1/3 and 2/3 expanding quantiles, vol's median.

    Computed on the traded bars of x only (NaN closes skipped); NaN rows elsewhere.
    """
    out = np.full((len(x), 5), np.nan)
    pos = np.flatnonzero(x == x)
    m = len(pos)
    if m <= window:
        return out
    v = x[pos]
    lr = np.log(v[1:] / v[:-1])
    k = m - window
    ret = np.empty(k)
    vol = np.empty(k)
    c = lr[0]  # running sums of lr - c: O(1) per bar, no cancellation for returns ~ c
    s1 = 0.0
    s2 = 0.0
    for s in range(window):
        s1 += lr[s] - c
        s2 += (lr[s] - c) ** 2
    for j in range(k):
        if j > 0:  # window of log returns lr[j : j + window] ends at close v[j + window]
            a = lr[j - 1] - c
            b = lr[j + window - 1] - c
            s1 += b - a
            s2 += b * b - a * a
        ret[j] = v[j + window] / v[j] - 1.0
        vol[j] = np.sqrt(max(s2 - s1 * s1 / window, 0.0) / (window - 1))
    q1 = _expanding_quantile(ret, 1.0 / 3.0)
    q2 = _expanding_quantile(ret, 2.0 / 3.0)
    med = _expanding_quantile(vol, 0.5)
    for j in range(k):
        r = pos[j + window]
        out[r, 0] = ret[j]
        out[r, 1] = vol[j]
        out[r, 2] = q1[j]
        out[r, 3] = q2[j]
        out[r, 4] = med[j]
    return out


@njit(cache=True)
def _codes_2d(values: np.ndarray, window: int, min_history: int) -> np.ndarray:
    """Regime codes of every column, NaN before `min_history` valid stats."""
    T, N = values.shape
    codes = np.full((T, N), np.nan)
    for j in range(N):
        s = _column_stats(np.ascontiguousarray(values[:, j]), window)
        seen = 0
        for t in range(T):
            if s[t, 0] != s[t, 0]:
                continue
            seen += 1
            if seen >= min_history:
                trend = (s[t, 0] >= s[t, 2]) + (s[t, 0] > s[t, 3])
                codes[t, j] = 2.0 * trend + (s[t, 1] > s[t, 4])
    return codes


@njit(cache=True)
def _forward_filter(loglik: np.ndarray, start: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Filtered P(state_t | obs_0..t) for every t; a NaN row of loglik means no observation."""
    T, K = loglik.shape
    out = np.empty((T, K))
    alpha = start.copy()
    for t in range(T):
        pred = start.copy()
        if t > 0:
            for j in range(K):
                acc = 0.0
                for i in range(K):
                    acc += alpha[i] * trans[i, j]
                pred[j] = acc
        if loglik[t, 0] == loglik[t, 0]:
            top = loglik[t].max()
            for j in range(K):
                pred[j] *= np.exp(loglik[t, j] - top)
        alpha = pred / pred.sum()
        out[t] = alpha
    return out


# ----------------------------------------------------------------- rule-based regimes
def _check(window: int, min_history: int) -> None:
    if window < 2 or min_history < 1:
        raise ConfigError(f"regime window={window}, min_history={min_history}: "
                          "need window >= 2 and min_history >= 1")


def regime_thresholds(close: pd.DataFrame, window: int = 60) -> dict[str, pd.DataFrame]:
    """Inputs behind each code, to inspect or test: ret, vol, ret_q1, ret_q2, vol_median."""
    _check(window, 1)
    values = close.to_numpy(np.float64)
    stats = np.full((*values.shape, 5), np.nan)
    for j in range(values.shape[1]):
        stats[:, j] = _column_stats(np.ascontiguousarray(values[:, j]), window)
    return {name: pd.DataFrame(stats[:, :, i], index=close.index, columns=close.columns)
            for i, name in enumerate(_STATS)}


def rolling_regimes(close: pd.DataFrame, window: int = 60, min_history: int = 252
                    ) -> pd.DataFrame:
    """T x N float codes 0..5 (NaN until `min_history` valid 60-bar values exist for that symbol).

    Trend: bear if the `window`-bar return close[t]/close[t-window]-1 is below the expanding
    1/3 quantile of that symbol's returns up to t, bull if above the 2/3 quantile. Vol: high if
    the std (ddof=1) of the last `window` daily LOG returns is above its expanding median.
    "Bars" are the symbol's traded bars: a NaN close is skipped and gets a NaN code.
    """
    _check(window, min_history)
    values = np.ascontiguousarray(close.to_numpy(np.float64))  # one numba signature
    codes = _codes_2d(values, window, min_history)
    return pd.DataFrame(codes, index=close.index, columns=close.columns)


def market_returns(close: pd.DataFrame) -> pd.Series:
    """Equal-weight market daily return: mean over symbols that traded at both t-1 and t."""
    rets = close / close.shift(1) - 1.0  # NaN unless both closes exist: a gap is not a zero
    return rets.mean(axis=1, skipna=True).rename("market")


def market_index(close: pd.DataFrame) -> pd.Series:
    """Equal-weight market level from 1, compounding `market_returns`; NaN on no-trade rows."""
    rets = market_returns(close)
    level = (1.0 + rets.fillna(0.0)).cumprod()
    traded = close.notna().any(axis=1).to_numpy()
    return level.where(traded)


def market_regime(close: pd.DataFrame, window: int = 60, min_history: int = 252) -> pd.Series:
    """`rolling_regimes` of the equal-weight market index, for "the market is bearish" filters."""
    level = market_index(close).to_frame()
    return rolling_regimes(level, window, min_history).iloc[:, 0]


Codes = pd.DataFrame | pd.Series | np.ndarray


def is_bearish(codes: Codes) -> Codes:
    """True where the code is a bear state (0 or 1); NaN codes are not bearish."""
    if isinstance(codes, (pd.DataFrame, pd.Series)):
        return codes.isin(BEARISH_CODES)
    return np.isin(np.asarray(codes, dtype=np.float64), BEARISH_CODES)


# ----------------------------------------------------------------- walk-forward HMM
def _period_starts(index: pd.DatetimeIndex, refit: str) -> np.ndarray:
    """Positions of the first bar of each year / quarter / month."""
    if refit not in _REFIT:
        raise ConfigError(f"hmm refit={refit!r}: use one of {', '.join(sorted(_REFIT))}")
    key = index.year.to_numpy() * 12
    if refit == "quarterly":
        key = key + (index.month.to_numpy() - 1) // 3
    elif refit == "monthly":
        key = key + index.month.to_numpy() - 1
    return np.flatnonzero(np.r_[True, key[1:] != key[:-1]])


def hmm_probabilities(close: pd.DataFrame | pd.Series, n_states: int = 3,
                      refit: str = "yearly", min_train: int = 504, seed: int = 0) -> pd.DataFrame:
    """Walk-forward filtered P(state_t | returns up to t), T x n_states, state 0 = lowest mean.

    Input: a close panel (its equal-weight `market_returns` are used) or one price series
    (its daily simple returns). At the first bar of each year/quarter/month with >= `min_train`
    returns before it, a GaussianHMM is fit on the returns strictly before that bar (in percent,
    so hmmlearn's min_covar is negligible; means start at the training quantiles instead of
    k-means, `seed` draws the initial start/transition probabilities). The period's rows come
    from the forward filter with that fit, run from the start of the data (never hmmlearn's
    predict/predict_proba, which smooth over the future). States are relabelled by ascending
    mean each refit. NaN before the first fit.
    """
    try:
        from hmmlearn.hmm import GaussianHMM
    except ImportError as err:
        raise ConfigError("hmm regimes need hmmlearn: pip install hmmlearn==0.3.3") from err
    if n_states < 1 or min_train < 2:
        raise ConfigError(f"hmm n_states={n_states}, min_train={min_train}: need >= 1 and >= 2")
    rets = market_returns(close) if isinstance(close, pd.DataFrame) else close / close.shift(1) - 1
    r = 100.0 * rets.to_numpy(np.float64)
    valid = np.isfinite(r)
    out = np.full((len(r), n_states), np.nan)
    starts = _period_starts(pd.DatetimeIndex(rets.index), refit)
    for s, e in zip(starts, np.r_[starts[1:], len(r)], strict=True):
        train = r[:s][valid[:s]]
        if len(train) < min_train:
            continue
        model = GaussianHMM(n_components=n_states, covariance_type="diag", n_iter=100,
                            tol=1e-4, random_state=seed, init_params="stc")
        model.means_ = np.quantile(train, (np.arange(n_states) + 0.5) / n_states)[:, None]
        model.fit(train.reshape(-1, 1))
        mu, var = model.means_[:, 0], model.covars_[:, 0, 0]
        x = r[:e, None]
        loglik = -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)  # NaN rows stay NaN
        probs = _forward_filter(loglik, model.startprob_.astype(np.float64),
                                model.transmat_.astype(np.float64))
        out[s:e] = probs[s:e][:, np.argsort(mu, kind="stable")]  # column i: i-th lowest mean
    return pd.DataFrame(out, index=rets.index, columns=[f"state_{i}" for i in range(n_states)])


def hmm_regimes(close: pd.DataFrame | pd.Series, n_states: int = 3, refit: str = "yearly",
                min_train: int = 504, seed: int = 0) -> pd.Series:
    """Most likely filtered HMM state per bar (0 = lowest mean return = bear); see
    `hmm_probabilities`. NaN before the first fit."""
    probs = hmm_probabilities(close, n_states, refit, min_train, seed).to_numpy()
    ok = ~np.isnan(probs[:, 0])
    out = np.full(len(probs), np.nan)
    out[ok] = np.argmax(probs[ok], axis=1)
    return pd.Series(out, index=close.index, name="hmm_regime")
