"""Moving-average crossover signals: the canonical strategy of the engine cross-checks.

Cross-up at t: fast[t-1] < slow[t-1] and fast[t] > slow[t]; cross-down mirrored. Both use
only closes up to t, so the signals are causal.

Speed and exactness: the means are running sums (O(T) per symbol, not O(T x window)),
re-summed from scratch every 256 bars, so their rounding error stays below ~1e-12 relative.
Where the fast and slow means are within 1e-10 of each other (a tie in real numbers, decided
by rounding) both are recomputed exactly rounded with `math.fsum`, as backtrader does: the
crossing bar then depends neither on summation order nor on the other symbols in the panel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_TIE = 1e-10
_RESUM_EVERY = 256


@njit(cache=True)
def _rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of the last n values per column; NaN until n valid values, or if one is NaN.

    Walks rows in memory order (bar outer, symbol inner) with per-symbol running sums.
    """
    t_len, cols = x.shape
    out = np.empty((t_len, cols))
    s = np.zeros(cols)
    nans = np.zeros(cols, dtype=np.int64)
    for t in range(t_len):
        resum = t % _RESUM_EVERY == 0 and t >= n - 1
        for j in range(cols):
            v = x[t, j]
            if v != v:
                nans[j] += 1
            else:
                s[j] += v
            if t >= n:
                old = x[t - n, j]
                if old != old:
                    nans[j] -= 1
                else:
                    s[j] -= old
            if resum:  # re-sum from scratch now and then: no drift over long series
                a = 0.0
                for k in range(t - n + 1, t + 1):
                    w = x[k, j]
                    if w == w:
                        a += w
                s[j] = a
            out[t, j] = s[j] / n if (t >= n - 1 and nans[j] == 0) else np.nan
    return out


