"""Qlib's Alpha158 price-volume factors, recomputed causally by our own code.

The 158 names and formulas follow Qlib's `Alpha158DL` (qlib/contrib/data/loader.py) and the
operator meanings of qlib/data/ops.py: 9 k-bar shapes, 4 prices over the close (window 0) and
29 rolling operators x windows (5, 10, 20, 30, 60). Written from those definitions, nothing
copied. Row t of every factor uses rows <= t only.

Deliberate differences from Qlib (why: NaN warm-ups and suspensions that are not zeros):
- windows run over each symbol's TRADED bars (rows with a finite close), not calendar rows:
  a suspension is skipped, ``Ref($close, 1)`` is the previous traded close, and a suspended
  row's factors are NaN. Qlib runs its windows over calendar rows and skips NaN inside them;
- a rolling factor is NaN until its window is full (Qlib uses ``min_periods=1``); those
  built on one-bar changes (CORD, CNTP/N/D, SUMP/N/D, WVMA, VSUMP/N/D) need d + 1 bars, and a
  comparison with a missing previous bar is NaN, not False;
- ``$vwap`` comes from the caller (`vwap`); without it the typical price (H + L + C) / 3
  stands in (our bars carry no traded amount), so VWAP0 is then a k-bar shape, not a VWAP;
- infinities (e.g. a zero previous volume in CORD) are reported as NaN.
Kept from Qlib: the 1e-12 terms exactly where its expressions have them, ``Std`` with
ddof = 1, linear-interpolated quantiles, ``Rank`` as the average-tie percentile of the last
value, 1-based first-occurrence ``IdxMax``/``IdxMin``, regressions on x = 1..d, and NaN
``Corr``/``Rsquare`` where an input's window std is within 2e-5 of zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from mltrader.data.bars import Bars
from mltrader.errors import ConfigError, DataError

KBAR: tuple[str, ...] = ("KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT",
                         "KSFT2")
PRICE: tuple[str, ...] = ("OPEN0", "HIGH0", "LOW0", "VWAP0")
ROLLING: tuple[str, ...] = (
    "ROC", "MA", "STD", "BETA", "RSQR", "RESI", "MAX", "MIN", "QTLU", "QTLD", "RANK", "RSV",
    "IMAX", "IMIN", "IMXD", "CORR", "CORD", "CNTP", "CNTN", "CNTD", "SUMP", "SUMN", "SUMD",
    "VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD",
)
WINDOWS: tuple[int, ...] = (5, 10, 20, 30, 60)
ALPHA158: tuple[str, ...] = KBAR + PRICE + tuple(f"{op}{d}" for op in ROLLING for d in WINDOWS)

EPS = 1e-12  # Qlib's guard, only where its expressions add it
STD_ZERO = 2e-5  # Qlib's np.isclose(std, 0, atol=2e-5) mask for Corr and Rsquare

# rolling kernel codes
_MEAN, _STD, _SUM, _MAX, _MIN, _IMAX, _IMIN, _QUANT, _RANK, _SLOPE, _RSQR, _RESI = range(12)


# ----------------------------------------------------------------------------- kernels
@njit(cache=True)
def _rolling(x: np.ndarray, d: int, kind: int, q: float) -> np.ndarray:
    """One rolling statistic down each column of a (T, N) array; NaN unless all d are finite."""
    t_len, n_sym = x.shape
    out = np.full((t_len, n_sym), np.nan)
    xc = np.empty(d)  # centred time 1..d for the regressions
    for k in range(d):
        xc[k] = k - (d - 1) / 2.0
    sxx = d * (d * d - 1) / 12.0
    for j in range(n_sym):
        bad = 0  # non-finite values inside the current window
        for t in range(t_len):
            if not np.isfinite(x[t, j]):
                bad += 1
            if t >= d and not np.isfinite(x[t - d, j]):
                bad -= 1
            if t < d - 1 or bad > 0:
                continue
            w = x[t - d + 1:t + 1, j]
            if kind == _MAX or kind == _IMAX:
                best, pos = w[0], 0
                for k in range(1, d):
                    if w[k] > best:
                        best, pos = w[k], k
                out[t, j] = best if kind == _MAX else pos + 1.0
            elif kind == _MIN or kind == _IMIN:
                best, pos = w[0], 0
                for k in range(1, d):
                    if w[k] < best:
                        best, pos = w[k], k
                out[t, j] = best if kind == _MIN else pos + 1.0
            elif kind == _QUANT:
                s = np.sort(w)
                at = q * (d - 1)
                lo = int(np.floor(at))
                hi = min(lo + 1, d - 1)
                out[t, j] = s[lo] + (s[hi] - s[lo]) * (at - lo)
            elif kind == _RANK:
                last = w[d - 1]
                less = 0
                same = 0
                for k in range(d):
                    if w[k] < last:
                        less += 1
                    elif w[k] == last:
                        same += 1
                out[t, j] = (less + (same + 1) / 2.0) / d
            else:
                total = 0.0
                for k in range(d):
                    total += w[k]
                if kind == _SUM:
                    out[t, j] = total
                    continue
                mean = total / d
                if kind == _MEAN:
                    out[t, j] = mean
                    continue
                syy = 0.0
                sxy = 0.0
                for k in range(d):
                    dev = w[k] - mean
                    syy += dev * dev
                    sxy += xc[k] * dev
                if kind == _STD:
                    out[t, j] = np.sqrt(syy / (d - 1)) if d > 1 else np.nan
                elif kind == _SLOPE:
                    out[t, j] = sxy / sxx
                elif kind == _RESI:
                    out[t, j] = w[d - 1] - (mean + sxy / sxx * xc[d - 1])
                elif kind == _RSQR:
                    if np.sqrt(syy / (d - 1)) <= STD_ZERO or syy == 0.0:
                        continue
                    out[t, j] = sxy * sxy / (sxx * syy)
    return out


@njit(cache=True)
def _rolling_corr(a: np.ndarray, b: np.ndarray, d: int) -> np.ndarray:
    """Pearson correlation of two (T, N) arrays over each trailing window of d rows."""
    t_len, n_sym = a.shape
    out = np.full((t_len, n_sym), np.nan)
    for j in range(n_sym):
        bad = 0
        for t in range(t_len):
            if not (np.isfinite(a[t, j]) and np.isfinite(b[t, j])):
                bad += 1
            if t >= d and not (np.isfinite(a[t - d, j]) and np.isfinite(b[t - d, j])):
                bad -= 1
            if t < d - 1 or bad > 0:
                continue
            ma = 0.0
            mb = 0.0
            for k in range(t - d + 1, t + 1):
                ma += a[k, j]
                mb += b[k, j]
            ma /= d
            mb /= d
            saa = 0.0
            sbb = 0.0
            sab = 0.0
            for k in range(t - d + 1, t + 1):
                da = a[k, j] - ma
                db = b[k, j] - mb
                saa += da * da
                sbb += db * db
                sab += da * db
            if np.sqrt(saa / (d - 1)) <= STD_ZERO or np.sqrt(sbb / (d - 1)) <= STD_ZERO:
                continue
            out[t, j] = sab / np.sqrt(saa * sbb)
    return out


# ----------------------------------------------------------------------------- packing
class _Packed:
    """Each symbol's traded rows moved to the top of its column (in time order), so rolling
    windows span traded bars only; `unpack` puts results back on the calendar rows."""

    def __init__(self, valid: np.ndarray) -> None:
        self.valid = valid
        self.order = np.argsort(~valid, axis=0, kind="stable")
        self.live = np.take_along_axis(valid, self.order, axis=0)  # top n_j rows per column

    def pack(self, x: np.ndarray) -> np.ndarray:
        out = np.take_along_axis(x, self.order, axis=0)
        out[~self.live] = np.nan
        return out

    def unpack(self, y: np.ndarray) -> np.ndarray:
        out = np.empty_like(y)
        np.put_along_axis(out, self.order, y, axis=0)
        out[~self.valid | ~np.isfinite(out)] = np.nan
        return out


def _ref(x: np.ndarray, k: int) -> np.ndarray:
    """Qlib's ``Ref(x, k)``: the value k (traded) bars ago, NaN before the first."""
    out = np.full_like(x, np.nan)
    out[k:] = x[:-k]
    return out


