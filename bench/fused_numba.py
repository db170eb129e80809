"""The one-core speed bound: the canonical strategy (see reference.py) as one fused numba loop.

SMAs, cross signals, sizing, commissions and the stop/target state machine all happen in a
single pass per symbol, with no intermediate arrays beyond the trade log. The SMAs are rolling
sums; wherever fast and slow come within 1e-9 (relative) of each other both means are recomputed
exactly rounded (a numba port of CPython's `math.fsum`, divided by the window), as mltrader's
`sma_cross_signals` and backtrader's SMA do, so a cross decision never rests on rolling-sum
drift or summation order (an exact tie in real numbers happens: AMD 2002-12-05, both 7.095).
`run_fused_signals` takes precomputed signals instead (the same state machine), which agrees
with reference.py by construction.

Each (T, N) column is an independent book with its own initial cash.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from reference import (
    COMMISSION,
    FAST,
    INITIAL_CASH,
    SIZE_BUFFER,
    SIZE_FRACTION,
    SLOW,
    STOP_LOSS,
    TAKE_PROFIT,
)

REASONS = ("signal", "stop", "target", "open")  # codes 0..3 in the trade log


@njit(cache=True)
def _fsum_window(c, t, n):
    """Exactly rounded sum of c[t-n+1 .. t]: CPython's math.fsum (Shewchuk partials)."""
    partials = np.empty(n + 1)
    m = 0
    for k in range(t - n + 1, t + 1):
        x = c[k]
        i = 0
        for q in range(m):
            y = partials[q]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        partials[i] = x
        m = i + 1
    hi = 0.0
    if m > 0:
        m -= 1
        hi = partials[m]
        lo = 0.0
        while m > 0:
            x = hi
            m -= 1
            y = partials[m]
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                break
        if m > 0 and ((lo < 0.0 and partials[m - 1] < 0.0)
                      or (lo > 0.0 and partials[m - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            yr = x - hi
            if y == yr:
                hi = x
    return hi


@njit(cache=True)
def _window_mean(c, t, n):
    return _fsum_window(c, t, n) / n


@njit(cache=True)
def _signals_1d(c, fast, slow, ent, ext):
    """Cross-up / cross-down of SMA(fast) vs SMA(slow) into ent/ext (rolling sums with an
    exactly rounded recompute near ties)."""
    T = c.shape[0]
    sf = 0.0
    ss = 0.0
    pf = np.nan
    ps = np.nan
    for t in range(T):
        ent[t] = False
        ext[t] = False
        sf += c[t]
        ss += c[t]
        if t >= fast:
            sf -= c[t - fast]
        if t >= slow:
            ss -= c[t - slow]
        if t < slow - 1:
            continue
        f = sf / fast
        s = ss / slow
        if abs(f - s) <= 1e-9 * abs(s):
            f = _window_mean(c, t, fast)
            s = _window_mean(c, t, slow)
        if t >= slow:  # previous bar has both averages
            if pf < ps and f > s:
                ent[t] = True
            elif pf > ps and f < s:
                ext[t] = True
        pf = f
        ps = s


@njit(cache=True)
def _simulate_1d(o, h, lo, c, ent, ext, cash0, frac, buf, comm, sl, tp,
                 out_e, out_x, out_pe, out_px, out_q, out_r, k0):
    """The canonical state machine on one symbol; trades go to out_* from row k0.
    Returns (next free row, final equity)."""
    T = c.shape[0]
    cash = cash0
    shares = 0.0
    entry_bar = -1
    entry_px = 0.0
    stop = 0.0
    target = 0.0
    pending = 0  # 0 none, 1 buy, 2 sell
    k = k0
    for t in range(T):
        px = 0.0
        reason = -1
        if pending == 1:
            op = o[t]
            qty = np.floor(frac * cash / (op * (1.0 + buf)))
            if qty > 0:
                value = qty * op
                cash -= value + comm * value
                shares = qty
                entry_bar = t
                entry_px = op
                stop = op * (1.0 - sl)
                target = op * (1.0 + tp)
        elif pending == 2:
            px = o[t]
            reason = 0
        elif shares > 0 and t > entry_bar:
            if o[t] <= stop:
                px = o[t]
                reason = 1
            elif lo[t] <= stop:
                px = stop
                reason = 1
            elif o[t] >= target:
                px = o[t]
                reason = 2
            elif h[t] >= target:
                px = target
                reason = 2
        if reason >= 0:
            value = shares * px
            cash += value - comm * value
            out_e[k] = entry_bar
            out_x[k] = t
            out_pe[k] = entry_px
            out_px[k] = px
            out_q[k] = shares
            out_r[k] = reason
            k += 1
            shares = 0.0
            entry_bar = -1
        pending = 0
        if t + 1 < T:
            if shares == 0 and ent[t]:
                pending = 1
            elif shares > 0 and ext[t]:
                pending = 2
    if shares > 0:
        out_e[k] = entry_bar
        out_x[k] = T - 1
        out_pe[k] = entry_px
        out_px[k] = c[T - 1]
        out_q[k] = shares
        out_r[k] = 3
        k += 1
    return k, cash + shares * c[T - 1]


@njit(cache=True)
def _run_books(o, h, lo, c, ent2, ext2, use_signals, fast, slow, cash0, frac, buf, comm,
               sl, tp):
    T, N = c.shape
    cap = T // 2 + 2  # a trade needs an entry bar and a later exit bar
    ent = np.empty(T, dtype=np.bool_)
    ext = np.empty(T, dtype=np.bool_)
    col = np.empty(cap * N if N * cap < 4_000_000 else 4_000_000, dtype=np.int64)
    e_b = np.empty(col.shape[0], dtype=np.int64)
    x_b = np.empty(col.shape[0], dtype=np.int64)
    pe = np.empty(col.shape[0])
    px = np.empty(col.shape[0])
    q = np.empty(col.shape[0])
    r = np.empty(col.shape[0], dtype=np.int64)
    final = np.empty(N)
    k = 0
    for j in range(N):
        if k + cap > col.shape[0]:  # grow the log
            m = max(2 * col.shape[0], k + cap)
            col = _grow_i(col, k, m)
            e_b = _grow_i(e_b, k, m)
            x_b = _grow_i(x_b, k, m)
            pe = _grow_f(pe, k, m)
            px = _grow_f(px, k, m)
            q = _grow_f(q, k, m)
            r = _grow_i(r, k, m)
        oj = np.ascontiguousarray(o[:, j])
        hj = np.ascontiguousarray(h[:, j])
        lj = np.ascontiguousarray(lo[:, j])
        cj = np.ascontiguousarray(c[:, j])
        if use_signals:
            ent[:] = ent2[:, j]
            ext[:] = ext2[:, j]
        else:
            _signals_1d(cj, fast, slow, ent, ext)
        k1, eq = _simulate_1d(oj, hj, lj, cj, ent, ext, cash0, frac, buf, comm, sl, tp,
                              e_b, x_b, pe, px, q, r, k)
        final[j] = eq
        col[k:k1] = j
        k = k1
    return col[:k], e_b[:k], x_b[:k], pe[:k], px[:k], q[:k], r[:k], final


@njit(cache=True)
def _grow_i(a, k, m):
    b = np.empty(m, dtype=a.dtype)
    b[:k] = a[:k]
    return b


@njit(cache=True)
def _grow_f(a, k, m):
    b = np.empty(m, dtype=a.dtype)
    b[:k] = a[:k]
    return b


def _as2d(a, dtype=np.float64):
    a = np.asarray(a, dtype=dtype)
    return np.ascontiguousarray(a.reshape(len(a), -1))


def _run(o, h, lo, c, ent, ext, use_signals, initial_cash):
    c2 = _as2d(c)
    o2, h2, l2 = (_as2d(a) for a in (o, h, lo))
    if use_signals:
        e2, x2 = _as2d(ent, np.bool_), _as2d(ext, np.bool_)
    else:
        e2 = x2 = np.zeros((1, 1), dtype=np.bool_)
    out = _run_books(o2, h2, l2, c2, e2, x2, use_signals, FAST, SLOW, float(initial_cash),
                     SIZE_FRACTION, SIZE_BUFFER, COMMISSION, STOP_LOSS, TAKE_PROFIT)
    col, e_b, x_b, pe, px, q, r, final = out
    trades = {"book": col, "entry_bar": e_b, "exit_bar": x_b, "entry_price": pe,
              "exit_price": px, "qty": q, "reason": r}
    return trades, final


def run_fused(o, h, lo, c, initial_cash=INITIAL_CASH):
    """Full strategy from prices: SMAs and signals inside the loop. Returns (trades dict of
    arrays with reason codes into REASONS, final equity per book)."""
    return _run(o, h, lo, c, None, None, False, initial_cash)


def run_fused_signals(o, h, lo, c, ent, ext, initial_cash=INITIAL_CASH):
    """The same state machine on precomputed (entries, exits)."""
    return _run(o, h, lo, c, ent, ext, True, initial_cash)
