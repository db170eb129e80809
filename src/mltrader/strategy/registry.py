"""Strategy registry: built-ins plus user strategies, validated params, checked outputs.

Write a strategy as a causal function of `StrategyInputs` returning target weights (T x N,
in [-1, 1] of equity, NaN = keep what you hold, 0 = flat) and register it::

    import pandas as pd
    from pydantic import Field
    from mltrader.strategy.base import StrategyInputs, StrategyParams
    from mltrader.strategy.registry import register_strategy, run_strategy

    class MomentumParams(StrategyParams):
        lookback: int = Field(20, ge=1, description="bars of past return")

    @register_strategy("momentum", params=MomentumParams, needs_model=False,
                       description="long the symbols that rose over the lookback")
    def momentum(inputs: StrategyInputs, lookback: int) -> pd.DataFrame:
        close = inputs.bars.frame("close")
        rose = close.pct_change(lookback) > 0      # uses bars up to t only
        return rose.astype(float) / close.shape[1]  # a 1/N slot per symbol, 0 = flat

    weights = run_strategy("momentum", inputs, {"lookback": 60})
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pydantic

from mltrader.errors import ConfigError, MltraderError
from mltrader.strategy import ensemble, ma_cross, positions, regime_filter, threshold, topk
from mltrader.strategy.base import StrategyInputs, StrategyParams, StrategySpec

__all__ = ["STRATEGIES", "StrategyInputs", "StrategyParams", "StrategySpec", "add_strategy",
           "get_strategy", "register_strategy", "run_strategy", "validate_params"]

STRATEGIES: dict[str, StrategySpec] = {}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_TOL = 1e-9  # rounding slack on the [-1, 1] bound (values are then clipped to it)


class NoParams(StrategyParams):
    """For strategies without parameters."""


def add_strategy(spec: StrategySpec, replace: bool = False) -> StrategySpec:
    """Register a ready `StrategySpec`; an existing name needs ``replace=True``."""
    if not isinstance(spec.name, str) or not _NAME.fullmatch(spec.name):
        raise ConfigError(f"strategy name {spec.name!r} is not valid; use letters, digits, "
                          "'_' or '-', starting with a letter")
    if spec.name in STRATEGIES and not replace:
        raise ConfigError(f"a strategy named {spec.name!r} is already registered; pick another "
                          "name or pass replace=True to override it")
    if not callable(spec.fn):
        raise ConfigError(f"strategy {spec.name!r}: fn must be callable")
    model = spec.params
    if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        raise ConfigError(f"strategy {spec.name!r}: params must be a pydantic model class; "
                          "subclass mltrader.strategy.base.StrategyParams")
    if model.model_config.get("extra") != "forbid" or not model.model_config.get("frozen"):
        raise ConfigError(f"strategy {spec.name!r}: params model {model.__name__} must be "
                          "frozen and forbid unknown keys; subclass StrategyParams")
    STRATEGIES[spec.name] = spec
    return spec


def register_strategy(name: str, params: type[pydantic.BaseModel] | None = None, *,
                      needs_model: bool = True, description: str | None = None,
                      replace: bool = False, needs_regimes: bool = False,
                      warmup: Callable[[Any], int] | None = None
                      ) -> Callable[[Callable[..., pd.DataFrame]], Callable[..., pd.DataFrame]]:
    """Decorator: register ``fn(inputs, **params)`` under ``name`` and return it unchanged.

    ``params``: a `StrategyParams` subclass (None = no parameters); ``description``: defaults
    to the first line of the function's docstring; ``warmup(params)``: bars a model-free
    rule needs before its first decision (default: its first non-NaN weight row).
    """

    def deco(fn: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
        doc = (fn.__doc__ or "").strip().splitlines()
        desc = description if description is not None else (doc[0] if doc else "")
        add_strategy(StrategySpec(name=name, fn=fn, params=params or NoParams,
                                  needs_model=needs_model, description=desc,
                                  needs_regimes=needs_regimes, warmup=warmup), replace=replace)
        return fn

    return deco


def get_strategy(name: str) -> StrategySpec:
    """The registered spec; an unknown name is a ConfigError listing the known ones."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown strategy {name!r}; registered: "
                          f"{', '.join(sorted(STRATEGIES))}") from None


def validate_params(name: str, params: Mapping[str, Any] | None) -> pydantic.BaseModel:
    """The strategy's params model built from ``params``; errors are one-line ConfigErrors."""
    model = get_strategy(name).params
    allowed = ", ".join(model.model_fields) or "none"
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"strategy {name!r}: params must be a mapping of keys "
                          f"(allowed: {allowed}), got {type(params).__name__}")
    try:
        return model.model_validate(dict(params))
    except pydantic.ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            msg = f"unknown parameter {loc!r}; check the spelling (allowed: {allowed})"
        else:
            text = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            got_s = "" if not loc or isinstance(got, dict) else f" (got {got!r})"
            where = f"parameter {loc!r}: " if loc else ""
            msg = f"{where}{text}{got_s} (allowed: {allowed})"
        raise ConfigError(f"strategy {name!r}: {msg}") from None


def run_strategy(name: str, inputs: StrategyInputs,
                 params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Validate ``params``, run the strategy and check its weights against the contract."""
    spec = get_strategy(name)
    model = validate_params(name, params)
    kwargs = {k: getattr(model, k) for k in type(model).model_fields}
    try:
        out = spec.fn(inputs, **kwargs)
    except MltraderError as err:
        text = str(err)
        if text.startswith(f"strategy {name!r}"):
            raise
        raise type(err)(f"strategy {name!r}: {text}") from None
    return _check_output(name, out, inputs)


def _check_output(name: str, out: Any, inputs: StrategyInputs) -> pd.DataFrame:
    bars = inputs.bars
    where = f"strategy {name!r} returned"
    if not isinstance(out, pd.DataFrame):
        raise MltraderError(f"{where} a {type(out).__name__}, not a DataFrame; return target "
                            "weights as a DataFrame (bars.index x bars.symbols)")
    if out.shape != bars.shape:
        raise MltraderError(f"{where} shape {out.shape}, expected {bars.shape} "
                            "(one row per bar, one column per symbol)")
    if not out.index.equals(bars.index):
        raise MltraderError(f"{where} an index that differs from bars.index; build the frame "
                            "on inputs.bars.index")
    if list(out.columns) != list(bars.symbols):
        raise MltraderError(f"{where} columns {list(out.columns)[:5]}..., expected the bars' "
                            "symbols in order")
    try:
        values = out.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise MltraderError(f"{where} non-numeric weights; use floats (NaN = hold)") from None
    with np.errstate(invalid="ignore"):
        bad = np.abs(values) > 1.0 + _TOL
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise MltraderError(f"{where} weight {float(values[r, c]):g} for {bars.symbols[c]} on "
                            f"{bars.index[r].date()}; weights must lie in [-1, 1] of equity")
    return pd.DataFrame(np.clip(values, -1.0, 1.0), index=bars.index,
                        columns=list(bars.symbols))


for _module in (threshold, ma_cross, regime_filter, ensemble, topk, positions):
    add_strategy(_module.SPEC)
