"""The engine's cost model as a small public object, for callers outside the compiled loop.

The paper broker fills live orders with exactly the functions the backtest kernel compiles in
(slippage in bps and as a share of the bar's range, half-spread, commission per share with
a minimum, bps of value, fixed per order), so a paper fill and a backtest fill of the same
order on the same bar cost the same.
"""

from __future__ import annotations

from mltrader.core import fills
from mltrader.core.params import MODE_TARGETS, pack
from mltrader.core.settings import EngineSettings


class CostModel:
    """Fill prices and commissions under an `EngineSettings`."""

    def __init__(self, settings: EngineSettings, close_only: bool = False) -> None:
        self.settings = settings
        _, self._fp = pack(settings, MODE_TARGETS, close_only)

    def fill_price(self, price: float, side: float, high: float, low: float) -> float:
        """The price paid (side +1 buy, -1 sell) after slippage and the half-spread."""
        return float(fills.slipped(float(price), float(side), float(high), float(low), self._fp))

    def commission(self, qty: float, value: float) -> float:
        """Commission of one fill of `qty` shares worth `value`."""
        return float(fills.commission(float(qty), float(value), self._fp))


def limit_fill_price(side: float, limit: float, open_: float, high: float, low: float
                     ) -> float:
    """The engine's limit fill: the open when already better, else the limit if touched;
    NaN when the bar does not reach it."""
    return float(fills.limit_price(float(side), float(limit), float(open_), float(high),
                                   float(low)))
