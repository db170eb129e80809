"""The regime filter: a signal threshold that only enters when the market regime allows.

Per symbol and bar: target +1/N (fixed slot, N = number of symbols) when the signal >
``buy_above`` AND the symbol's regime is not bearish (code not 0 or 1); 0 (exit) when the
signal < ``sell_below``; otherwise NaN = hold. A bearish regime blocks entries but does not
force an exit: an open long is held until the signal falls below ``sell_below``. A NaN regime
is "unknown" and treated as NOT bearish (entries allowed), so the rule does not go silent on
bars where the regime model has no history yet. A NaN signal holds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from mltrader.errors import ConfigError
from mltrader.strategy.base import BEARISH_REGIMES, StrategyInputs, StrategyParams, StrategySpec


class RegimeFilterParams(StrategyParams):
    buy_above: float = Field(0.0015, description="enter long when the signal is above this")
    sell_below: float = Field(0.0, description="exit (flat) when the signal is below this")
    member: str = Field("model", description="which predictions to use")

    @model_validator(mode="after")
    def _ordered(self) -> RegimeFilterParams:
        if self.sell_below > self.buy_above:
            raise ValueError(f"sell_below ({self.sell_below}) must not exceed "
                             f"buy_above ({self.buy_above})")
        return self


def regime_filter_strategy(inputs: StrategyInputs, buy_above: float = 0.0015,
                           sell_below: float = 0.0, member: str = "model") -> pd.DataFrame:
    """Long (+1/N) above buy_above outside bear regimes, flat below sell_below, else hold."""
    codes = inputs.regime_codes()
    if codes is None:
        raise ConfigError("the regime_filter strategy needs regimes (inputs.regimes is None); "
                          "compute the regime codes and pass them in")
    sig = inputs.signal(member)
    bearish = np.isin(codes, BEARISH_REGIMES)  # NaN (unknown) is not bearish
    weights = np.full(sig.shape, np.nan)
    with np.errstate(invalid="ignore"):
        weights[sig < sell_below] = 0.0
        weights[(sig > buy_above) & ~bearish] = 1.0 / inputs.n_symbols
    return inputs.frame(weights)


SPEC = StrategySpec(
    name="regime_filter", fn=regime_filter_strategy, params=RegimeFilterParams,
    needs_model=True, needs_regimes=True,
    description="long above buy_above unless the regime is bearish, flat below sell_below, "
                "hold between; fixed 1/N slot per symbol",
)
