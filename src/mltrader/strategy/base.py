"""The strategy contract: causal inputs in, target weights out.

A strategy is a pure function ``fn(inputs, **params) -> DataFrame`` of TARGET WEIGHTS, T x N
(index = ``bars.index``, columns = ``bars.symbols``), values in [-1, 1] as fractions of equity
(negative = short). NaN in a cell means "no decision for this symbol on this bar, keep what you
hold"; 0 means "be flat". Row t may use data up to and including bar t only: the engine fills
the decision from bar t+1. Magnitudes express intent (equal shares, 1/N slots, 1/k); a risk
layer may re-size them later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pydantic

from mltrader.data.bars import Bars
from mltrader.errors import ConfigError

BEARISH_REGIMES = (0, 1)  # regime code = 2 * trend + vol; trend 0 = bear


class StrategyParams(pydantic.BaseModel):
    """Base class for strategy parameters: frozen, unknown keys rejected."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True, eq=False)
class StrategyInputs:
    """Everything a strategy may look at, all aligned on ``bars`` (time x symbols).

    ``predictions``: member name -> T x N signal centred on 0 (expected return for regressors,
    P(up) - 0.5 for classifiers), NaN where no out-of-sample prediction exists.
    ``regimes``: T x N regime codes 0..5 (2 * trend + vol; trend 0 bear, 1 neutral, 2 bull, so
    codes 0 and 1 are bearish), NaN where unknown; None when the run computed none.
    """

    bars: Bars
    predictions: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    regimes: pd.DataFrame | None = None

    @property
    def n_symbols(self) -> int:
        return len(self.bars.symbols)

    def signal(self, member: str) -> np.ndarray:
        """Predictions of ``member`` as a float (T, N) array aligned on the bars."""
        if member not in self.predictions:
            have = ", ".join(self.predictions) or "none"
            raise ConfigError(f"no predictions named {member!r} (available: {have}); "
                              "set the strategy's member to one of them")
        return self._aligned(self.predictions[member], f"predictions[{member!r}]")

    def regime_codes(self) -> np.ndarray | None:
        """Regime codes as a float (T, N) array aligned on the bars, or None."""
        if self.regimes is None:
            return None
        return self._aligned(self.regimes, "regimes")

    def frame(self, values: np.ndarray) -> pd.DataFrame:
        """Wrap a (T, N) array as a weights frame on the bars' index and symbols."""
        return pd.DataFrame(values, index=self.bars.index, columns=list(self.bars.symbols))

    def _aligned(self, df: pd.DataFrame, what: str) -> np.ndarray:
        if not isinstance(df, pd.DataFrame):
            raise ConfigError(f"{what} must be a DataFrame (time x symbols), "
                              f"got {type(df).__name__}")
        cols = list(self.bars.symbols)
        if not (df.index.equals(self.bars.index) and list(df.columns) == cols):
            extra_rows = ~df.index.isin(self.bars.index)
            if extra_rows.any():
                raise ConfigError(f"{what} has a date the bars lack ({df.index[extra_rows][0]}); "
                                  "index it on bars.index (same timezone)")
            extra_cols = [c for c in df.columns if c not in set(cols)]
            if extra_cols:
                raise ConfigError(f"{what} has a column that is not a symbol of the bars "
                                  f"({extra_cols[0]!r}); use the bars' symbols")
            df = df.reindex(index=self.bars.index, columns=cols)  # missing = NaN = no signal
        try:
            return df.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{what} holds non-numeric values; give floats") from None


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: ``fn(inputs, **params)`` and its parameter model."""

    name: str
    fn: Callable[..., pd.DataFrame]
    params: type[pydantic.BaseModel]
    needs_model: bool
    description: str
    needs_regimes: bool = False  # the pipeline then passes per-symbol regime codes
    # bars before a model-free rule can first decide (its indicators' warm-up), from its
    # params; None: the first bar where the rule's weights hold a decision
    warmup: Callable[[Any], int] | None = None
