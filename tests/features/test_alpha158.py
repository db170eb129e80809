"""Alpha158: Qlib's names, hand-checked values, a pandas rendering of Qlib's expressions,
causality, suspensions, and the registry's `alpha158` feature set."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy.stats import percentileofscore

from mltrader.data.ashare import load_ashare
from mltrader.data.bars import Bars
from mltrader.errors import ConfigError, DataError
from mltrader.features import registry
from mltrader.features.alpha158 import ALPHA158, adjusted_vwap, alpha158
from mltrader.features.registry import compute_features, expand_features, resolve

# Qlib's Alpha158DL.get_feature_config order, spelled out independently of the module
QLIB_OPS = ("ROC MA STD BETA RSQR RESI MAX MIN QTLU QTLD RANK RSV IMAX IMIN IMXD CORR CORD "
            "CNTP CNTN CNTD SUMP SUMN SUMD VMA VSTD WVMA VSUMP VSUMN VSUMD").split()
QLIB_NAMES = (["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2",
               "OPEN0", "HIGH0", "LOW0", "VWAP0"]
              + [f"{op}{d}" for op in QLIB_OPS for d in (5, 10, 20, 30, 60)])


@pytest.fixture(scope="module")
def ashare():
    return load_ashare()


@pytest.fixture(scope="module")
def panel(ashare) -> Bars:
    return ashare.bars.select(ashare.symbols[:5], "2019-01-01", "2020-12-31")


def _tiny(n: int = 14, seed: int = 3) -> Bars:
    """Two symbols of random OHLCV, every bar traded."""
    rng = np.random.default_rng(seed)
    c = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, (n, 2)), axis=0))
    o = c * np.exp(rng.normal(0, 0.01, (n, 2)))
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.02, (n, 2)))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.02, (n, 2)))
    v = rng.uniform(1e5, 1e6, (n, 2)).round()
    idx = pd.date_range("2021-01-04", periods=n, freq="B", tz="UTC")
    return Bars(index=idx, symbols=("A", "B"), open=o, high=h, low=lo, close=c, volume=v)


# ----------------------------------------------------------------------------- names
def test_names_are_qlibs_158_in_qlibs_order():
    assert len(ALPHA158) == 158 == len(set(ALPHA158))
    assert list(ALPHA158) == QLIB_NAMES
    assert ALPHA158[13:18] == ("ROC5", "ROC10", "ROC20", "ROC30", "ROC60")
    assert ALPHA158[-1] == "VSUMD60"


# ----------------------------------------------------------------------------- hand checks
def test_hand_checked_values_on_a_tiny_panel():
    b = _tiny()
    f = alpha158(b)
    o, h, lo, c, v = b.open, b.high, b.low, b.close, b.volume
    assert set(f) == set(ALPHA158)
    for t in (5, 9, 13):
        for j in range(2):
            got = {k: f[k].iat[t, j] for k in f}
            w = c[t - 4:t + 1, j]  # the 5 closes ending at t
            x = np.arange(5.0)
            slope, icpt = np.polyfit(x, w, 1)
            dc = np.diff(c[t - 5:t + 1, j])  # the 5 one-bar changes ending at t
            wv = np.abs(c[t - 4:t + 1, j] / c[t - 5:t, j] - 1) * v[t - 4:t + 1, j]
            want = {
                "KMID": (c[t, j] - o[t, j]) / o[t, j],
                "KLEN": (h[t, j] - lo[t, j]) / o[t, j],
                "KSFT": (2 * c[t, j] - h[t, j] - lo[t, j]) / o[t, j],
                "KUP2": (h[t, j] - max(o[t, j], c[t, j])) / (h[t, j] - lo[t, j] + 1e-12),
                "OPEN0": o[t, j] / c[t, j],
                "VWAP0": (h[t, j] + lo[t, j] + c[t, j]) / 3 / c[t, j],
                "ROC5": c[t - 5, j] / c[t, j],
                "MA5": w.mean() / c[t, j],
                "STD5": w.std(ddof=1) / c[t, j],
                "BETA5": slope / c[t, j],
                "RSQR5": np.corrcoef(x, w)[0, 1] ** 2,
                "RESI5": (w[-1] - (icpt + slope * 4)) / c[t, j],
                "QTLU5": np.quantile(w, 0.8) / c[t, j],
                "QTLD5": np.quantile(w, 0.2) / c[t, j],
                "RANK5": percentileofscore(w, w[-1]) / 100,
                "MAX5": h[t - 4:t + 1, j].max() / c[t, j],
                "RSV5": (c[t, j] - lo[t - 4:t + 1, j].min())
                / (h[t - 4:t + 1, j].max() - lo[t - 4:t + 1, j].min() + 1e-12),
                "IMAX5": (np.argmax(h[t - 4:t + 1, j]) + 1) / 5,
                "IMXD5": (np.argmax(h[t - 4:t + 1, j]) - np.argmin(lo[t - 4:t + 1, j])) / 5,
                "CORR5": np.corrcoef(w, np.log(v[t - 4:t + 1, j] + 1))[0, 1],
                "CORD5": np.corrcoef(c[t - 4:t + 1, j] / c[t - 5:t, j],
                                     np.log(v[t - 4:t + 1, j] / v[t - 5:t, j] + 1))[0, 1],
                "CNTP5": np.mean(dc > 0),
                "CNTD5": np.mean(dc > 0) - np.mean(dc < 0),
                "SUMP5": np.maximum(dc, 0).sum() / (np.abs(dc).sum() + 1e-12),
                "SUMD5": (np.maximum(dc, 0).sum() - np.maximum(-dc, 0).sum())
                / (np.abs(dc).sum() + 1e-12),
                "VMA5": v[t - 4:t + 1, j].mean() / (v[t, j] + 1e-12),
                "VSTD5": v[t - 4:t + 1, j].std(ddof=1) / (v[t, j] + 1e-12),
                "WVMA5": wv.std(ddof=1) / (wv.mean() + 1e-12),
            }
            if t < 5:
                continue
            for k, val in want.items():
                assert got[k] == pytest.approx(val, rel=1e-9, abs=1e-12), (k, t, j)
    # warm-up: NaN until the window (or the window of one-bar changes) is full
    assert f["MA5"].iloc[:4].isna().all().all() and f["MA5"].iloc[4:].notna().all().all()
    assert f["ROC5"].iloc[:5].isna().all().all() and f["ROC5"].iloc[5:].notna().all().all()
    assert f["SUMP5"].iloc[:5].isna().all().all() and f["SUMP5"].iloc[5:].notna().all().all()
    assert f["MA10"].iloc[:9].isna().all().all() and f["MA60"].isna().all().all()


def test_rank_ties_and_idxmax_first_occurrence():
    """Rank: average-tie percentile of the last value; IdxMax: first maximum, 1-based."""
    c = np.array([5.0, 7.0, 6.0, 7.0, 6.0, 6.0])[:, None]
    idx = pd.date_range("2021-01-04", periods=6, freq="B", tz="UTC")
    b = Bars(index=idx, symbols=("A",), open=c, high=c, low=c, close=c, volume=c * 100)
    f = alpha158(b, names=["RANK5", "IMAX5", "IMIN5"])
    assert f["RANK5"].iat[4, 0] == pytest.approx(percentileofscore([5, 7, 6, 7, 6], 6) / 100)
    assert f["RANK5"].iat[5, 0] == pytest.approx(percentileofscore([7, 6, 7, 6, 6], 6) / 100)
    assert f["IMAX5"].iat[4, 0] == pytest.approx(2 / 5)  # the first 7, not the second
    assert f["IMIN5"].iat[5, 0] == pytest.approx(2 / 5)  # the first 6 of [7, 6, 7, 6, 6]


def _qlib_reference(b: Bars, j: int) -> dict[str, pd.Series]:
    """Qlib's expressions for one fully traded symbol, in pandas with Qlib's min_periods=1."""
    s = {k: pd.Series(getattr(b, k)[:, j]) for k in ("open", "high", "low", "close", "volume")}
    o, h, lo, c, v = s["open"], s["high"], s["low"], s["close"], s["volume"]
    vwap = (h + lo + c) / 3

    def roll(x: pd.Series, d: int) -> pd.core.window.Rolling:
        return x.rolling(d, min_periods=1)

    def reg(x: pd.Series, d: int, what: str) -> pd.Series:
        def one(w: np.ndarray) -> float:
            t = np.arange(1.0, len(w) + 1)
            if len(w) < 2:
                return np.nan
            sl, ic = np.polyfit(t, w, 1)
            if what == "slope":
                return sl
            if what == "resi":
                return w[-1] - (sl * t[-1] + ic)
            return np.corrcoef(t, w)[0, 1] ** 2
        return roll(x, d).apply(one, raw=True)

    def corr(x: pd.Series, y: pd.Series, d: int) -> pd.Series:
        r = roll(x, d).corr(y)
        flat = np.isclose(roll(x, d).std(), 0, atol=2e-5) | np.isclose(roll(y, d).std(), 0,
                                                                         atol=2e-5)
        return r.mask(flat)

    c1, v1 = c.shift(1), v.shift(1)
    out = {
        "KMID": (c - o) / o, "KLEN": (h - lo) / o, "KMID2": (c - o) / (h - lo + 1e-12),
        "KUP": (h - np.maximum(o, c)) / o, "KUP2": (h - np.maximum(o, c)) / (h - lo + 1e-12),
        "KLOW": (np.minimum(o, c) - lo) / o,
        "KLOW2": (np.minimum(o, c) - lo) / (h - lo + 1e-12),
        "KSFT": (2 * c - h - lo) / o, "KSFT2": (2 * c - h - lo) / (h - lo + 1e-12),
        "OPEN0": o / c, "HIGH0": h / c, "LOW0": lo / c, "VWAP0": vwap / c,
    }
    for d in (5, 10, 20, 30, 60):
        up, dn, ab = np.maximum(c - c1, 0), np.maximum(c1 - c, 0), np.abs(c - c1)
        vup, vdn, vab = np.maximum(v - v1, 0), np.maximum(v1 - v, 0), np.abs(v - v1)
        wv = np.abs(c / c1 - 1) * v
        mx, mn = roll(h, d).max(), roll(lo, d).min()
        imax = roll(h, d).apply(lambda x: x.argmax() + 1, raw=True)
        imin = roll(lo, d).apply(lambda x: x.argmin() + 1, raw=True)
        p = (c > c1).astype(float)
        n = (c < c1).astype(float)
        out |= {
            f"ROC{d}": c.shift(d) / c, f"MA{d}": roll(c, d).mean() / c,
            f"STD{d}": roll(c, d).std() / c, f"BETA{d}": reg(c, d, "slope") / c,
            f"RSQR{d}": reg(c, d, "rsqr"), f"RESI{d}": reg(c, d, "resi") / c,
            f"MAX{d}": mx / c, f"MIN{d}": mn / c,
            f"QTLU{d}": roll(c, d).quantile(0.8) / c, f"QTLD{d}": roll(c, d).quantile(0.2) / c,
            f"RANK{d}": roll(c, d).rank(pct=True), f"RSV{d}": (c - mn) / (mx - mn + 1e-12),
            f"IMAX{d}": imax / d, f"IMIN{d}": imin / d, f"IMXD{d}": (imax - imin) / d,
            f"CORR{d}": corr(c, np.log(v + 1), d),
            f"CORD{d}": corr(c / c1, np.log(v / v1 + 1), d),
            f"CNTP{d}": roll(p, d).mean(), f"CNTN{d}": roll(n, d).mean(),
            f"CNTD{d}": roll(p, d).mean() - roll(n, d).mean(),
            f"SUMP{d}": roll(up, d).sum() / (roll(ab, d).sum() + 1e-12),
            f"SUMN{d}": roll(dn, d).sum() / (roll(ab, d).sum() + 1e-12),
            f"SUMD{d}": (roll(up, d).sum() - roll(dn, d).sum()) / (roll(ab, d).sum() + 1e-12),
            f"VMA{d}": roll(v, d).mean() / (v + 1e-12), f"VSTD{d}": roll(v, d).std() / (v + 1e-12),
            f"WVMA{d}": roll(wv, d).std() / (roll(wv, d).mean() + 1e-12),
            f"VSUMP{d}": roll(vup, d).sum() / (roll(vab, d).sum() + 1e-12),
            f"VSUMN{d}": roll(vdn, d).sum() / (roll(vab, d).sum() + 1e-12),
            f"VSUMD{d}": (roll(vup, d).sum() - roll(vdn, d).sum()) / (roll(vab, d).sum() + 1e-12),
        }
    return out


def test_all_158_match_qlibs_expressions_once_the_window_is_full(ashare):
    """On a symbol that traded every day, each factor equals Qlib's expression (rendered in
    pandas) wherever ours is defined, and ours is defined from the first full window on."""
    full = np.isfinite(ashare.bars.close).all(axis=0)
    sym = ashare.symbols[int(np.argmax(full))]
    b = ashare.bars.select([sym], "2019-01-01", "2019-12-31")
    ours = alpha158(b)
    ref = _qlib_reference(b, 0)
    for name in ALPHA158:
        mine = ours[name].iloc[:, 0].to_numpy()
        theirs = ref[name].to_numpy()
        warm = 0  # rows of NaN warm-up: d - 1, one more for those built on changes
        if name not in QLIB_NAMES[:13]:
            d = int(name.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
            changes = name.startswith(("ROC", "CORD", "CNT", "SUM", "WVMA", "VSUM"))
            warm = d - 1 + changes
        assert np.isnan(mine[:warm]).all(), name
        ok = np.isfinite(mine)
        assert ok[warm:].mean() > 0.95, name  # only Qlib's flat-window masks may add NaN
        np.testing.assert_allclose(mine[ok], theirs[ok], rtol=1e-7, atol=1e-9, err_msg=name)


# ----------------------------------------------------------------------------- causality
def test_causal_no_factor_row_moves_when_later_bars_change(panel, ashare):
    """Perturb (and suspend) every bar after t: rows <= t of all 158 factors stay identical."""
    rng = np.random.default_rng(7)
    vwap = adjusted_vwap(panel, ashare.select(list(panel.symbols), panel.index[0],
                                              panel.index[-1]).amount,
                         ashare.exec_bars.select(list(panel.symbols), panel.index[0],
                                                 panel.index[-1]))
    base = alpha158(panel, vwap=vwap)
    for t in (70, 250, len(panel) - 2):
        k = rng.uniform(0.7, 1.4, panel.shape)
        k[: t + 1] = 1.0
        kv = rng.uniform(0.2, 5.0, panel.shape)
        kv[: t + 1] = 1.0
        arrays = {f: getattr(panel, f) * k for f in ("open", "high", "low", "close")}
        arrays["volume"] = panel.volume * kv
        gone = np.zeros(panel.shape, bool)
        gone[t + 1:] = rng.uniform(size=(len(panel) - t - 1, panel.shape[1])) < 0.2
        for f in arrays:
            arrays[f] = np.where(gone, np.nan, arrays[f])
        moved = Bars(index=panel.index, symbols=panel.symbols, **arrays)
        other = alpha158(moved, vwap=np.where(gone, np.nan, vwap * k))
        for name in ALPHA158:
            a, b = base[name].to_numpy()[: t + 1], other[name].to_numpy()[: t + 1]
            np.testing.assert_array_equal(a, b, err_msg=f"{name} at t={t}")
            assert not np.array_equal(base[name].to_numpy()[t + 1:],
                                      other[name].to_numpy()[t + 1:], equal_nan=True), name


# ----------------------------------------------------------------------------- suspensions
def test_suspended_rows_are_skipped_not_zero(panel):
    """A suspension is NaN in every factor, and traded rows equal the factors of the same
    symbol with the suspended rows cut out: windows run over traded bars only."""
    sym = panel.symbols[0]
    one = panel.select([sym])
    keep = np.isfinite(one.close[:, 0])
    cut = np.flatnonzero(keep)[[30, 31, 32, 90, 200]]  # suspend five traded days
    arrays = {f: getattr(one, f).copy() for f in ("open", "high", "low", "close", "volume")}
    for f in arrays:
        arrays[f][cut] = np.nan
    holed = Bars(index=one.index, symbols=one.symbols, **arrays)
    ok = np.isfinite(holed.close[:, 0])
    squeezed = Bars(index=one.index[ok], symbols=one.symbols,
                    **{f: a[ok] for f, a in arrays.items()})
    f_holed, f_sq = alpha158(holed), alpha158(squeezed)
    for name in ALPHA158:
        h = f_holed[name].to_numpy()[:, 0]
        assert np.isnan(h[~ok]).all(), name
        np.testing.assert_array_equal(h[ok], f_sq[name].to_numpy()[:, 0], err_msg=name)
    # and the bar after a suspension still has its 5-bar mean (no NaN hole, no zero)
    after = cut[2] + 1
    assert np.isfinite(f_holed["MA5"].to_numpy()[after, 0])


def test_errors_close_only_and_unknown_names(panel):
    close_only = Bars(index=panel.index, symbols=panel.symbols, close=panel.close)
    assert set(alpha158(close_only, names=["ROC5", "RANK60", "SUMD10"])) == {
        "ROC5", "RANK60", "SUMD10"}
    with pytest.raises(DataError, match="needs open"):
        alpha158(close_only, names=["KMID"])
    with pytest.raises(ConfigError, match="unknown Alpha158 factor 'ROC7'"):
        alpha158(panel, names=["ROC7"])
    with pytest.raises(DataError, match="vwap has shape"):
        alpha158(panel, vwap=np.ones((3, 3)))


# ----------------------------------------------------------------------------- registry
def test_registry_expands_the_set_and_computes_it_once(panel, monkeypatch):
    calls = []
    real = registry.alpha158

    def counting(*args, **kwargs):
        calls.append(kwargs.get("names"))
        return real(*args, **kwargs)

    monkeypatch.setattr(registry, "alpha158", counting)
    names = expand_features(["ret_5", "alpha158", "sma_20", "a158_KMID"])
    assert names[0] == "ret_5" and names[-1] == "sma_20" and len(names) == 160
    feats = compute_features(panel, ["ret_5", "alpha158", "sma_20"])
    assert list(feats) == names
    assert len(calls) == 1 and len(calls[0]) == 158  # one pass for all 158
    direct = alpha158(panel)
    for name in ALPHA158:
        pd.testing.assert_frame_equal(feats[f"a158_{name}"], direct[name])
    # single-name resolves hit the cache
    for name in ("a158_KMID", "a158_VSUMD60"):
        pd.testing.assert_frame_equal(resolve(name)(panel), direct[name.removeprefix("a158_")])
    assert len(calls) == 1
    # existing names unchanged
    plain = compute_features(panel, ["ret_5", "sma_20"])
    pd.testing.assert_frame_equal(plain["ret_5"], feats["ret_5"])
    with pytest.raises(ConfigError, match="feature set"):
        resolve("alpha158")
    with pytest.raises(ConfigError, match="unknown feature 'a158_FOO'"):
        compute_features(panel, ["a158_FOO"])


def test_registry_vwap_hook(panel, ashare):
    sub = ashare.select(list(panel.symbols), panel.index[0], panel.index[-1])
    vwap = adjusted_vwap(panel, sub.amount, sub.exec_bars)
    registry.set_alpha158_vwap(panel, vwap)
    try:
        got = compute_features(panel, ["a158_VWAP0"])["a158_VWAP0"]
    finally:
        registry._A158_VWAP.pop(panel, None)
        registry._A158_CACHE.pop(panel, None)
    pd.testing.assert_frame_equal(got, alpha158(panel, vwap=vwap, names=["VWAP0"])["VWAP0"])
    typical = alpha158(panel, names=["VWAP0"])["VWAP0"]
    assert not np.allclose(got.to_numpy(), typical.to_numpy(), equal_nan=True)
    assert np.nanmax(np.abs(got.to_numpy() - 1)) < 0.2  # a real VWAP sits near the close


def test_speed_all_158_on_the_whole_panel(ashare):
    """Timing is printed (shared CI cores), not asserted."""
    alpha158(ashare.bars.select(ashare.symbols[:2], "2019-01-01", "2019-03-01"))  # compile
    vwap = adjusted_vwap(ashare.bars, ashare.amount, ashare.exec_bars)
    t0 = time.perf_counter()
    out = alpha158(ashare.bars, vwap=vwap)
    secs = time.perf_counter() - t0
    t, n = ashare.bars.shape
    print(f"\nalpha158: all {len(out)} factors for {n} symbols x {t} bars in {secs:.2f}s")
    assert len(out) == 158 and out["VSUMD60"].shape == (t, n)
