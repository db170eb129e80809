"""Named features, chosen in the config; each maps `Bars` to a causal T x N frame."""

from __future__ import annotations

import re
from collections.abc import Callable

import pandas as pd

from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.features import indicators as ind
from mltrader.features import regimes as reg

FeatureFn = Callable[[Bars], pd.DataFrame]
FEATURES: dict[str, FeatureFn] = {}

_PATTERNS: list[tuple[re.Pattern[str], Callable[[int], FeatureFn]]] = [
    (re.compile(r"ret_(\d+)"), lambda n: lambda b: ind.returns(b.frame("close"), n)),
    (re.compile(r"sma_ratio_(\d+)"), lambda n: lambda b: ind.sma_ratio(b.frame("close"), n)),
    (re.compile(r"vol_(\d+)"), lambda n: lambda b: ind.volatility(b.frame("close"), n)),
    (re.compile(r"rsi_(\d+)"), lambda n: lambda b: ind.rsi(b.frame("close"), n) / 100.0 - 0.5),
    (re.compile(r"sma_(\d+)"),
     lambda n: lambda b: b.frame("close").rolling(n, min_periods=n).mean()),
    # 6-state regime codes 0..5 (see features.regimes): per symbol, and the market's broadcast
    (re.compile(r"regime_(\d+)"), lambda n: lambda b: reg.rolling_regimes(b.frame("close"), n)),
    (re.compile(r"market_regime_(\d+)"), lambda n: lambda b: _broadcast(
        b, reg.market_regime(b.frame("close"), n))),
]
# raw fields, for sequence models that scale their inputs themselves (the 8-input preset:
# open, high, low, close, volume, sma_20, sma_50, sma_200)
RAW_FIELDS = ("open", "high", "low", "close", "volume")


def _broadcast(bars: Bars, series: pd.Series) -> pd.DataFrame:
    """One value per bar, repeated in every symbol column."""
    return pd.DataFrame({s: series for s in bars.symbols}, index=bars.index)


def register_feature(name: str, fn: FeatureFn) -> None:
    """Add a named feature. It MUST be causal; the look-ahead tests check registered ones."""
    FEATURES[name] = fn


def resolve(name: str) -> FeatureFn:
    """The function for a feature name: a registered one, or a pattern like ``ret_5``."""
    if name in FEATURES:
        return FEATURES[name]
    if name in RAW_FIELDS:
        return lambda b: b.frame(name)
    for pat, make in _PATTERNS:
        m = pat.fullmatch(name)
        if m and int(m.group(1)) >= 1:
            return make(int(m.group(1)))
    raise ConfigError(
        f"unknown feature {name!r} in `features`; use ret_N, sma_ratio_N, vol_N, rsi_N, sma_N, "
        "regime_N, market_regime_N, open, high, low, close, volume "
        f"(N = bars){', or one of ' + ', '.join(FEATURES) if FEATURES else ''}"
    )


def compute_features(bars: Bars, names: list[str] | tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """Every named feature as a T x N frame on the bars' index, in the given order."""
    fns = [resolve(n) for n in names]  # fail on a bad name before computing anything
    out: dict[str, pd.DataFrame] = {}
    for name, fn in zip(names, fns, strict=True):
        frame = fn(bars)
        if not (frame.index is bars.index or frame.index.equals(bars.index)) or tuple(
                frame.columns) != bars.symbols:
            frame = frame.reindex(index=bars.index, columns=list(bars.symbols))
        out[name] = frame if (frame.dtypes == "float64").all() else frame.astype("float64")
    return out
