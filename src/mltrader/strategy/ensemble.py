"""The ensemble vote: trade only when every available member agrees on the direction.

Per symbol and bar, over the AVAILABLE members (those with predictions in the inputs): +1/N
when every member's signal > 0, -1/N when every one is < 0 (0 instead without
``allow_short``), 0 (flat) when they disagree or one is exactly 0, and NaN ("no decision, keep
what you hold") when any available member's signal is NaN. N = number of symbols (fixed slot).
Members named in the params but absent from the predictions are skipped (see
`ensemble_missing`, for the "ran without: rl" note); none available is a ConfigError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from mltrader.errors import ConfigError
from mltrader.strategy.base import StrategyInputs, StrategyParams, StrategySpec


class EnsembleParams(StrategyParams):
    members: list[str] = Field(["lstm", "cnn", "rl"], min_length=1,
                               description="predictions keys that vote")
    allow_short: bool = Field(True, description="all members negative = short (else flat)")


def ensemble_missing(params: EnsembleParams | Mapping[str, Any] | None,
                     inputs: StrategyInputs) -> list[str]:
    """The members named in ``params`` that have no predictions in ``inputs``, in order."""
    if isinstance(params, EnsembleParams):
        members = params.members
    else:
        members = EnsembleParams.model_validate(dict(params or {})).members
    return [m for m in members if m not in inputs.predictions]


def ensemble_strategy(inputs: StrategyInputs, members: list[str] | None = None,
                      allow_short: bool = True) -> pd.DataFrame:
    """Unanimous vote of the available members: +1/N, -1/N (or 0), 0, or NaN."""
    members = list(EnsembleParams().members if members is None else members)
    available = [m for m in dict.fromkeys(members) if m in inputs.predictions]
    if not available:
        have = ", ".join(inputs.predictions) or "none"
        raise ConfigError(f"none of the ensemble members ({', '.join(members)}) has "
                          f"predictions (available: {have}); train one or change members")
    sig = np.stack([inputs.signal(m) for m in available])
    slot = 1.0 / inputs.n_symbols
    with np.errstate(invalid="ignore"):
        weights = np.where((sig > 0).all(axis=0), slot, 0.0)
        if allow_short:
            weights[(sig < 0).all(axis=0)] = -slot
    weights[np.isnan(sig).any(axis=0)] = np.nan
    return inputs.frame(weights)


SPEC = StrategySpec(
    name="ensemble", fn=ensemble_strategy, params=EnsembleParams, needs_model=True,
    description="long when all available members predict up, short when all predict down, "
                "else flat; fixed 1/N slot per symbol",
)
