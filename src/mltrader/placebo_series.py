"""Placebo series for `mltrader.placebo`: the random / shuffled / vol_matched stand-ins for a
real prediction (or held-weight) series and their causal smoothing; array maths, no backtests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from mltrader.data.bars import Bars

KINDS: tuple[str, ...] = ("random", "shuffled", "vol_matched")
_KIND_CODE = {"random": 1, "shuffled": 2, "vol_matched": 3}  # stable: part of every seed
VOL_WINDOW = 60
STATS_WINDOW = 252  # bars before t whose real values a placebo's distribution and
# lean to volatility follow
_QUANTILES = 1000  # resolution of the quantile map (0.1% steps)
_QUANTILE_EVERY = 21  # bars between refreshes of the real values' distribution


# --- smoothing -------------------------------------------------------------------------

def _recursion(x: np.ndarray, a: float, gain: float, first: np.ndarray) -> np.ndarray:
    """z_t = a z_{t-1} + gain x_t from z_0 = ``first``, through pandas' EMA (which starts at
    x_0): z_t = gain / (1 - a) ema_t + a^t (z_0 - gain / (1 - a) x_0)."""
    c = gain / (1.0 - a)
    ema = pd.DataFrame(x).ewm(alpha=1.0 - a, adjust=False).mean().to_numpy()
    decay = a ** np.arange(len(x), dtype=np.float64)
    return c * ema + decay[:, None] * (first - c * x[0])[None, :]


def smooth(draws: np.ndarray, persistence: float) -> np.ndarray:
    """Smoothed N(0, 1) series from ``draws`` (T + 1 rows: row 0 seeds the start, row t + 1
    is the draw of bar t): an EMA of an EMA (two AR(1) filters with the same persistence a),
    scaled to unit variance and started from its stationary distribution, so every row is
    N(0, 1) and row t uses draws up to t only. Two passes make the path smooth: a state that
    depends on the series crossing a level does not chatter around it. ``persistence`` in
    [0, 1): 0 gives the iid draws of rows 1.. themselves.
    """
    a = float(persistence)
    if not 0.0 <= a < 1.0:
        raise ValueError(f"persistence must lie in [0, 1), got {a}")
    d = np.asarray(draws, dtype=np.float64)
    e = d[1:]
    if a == 0.0 or len(e) == 0:
        return e.copy()
    x = _recursion(e, a, math.sqrt(1.0 - a * a), e[0])  # AR(1), x_0 = e_0: unit variance
    # y_t = a y_{t-1} + k x_t; k and the start (x_0 + a eta) / sqrt(1 + a^2) make y stationary
    # at unit variance (Var(sum a^j x_{t-j}) = (1 + a^2) / (1 - a^2)^2)
    k = (1.0 - a * a) / math.sqrt(1.0 + a * a)
    return _recursion(x, a, k, (x[0] + a * d[0]) / math.sqrt(1.0 + a * a))


def half_life(persistence: float) -> float:
    """Bars until a `smooth` series' autocorrelation falls to 0.5 (0 for iid draws): with
    persistence a it is a^k (1 + k (1 - a^2) / (1 + a^2)) at lag k."""
    a = float(persistence)
    if a <= 0.0:
        return 0.0

    def acf(k: float) -> float:
        return a ** k * (1.0 + k * (1.0 - a * a) / (1.0 + a * a))

    lo, hi = 0.0, 1.0
    while acf(hi) > 0.5:
        hi *= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if acf(mid) > 0.5 else (lo, mid)
    return (lo + hi) / 2.0


def _persistence(log2_half_life: float) -> float:
    return 0.5 ** (1.0 / 2.0 ** log2_half_life)


def _draw(seed: int, kind: str, i: int, member: int, stream: int,
          shape: tuple[int, int]) -> np.ndarray:
    """Standard normal draws for run i of a kind: T + 1 rows for `smooth`, drawn row by row
    (row t is the same for any number of later rows)."""
    ss = np.random.SeedSequence([seed, _KIND_CODE[kind], stream, i, member])
    return np.random.default_rng(ss).standard_normal((shape[0] + 1, shape[1]))


def trailing_vol(close: np.ndarray, window: int = VOL_WINDOW) -> np.ndarray:
    """Std of simple returns over the last `window` bars up to and including t (NaN before)."""
    r = np.full(close.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        r[1:] = close[1:] / close[:-1] - 1.0
    return pd.DataFrame(r).rolling(window, min_periods=window).std().to_numpy()


def _row_ranks(x: np.ndarray) -> np.ndarray:
    return pd.DataFrame(x).rank(axis=1, method="average").to_numpy(np.float64)


def _normal_scores(x: np.ndarray) -> np.ndarray:
    """Each row's values as normal scores of their ranks (NaN stays NaN)."""
    n = np.isfinite(x).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ndtri((_row_ranks(x) - 0.5) / n)