def _indicator(cond: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """1.0 / 0.0 for a comparison, NaN where an operand is missing."""
    return np.where(defined, cond.astype(np.float64), np.nan)


class _Fields:
    """The packed inputs and the shared intermediates, each built once on first use."""

    def __init__(self, bars: Bars, vwap: np.ndarray | None, packed: _Packed) -> None:
        self.bars = bars
        self.vwap_in = vwap
        self.p = packed
        self.memo: dict[Any, np.ndarray] = {}

    def get(self, key: Any, make: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def field(self, name: str) -> np.ndarray:
        def make() -> np.ndarray:
            if name == "vwap":
                if self.vwap_in is not None:
                    return self.p.pack(self.vwap_in)
                return (self.field("high") + self.field("low") + self.field("close")) / 3.0
            arr = getattr(self.bars, name)
            if arr is None:
                raise DataError(f"{self.bars._where()}Alpha158 needs {name} data, which these "
                                "bars lack; load OHLCV bars, or ask only for close-based "
                                "factors (ROC, MA, STD, BETA, RSQR, RESI, QTLU, QTLD, RANK, "
                                "CNTP, CNTN, CNTD, SUMP, SUMN, SUMD)")
            return self.p.pack(arr)
        return self.get(("field", name), make)

    def roll(self, name: str, d: int, kind: int, q: float = 0.0) -> np.ndarray:
        """A rolling statistic of the named series (see `series`) over d traded bars."""
        return self.get(("roll", name, d, kind, q),
                        lambda: _rolling(self.series(name), d, kind, q))

    def series(self, name: str) -> np.ndarray:
        """The inputs of the rolling operators (packed): raw fields and one-bar changes."""
        if name in ("close", "high", "low", "volume"):
            return self.field(name)
        c = self.field("close")
        s = self.series
        makers: dict[str, Callable[[], np.ndarray]] = {
            "dc": lambda: c - _ref(c, 1),  # $close - Ref($close, 1)
            "up": lambda: np.maximum(s("dc"), 0.0),
            "down": lambda: np.maximum(-s("dc"), 0.0),
            "absdc": lambda: np.abs(s("dc")),
            "gt": lambda: _indicator(s("dc") > 0, np.isfinite(s("dc"))),
            "lt": lambda: _indicator(s("dc") < 0, np.isfinite(s("dc"))),
            "cratio": lambda: c / _ref(c, 1),  # $close / Ref($close, 1)
            "logv1": lambda: np.log(s("volume") + 1.0),  # Log($volume + 1)
            # Log($volume / Ref($volume, 1) + 1)
            "dlogv": lambda: np.log(s("volume") / _ref(s("volume"), 1) + 1.0),
            # Abs($close / Ref($close, 1) - 1) * $volume
            "wvol": lambda: np.abs(s("cratio") - 1.0) * s("volume"),
            "dv": lambda: s("volume") - _ref(s("volume"), 1),
            "vup": lambda: np.maximum(s("dv"), 0.0),
            "vdown": lambda: np.maximum(-s("dv"), 0.0),
            "absdv": lambda: np.abs(s("dv")),
        }
        return self.get(("series", name), makers[name])


def _kbar(f: _Fields, name: str) -> np.ndarray:
    o, h, lo, c = f.field("open"), f.field("high"), f.field("low"), f.field("close")
    rng = h - lo + EPS
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    return {
        "KMID": lambda: (c - o) / o,
        "KLEN": lambda: (h - lo) / o,
        "KMID2": lambda: (c - o) / rng,
        "KUP": lambda: (h - top) / o,
        "KUP2": lambda: (h - top) / rng,
        "KLOW": lambda: (bottom - lo) / o,
        "KLOW2": lambda: (bottom - lo) / rng,
        "KSFT": lambda: (2 * c - h - lo) / o,
        "KSFT2": lambda: (2 * c - h - lo) / rng,
    }[name]()


def _rolling_factor(f: _Fields, op: str, d: int) -> np.ndarray:
    """One rolling factor ``op`` over window d, as Qlib's expression defines it (packed)."""
    c = f.field("close")
    r = f.roll

    def share(num: str, den: str) -> np.ndarray:
        """Sum(num, d) / (Sum(den, d) + 1e-12): the SUMP/SUMN-style ratios."""
        return r(num, d, _SUM) / (r(den, d, _SUM) + EPS)

    if op == "ROC":
        return _ref(c, d) / c
    if op == "MA":
        return r("close", d, _MEAN) / c
    if op == "STD":
        return r("close", d, _STD) / c
    if op == "BETA":
        return r("close", d, _SLOPE) / c
    if op == "RSQR":
        return r("close", d, _RSQR)
    if op == "RESI":
        return r("close", d, _RESI) / c
    if op == "MAX":
        return r("high", d, _MAX) / c
    if op == "MIN":
        return r("low", d, _MIN) / c
    if op == "QTLU":
        return r("close", d, _QUANT, 0.8) / c
    if op == "QTLD":
        return r("close", d, _QUANT, 0.2) / c
    if op == "RANK":
        return r("close", d, _RANK)
    if op == "RSV":
        lo = r("low", d, _MIN)
        return (c - lo) / (r("high", d, _MAX) - lo + EPS)
    if op == "IMAX":
        return r("high", d, _IMAX) / d
    if op == "IMIN":
        return r("low", d, _IMIN) / d
    if op == "IMXD":
        return (r("high", d, _IMAX) - r("low", d, _IMIN)) / d
    if op == "CORR":
        return f.get(("corr", d), lambda: _rolling_corr(c, f.series("logv1"), d))
    if op == "CORD":
        return f.get(("cord", d), lambda: _rolling_corr(f.series("cratio"),
                                                        f.series("dlogv"), d))
    if op == "CNTP":
        return r("gt", d, _MEAN)
    if op == "CNTN":
        return r("lt", d, _MEAN)
    if op == "CNTD":
        return r("gt", d, _MEAN) - r("lt", d, _MEAN)
    if op == "SUMP":
        return share("up", "absdc")
    if op == "SUMN":
        return share("down", "absdc")
    if op == "SUMD":
        return (r("up", d, _SUM) - r("down", d, _SUM)) / (r("absdc", d, _SUM) + EPS)
    v = f.field("volume")
    if op == "VMA":
        return r("volume", d, _MEAN) / (v + EPS)
    if op == "VSTD":
        return r("volume", d, _STD) / (v + EPS)
    if op == "WVMA":
        return r("wvol", d, _STD) / (r("wvol", d, _MEAN) + EPS)
    if op == "VSUMP":
        return share("vup", "absdv")
    if op == "VSUMN":
        return share("vdown", "absdv")
    if op == "VSUMD":
        return (r("vup", d, _SUM) - r("vdown", d, _SUM)) / (r("absdv", d, _SUM) + EPS)
    raise KeyError(op)


def _split(name: str) -> tuple[str, int]:
    """``ROC60`` -> ("ROC", 60); k-bar and price names get window 0."""
    i = len(name.rstrip("0123456789"))
    return name[:i], int(name[i:] or 0)


def _as_array(bars: Bars, vwap: np.ndarray | pd.DataFrame | None) -> np.ndarray | None:
    if vwap is None:
        return None
    if isinstance(vwap, pd.DataFrame):
        vwap = vwap.reindex(index=bars.index, columns=list(bars.symbols)).to_numpy()
    arr = np.asarray(vwap, dtype=np.float64)
    if arr.shape != bars.shape:
        raise DataError(f"{bars._where()}vwap has shape {arr.shape}, expected {bars.shape} "
                        "(time x symbols, like the bars)")
    return arr


def alpha158(bars: Bars, vwap: np.ndarray | pd.DataFrame | None = None,
             names: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """Qlib's Alpha158 factors (all, or `names`) as causal T x N frames on the bars' grid.

    `vwap`: (T, N) volume-weighted prices on the same adjustment as `bars` (see
    `adjusted_vwap`); None uses the typical price (H + L + C) / 3 for VWAP0. Windows count
    traded bars per symbol; suspended rows and unfilled windows are NaN (module docstring).
    """
    wanted = list(ALPHA158 if names is None else names)
    unknown = [n for n in wanted if n not in _KNOWN]
    if unknown:
        raise ConfigError(f"unknown Alpha158 factor {unknown[0]!r}; use one of "
                          f"{', '.join(ALPHA158[:12])}, ... (Qlib's names, e.g. ROC5, VSUMD60)")
    valid = np.isfinite(bars.close)
    f = _Fields(bars, _as_array(bars, vwap), _Packed(valid))
    cols = list(bars.symbols)
    out: dict[str, pd.DataFrame] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name in wanted:
            op, d = _split(name)
            if name in KBAR:
                packed = _kbar(f, name)
            elif name in PRICE:
                packed = f.field(op.lower()) / f.field("close")
            else:
                packed = _rolling_factor(f, op, d)
            out[name] = pd.DataFrame(f.p.unpack(packed), index=bars.index, columns=cols)
    return out


def adjusted_vwap(bars: Bars, amount: np.ndarray, exec_bars: Bars) -> np.ndarray:
    """VWAP on the signal bars' adjustment: amount / traded volume, scaled by the ratio of the
    adjusted to the real close (A-share `AshareData`: amount and exec_bars are unadjusted)."""
    if exec_bars.volume is None:
        raise DataError(f"{exec_bars._where()}no volume: the VWAP needs traded volume")
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.asarray(amount, dtype=np.float64) / exec_bars.volume
        out = raw * (bars.close / exec_bars.close)
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


_KNOWN = frozenset(ALPHA158)
