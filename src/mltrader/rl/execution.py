"""The compiled step of `PortfolioEnv`: a decision on bar t's close, filled and marked on t+1.

This is the backtest kernel's MODE_TARGETS path for market orders (backtest/kernel.py), one
bar at a time, with the execution core's own functions: `core.orders.target_shares` /
`order_delta` size each order (at the fill price, or at the decision close with
`size_at="decision"`), orders that reduce exposure fill before the rest, `leverage_room`
and `cash_room` cut the buys, `core.fills.slipped` prices the fill, `core.book` books it
(legs, commission, cash, shares: the kernel's own function), and the book is marked to the
fill bar's close. Same operations in the same order, so the environment's equity is the
backtest's equity.

Risk guards (`EngineSettings.guards`) act through the very functions the kernel calls
(risk/guards.py), at the kernel's points: `start_bar` with the bar's session before its
fills; `flatten_reason` at the decision (after a daily-loss / kill trip every position gets
a flatten order, whatever the action); `gate_order` on each strategy order as it is created
(a blocked order is not placed and a working one stays); `gate_fill` on each order about to
fill; `position_room` between the leverage and the cash limits; `record_fill` per executed
order; `time_stop_due` before the close (a position is closed at the fill price, as the
kernel's exit); `on_close` with the equity at the close.

A market's own rules (core/market.py: `EngineSettings.market` and the `RuleArrays` of the
bars) act as in the kernel, in its order: ex-rights payouts at the fill bar's start (after
borrow fees; cash per held share); on each order about to fill, after the guards' `gate_fill`,
the limit-up (buy) / limit-down (sell) lock on the reference price, then T+1 (only shares
bought before the fill bar's session may be sold; the sell is cut to them or dropped), then
the shorting rule, the leverage / position / cash limits (`cash_room` with the buy tax and the
market's minimum commission), then `core.market.lot_round` (an order under one lot is
dropped); the fee adds the day's tax on the traded value (`target_shares` at the fill sizes
with it too). A time stop is held back by T+1 and a limit-down lock as the kernel's exits are.
The rule arrays travel as extra planes of `px` ((9, T, N) instead of (4, T, N), only when a
market's rules are active: the US path reads four planes and nothing else), the T+1
bookkeeping as two rows of the per-symbol matrix, and what the rules did in a step as counts
in the scalar vector (`MK_*`).

State lives in arrays the environment owns: a per-symbol float matrix (`SH`...`BQTY`
rows), a float vector (`CASH`...`TAX`, then the guards' parameters and state) and an
int64 vector (each bar's session, then the guards' per-symbol order counts). Not supported
here (`env.check_settings` refuses them): limit / stop orders, volume caps, stops /
targets / trailing stops.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mltrader.core.book import book_leg, split_fill
from mltrader.core.fills import slipped
from mltrader.core.market import RuleArrays, at_limit_down, at_limit_up, lot_round
from mltrader.core.orders import cash_room, leverage_room, order_delta, target_shares
from mltrader.core.params import (
    FP_BAND,
    FP_BORROW,
    FP_CASH,
    FP_COMM_BPS,
    FP_COMM_FIXED,
    FP_COMM_MIN,
    FP_COMM_PS,
    FP_LEVERAGE,
    FP_LOT,
    FP_MIN_ORDER,
    FP_SLIP_BPS,
    FP_SPREAD,
    IP_GTC,
    IP_GUARDS,
    IP_LIMITS,
    IP_NEXT_OPEN,
    IP_REJECT,
    IP_SHORT,
    IP_SIZE_DECISION,
    IP_T1,
    IP_WHOLE,
)
from mltrader.risk.guards import (
    G_MAX_POSITION,
    G_NONE,
    GP_TIME_STOP,
    GUARD_NAMES,
    N_GP,
    N_GS,
    flatten_reason,
    gate_fill,
    gate_order,
    on_close,
    position_room,
    record_fill,
    start_bar,
    time_stop_due,
)
from mltrader.risk.guards import new_state as new_guard_state

# per-symbol state (rows of a (N_ROWS, N) float matrix)
# SH shares held; LAST last known close; ON a working order (1/0); VAL its target weight, or
# its share count when SIZED; MARK the fill bar's valuation price; WEIGHT position value /
# equity at the close; TARGET the target weights of the latest decision; with guards on:
# ENTRY the bar of the position's entry fill (-1 when flat, the kernel's e_bar) and ORIGIN
# who placed the working order (0 the strategy, else the G_ code of its flatten order);
# T+1 (the kernel's b_day / b_qty): BDAY the session of the last buy fill (-1 none), BQTY
# the shares bought in it
SH, LAST, ON, VAL, SIZED, MARK, WEIGHT, TARGET, ENTRY, ORIGIN, BDAY, BQTY = range(12)
N_ROWS = 12
# scalar state: cash and equity at the close; the last step's commission (taxes included, as
# the kernel's fill records), traded value and borrow fees; the G_ code of the last guard
# that acted in the step (0 none; G_TIME_STOP for a time stop) and how many guard actions
# the step had; then what a market's rules did in the step: orders refused at a limit-up /
# limit-down lock, sells T+1 cut (or dropped), orders lot-rounded (or dropped under one
# lot), time stops held back (T+1 or a limit-down lock), the cash of ex-rights payouts and
# the taxes paid
(CASH, EQUITY, COMM, TRADED, BORROW, GUARD, GUARD_N, MK_LIMIT_UP, MK_LIMIT_DOWN, MK_T1,
 MK_LOT, MK_HELD, PAYOUT, TAX) = range(14)
N_SCALARS = 14
MARKET_NAMES = {MK_LIMIT_UP: "limit_up", MK_LIMIT_DOWN: "limit_down", MK_T1: "t_plus_one",
                MK_LOT: "lot", MK_HELD: "held_back"}
# the planes of `px`: open, high, low, close; with a market's rules also each bar's limit-up
# and limit-down prices (NaN: none), the cash paid per held share, and the sell / buy tax in
# bps (a (T,) row repeated over the symbols)
P_OPEN, P_HIGH, P_LOW, P_CLOSE, P_LIM_UP, P_LIM_DN, P_PAYOUT, P_SELL_TAX, P_BUY_TAX = range(9)
N_PLANES, N_PLANES_RULES = 4, 9
# then the guards' parameters (`Guards.vector()`) and state (`risk.guards.new_state`), views
# of the same vector (fewer arrays to pass: each argument costs the compiled call time)
GP0 = N_SCALARS
GS0 = GP0 + N_GP
N_ST = GS0 + N_GS
# the int64 vector `I`: each bar's session number (T), then the guards' per-symbol order
# counts (N)
# a time-stop exit (risk/guards.py has no G_ code for it: the kernel reports it as a fill
# reason, R_TIME)
G_TIME_STOP = 7
ACTED = {**GUARD_NAMES, G_TIME_STOP: "time stop"}

_EPS = 1e-9  # the kernel's tolerance for "below zero" without allow_short


def new_state(n: int, t_len: int, gp: np.ndarray, day: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """State arrays for `n` symbols over `t_len` bars: (S, st, I); `gp` the guards'
    parameters (`Guards.vector()`), `day` each bar's session number."""
    st = np.zeros(N_ST)
    st[GP0:GS0] = gp
    ints = np.zeros(t_len + n, dtype=np.int64)
    ints[:t_len] = day
    return np.zeros((N_ROWS, n)), st, ints


