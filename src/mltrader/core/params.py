"""The engine settings packed into the flat parameter vectors the compiled code reads.

`pack` turns an `EngineSettings` into an int vector (`IP_*` slots) and a float vector
(`FP_*` slots); the backtest kernel, the fill and cost functions (`fills.py`) and the paper
broker's `CostModel` all read the same slots, so one settings object means one set of rules.
"""

from __future__ import annotations

import numpy as np

from mltrader.core.settings import EngineSettings

# ---- integer parameters
(IP_NEXT_OPEN, IP_WHOLE, IP_SHORT, IP_ORDER_TYPE, IP_GTC, IP_WAIT, IP_REJECT, IP_MODE,
 IP_UNIT_SHARES, IP_GUARDS, IP_SIZE_DECISION, IP_T1, IP_LIMITS) = range(13)
N_IP = 13
# ---- float parameters
(FP_CASH, FP_LIMIT_OFF, FP_STOP_OFF, FP_SL, FP_TP, FP_TS, FP_COMM_BPS, FP_COMM_PS,
 FP_COMM_MIN, FP_COMM_FIXED, FP_SLIP_BPS, FP_SLIP_RANGE, FP_SPREAD, FP_BORROW, FP_VOL_SHARE,
 FP_LEVERAGE, FP_SIZE_FRAC, FP_SIZE_BUF, FP_BAND, FP_LOT, FP_MIN_ORDER) = range(21)
N_FP = 21

MODE_TARGETS, MODE_SIGNALS = 0, 1
MARKET, LIMIT, STOP, STOP_LIMIT = 0, 1, 2, 3
ORDER_TYPES = {"market": MARKET, "limit": LIMIT, "stop": STOP, "stop_limit": STOP_LIMIT}


def pack(s: EngineSettings, mode: int, close_only: bool, unit_shares: bool = False
         ) -> tuple[np.ndarray, np.ndarray]:
    """The (int, float) parameter vectors of `s` for `mode` (MODE_TARGETS / MODE_SIGNALS);
    `close_only` data has no bar range, so range slippage is off; `unit_shares` targets are
    share counts instead of weights."""
    ip = np.zeros(N_IP, dtype=np.int64)
    ip[IP_UNIT_SHARES] = int(unit_shares)
    ip[IP_GUARDS] = int(s.guards.active)
    ip[IP_SIZE_DECISION] = int(s.size_at == "decision")
    ip[IP_NEXT_OPEN] = int(s.fill == "next_open")
    ip[IP_WHOLE] = int(s.whole_shares)
    ip[IP_SHORT] = int(s.allow_short)
    ip[IP_ORDER_TYPE] = ORDER_TYPES[s.order_type]
    ip[IP_GTC] = int(s.tif == "gtc")
    ip[IP_WAIT] = int(s.remainder == "wait")
    ip[IP_REJECT] = int(s.oversize == "reject")
    ip[IP_MODE] = mode
    ip[IP_T1] = int(s.market.t_plus_one)
    ip[IP_LIMITS] = int(s.market.price_limits)
    fp = np.zeros(N_FP)
    fp[FP_CASH] = s.initial_cash
    fp[FP_LIMIT_OFF] = s.limit_offset_bps
    fp[FP_STOP_OFF] = s.stop_offset_bps
    fp[FP_SL] = s.stop_loss or 0.0
    fp[FP_TP] = s.take_profit or 0.0
    fp[FP_TS] = s.trailing_stop or 0.0
    fp[FP_COMM_BPS] = s.commission_bps
    fp[FP_COMM_PS] = s.commission_per_share
    fp[FP_COMM_MIN] = s.commission_min
    fp[FP_COMM_FIXED] = s.commission_fixed
    fp[FP_SLIP_BPS] = s.slippage_bps
    fp[FP_SLIP_RANGE] = 0.0 if close_only else s.slippage_range_frac
    fp[FP_SPREAD] = s.half_spread_bps
    fp[FP_BORROW] = s.borrow_bps_per_year * 1e-4 / s.periods_per_year
    fp[FP_VOL_SHARE] = s.max_volume_share or 0.0
    fp[FP_LEVERAGE] = s.max_gross_leverage
    fp[FP_SIZE_FRAC] = s.size_fraction
    fp[FP_SIZE_BUF] = s.size_buffer
    fp[FP_BAND] = s.rebalance_band
    fp[FP_LOT] = float(s.market.lot_size)
    fp[FP_MIN_ORDER] = s.market.min_commission
    return ip, fp