def rank_corr_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row, Spearman's correlation of x and y over the cells where both are known
    (NaN for fewer than 3 such cells or no spread)."""
    both = np.isfinite(x) & np.isfinite(y)
    rx, ry = _row_ranks(np.where(both, x, np.nan)), _row_ranks(np.where(both, y, np.nan))
    n = both.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rx = rx - np.nansum(rx, axis=1, keepdims=True) / n[:, None]
        ry = ry - np.nansum(ry, axis=1, keepdims=True) / n[:, None]
        num = np.nansum(rx * ry, axis=1)
        den = np.sqrt(np.nansum(rx * rx, axis=1) * np.nansum(ry * ry, axis=1))
        return np.where((n >= 3) & (den > 0), num / den, np.nan)


def _mean_before(values: np.ndarray, window: int | None = None) -> np.ndarray:
    """Per row t, the mean of the finite values of the ``window`` rows before t (all of them
    when None); the first row with a value uses its own; NaN before it."""
    ok = np.isfinite(values)
    total = np.concatenate(([0.0], np.cumsum(np.where(ok, values, 0.0))))
    count = np.concatenate(([0], np.cumsum(ok)))
    t = np.arange(len(values))
    lo = np.zeros_like(t) if window is None else np.maximum(t - window, 0)
    s, c = total[t] - total[lo], count[t] - count[lo]  # rows lo .. t - 1
    own = count[t] == 0  # nothing before t: the row itself
    s = np.where(own, np.where(ok, values, 0.0), s)
    c = np.where(own, ok.astype(int), c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


@dataclass(frozen=True)
class _Real:
    """What a placebo of one real series needs, all causal: the values, the quantile map of
    the values before each row, the volatility scores and the correlation to match."""

    values: np.ndarray
    known: np.ndarray  # cells that get a placebo value
    table: np.ndarray  # (blocks, _QUANTILES) quantiles of the real values before a block
    block: np.ndarray  # (T,) row -> its block in `table` (-1: no real value yet)
    zvol: np.ndarray  # normal scores of each row's volatility ranks
    corr_r: np.ndarray  # (T,) normal correlation r giving the rank correlation so far


def _quantile_map(values: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantile tables of the known values of the `STATS_WINDOW` rows before each block of
    rows (the first row with values is a block using its own values), refreshed every
    `_QUANTILE_EVERY` rows; and each row's block (-1 before the first known value)."""
    rows = np.flatnonzero(known.any(axis=1))
    block = np.full(len(values), -1)
    if not len(rows):
        return np.zeros((0, _QUANTILES)), block
    first = int(rows[0])
    starts = [first, *range(first + 1, len(values), _QUANTILE_EVERY)]
    probs = (np.arange(_QUANTILES) + 0.5) / _QUANTILES
    tables = []
    for b, lo in enumerate(starts):
        upto = max(lo, first + 1)  # the rows before the block; the first block: its own row
        since = max(first, upto - STATS_WINDOW)
        pool = np.sort(values[since:upto][known[since:upto]])
        if len(pool):
            tables.append(pool[np.minimum((probs * len(pool)).astype(int), len(pool) - 1)])
        else:  # no known value in the window: keep the last table
            tables.append(tables[-1])
        block[lo:starts[b + 1] if b + 1 < len(starts) else len(values)] = b
    return np.vstack(tables), block


def _real(values: np.ndarray, close: np.ndarray, known: np.ndarray | None = None) -> _Real:
    values = np.asarray(values, dtype=np.float64)
    if known is None:
        known = np.isfinite(values)
    table, block = _quantile_map(values, known)
    vol = trailing_vol(close)
    zvol = _normal_scores(np.where(known & np.isfinite(vol), vol, np.nan))
    rho = _mean_before(rank_corr_rows(np.where(known, values, np.nan), vol),
                       STATS_WINDOW)
    # the normal correlation whose Spearman correlation is rho (bivariate normal)
    r = np.clip(2.0 * np.sin(np.pi * np.nan_to_num(rho) / 6.0), -0.99, 0.99)
    return _Real(values, known, table, block, zvol, r)


def _assign(real: _Real, latent: np.ndarray) -> np.ndarray:
    """Each row's known real values handed out to its known symbols in the order of the
    latent draws (the highest value to the highest draw)."""
    lat = np.where(real.known, latent, np.inf)
    vals = np.sort(np.where(real.known, real.values, np.inf), axis=1)
    out = np.empty_like(vals)
    np.put_along_axis(out, np.argsort(lat, axis=1, kind="stable"), vals, axis=1)
    return out


def _placebo_values(real: _Real, kind: str, latent: np.ndarray) -> np.ndarray:
    """The placebo of one real series from smoothed N(0, 1) draws (see the docstring of
    `mltrader.placebo`)."""
    if kind == "shuffled":
        out = _assign(real, latent)
    else:
        z = latent
        if kind == "vol_matched":
            r = real.corr_r[:, None]
            lean = r * real.zvol + np.sqrt(1.0 - r * r) * latent
            z = np.where(np.isfinite(real.zvol), lean, latent)
        if not len(real.table):
            return np.full(latent.shape, np.nan)
        pos = np.minimum((ndtr(z) * _QUANTILES).astype(int), _QUANTILES - 1)
        out = real.table[np.maximum(real.block, 0)[:, None], pos]
        out[real.block < 0] = np.nan
    out = np.where(real.known, out, np.nan)
    return out


# --- held weights (a rule without a model) ---------------------------------------------

def _decisions(held: np.ndarray, known: np.ndarray, start: int) -> np.ndarray:
    """Placebo held weights as target weights: a decision where a held weight changes (every
    known cell at `start`), NaN ("keep what you hold") elsewhere and before `start`."""
    out = np.full(held.shape, np.nan)
    h = held[start:]
    prev = np.vstack([np.full((1, h.shape[1]), np.nan), h[:-1]])
    same = (h == prev) | (np.isnan(h) & np.isnan(prev))
    take = known[start:] & ~same
    out[start:][take] = h[take]
    return out


def held_weights(weights: pd.DataFrame, bars: Bars, start: int) -> np.ndarray:
    """A rule's target weights carried forward from `start` (flat before its first decision
    there): what it holds on each bar; NaN before `start` and where the close is unknown."""
    w = weights.to_numpy(np.float64).copy()
    w[:start] = np.nan
    held = pd.DataFrame(w).iloc[start:].ffill().fillna(0.0).to_numpy()
    out = np.full(w.shape, np.nan)
    out[start:] = held
    out[~np.isfinite(bars.close)] = np.nan
    return out