def price_planes(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                 rules: RuleArrays | None) -> np.ndarray:
    """The `px` array `step_bar` reads: (4, T, N) open, high, low, close; with `rules` (a
    market's per-bar arrays, `core.market.rule_arrays`) (9, T, N), the `P_*` planes."""
    if rules is None:
        return np.ascontiguousarray(np.stack([o, h, lo, c]))
    t_len, n = c.shape
    px = np.empty((N_PLANES_RULES, t_len, n))
    px[P_OPEN], px[P_HIGH], px[P_LOW], px[P_CLOSE] = o, h, lo, c
    whole = (t_len, n)
    px[P_LIM_UP] = rules.limit_up if rules.limit_up.shape == whole else np.nan
    px[P_LIM_DN] = rules.limit_down if rules.limit_down.shape == whole else np.nan
    px[P_PAYOUT] = rules.payout if rules.payout.shape == whole else 0.0
    px[P_SELL_TAX] = np.asarray(rules.sell_tax_bps, dtype=np.float64)[:, None]
    px[P_BUY_TAX] = np.asarray(rules.buy_tax_bps, dtype=np.float64)[:, None]
    return px


def reset_state(S: np.ndarray, st: np.ndarray, ints: np.ndarray, close: np.ndarray, t0: int,
                fp: np.ndarray, ip: np.ndarray) -> None:
    """Flat book with the initial cash at bar `t0` (the kernel's state after its start bar:
    with guards, the session started and the flat book's close seen)."""
    S[:] = 0.0
    S[LAST] = close[t0]  # NaN where the symbol does not trade on t0, as in the kernel
    S[ENTRY] = -1.0
    S[BDAY] = -1.0
    st[:N_SCALARS] = 0.0
    st[CASH] = fp[FP_CASH]
    st[EQUITY] = fp[FP_CASH]
    if ip[IP_GUARDS] == 1:
        t_len = close.shape[0]
        gs, sym_orders = st[GS0:], ints[t_len:]
        g0, o0 = new_guard_state(fp[FP_CASH], S.shape[1])
        gs[:] = g0
        sym_orders[:] = o0
        start_bar(gs, sym_orders, ints[t0], fp[FP_CASH])
        on_close(gs, st[GP0:GS0], fp[FP_CASH])