def sma(close: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average over n bars along axis 0 (NaN until n values exist)."""
    x = np.asarray(close, dtype=np.float64)
    x2 = np.ascontiguousarray(x.reshape(len(x), -1))
    return _rolling_mean(x2, int(n)).reshape(x.shape)


def _exact_mean(col: np.ndarray, t: int, n: int) -> float:
    if t < n - 1:
        return math.nan
    window = col[t - n + 1 : t + 1]
    return math.fsum(window) / n if not np.isnan(window).any() else math.nan


@njit(cache=True)
def _window_sum(x: np.ndarray, j: int, t: int, n: int) -> float:
    a = 0.0
    for k in range(t - n + 1, t + 1):
        w = x[k, j]
        if w == w:
            a += w
    return a


@njit(cache=True)
def _cross_clean(x: np.ndarray, fast: int, slow: int, tie: float, max_ties: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """`_cross` for data without NaN: no missing-value bookkeeping, about 2x faster."""
    t_len, cols = x.shape
    entries = np.zeros((t_len, cols), dtype=np.bool_)
    exits = np.zeros((t_len, cols), dtype=np.bool_)
    ties = np.zeros((max_ties, 2), dtype=np.int64)
    n_ties = 0
    sf = np.zeros(cols)
    ss = np.zeros(cols)
    prev_f = np.full(cols, np.nan)
    prev_s = np.full(cols, np.nan)
    for t in range(t_len):
        resum = t % _RESUM_EVERY == 0
        for j in range(cols):
            a = sf[j] + x[t, j]
            b = ss[j] + x[t, j]
            if t >= fast:
                a -= x[t - fast, j]
            if t >= slow:
                b -= x[t - slow, j]
            if resum:
                if t >= fast - 1:
                    a = _window_sum(x, j, t, fast)
                if t >= slow - 1:
                    b = _window_sum(x, j, t, slow)
            sf[j] = a
            ss[j] = b
            f = a / fast if t >= fast - 1 else np.nan
            s = b / slow if t >= slow - 1 else np.nan
            # the crossing decision is written out in both loops (_cross_clean, _cross): as a
            # helper call per cell, even with inline="always", the loop ran 10x slower (16 vs
            # 1.3 ms on the bundled 20 stocks: bench/engine_vs_peers.py's (c) workload)
            if abs(f - s) <= tie * abs(s):
                if n_ties < max_ties:
                    ties[n_ties, 0] = t
                    ties[n_ties, 1] = j
                n_ties += 1
            pf = prev_f[j]
            ps = prev_s[j]
            if pf < ps and f > s:
                entries[t, j] = True
            elif pf > ps and f < s:
                exits[t, j] = True
            prev_f[j] = f
            prev_s[j] = s
    return entries, exits, ties[: min(n_ties, max_ties)], n_ties


@njit(cache=True)
def _cross_column(x: np.ndarray, j: int, fast: int, slow: int, tie: float, entries: np.ndarray,
                  exits: np.ndarray, ties: np.ndarray, n_ties: int) -> int:
    """`_cross_clean` for one column with the running state in registers (few columns)."""
    sf = 0.0
    ss = 0.0
    pf = np.nan
    ps = np.nan
    max_ties = ties.shape[0]
    for t in range(x.shape[0]):
        v = x[t, j]
        sf += v
        ss += v
        if t >= fast:
            sf -= x[t - fast, j]
        if t >= slow:
            ss -= x[t - slow, j]
        if t % _RESUM_EVERY == 0:
            if t >= fast - 1:
                sf = _window_sum(x, j, t, fast)
            if t >= slow - 1:
                ss = _window_sum(x, j, t, slow)
        f = sf / fast if t >= fast - 1 else np.nan
        s = ss / slow if t >= slow - 1 else np.nan
        if abs(f - s) <= tie * abs(s):
            if n_ties < max_ties:
                ties[n_ties, 0] = t
                ties[n_ties, 1] = j
            n_ties += 1
        if pf < ps and f > s:
            entries[t, j] = True
        elif pf > ps and f < s:
            exits[t, j] = True
        pf = f
        ps = s
    return n_ties


@njit(cache=True)
def _cross_few(x: np.ndarray, fast: int, slow: int, tie: float, max_ties: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Clean data with few columns: one column at a time, state in registers."""
    t_len, cols = x.shape
    entries = np.zeros((t_len, cols), dtype=np.bool_)
    exits = np.zeros((t_len, cols), dtype=np.bool_)
    ties = np.zeros((max_ties, 2), dtype=np.int64)
    n_ties = 0
    for j in range(cols):
        n_ties = _cross_column(x, j, fast, slow, tie, entries, exits, ties, n_ties)
    return entries, exits, ties[: min(n_ties, max_ties)], n_ties


@njit(cache=True)
def _cross(x: np.ndarray, fast: int, slow: int, tie: float, max_ties: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One fused pass: both running means, the crossings, and the (bar, column) near-ties."""
    t_len, cols = x.shape
    entries = np.zeros((t_len, cols), dtype=np.bool_)
    exits = np.zeros((t_len, cols), dtype=np.bool_)
    ties = np.zeros((max_ties, 2), dtype=np.int64)
    n_ties = 0
    sf = np.zeros(cols)
    ss = np.zeros(cols)
    nf = np.zeros(cols, dtype=np.int64)
    ns = np.zeros(cols, dtype=np.int64)
    prev_f = np.full(cols, np.nan)
    prev_s = np.full(cols, np.nan)
    for t in range(t_len):
        resum = t % _RESUM_EVERY == 0
        for j in range(cols):
            v = x[t, j]
            if v != v:
                nf[j] += 1
                ns[j] += 1
            else:
                sf[j] += v
                ss[j] += v
            if t >= fast:
                old = x[t - fast, j]
                if old != old:
                    nf[j] -= 1
                else:
                    sf[j] -= old
            if t >= slow:
                old = x[t - slow, j]
                if old != old:
                    ns[j] -= 1
                else:
                    ss[j] -= old
            if resum:
                if t >= fast - 1:
                    sf[j] = _window_sum(x, j, t, fast)
                if t >= slow - 1:
                    ss[j] = _window_sum(x, j, t, slow)
            f = sf[j] / fast if (t >= fast - 1 and nf[j] == 0) else np.nan
            s = ss[j] / slow if (t >= slow - 1 and ns[j] == 0) else np.nan
            if abs(f - s) <= tie * abs(s):
                if n_ties < max_ties:
                    ties[n_ties, 0] = t
                    ties[n_ties, 1] = j
                n_ties += 1
            pf = prev_f[j]
            ps = prev_s[j]
            if pf < ps and f > s:
                entries[t, j] = True
            elif pf > ps and f < s:
                exits[t, j] = True
            prev_f[j] = f
            prev_s[j] = s
    return entries, exits, ties[: min(n_ties, max_ties)], n_ties


def _settle(col: np.ndarray, t: int, fast: int, slow: int, entries: np.ndarray,
            exits: np.ndarray, j: int) -> None:
    """Redo the crossing decisions at bars t and t+1 from exactly rounded means."""
    means = {u: (_exact_mean(col, u, fast), _exact_mean(col, u, slow))
             for u in (t - 1, t, t + 1) if 0 <= u < len(col)}
    for u in (t, t + 1):
        if u in means and u - 1 in means:
            (pf, ps), (f, s) = means[u - 1], means[u]
            entries[u, j] = pf < ps and f > s
            exits[u, j] = pf > ps and f < s


def sma_cross_signals(close: np.ndarray, fast: int = 20, slow: int = 100
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (entries, exits) arrays shaped like `close`: cross-up and cross-down bars."""
    if not 0 < fast < slow:
        raise ValueError(f"need 0 < fast < slow, got fast={fast}, slow={slow}")
    x = np.asarray(close, dtype=np.float64)
    x2 = np.ascontiguousarray(x.reshape(len(x), -1))
    if np.isnan(x2).any():
        kernel = _cross
    else:  # few columns: per-column loops with register state; many: row-major sweep
        kernel = _cross_few if x2.shape[1] <= 8 else _cross_clean
    max_ties = 4096
    entries, exits, ties, n_ties = kernel(x2, fast, slow, _TIE, max_ties)
    if n_ties > max_ties:  # very many near-ties: find them all and settle each
        entries, exits, ties, n_ties = kernel(x2, fast, slow, _TIE, n_ties)
    for t, j in ties:  # rare: settle near-ties with exactly rounded means
        _settle(x2[:, j], int(t), fast, slow, entries, exits, int(j))
    return entries.reshape(x.shape), exits.reshape(x.shape)
