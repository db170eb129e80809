"""Fundamental features are point in time: moving a report's announcement later by k bars
moves every fund_* feature's first use of it later by exactly k bars, and no value at bar t
depends on a statement (or a close) that became available after t."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrader.data import cn_financials as cn
from mltrader.data.bars import Bars
from mltrader.features import fundamentals as fu
from mltrader.features.registry import FEATURES, compute_features

SYMBOLS = ("601318.SH", "000001.SZ", "600000.SH")  # the last has no bundled statements
IDX = pd.bdate_range("2015-01-01", "2020-12-31", tz="UTC")
NAMES = ["fund_roe", "fund_roa", "fund_gross_margin", "fund_revenue_growth",
         "fund_profit_growth", "fund_accruals", "fund_debt_to_assets", "fund_book_to_price"]
REAL = {k: cn.load_statements(k) for k in cn.KINDS}


def _bars(seed: int = 3) -> Bars:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.015, (len(IDX), len(SYMBOLS)))
    return Bars(index=IDX, symbols=SYMBOLS, close=20.0 * np.exp(np.cumsum(steps, axis=0)))


BARS = _bars()


def _use(monkeypatch, tables: dict[str, pd.DataFrame]) -> None:
    """Make every feature read these statements instead of the bundled ones."""
    def load(kind: str, symbols=None) -> pd.DataFrame:
        df = tables[kind]
        if symbols is not None:
            df = df[df["symbol"].isin(list(symbols))]
        return df.reset_index(drop=True).copy()

    monkeypatch.setattr(cn, "load_statements", load)


def _features(bars: Bars = BARS) -> dict[str, pd.DataFrame]:
    return compute_features(bars, NAMES)


def _differs(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    x, y = a.to_numpy(), b.to_numpy()
    return ~((x == y) | (np.isnan(x) & np.isnan(y)))


def _positions(df: pd.DataFrame) -> np.ndarray:
    return cn.available_positions(df, IDX)


def test_every_feature_is_registered_and_shaped():
    assert set(NAMES) <= set(FEATURES) and set(NAMES) == set(fu.FUNDAMENTAL_FEATURES)
    feats = _features()
    for name, frame in feats.items():
        assert frame.index.equals(IDX) and tuple(frame.columns) == SYMBOLS, name
        assert (frame.dtypes == "float64").all(), name
        assert frame["600000.SH"].isna().all(), name  # no statements: all NaN
        for sym in SYMBOLS[:2]:
            assert frame[sym].notna().sum() > 1000, (name, sym)


def test_no_feature_is_used_before_any_statement_existed():
    feats = _features()
    for sym in SYMBOLS[:2]:
        first = min(_positions(REAL[k][REAL[k]["symbol"] == sym]).min() for k in cn.KINDS)
        for name, frame in feats.items():
            assert frame[sym].to_numpy()[:first].size == 0 or np.isnan(
                frame[sym].to_numpy()[:first]).all(), name


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize(("symbol", "period"), [
    ("000001.SZ", "2018-09-30"),  # announced Wed 2018-10-24
    ("601318.SH", "2018-09-30"),  # announced Tue 2018-10-30
    ("000001.SZ", "2018-12-31"),  # annual, 2019-03-07: also an input to 2019's TTM figures
    ("601318.SH", "2017-09-30"),  # announced on a Saturday, 2017-10-28
])
def test_announcing_later_by_k_bars_moves_every_feature_by_exactly_k(monkeypatch, symbol,
                                                                     period, k):
    base = _features()
    rp = pd.Timestamp(period)
    shifted = {}
    for kind, df in REAL.items():
        rows = (df["symbol"] == symbol) & (df["report_period"] == rp)
        assert rows.sum() == 1
        a = int(_positions(df[rows])[0])  # first usable bar, as published
        new = df.copy()
        new.loc[rows, "announced"] = IDX[a + k - 1].tz_localize(None).normalize()
        assert int(_positions(new[rows])[0]) == a + k
        shifted[kind] = new
    _use(monkeypatch, shifted)
    moved = _features()
    j = SYMBOLS.index(symbol)
    for name in NAMES:
        diff = _differs(base[name], moved[name])
        rows_changed = np.flatnonzero(diff[:, j])
        # the statement is first used at a (as published) and at a + k (announced later):
        # exactly the k bars in between differ, nothing before, nothing after
        np.testing.assert_array_equal(rows_changed, np.arange(a, a + k), err_msg=name)
        col = base[name].to_numpy()[:, j]
        assert col[a] != col[a - 1], f"{name} does not change when the report is first used"
        assert moved[name].to_numpy()[a + k, j] == col[a + k]
        assert not np.delete(diff, j, axis=1).any(), name  # other stocks untouched


def _perturb_after(t: int, seed: int) -> dict[str, pd.DataFrame]:
    """Every line item of every statement first usable after bar t, scaled at random."""
    rng = np.random.default_rng(seed)
    out = {}
    for kind, df in REAL.items():
        later = _positions(df) > t
        items = [c for c in df.columns if c not in cn.ID_COLUMNS]
        new = df.copy()
        factors = rng.uniform(0.5, 1.5, (int(later.sum()), len(items)))
        new.loc[later, items] = df.loc[later, items].to_numpy() * factors
        out[kind] = new
    return out


CUTS = ["2016-06-15", "2018-03-15", "2018-10-24", "2019-03-07", "2019-10-22", "2020-03-02"]


@pytest.mark.parametrize("cut", CUTS)
def test_statements_available_after_t_never_change_rows_up_to_t(monkeypatch, cut):
    """CUTS include announcement days: a report announced on day t is usable at t + 1."""
    t = int(IDX.get_indexer([pd.Timestamp(cut, tz="UTC")])[0])
    base = _features()
    _use(monkeypatch, _perturb_after(t, seed=t))
    other = _features()
    for name in NAMES:
        diff = _differs(base[name], other[name])
        assert not diff[: t + 1].any(), f"{name} at row {np.flatnonzero(diff.any(1))[0]}"
        assert diff[t + 1 :].any(), f"{name}: the perturbation had no effect (no teeth)"


@pytest.mark.parametrize("cut", ["2016-06-15", "2019-03-07"])
def test_closes_after_t_never_change_rows_up_to_t(cut):
    t = int(IDX.get_indexer([pd.Timestamp(cut, tz="UTC")])[0])
    close = BARS.close.copy()
    close[t + 1 :] *= 1.7
    other = compute_features(BARS.replace(close=close), NAMES)
    base = _features()
    for name in NAMES:
        assert not _differs(base[name], other[name])[: t + 1].any(), name
    assert _differs(base["fund_book_to_price"], other["fund_book_to_price"])[t + 1 :].any()


def test_the_check_catches_a_report_period_leak(monkeypatch):
    """Test of the test: using statements from their report period (look-ahead) is caught."""
    cut = "2019-03-07"
    t = int(IDX.get_indexer([pd.Timestamp(cut, tz="UTC")])[0])
    later = _perturb_after(t, seed=1)  # by the TRUE availability
    monkeypatch.setattr(cn, "effective_dates", lambda v: pd.to_datetime(
        v["report_period"]).to_numpy(dtype="datetime64[ns]"))
    base = _features()
    _use(monkeypatch, later)
    other = _features()
    assert any(_differs(base[n], other[n])[: t + 1].any() for n in NAMES)


def _at(frame: pd.DataFrame, sym: str, day: str) -> float:
    return float(frame[sym].loc[pd.Timestamp(day, tz="UTC")])


def test_known_values_and_first_use():
    feats = _features()
    inc, bs = REAL["income_statement"], REAL["balance_sheet"]

    def get(df, sym, period, col):
        return df.loc[(df["symbol"] == sym) & (df["report_period"] == pd.Timestamp(period)),
                      col].iloc[0]

    # 601318.SH 2018 annual, announced 2019-03-13 (Wed): used from Thu 2019-03-14
    np18 = get(inc, "601318.SH", "2018-12-31", "net_profit_attributable_to_parent")
    eq = [get(bs, "601318.SH", p, "equity_attributable_to_parent")
          for p in ("2018-12-31", "2017-12-31")]
    assert _at(feats["fund_roe"], "601318.SH", "2019-03-14") == pytest.approx(np18 / np.mean(eq))
    assert _at(feats["fund_roe"], "601318.SH", "2019-03-13") != pytest.approx(
        np18 / np.mean(eq))
    # 2019 annual and 2020 Q1 have no date: both wait for the deadline (Apr 30 2020)
    rev = [get(inc, "601318.SH", p, "operating_revenue") for p in ("2020-03-31", "2019-03-31")]
    growth = feats["fund_revenue_growth"]
    assert _at(growth, "601318.SH", "2020-05-01") == pytest.approx(rev[0] / rev[1] - 1)
    q3 = [get(inc, "601318.SH", p, "operating_revenue") for p in ("2019-09-30", "2018-09-30")]
    assert _at(growth, "601318.SH", "2020-04-30") == pytest.approx(q3[0] / q3[1] - 1)
    # debt to assets of the bank at its 2018 annual
    d2a = get(bs, "000001.SZ", "2018-12-31", "total_liabilities") / get(
        bs, "000001.SZ", "2018-12-31", "total_assets")
    assert _at(feats["fund_debt_to_assets"], "000001.SZ", "2019-03-08") == pytest.approx(d2a)
    # book to price: parent equity / share count (股本, CNY 1 par) / close
    bvps = get(bs, "000001.SZ", "2018-12-31", "equity_attributable_to_parent") / get(
        bs, "000001.SZ", "2018-12-31", "share_capital")
    close = _at(BARS.frame("close"), "000001.SZ", "2019-03-08")
    assert _at(feats["fund_book_to_price"], "000001.SZ", "2019-03-08") == pytest.approx(
        bvps / close)


def test_ttm_is_the_sum_of_the_last_four_quarters():
    inc = REAL["income_statement"]
    bank = inc[inc["symbol"] == "000001.SZ"].reset_index(drop=True)
    quarters = cn.quarterly(bank, "net_profit")
    item = fu._item("income_statement", "net_profit", ["000001.SZ"])
    keys = pd.MultiIndex.from_tuples([("000001.SZ", pd.Timestamp("2019-06-30"))],
                                     names=["symbol", "report_period"])
    value, _ = fu.ttm(item, keys)
    last4 = bank["report_period"].between(pd.Timestamp("2018-09-30"), pd.Timestamp("2019-06-30"))
    assert value.iloc[0] == pytest.approx(quarters[last4].sum())


def test_pipeline_with_fundamentals_is_causal(monkeypatch):
    """End to end (features -> walk-forward ridge -> target weights): statements first usable
    after t change no prediction or weight at or before t."""
    from mltrader.config import config_from_dict
    from mltrader.pipeline import compute_signals

    bars = Bars(index=IDX, symbols=SYMBOLS[:2], close=BARS.close[:, :2])
    cfg = config_from_dict({
        "features": ["ret_5", *NAMES],
        "model": {"name": "ridge"},
        "walk_forward": {"first_test_year": 2018, "retrain": "quarterly", "min_train_rows": 50},
        "strategy": {"threshold": 0.0, "rebalance": "daily"},
    })
    t = int(IDX.get_indexer([pd.Timestamp("2019-03-07", tz="UTC")])[0])
    base = compute_signals(bars, cfg)
    _use(monkeypatch, _perturb_after(t, seed=7))
    other = compute_signals(bars, cfg)
    for what in ("predictions", "weights"):
        diff = _differs(getattr(base, what), getattr(other, what))
        assert not diff[: t + 1].any(), what
        assert diff[t + 1 :].any(), what