@njit(cache=True, error_model="numpy")
def action_targets(action: np.ndarray, discrete: bool, allow_short: bool, leverage: float,
                   out: np.ndarray) -> bool:
    """Target weights of an action into `out`; False if it holds NaN or inf.

    Discrete actions 0 / 1 / 2 mean -1 / 0 / +1; continuous ones are clipped to [-1, 1];
    without `allow_short` negatives become 0; a row whose gross exceeds `leverage` is scaled
    down to it (so every row is a valid target row for `run_backtest`)."""
    gross = 0.0
    for i in range(action.shape[0]):
        a = action[i]
        if not np.isfinite(a):
            return False
        if discrete:
            a -= 1.0
        if a > 1.0:
            a = 1.0
        elif a < -1.0:
            a = -1.0
        if a < 0.0 and not allow_short:
            a = 0.0
        out[i] = a
        gross += abs(a)
    if gross > leverage:
        scale = leverage / gross
        for i in range(action.shape[0]):
            out[i] *= scale
    return True


@njit(cache=True, error_model="numpy")
def _acted(st: np.ndarray, g: int) -> None:
    st[GUARD] = g
    st[GUARD_N] += 1.0


@njit(cache=True, error_model="numpy")
def step_bar(t: int, px: np.ndarray, ip: np.ndarray, fp: np.ndarray, S: np.ndarray,
             st: np.ndarray, ints: np.ndarray) -> None:
    """Decide on bar t's close to the weights in S[TARGET]; fill on t+1; mark at its close.

    `px` is (4, T, N): open, high, low, close (the close four times for close-only data), or
    (9, T, N) with a market's rule arrays (`price_planes`). The guards' parameters and state
    are views of `st` and `ints` (read only with guards on)."""
    o_arr = px[P_OPEN]
    h_arr = px[P_HIGH]
    l_arr = px[P_LOW]
    c_arr = px[P_CLOSE]
    t_len, n = c_arr.shape
    rules = px.shape[0] == N_PLANES_RULES
    gp = st[GP0:GS0]
    gs = st[GS0:]
    day = ints[:t_len]
    sym_orders = ints[t_len:]
    sh = S[SH]
    last = S[LAST]
    on = S[ON]
    val = S[VAL]
    sized = S[SIZED]
    mark = S[MARK]
    tw = S[TARGET]
    ent = S[ENTRY]
    orig = S[ORIGIN]
    next_open = ip[IP_NEXT_OPEN] == 1
    whole = ip[IP_WHOLE] == 1
    allow_short = ip[IP_SHORT] == 1
    size_decision = ip[IP_SIZE_DECISION] == 1
    gtc = ip[IP_GTC] == 1
    reject = ip[IP_REJECT] == 1
    guards = ip[IP_GUARDS] == 1
    time_stops = guards and gp[GP_TIME_STOP] > 0
    lev = fp[FP_LEVERAGE]
    band = fp[FP_BAND]
    borrow = fp[FP_BORROW]
    buy_bps = fp[FP_SLIP_BPS] + fp[FP_SPREAD] + fp[FP_COMM_BPS]
    for k in range(GUARD, N_SCALARS):  # what the guards and the market's rules did this step
        st[k] = 0.0

    # ------------------------------------------------ decision on t's close (kernel: decisions)
    eq_d = st[EQUITY]
    flat_why = flatten_reason(gs) if guards else G_NONE  # after on_close at t's close
    for i in range(n):
        origin = G_NONE
        if flat_why != G_NONE and sh[i] != 0.0:
            # a guard tripped: flatten at the next fill, whatever the action says
            if on[i] != 0.0 and orig[i] == flat_why:
                continue  # its flatten order is still working
            origin = flat_why
            v = 0.0
        else:
            w = tw[i]
            # flat and told to stay flat, nothing working: no order
            if not (w == w) or (w == 0.0 and sh[i] == 0.0 and on[i] == 0.0):
                continue
            v = w
        s = 0.0
        if size_decision:  # the share count is fixed at the decision close
            px_d = c_arr[t, i] if c_arr[t, i] == c_arr[t, i] else last[i]
            if px_d == px_d and px_d > 0:
                want = target_shares(v, eq_d, px_d, sh[i], buy_bps, whole)
                if (origin == G_NONE and on[i] == 0.0
                        and order_delta(want, sh[i], px_d, eq_d, band) == 0.0):
                    continue  # inside the band (or nothing to do): no order
                v = want
                s = 1.0
        if guards and origin == G_NONE:
            held = sh[i] * last[i] if sh[i] != 0.0 else 0.0
            want_v = v * last[i] if s == 1.0 else v * eq_d
            adds = abs(want_v) > abs(held) * (1.0 + 1e-9) or want_v * held < 0.0
            g = gate_order(gs, gp, sym_orders, i, adds)
            if g != G_NONE:
                _acted(st, g)
                continue  # not placed; an order already working stays
        on[i] = 1.0  # a new order replaces a working one
        val[i] = v
        sized[i] = s
        orig[i] = origin

    # ------------------------------------------------ bar u = t + 1: borrow, fills, marks
    u = t + 1
    if guards:
        start_bar(gs, sym_orders, day[u], eq_d)
    cash = st[CASH]
    comm_sum = 0.0
    traded = 0.0
    borrow_sum = 0.0
    if borrow > 0:
        for i in range(n):
            if sh[i] < 0 and last[i] == last[i]:
                fee = -sh[i] * last[i] * borrow
                cash -= fee
                borrow_sum += fee
    tax_b = 0.0
    tax_s = 0.0
    limits = False
    t1 = ip[IP_T1] == 1
    lot = fp[FP_LOT]
    if rules:
        pay = px[P_PAYOUT]
        paid = 0.0
        for i in range(n):  # ex-rights payouts: cash per held share, at the bar's start
            if sh[i] != 0.0 and pay[u, i] != 0.0:
                cash_in = sh[i] * pay[u, i]
                cash += cash_in
                paid += cash_in
        st[PAYOUT] = paid
        tax_b = px[P_BUY_TAX, u, 0]
        tax_s = px[P_SELL_TAX, u, 0]
        limits = ip[IP_LIMITS] == 1
    tax_sum = 0.0
    working = 0
    for i in range(n):
        if on[i] != 0.0:
            working += 1
    if working > 0:
        bvalue = cash  # the book valued at the fill bar's prices
        bgross = 0.0
        for i in range(n):
            p = o_arr[u, i] if next_open else c_arr[u, i]
            mk = p if p == p else last[i]
            mark[i] = mk
            if sh[i] != 0.0:
                bvalue += sh[i] * mk
                bgross += abs(sh[i]) * mk
        for phase in range(2):  # 0: orders that reduce exposure, 1: the rest
            for i in range(n):
                if on[i] == 0.0:
                    continue
                if next_open:
                    bo = o_arr[u, i]
                    bh = h_arr[u, i]
                    bl = l_arr[u, i]
                else:
                    bo = c_arr[u, i]
                    bh = bo
                    bl = bo
                if not (bo == bo):  # no price on the fill bar
                    if phase == 1 and not gtc:
                        on[i] = 0.0  # a day order is cancelled; gtc keeps working
                    continue
                if sized[i] == 1.0:
                    desired = np.trunc(val[i]) if whole else val[i]
                    delta = order_delta(desired, sh[i], bo, bvalue, 0.0)
                else:
                    desired = target_shares(val[i], bvalue, bo, sh[i], buy_bps + tax_b, whole)
                    delta = order_delta(desired, sh[i], bo, bvalue, band)
                reduces = delta != 0.0 and abs(sh[i] + delta) < abs(sh[i])
                if (phase == 0) != reduces:
                    continue
                on[i] = 0.0  # filled, resized, rejected or nothing to do: no longer working
                if delta == 0.0:
                    continue
                side = 1.0 if delta > 0 else -1.0
                if guards:
                    g = gate_fill(gs, gp, not reduces, bo, last[i])
                    if g != G_NONE:
                        _acted(st, g)
                        continue  # rejected by a guard
                if limits or t1:  # a market's rules, on the reference price (kernel's order)
                    if limits and delta > 0 and at_limit_up(bo, px[P_LIM_UP, u, i]):
                        st[MK_LIMIT_UP] += 1.0
                        continue  # locked at limit-up: no seller
                    if limits and delta < 0 and at_limit_down(bo, px[P_LIM_DN, u, i]):
                        st[MK_LIMIT_DOWN] += 1.0
                        continue  # locked at limit-down: no buyer
                    if t1 and delta < 0 and sh[i] > 0:
                        bought = S[BQTY, i] if S[BDAY, i] == day[u] else 0.0
                        if -delta > sh[i] - bought:  # only earlier sessions' shares may go
                            delta = -(sh[i] - bought)
                            st[MK_T1] += 1.0
                            if delta == 0.0:
                                continue
                if not allow_short and sh[i] + delta < -_EPS:
                    delta = -sh[i]
                fpx = slipped(bo, side, bh, bl, fp)
                if not reduces and delta != 0.0:  # cash and leverage limits on added exposure
                    q_ok = abs(delta)
                    q_lev = leverage_room(sh[i], delta, mark[i], bvalue, bgross, lev)
                    if q_lev < q_ok:
                        q_ok = q_lev
                    capped = False
                    if guards:
                        q_pos = position_room(gp, sh[i], mark[i], bvalue)
                        if q_pos < q_ok:
                            q_ok = q_pos
                            capped = True
                    if side > 0 and lev <= 1.0 + 1e-12:
                        afford = cash_room(cash, fpx, fp[FP_COMM_BPS] + tax_b, fp[FP_COMM_PS],
                                           fp[FP_COMM_MIN],
                                           fp[FP_COMM_FIXED] + fp[FP_MIN_ORDER])
                        if afford < q_ok:
                            q_ok = afford
                    if q_ok < abs(delta):
                        if capped:
                            _acted(st, G_MAX_POSITION)
                        if reject:
                            continue
                        if whole:
                            q_ok = np.floor(q_ok)
                        delta = side * q_ok
                if lot > 1.0 and delta != 0.0:  # board lots (an odd lot only sold whole)
                    lotted = lot_round(delta, sh[i], lot)
                    if lotted != delta:
                        st[MK_LOT] += 1.0
                        delta = lotted
                if delta == 0.0:
                    continue
                if guards:
                    record_fill(gs)
                    if orig[i] != G_NONE:
                        _acted(st, int(orig[i]))  # a flatten order fills
                s0 = sh[i]
                # a fill that flips the sign is a close plus an open, sharing one fee
                legs, fee = split_fill(s0, delta, fpx, fp)
                if rules:
                    tax = abs(delta) * fpx * (tax_s if delta < 0 else tax_b) * 1e-4
                    fee += tax
                    tax_sum += tax
                if t1 and delta > 0:  # T+1: the shares bought in this session
                    if S[BDAY, i] != day[u]:  # the kernel's b_day / b_qty
                        S[BDAY, i] = day[u]
                        S[BQTY, i] = 0.0
                    S[BQTY, i] += delta
                for leg in range(legs):
                    _, s_after, value, comm, flow, d_value, d_gross = book_leg(
                        leg, legs, s0, delta, sh[i], fpx, mark[i], fee)
                    cash += flow
                    comm_sum += comm
                    traded += value
                    bvalue += d_value
                    bgross += d_gross
                    if guards and sh[i] == 0.0:
                        ent[i] = u  # an entry fill (the kernel's e_bar)
                    sh[i] = s_after
                    if guards and s_after == 0.0:
                        ent[i] = -1.0
    # time stops (kernel: exits, decided at t's close, filled like an order), then the marks
    vsum = 0.0
    for i in range(n):
        ci = c_arr[u, i]
        if (time_stops and sh[i] != 0.0 and ent[i] < u and ci == ci
                and time_stop_due(gp, int(ent[i]), u)):
            p = o_arr[u, i] if next_open else ci
            if p == p and (t1 or limits) and sh[i] > 0:
                if t1 and S[BDAY, i] == day[u] and S[BQTY, i] > 0.0:
                    st[MK_HELD] += 1.0  # bought this session: it cannot go today
                    p = np.nan
                elif limits and at_limit_down(p, px[P_LIM_DN, u, i]):
                    st[MK_HELD] += 1.0  # locked at limit-down: no buyer
                    p = np.nan
            if p == p:
                q = -sh[i]
                side = 1.0 if q > 0 else -1.0
                fpx = slipped(p, side, h_arr[u, i], l_arr[u, i], fp)
                legs, fee = split_fill(sh[i], q, fpx, fp)  # one leg: to flat
                if rules:
                    tax = abs(q) * fpx * (tax_s if q < 0 else tax_b) * 1e-4
                    fee += tax
                    tax_sum += tax
                _, _, value, comm, flow, _, _ = book_leg(0, legs, sh[i], q, sh[i], fpx, p, fee)
                cash += flow
                comm_sum += comm
                traded += value
                sh[i] = 0.0
                ent[i] = -1.0
                on[i] = 0.0  # a working order of an exited position is void
                _acted(st, G_TIME_STOP)
        if ci == ci:
            last[i] = ci
        if sh[i] != 0.0:
            vsum += sh[i] * last[i]
    eq = cash + vsum
    wt = S[WEIGHT]
    for i in range(n):
        wt[i] = sh[i] * last[i] / eq if sh[i] != 0.0 else 0.0
    st[CASH] = cash
    st[EQUITY] = eq
    st[COMM] = comm_sum
    st[TRADED] = traded
    st[BORROW] = borrow_sum
    st[TAX] = tax_sum
    if guards:
        g = on_close(gs, gp, eq)
        if g != G_NONE:
            _acted(st, g)


@njit(cache=True, error_model="numpy")
def env_step(t: int, action: np.ndarray, discrete: bool, px: np.ndarray, ip: np.ndarray,
             fp: np.ndarray, S: np.ndarray, st: np.ndarray, ints: np.ndarray) -> bool:
    """`action_targets` then `step_bar` in one call; False (and no step) on a bad action."""
    if not action_targets(action, discrete, ip[IP_SHORT] == 1, fp[FP_LEVERAGE], S[TARGET]):
        return False
    step_bar(t, px, ip, fp, S, st, ints)
    return True
