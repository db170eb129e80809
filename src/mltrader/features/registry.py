"""Named features, chosen in the config; each maps `Bars` to a causal T x N frame."""

from __future__ import annotations

import re
from collections.abc import Callable
from weakref import WeakKeyDictionary

import numpy as np
import pandas as pd

from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.features import indicators as ind
from mltrader.features import news as nws
from mltrader.features import regimes as reg
from mltrader.features import sectors as sec
from mltrader.features.alpha158 import ALPHA158, alpha158

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
    # news sentiment (features/news.py): needs the config's `news:` section
    (re.compile(r"news_surprise_(\d+)"), lambda n: lambda b: nws.news_surprise(b, n)),
    (re.compile(r"news_decay_(\d+)"), lambda n: lambda b: nws.news_decay(b, n)),
    # A-share board (industry) features, bundled 2018 snapshot; NaN before 2018-07-01
    *[(re.compile(rf"sector_{k}_(\d+)"), lambda n, k=k: lambda b: sec.sector_feature(b, k, n))
      for k in sec.FEATURE_KINDS],
]
# raw fields, for sequence models that scale their inputs themselves (the 8-input preset:
# open, high, low, close, volume, sma_20, sma_50, sma_200)
RAW_FIELDS = ("open", "high", "low", "close", "volume")
# feature SETS: one config name that stands for many features (expanded by `expand_features`)
A158_PREFIX = "a158_"
FEATURE_SETS: dict[str, tuple[str, ...]] = {"alpha158": tuple(A158_PREFIX + n for n in ALPHA158)}
_A158 = frozenset(ALPHA158)
# per Bars object (by identity, dropped with it): the Alpha158 frames computed so far, and
# the VWAP to use for them (`set_alpha158_vwap`; else the typical price)
_A158_CACHE: WeakKeyDictionary[Bars, dict[str, pd.DataFrame]] = WeakKeyDictionary()
_A158_VWAP: WeakKeyDictionary[Bars, np.ndarray] = WeakKeyDictionary()


def _broadcast(bars: Bars, series: pd.Series) -> pd.DataFrame:
    """One value per bar, repeated in every symbol column."""
    return pd.DataFrame({s: series for s in bars.symbols}, index=bars.index)


def expand_features(names: list[str] | tuple[str, ...]) -> list[str]:
    """Names with each feature set (``alpha158``) replaced by its members, duplicates dropped."""
    out: dict[str, None] = {}
    for name in names:
        out.update(dict.fromkeys(FEATURE_SETS.get(name, (name,))))
    return list(out)


def set_alpha158_vwap(bars: Bars, vwap: np.ndarray | pd.DataFrame) -> None:
    """Use this (T, N) VWAP, on the bars' adjustment, for VWAP0 of these very bars."""
    _A158_VWAP[bars] = vwap
    _A158_CACHE.pop(bars, None)


def _alpha158_frames(bars: Bars, names: list[str]) -> dict[str, pd.DataFrame]:
    """The bars' cached Alpha158 frames, computing the missing `names` in one pass."""
    have = _A158_CACHE.setdefault(bars, {})
    missing = [n for n in names if n not in have]
    if missing:
        have.update(alpha158(bars, vwap=_A158_VWAP.get(bars), names=missing))
    return have


def _a158_feature(name: str) -> FeatureFn:
    return lambda b: _alpha158_frames(b, [name])[name].copy(deep=False)


def register_feature(name: str, fn: FeatureFn) -> None:
    """Add a named feature. It MUST be causal; the look-ahead tests check registered ones."""
    FEATURES[name] = fn


def resolve(name: str) -> FeatureFn:
    """The function for a feature name: a registered one, or a pattern like ``ret_5``."""
    if name in FEATURES:
        return FEATURES[name]
    if name in RAW_FIELDS:
        return lambda b: b.frame(name)
    if name.startswith(A158_PREFIX) and name[len(A158_PREFIX):] in _A158:
        return _a158_feature(name[len(A158_PREFIX):])
    if name in FEATURE_SETS:
        raise ConfigError(f"{name!r} is a feature set, not one feature; expand it first "
                          "(registry.expand_features) or call compute_features")
    for pat, make in _PATTERNS:
        m = pat.fullmatch(name)
        if m and int(m.group(1)) >= 1:
            return make(int(m.group(1)))
    raise ConfigError(
        f"unknown feature {name!r} in `features`; use ret_N, sma_ratio_N, vol_N, rsi_N, sma_N, "
        "regime_N, market_regime_N, sector_ret_N, sector_rel_N, sector_breadth_N, "
        "sector_rank_N (A-share boards), news_score, news_count, news_surprise_N, "
        "news_decay_N (news sentiment), open, high, low, close, volume (N = bars), the set "
        "alpha158 or one of its a158_<Qlib name> like a158_KMID"
        f"{', or one of ' + ', '.join(FEATURES) if FEATURES else ''}"
    )


def compute_features(bars: Bars, names: list[str] | tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """Every named feature as a T x N frame on the bars' index, in the given order; a feature
    set's name (``alpha158``) stands for its members, in place."""
    names = expand_features(names)
    fns = [resolve(n) for n in names]  # fail on a bad name before computing anything
    a158 = [n[len(A158_PREFIX):] for n in names if n.startswith(A158_PREFIX)]
    if a158:  # the requested Alpha158 factors in one shared pass
        _alpha158_frames(bars, [n for n in a158 if n in _A158])
    out: dict[str, pd.DataFrame] = {}
    for name, fn in zip(names, fns, strict=True):
        frame = fn(bars)
        if not (frame.index is bars.index or frame.index.equals(bars.index)) or tuple(
                frame.columns) != bars.symbols:
            frame = frame.reindex(index=bars.index, columns=list(bars.symbols))
        out[name] = frame if (frame.dtypes == "float64").all() else frame.astype("float64")
    return out


# fund_*: A-share fundamentals from point-in-time statements (features/fundamentals.py)
from mltrader.features.fundamentals import FUNDAMENTAL_FEATURES  # noqa: E402

for _name, _fn in FUNDAMENTAL_FEATURES.items():
    register_feature(_name, _fn)

# news_*: news sentiment aligned to bars (features/news.py)
for _name, _fn in nws.NEWS_FEATURES.items():
    register_feature(_name, _fn)
