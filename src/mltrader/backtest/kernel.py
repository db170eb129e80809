"""The compiled simulation loop: one pass over bars, per-symbol state in flat arrays.

Everything here is numba-compiled (``cache=True``) and works on plain numpy arrays: no
per-bar Python objects. `engine.py` packs settings into the `IP_*` / `FP_*` parameter
vectors (`core.params.pack`), calls `simulate`, and turns the record arrays into DataFrames.
How an order fills and what it costs (`core.fills`) and how a target becomes shares
(`core.orders`) come from the execution core, which the paper broker uses too; what a fill
does to cash, shares and the book's value (`core.book`) is shared with the RL environment's
step (`rl/execution.py`).

Per bar t (from `start`): borrow fees on shorts; working orders try to fill (orders that
reduce exposure first, then the rest); stops / targets / trailing stops of positions opened
before t; mark to the close; then the decision taken on t's close creates or replaces orders,
which can fill from t+1 on.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mltrader.core.book import book_leg, split_fill
from mltrader.core.fills import order_price, slipped
from mltrader.core.market import at_limit_down, at_limit_up, lot_round
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
    FP_LIMIT_OFF,
    FP_LOT,
    FP_MIN_ORDER,
    FP_SIZE_BUF,
    FP_SIZE_FRAC,
    FP_SL,
    FP_SLIP_BPS,
    FP_SPREAD,
    FP_STOP_OFF,
    FP_TP,
    FP_TS,
    FP_VOL_SHARE,
    IP_GTC,
    IP_GUARDS,
    IP_LIMITS,
    IP_MODE,
    IP_NEXT_OPEN,
    IP_ORDER_TYPE,
    IP_REJECT,
    IP_SHORT,
    IP_SIZE_DECISION,
    IP_T1,
    IP_UNIT_SHARES,
    IP_WAIT,
    IP_WHOLE,
    LIMIT,
    MARKET,
    MODE_SIGNALS,
    MODE_TARGETS,
)
from mltrader.risk.exits import exit_levels
from mltrader.risk.guards import (
    G_DAILY_LOSS,
    G_KILL,
    G_MAX_POSITION,
    G_NONE,
    GP_TIME_STOP,
    flatten_reason,
    gate_fill,
    gate_order,
    new_state,
    on_close,
    position_room,
    record_fill,
    start_bar,
    time_stop_due,
)

KIND_TARGET, KIND_ENTER = 0, 1
# fill / trade-exit reasons
R_ORDER, R_STOP, R_TARGET, R_TRAIL, R_END, R_DAILY_LOSS, R_KILL, R_TIME = range(8)
# order statuses
S_WORKING, S_FILLED, S_CANCELLED, S_REJECTED, S_REPLACED, S_PARTIAL = 0, 1, 2, 3, 4, 5
# order status reasons
(W_NONE, W_NO_PRICE, W_NOT_REACHED, W_CASH, W_LEVERAGE, W_NO_SHORT, W_REPLACED, W_EXITED,
 W_VOLUME, W_ZERO, W_RESIZED) = range(11)
W_GUARD = 10  # a risk guard's reason is W_GUARD + its G_ code (risk/guards.py): 11..16
W_MAX_POSITION = W_GUARD + G_MAX_POSITION
# a market's rules (core/market.py): limit-up / limit-down locks, T+1, board lots
W_LIMIT_UP, W_LIMIT_DOWN, W_T1, W_LOT = 17, 18, 19, 20  # after the guards (11..16)
# exits a market's rule held back (counted): T+1, limit-down lock
X_T1, X_LIMIT_DOWN = 0, 1
# order origins: 0 the strategy, else the guard whose flatten order it is
ORIGIN_STRATEGY = 0

_EPS = 1e-9


@njit(cache=True, error_model="numpy")
def simulate(o_arr, h_arr, l_arr, c_arr, v_arr, tw, ent, ext, sent, sext, book_of, n_books,
             start, ip, fp, cap, day, gp, lim_up, lim_dn, sell_tax, buy_tax, payout):
    """Run the simulation; returns output arrays and record tables (see engine.py).

    A market's rules (core/market.py): `lim_up` / `lim_dn` are each bar's limit prices (read
    when IP_LIMITS is set; a buy whose price is at limit-up, a sell at limit-down, does not
    fill), `sell_tax` / `buy_tax` each bar's taxes in bps, `payout` the cash a held share
    receives at a bar (ex-rights days; (1, 1) when none); FP_LOT board lots, IP_T1 T+1.

    `book_of` maps symbols to books: all 0 (one account) or 0..n-1 (a book per symbol).
    `day` is each bar's session number and `gp` the guard parameters (risk/guards.py); the
    guards act on the whole portfolio (all books together).

    `cap` is the size of the record tables; when they would overflow the run stops early
    with `overflow` True and the caller runs it again with more room (growing the tables
    inside the loop made it several times slower).
    """
    t_len, n = c_arr.shape
    rows = t_len - start
    # outputs are written in full for every bar, so they need no zero-fill pass
    eq_out = np.empty((rows, n_books))
    cash_out = np.empty(rows)  # all books together
    pos_out = np.empty((rows, n))
    overflow = False
    borrow_out = np.zeros(n_books)
    # records: fills (bar, sym, qty, price, commission, slippage, order id, reason)
    f_i = np.zeros((cap, 4), dtype=np.int64)
    f_f = np.zeros((cap, 4))
    nf = 0
    # trades: int (sym, entry_bar, exit_bar, reason, open) float (entry px, exit px, max qty,
    # pnl, return, mae, mfe)
    tr_i = np.zeros((cap, 5), dtype=np.int64)
    tr_f = np.zeros((cap, 7))
    nt = 0
    # orders: int (id, sym, created, type, kind, status, reason, last bar, origin, sized in
    # shares at the decision) float (value, limit, stop, filled qty)
    od_i = np.zeros((cap, 10), dtype=np.int64)
    od_f = np.zeros((cap, 4))
    nod = 0

    cash = np.full(n_books, fp[FP_CASH])
    sh = np.zeros(n)
    last = np.full(n, np.nan)
    e_bar = np.full(n, -1, dtype=np.int64)
    e_px = np.zeros(n)
    best = np.zeros(n)
    adv = np.zeros(n)
    fav = np.zeros(n)
    inv = np.zeros(n)
    rec = np.zeros(n)
    maxq = np.zeros(n)
    # working order per symbol (row index into the order table, -1 if none)
    o_row = np.full(n, -1, dtype=np.int64)
    o_fixed = np.full(n, np.nan)
    trig = np.zeros(n, dtype=np.int64)
    mark = np.zeros(n)
    act = np.zeros(n, dtype=np.int64)
    bvalue = np.zeros(n_books)
    bgross = np.zeros(n_books)
    vsum = np.zeros(n_books)  # value of each book's positions at this bar's close

    next_open = ip[IP_NEXT_OPEN] == 1
    whole = ip[IP_WHOLE] == 1
    allow_short = ip[IP_SHORT] == 1
    lev = fp[FP_LEVERAGE]
    sl, tp, ts = fp[FP_SL], fp[FP_TP], fp[FP_TS]
    guards = ip[IP_GUARDS] == 1
    size_decision = ip[IP_SIZE_DECISION] == 1
    buy_bps = fp[FP_SLIP_BPS] + fp[FP_SPREAD] + fp[FP_COMM_BPS]
    unit_shares = ip[IP_UNIT_SHARES] == 1
    gs, sym_orders = new_state(fp[FP_CASH] * n_books, n)
    eq_last = fp[FP_CASH] * n_books
    has_exits = sl > 0 or tp > 0 or ts > 0 or (guards and gp[GP_TIME_STOP] > 0)
    borrow = fp[FP_BORROW]
    vol_share = fp[FP_VOL_SHARE]
    any_orders = 0
    lot = fp[FP_LOT]
    t1 = ip[IP_T1] == 1
    limits = ip[IP_LIMITS] == 1
    has_payout = payout.shape[0] == t_len
    b_day = np.full(n, -1, dtype=np.int64)  # T+1: the session of the last buy ...
    b_qty = np.zeros(n)  # ... and the shares bought in it
    held_back = np.zeros(2, dtype=np.int64)  # exits a market's rule held back (X_*)
    paid_out = 0.0
    xr = np.ones(n)  # ex-rights factor of each position's entry price since its entry

    for t in range(start, t_len):
        k = t - start
        if guards:
            start_bar(gs, sym_orders, day[t], eq_last)
        # ---------------------------------------------------------------- borrow fees
        if borrow > 0 and t > start:
            for i in range(n):
                if sh[i] < 0 and last[i] == last[i]:
                    fee = -sh[i] * last[i] * borrow
                    cash[book_of[i]] -= fee
                    borrow_out[book_of[i]] += fee
                    inv[i] += fee
        # ---------------------------------------------------------------- ex-rights payouts
        if has_payout and t > start:
            for i in range(n):
                if sh[i] != 0.0 and payout[t, i] != 0.0:
                    cash_in = sh[i] * payout[t, i]
                    cash[book_of[i]] += cash_in
                    rec[i] += cash_in
                    paid_out += cash_in
                    if last[i] > 0.0:  # stops and targets move with the ex-rights price
                        ratio = 1.0 - payout[t, i] / last[i]
                        xr[i] *= ratio
                        best[i] *= ratio
        tax_b = buy_tax[t]
        tax_s = sell_tax[t]
        # ---------------------------------------------------------------- working orders
        if any_orders > 0:
            na = 0  # the symbols with a working order
            for i in range(n):
                if o_row[i] >= 0:
                    act[na] = i
                    na += 1
            if n_books == 1:  # one account: value every position at this bar's prices
                bvalue[0] = cash[0]
                bgross[0] = 0.0
                for i in range(n):
                    px = o_arr[t, i] if next_open else c_arr[t, i]
                    mk = px if px == px else last[i]
                    mark[i] = mk
                    if sh[i] != 0.0:
                        bvalue[0] += sh[i] * mk
                        bgross[0] += abs(sh[i]) * mk
            else:  # a book per symbol: only the books with an order need valuing
                for a in range(na):
                    i = act[a]
                    b = book_of[i]
                    px = o_arr[t, i] if next_open else c_arr[t, i]
                    mk = px if px == px else last[i]
                    mark[i] = mk
                    bvalue[b] = cash[b] + sh[i] * mk
                    bgross[b] = abs(sh[i]) * mk
            for phase in range(2):  # 0: orders that reduce exposure, 1: the rest
                for a in range(na):
                    i = act[a]
                    r = o_row[i]
                    if r < 0:
                        continue
                    b = book_of[i]
                    if next_open:
                        bo, bh, bl = o_arr[t, i], h_arr[t, i], l_arr[t, i]
                    else:
                        bo = c_arr[t, i]
                        bh = bo
                        bl = bo
                    kind = od_i[r, 4]
                    # desired quantity change, at the bar's reference price
                    if not (bo == bo):
                        if phase == 1:
                            if ip[IP_GTC] == 0 and o_fixed[i] != o_fixed[i]:
                                od_i[r, 5] = S_CANCELLED
                                od_i[r, 6] = W_NO_PRICE
                                od_i[r, 7] = t
                                o_row[i] = -1
                                any_orders -= 1
                        continue
                    typ = od_i[r, 3]
                    val = od_f[r, 0]
                    if o_fixed[i] == o_fixed[i]:
                        delta = o_fixed[i]
                    elif kind == KIND_TARGET:
                        ref = bo if typ == MARKET else (od_f[r, 1] if typ == LIMIT else od_f[r, 2])
                        if unit_shares or od_i[r, 9] == 1:  # a share count already
                            desired = np.trunc(val) if whole else val
                        else:
                            desired = target_shares(val, bvalue[b], ref, sh[i],
                                                    buy_bps + tax_b, whole)
                        # decision-sized orders had their band check at the decision
                        delta = order_delta(desired, sh[i], ref, bvalue[b],
                                            0.0 if od_i[r, 9] == 1 else fp[FP_BAND])
                    else:  # entry sized from cash at the fill price
                        ref = bo if typ == MARKET else (od_f[r, 1] if typ == LIMIT else od_f[r, 2])
                        paid = slipped(ref, val, bh, bl, fp)  # size at the price paid
                        q = fp[FP_SIZE_FRAC] * cash[b] / (paid * (1.0 + fp[FP_SIZE_BUF]))
                        if whole:
                            q = np.floor(q)
                        delta = q * val
                    reduces = delta != 0.0 and abs(sh[i] + delta) < abs(sh[i])
                    if (phase == 0) != reduces:
                        continue
                    if delta == 0.0:
                        od_i[r, 5] = S_FILLED if od_f[r, 3] != 0 else S_CANCELLED
                        od_i[r, 6] = W_NONE if od_f[r, 3] != 0 else W_ZERO
                        od_i[r, 7] = t
                        o_row[i] = -1
                        o_fixed[i] = np.nan
                        any_orders -= 1
                        continue
                    side = 1.0 if delta > 0 else -1.0
                    ref_px = order_price(typ, side, od_f[r, 1], od_f[r, 2], trig, i, bo, bh, bl)
                    status_reason = W_NONE
                    if ref_px == ref_px and guards:
                        g = gate_fill(gs, gp, not reduces, ref_px, last[i])
                        if g != G_NONE:
                            od_i[r, 5] = S_REJECTED
                            od_i[r, 6] = W_GUARD + g
                            od_i[r, 7] = t
                            o_row[i] = -1
                            o_fixed[i] = np.nan
                            trig[i] = 0
                            any_orders -= 1
                            continue
                    if ref_px == ref_px and (limits or t1):
                        why_not = W_NONE
                        if limits and delta > 0 and at_limit_up(ref_px, lim_up[t, i]):
                            why_not = W_LIMIT_UP
                        elif limits and delta < 0 and at_limit_down(ref_px, lim_dn[t, i]):
                            why_not = W_LIMIT_DOWN
                        elif t1 and delta < 0 and sh[i] > 0:
                            bought = b_qty[i] if b_day[i] == day[t] else 0.0
                            if -delta > sh[i] - bought:  # only yesterday's shares may go
                                delta = -(sh[i] - bought)
                                status_reason = W_T1
                                if delta == 0.0:
                                    why_not = W_T1
                        if why_not != W_NONE:
                            od_i[r, 5] = S_REJECTED
                            od_i[r, 6] = why_not
                            od_i[r, 7] = t
                            o_row[i] = -1
                            o_fixed[i] = np.nan
                            trig[i] = 0
                            any_orders -= 1
                            continue
                    if ref_px == ref_px:
                        # shorting rule: never go below zero without allow_short
                        if not allow_short and sh[i] + delta < -_EPS:
                            delta = -sh[i]
                            status_reason = W_NO_SHORT
                        # liquidity
                        rest = 0.0
                        if vol_share > 0:
                            vol = v_arr[t, i]
                            cap_q = vol * vol_share if vol == vol else np.inf
                            if whole:
                                cap_q = np.floor(cap_q)
                            if abs(delta) > cap_q:
                                rest = delta - side * cap_q
                                delta = side * cap_q
                        fpx = slipped(ref_px, side, bh, bl, fp)
                        # cash and leverage limits on trades that add exposure
                        if not reduces and delta != 0.0:
                            q_ok = abs(delta)
                            q_lev = leverage_room(sh[i], delta, mark[i], bvalue[b], bgross[b],
                                                  lev)
                            if q_lev < q_ok:
                                q_ok = q_lev
                                status_reason = W_LEVERAGE
                            if guards:
                                q_pos = position_room(gp, sh[i], mark[i], bvalue[b])
                                if q_pos < q_ok:
                                    q_ok = q_pos
                                    status_reason = W_MAX_POSITION
                            if side > 0 and lev <= 1.0 + 1e-12:
                                afford = cash_room(cash[b], fpx, fp[FP_COMM_BPS] + tax_b,
                                                   fp[FP_COMM_PS], fp[FP_COMM_MIN],
                                                   fp[FP_COMM_FIXED] + fp[FP_MIN_ORDER])
                                if afford < q_ok:
                                    q_ok = afford
                                    status_reason = W_CASH
                            if q_ok < abs(delta):
                                if ip[IP_REJECT] == 1:
                                    od_i[r, 5] = S_REJECTED
                                    od_i[r, 6] = status_reason
                                    od_i[r, 7] = t
                                    o_row[i] = -1
                                    o_fixed[i] = np.nan
                                    any_orders -= 1
                                    continue
                                if whole:
                                    q_ok = np.floor(q_ok)
                                delta = side * q_ok
                                rest = 0.0
                        if lot > 1.0 and delta != 0.0:  # board lots (odd lots sold whole)
                            lotted = lot_round(delta, sh[i], lot)
                            if lotted != delta:
                                rest = 0.0
                                if lotted == 0.0:
                                    status_reason = W_LOT
                                delta = lotted
                        if delta != 0.0:
                            if nf + 2 > cap or nt + 2 > cap:
                                overflow = True
                                break
                            if guards:
                                record_fill(gs)
                            origin = od_i[r, 8]
                            why_fill = R_ORDER
                            if origin == G_DAILY_LOSS:
                                why_fill = R_DAILY_LOSS
                            elif origin == G_KILL:
                                why_fill = R_KILL
                            s0 = sh[i]
                            # a fill that flips the sign is a close plus an open
                            legs, fee = split_fill(s0, delta, fpx, fp)
                            fee += abs(delta) * fpx * (tax_s if delta < 0 else tax_b) * 1e-4
                            if t1 and delta > 0:
                                if b_day[i] != day[t]:
                                    b_day[i] = day[t]
                                    b_qty[i] = 0.0
                                b_qty[i] += delta
                            for leg in range(legs):
                                q, s_after, _, comm, flow, d_value, d_gross = book_leg(
                                    leg, legs, s0, delta, sh[i], fpx, mark[i], fee)
                                cash[b] += flow
                                f_i[nf, 0] = t
                                f_i[nf, 1] = i
                                f_i[nf, 2] = od_i[r, 0]
                                f_i[nf, 3] = why_fill
                                f_f[nf, 0] = q
                                f_f[nf, 1] = fpx
                                f_f[nf, 2] = comm
                                f_f[nf, 3] = abs(q) * abs(fpx - ref_px)
                                nf += 1
                                bvalue[b] += d_value
                                bgross[b] += d_gross
                                if sh[i] == 0.0:
                                    e_bar[i] = t
                                    e_px[i] = fpx
                                    xr[i] = 1.0
                                    best[i] = fpx
                                    adv[i] = fpx
                                    fav[i] = fpx
                                    inv[i] = 0.0
                                    rec[i] = 0.0
                                    maxq[i] = 0.0
                                if flow < 0:
                                    inv[i] -= flow
                                else:
                                    rec[i] += flow
                                sh[i] = s_after
                                if abs(sh[i]) > abs(maxq[i]):
                                    maxq[i] = sh[i]
                                if sh[i] == 0.0:
                                    nt = _close_trade(tr_i, tr_f, nt, i, e_bar[i], t, why_fill, 0,
                                                      e_px[i], fpx, maxq[i], rec[i] - inv[i],
                                                      adv[i], fav[i])
                                    e_bar[i] = -1
                            od_f[r, 3] += delta
                        # what is left of the order
                        if rest != 0.0 and ip[IP_WAIT] == 1:
                            o_fixed[i] = rest
                            od_i[r, 5] = S_PARTIAL
                            od_i[r, 7] = t
                            continue
                        filled_any = od_f[r, 3] != 0.0
                        status = S_FILLED
                        if rest != 0.0:
                            status = S_PARTIAL if filled_any else S_CANCELLED
                            status_reason = W_VOLUME
                        elif status_reason == W_CASH or status_reason == W_LEVERAGE:
                            if delta != 0.0:
                                status_reason = W_RESIZED
                            else:
                                status = S_REJECTED
                        elif status_reason == W_MAX_POSITION and delta == 0.0:
                            status = S_REJECTED
                        elif status_reason == W_NO_SHORT and not filled_any:
                            status = S_REJECTED
                        elif (status_reason == W_LOT or status_reason == W_T1) and delta == 0.0:
                            status = S_REJECTED
                        od_i[r, 5] = status
                        od_i[r, 6] = status_reason
                        od_i[r, 7] = t
                        o_row[i] = -1
                        o_fixed[i] = np.nan
                        trig[i] = 0
                        any_orders -= 1
                    elif ip[IP_GTC] == 0 and o_fixed[i] != o_fixed[i]:
                        od_i[r, 5] = S_CANCELLED
                        od_i[r, 6] = W_NOT_REACHED
                        od_i[r, 7] = t
                        o_row[i] = -1
                        trig[i] = 0
                        any_orders -= 1
                if overflow:
                    break
            if overflow:
                break
        # ---------------------------------------------------------------- exits and marks
        for i in range(n):
            ci = c_arr[t, i]
            if sh[i] != 0.0 and has_exits and e_bar[i] < t and ci == ci:
                oi, hi, li = o_arr[t, i], h_arr[t, i], l_arr[t, i]
                lng = sh[i] > 0
                px = np.nan
                why = R_STOP
                if guards and time_stop_due(gp, e_bar[i], t):
                    # decided at the previous close: fills like an order, at this bar's fill price
                    px = oi if next_open else ci
                    why = R_TIME
                else:
                    lvl, trailing, tgt = exit_levels(lng, e_px[i] * xr[i], best[i], sl, tp, ts)
                    if trailing:
                        why = R_TRAIL
                    if lng:
                        if oi <= lvl:
                            px = oi
                        elif li <= lvl:
                            px = lvl
                        elif tgt == tgt:
                            why = R_TARGET
                            if oi >= tgt:
                                px = oi
                            elif hi >= tgt:
                                px = tgt
                    else:
                        if oi >= lvl:
                            px = oi
                        elif hi >= lvl:
                            px = lvl
                        elif tgt == tgt:
                            why = R_TARGET
                            if oi <= tgt:
                                px = oi
                            elif li <= tgt:
                                px = tgt
                if px == px and (t1 or limits) and lng:
                    if t1 and b_day[i] == day[t] and b_qty[i] > 0.0:
                        held_back[X_T1] += 1  # bought this session: it cannot go today
                        px = np.nan
                    elif limits and at_limit_down(px, lim_dn[t, i]):
                        held_back[X_LIMIT_DOWN] += 1  # locked at limit-down: no buyer
                        px = np.nan
                if px == px:
                    if nf + 1 > cap or nt + 1 > cap:
                        overflow = True
                        break
                    q = -sh[i]
                    side = 1.0 if q > 0 else -1.0
                    fpx = slipped(px, side, hi, li, fp)
                    legs, fee = split_fill(sh[i], q, fpx, fp)  # one leg: to flat
                    fee += abs(q) * fpx * (tax_s if q < 0 else tax_b) * 1e-4
                    _, _, _, comm, flow, _, _ = book_leg(0, legs, sh[i], q, sh[i], fpx, px, fee)
                    b = book_of[i]
                    cash[b] += flow
                    f_i[nf, 0] = t
                    f_i[nf, 1] = i
                    f_i[nf, 2] = -1
                    f_i[nf, 3] = why
                    f_f[nf, 0] = q
                    f_f[nf, 1] = fpx
                    f_f[nf, 2] = comm
                    f_f[nf, 3] = abs(q) * abs(fpx - px)
                    nf += 1
                    if flow < 0:
                        inv[i] -= flow
                    else:
                        rec[i] += flow
                    if lng:
                        adv[i] = min(adv[i], min(li, px))
                        fav[i] = max(fav[i], min(hi, max(px, oi)))
                    else:
                        adv[i] = max(adv[i], max(hi, px))
                        fav[i] = min(fav[i], max(li, min(px, oi)))
                    sh[i] = 0.0
                    nt = _close_trade(tr_i, tr_f, nt, i, e_bar[i], t, why, 0, e_px[i], fpx,
                                      maxq[i], rec[i] - inv[i], adv[i], fav[i])
                    e_bar[i] = -1
                    if o_row[i] >= 0:  # a working order of an exited position is void
                        r = o_row[i]
                        od_i[r, 5] = S_CANCELLED
                        od_i[r, 6] = W_EXITED
                        od_i[r, 7] = t
                        o_row[i] = -1
                        o_fixed[i] = np.nan
                        any_orders -= 1
            if ci == ci:
                last[i] = ci
                if sh[i] != 0.0 and e_bar[i] < t:
                    hi = h_arr[t, i]
                    li = l_arr[t, i]
                    if sh[i] > 0:
                        if hi > best[i]:
                            best[i] = hi
                        if li < adv[i]:
                            adv[i] = li
                        if hi > fav[i]:
                            fav[i] = hi
                    else:
                        if li < best[i]:
                            best[i] = li
                        if hi > adv[i]:
                            adv[i] = hi
                        if li < fav[i]:
                            fav[i] = li
            # the same pass records the position and its value at the close
            pos_out[k, i] = sh[i]
            if sh[i] != 0.0:
                vsum[book_of[i]] += sh[i] * last[i]
        if overflow:
            break
        total_cash = 0.0
        eq_last = 0.0
        for b in range(n_books):
            eq_out[k, b] = cash[b] + vsum[b]
            eq_last += eq_out[k, b]
            vsum[b] = 0.0
            total_cash += cash[b]
        cash_out[k] = total_cash
        flat_why = G_NONE
        if guards:
            on_close(gs, gp, eq_last)
            flat_why = flatten_reason(gs)
        # ---------------------------------------------------------------- decisions
        if t == t_len - 1:
            break
        mode = ip[IP_MODE]
        for i in range(n):
            make = False
            kind = KIND_TARGET
            val = 0.0
            origin = ORIGIN_STRATEGY
            if flat_why != G_NONE and sh[i] != 0.0:
                # a guard tripped: flatten at the next fill, whatever the strategy says
                if o_row[i] >= 0 and od_i[o_row[i], 8] == flat_why:
                    continue  # its flatten order is still working
                make = True
                origin = flat_why
            elif mode == MODE_TARGETS:
                w = tw[t, i]
                # flat and told to stay flat, nothing working: no order to record
                if w == w and not (w == 0.0 and sh[i] == 0.0 and o_row[i] < 0):
                    make = True
                    val = w
            else:
                if sh[i] > 0 and ext[t, i]:
                    make = True
                elif sh[i] < 0 and sext[t, i]:
                    make = True
                elif sh[i] == 0.0 and o_row[i] < 0:
                    if ent[t, i]:
                        make = True
                        kind = KIND_ENTER
                        val = 1.0
                    elif allow_short and sent[t, i]:
                        make = True
                        kind = KIND_ENTER
                        val = -1.0
            if not make:
                continue
            if nod + 1 > cap:
                overflow = True
                break
            sized = 0
            if (size_decision and mode == MODE_TARGETS and kind == KIND_TARGET
                    and not unit_shares):
                # a live bot fixes the share count at the decision close: so does this
                px_d = c_arr[t, i] if c_arr[t, i] == c_arr[t, i] else last[i]
                eq_d = eq_out[k, book_of[i]]
                if px_d == px_d and px_d > 0:
                    want_sh = target_shares(val, eq_d, px_d, sh[i], buy_bps, whole)
                    if (origin == ORIGIN_STRATEGY and o_row[i] < 0
                            and order_delta(want_sh, sh[i], px_d, eq_d, fp[FP_BAND]) == 0.0):
                        continue  # inside the band (or nothing to do): no order
                    val = want_sh
                    sized = 1
            blocked = G_NONE
            if guards and origin == ORIGIN_STRATEGY:
                if kind == KIND_ENTER:
                    adds = True
                else:
                    held = sh[i] * last[i] if sh[i] != 0.0 else 0.0
                    want = (val * last[i] if unit_shares or sized == 1
                            else val * eq_out[k, book_of[i]])
                    adds = abs(want) > abs(held) * (1.0 + 1e-9) or want * held < 0.0
                blocked = gate_order(gs, gp, sym_orders, i, adds)
            if o_row[i] >= 0 and blocked == G_NONE:
                r = o_row[i]
                od_i[r, 5] = S_REPLACED
                od_i[r, 6] = W_REPLACED
                od_i[r, 7] = t
                any_orders -= 1
            typ = ip[IP_ORDER_TYPE]
            if (mode == MODE_SIGNALS and kind == KIND_TARGET) or origin != ORIGIN_STRATEGY:
                typ = MARKET  # exits and flattening are market orders
            ref = c_arr[t, i]
            if not (ref == ref):
                ref = last[i]
            side = 1.0
            if kind == KIND_ENTER:
                side = val
            else:  # buy if the target value is above the current holding, else sell
                held = sh[i] * last[i] if sh[i] != 0.0 else 0.0
                want = (val * last[i] if unit_shares or sized == 1
                        else val * eq_out[k, book_of[i]])
                if want < held:
                    side = -1.0
            lim = ref * (1.0 - side * fp[FP_LIMIT_OFF] * 1e-4)
            stp = ref * (1.0 + side * fp[FP_STOP_OFF] * 1e-4)
            od_i[nod, 0] = nod
            od_i[nod, 1] = i
            od_i[nod, 2] = t
            od_i[nod, 3] = typ
            od_i[nod, 4] = kind
            od_i[nod, 5] = S_WORKING
            od_i[nod, 6] = W_NONE
            od_i[nod, 7] = t
            od_f[nod, 0] = val
            od_f[nod, 1] = lim
            od_f[nod, 2] = stp
            od_f[nod, 3] = 0.0
            od_i[nod, 8] = origin
            od_i[nod, 9] = sized
            if blocked != G_NONE:  # recorded, never working
                od_i[nod, 5] = S_REJECTED
                od_i[nod, 6] = W_GUARD + blocked
                nod += 1
                continue
            o_row[i] = nod
            o_fixed[i] = np.nan
            trig[i] = 0
            nod += 1
            any_orders += 1
        if overflow:
            break
    # open trades at the end, marked at the last close
    for i in range(n):
        if overflow:
            break
        if sh[i] != 0.0:
            if nt + 1 > cap:
                overflow = True
                break
            nt = _close_trade(tr_i, tr_f, nt, i, e_bar[i], t_len - 1, R_END, 1, e_px[i],
                              last[i], maxq[i], rec[i] + sh[i] * last[i] - inv[i], adv[i],
                              fav[i])
    return (overflow, eq_out, cash_out, pos_out, borrow_out, f_i[:nf], f_f[:nf], tr_i[:nt],
            tr_f[:nt], od_i[:nod], od_f[:nod], held_back, paid_out)


@njit(cache=True, error_model="numpy")
def _close_trade(tr_i, tr_f, nt, i, entry_bar, exit_bar, reason, is_open, entry_px, exit_px,
                 max_qty, pnl, adv, fav):
    tr_i[nt, 0] = i
    tr_i[nt, 1] = entry_bar
    tr_i[nt, 2] = exit_bar
    tr_i[nt, 3] = reason
    tr_i[nt, 4] = is_open
    tr_f[nt, 0] = entry_px
    tr_f[nt, 1] = exit_px
    tr_f[nt, 2] = max_qty
    tr_f[nt, 3] = pnl
    basis = abs(max_qty) * entry_px
    tr_f[nt, 4] = pnl / basis if basis > 0 else 0.0
    if max_qty > 0:
        tr_f[nt, 5] = adv / entry_px - 1.0
        tr_f[nt, 6] = fav / entry_px - 1.0
    else:
        tr_f[nt, 5] = 1.0 - adv / entry_px
        tr_f[nt, 6] = 1.0 - fav / entry_px
    return nt + 1
