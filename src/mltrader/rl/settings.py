"""Which `EngineSettings` the RL environment can trade under, and a clear error for the rest.

Supported (the backtest's MODE_TARGETS market-order path): fill next_open / next_close,
size_at fill / decision, whole_shares, allow_short, commission (bps, per share, minimum,
fixed), slippage (bps, share of the bar's range), half spread, borrow fees on shorts,
rebalance_band, max_gross_leverage, oversize resize / reject, tif (a market order only
waits when its symbol has no price on the fill bar), and the risk guards (`Guards`: daily
loss limit, kill switch, trades per day, orders per symbol per day, price sanity, max
position, time stop), applied by the functions the backtest kernel calls, and a market's own
rules (`market`: A-shares' lots, T+1, price limits, taxes, minimum commission, ex-rights
payouts, with `PortfolioEnv(rules=...)`). Settings the
target path never reads (size_fraction, size_buffer, the limit / stop offsets of market
orders) are accepted as the backtest accepts them.

Refused with `UnsupportedSettingError` (a `ValueError`) naming the setting, never ignored:
limit / stop / stop-limit orders, volume caps (max_volume_share), stop_loss, take_profit,
trailing_stop (and any guard listed in `_UNSUPPORTED_GUARDS`: none today).
"""

from __future__ import annotations

from dataclasses import fields

from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.errors import MltraderError
from mltrader.risk.guards import Guards

# risk guards the environment does not apply yet (each refused by name); empty: all apply
_UNSUPPORTED_GUARDS: tuple[str, ...] = ()
_GUARD_FIELDS = tuple(f.name for f in fields(Guards))


class UnsupportedSettingError(MltraderError, ValueError):
    """An engine setting the RL environment does not simulate (yet)."""


def check_settings(settings: EngineSettings, bars: Bars) -> None:
    """Raise `UnsupportedSettingError` for the first setting `PortfolioEnv` cannot honour."""
    s = settings
    if s.order_type != "market":
        raise UnsupportedSettingError(
            f"order_type={s.order_type!r} is not supported by the RL environment (market "
            "orders only); use order_type='market'")
    if s.max_volume_share is not None:
        raise UnsupportedSettingError(
            f"max_volume_share={s.max_volume_share!r} is not supported by the RL environment "
            "(no volume caps); set max_volume_share=None")
    for name in ("stop_loss", "take_profit", "trailing_stop"):
        if getattr(s, name) is not None:
            raise UnsupportedSettingError(
                f"{name}={getattr(s, name)!r} is not supported by the RL environment (no "
                f"intrabar exits); set {name}=None")
    unsupported = [k for k in _UNSUPPORTED_GUARDS if getattr(s.guards, k) is not None]
    if unsupported:
        raise UnsupportedSettingError(
            f"guards ({', '.join(unsupported)}) are not supported by the RL environment yet "
            f"(it applies {', '.join(k for k in _GUARD_FIELDS if k not in unsupported)}); "
            f"set {', '.join(unsupported)}=None")
    if s.fill == "next_open" and bars.close_only:
        raise UnsupportedSettingError(
            "fill='next_open' but the bars have closes only; use fill='next_close'")
