"""Which `EngineSettings` the RL environment can trade under, and a clear error for the rest.

Supported (the backtest's MODE_TARGETS market-order path): fill next_open / next_close,
size_at fill / decision, whole_shares, allow_short, commission (bps, per share, minimum,
fixed), slippage (bps, share of the bar's range), half spread, borrow fees on shorts,
rebalance_band, max_gross_leverage, oversize resize / reject, tif (a market order only
waits when its symbol has no price on the fill bar). Settings the target path never reads
(size_fraction, size_buffer, the limit / stop offsets of market orders) are accepted as the
backtest accepts them.

Refused with `UnsupportedSettingError` (a `ValueError`) naming the setting, never ignored:
limit / stop / stop-limit orders, volume caps (max_volume_share), stop_loss, take_profit,
trailing_stop and the risk guards.
"""

from __future__ import annotations

from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.errors import MltraderError


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
    if s.guards.active:
        on = [k for k, v in s.guards.__dict__.items() if v is not None]
        raise UnsupportedSettingError(
            f"guards ({', '.join(on)}) are not supported by the RL environment yet; use "
            "Guards() (all off)")
    if s.fill == "next_open" and bars.close_only:
        raise UnsupportedSettingError(
            "fill='next_open' but the bars have closes only; use fill='next_close'")
