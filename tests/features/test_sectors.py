"""Sector strength, leaders and rotation: hand-computed numbers on tiny panels, the snapshot
as-of rule, and THE causality test: changing every price after bar t leaves every sector
feature, strength, leader and rotation value at rows <= t unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrader.data.ashare import load_ashare
from mltrader.data.bars import Bars
from mltrader.data.cn_boards import BoardSnapshot, bundled_boards
from mltrader.errors import ConfigError, DataError
from mltrader.features.registry import compute_features
from mltrader.features.sectors import (
    leaders,
    rotation_ranks,
    rotation_report,
    sector_feature,
    sector_panel,
    sector_strength,
)

NAN = np.nan
A, B, C, D = "600519.SH", "000858.SZ", "601398.SH", "AAPL"  # 白酒, 白酒, 银行, unclassified
# business days around the bundled snapshot's as-of date (2018-07-01, a Sunday): rows 0-2
# are before it, row 3 (2018-07-02) is the first bar with known membership
IDX = pd.bdate_range("2018-06-27", periods=8, tz="UTC")
CLOSE = np.array([
    # A     B     C    D
    [10.0, 20.0, 5.0, 50.0],
    [11.0, 20.0, 5.0, 50.0],
    [12.0, 22.0, 5.0, 50.0],
    [12.0, 24.0, 5.5, 50.0],
    [13.0, NAN, 5.0, 50.0],  # B suspended
    [12.0, 24.0, 5.0, 50.0],
    [14.0, 26.0, 5.0, 50.0],
    [15.0, 25.0, 5.0, 50.0],
])
VOLUME = np.where(np.isnan(CLOSE), NAN, np.array([100.0, 50.0, 1000.0, 10.0]))
HAND = Bars(index=IDX, symbols=(A, B, C, D), close=CLOSE, volume=VOLUME, source="hand")
SNAP = BoardSnapshot(pd.DataFrame({"symbol": [A, B, C, "000568.SZ"],
                                   "board_type": "industry",
                                   "board": ["白酒", "白酒", "银行", "白酒"]}),
                     pd.Timestamp("2018-07-01"), "hand")


def test_board_return_breadth_and_surge_equal_hand_numbers():
    p = sector_panel(HAND, SNAP, "industry", window=2)
    assert p.boards == ("白酒", "银行") and p.counts.to_dict() == {"白酒": 2, "银行": 1}
    # rows before the as-of date are unknown, although the prices there exist
    for f in (p.ret, p.breadth, p.surge, p.score, p.rank_pct):
        assert f.iloc[:3].isna().all().all()
    # row 3: 2-bar returns 12/11-1 and 24/20-1, equal-weighted
    assert p.ret["白酒"].iloc[3] == pytest.approx((12 / 11 - 1 + 24 / 20 - 1) / 2)
    assert p.ret["银行"].iloc[3] == pytest.approx(0.1)
    # breadth: A 12 is not above its 2-bar average 12; B 24 > 23
    assert p.breadth["白酒"].iloc[3] == 0.5
    assert p.breadth["银行"].iloc[3] == 1.0
    # traded money 12*100 + 24*50 over the median of the previous 2 bars (2100, 2300)
    assert p.surge["白酒"].iloc[3] == pytest.approx(2400 / 2200)
    assert p.surge["银行"].iloc[3] == pytest.approx(5500 / 5000)
    # score: mean cross-board percentile of (ret, breadth, surge); 白酒 wins only ret
    assert p.score["白酒"].iloc[3] == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    assert p.score["银行"].iloc[3] == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert p.rank_pct.iloc[3].tolist() == [0.5, 1.0]
    # row 4, B suspended: its last price 24 counts for the return, not for breadth;
    # its money is 0 that day
    assert p.ret["白酒"].iloc[4] == pytest.approx((13 / 12 - 1 + 24 / 22 - 1) / 2)
    assert p.breadth["白酒"].iloc[4] == 1.0  # A only: 13 > 12.5
    assert p.surge["白酒"].iloc[4] == pytest.approx(1300 / 2350)


def test_sector_strength_long_frame():
    st = sector_strength(HAND, SNAP, window=2)
    assert list(st.columns) == ["date", "board", "members", "ret", "breadth", "volume_surge",
                                "score", "rank", "rank_pct"]
    row = st[(st["date"] == IDX[3]) & (st["board"] == "银行")].iloc[0]
    assert row["rank"] == 1 and row["members"] == 1 and row["volume_surge"] == pytest.approx(1.1)
    assert st[st["date"] < IDX[3]][["ret", "rank"]].isna().all().all()


def test_features_per_symbol_via_registry_use_the_bundled_snapshot():
    names = ["sector_ret_2", "sector_rel_2", "sector_breadth_2", "sector_rank_2"]
    f = compute_features(HAND, names)
    board_ret = (12 / 11 - 1 + 24 / 20 - 1) / 2
    np.testing.assert_allclose(f["sector_ret_2"].iloc[3].to_numpy(),
                               [board_ret, board_ret, 0.1, NAN])
    np.testing.assert_allclose(f["sector_rel_2"].iloc[3].to_numpy(),
                               [12 / 11 - 1 - board_ret, 24 / 20 - 1 - board_ret, 0.0, NAN])
    np.testing.assert_allclose(f["sector_breadth_2"].iloc[3].to_numpy(), [0.5, 0.5, 1.0, NAN])
    np.testing.assert_allclose(f["sector_rank_2"].iloc[3].to_numpy(), [0.5, 0.5, 1.0, NAN])
    for name in names:  # unknown before 2018-07-01, and for the unclassified symbol
        assert f[name].iloc[:3].isna().all().all(), name
        assert f[name][D].isna().all(), name
        assert f[name][[A, C]].iloc[3:].notna().all().all(), name


def test_feature_errors_are_config_errors():
    us = Bars(index=IDX, symbols=("AAPL", "MSFT"), close=np.full((8, 2), 10.0))
    with pytest.raises(ConfigError, match="sector_ret_20.*A-share.*drop the sector_"):
        sector_feature(us, "ret", 20)
    with pytest.raises(ConfigError, match="sector_rank_1: N must be"):
        compute_features(HAND, ["sector_rank_1"])


# ----------------------------------------------------------------------------- leaders
LEAD_SYMS = ("600519.SH", "000858.SZ", "000568.SZ")  # all 白酒
LEAD = Bars(index=pd.bdate_range("2021-01-04", periods=7, tz="UTC"), symbols=LEAD_SYMS,
            close=np.array([
                [10.0, 10.0, 10.0],
                [10.0, 10.0, 10.0],
                [10.0, 10.0, 10.0],
                [10.0, 10.0, 9.5],   # the board dips: its 3-bar low
                [11.0, 10.0, 9.5],   # A breaks above its 3-bar high first
                [12.0, 10.5, 9.5],   # then B
                [13.0, 14.0, 9.5],   # B is now the strongest
            ]))


def test_leaders_hand_case():
    lead = leaders(LEAD, bundled_boards(), "白酒", window=3, top=1)
    assert list(lead.columns) == ["date", "symbol", "ret", "board_ret", "rel_strength",
                                  "rs_rank", "breakout", "mover_rank", "first_mover", "leader"]
    last = lead[lead["date"] == LEAD.index[6]].set_index("symbol")
    board = (0.3 + 0.4 + 0.0) / 3  # 3-bar returns 13/10-1, 14/10-1, 9.5/9.5-1
    assert last["board_ret"].iloc[0] == pytest.approx(board)
    np.testing.assert_allclose(last["rel_strength"].to_numpy(),
                               [0.3 - board, 0.4 - board, -board])
    assert last["rs_rank"].tolist() == [2.0, 1.0, 3.0]
    # the up-move starts at the dip (row 3): A broke out on row 4, B on row 5, C never
    assert last["breakout"].tolist()[:2] == [LEAD.index[4], LEAD.index[5]]
    assert pd.isna(last["breakout"].iloc[2])
    assert last["mover_rank"].tolist()[:2] == [1.0, 2.0] and np.isnan(last["mover_rank"].iloc[2])
    assert last["first_mover"].tolist() == [True, False, False]
    # leaders: the top-1 by relative strength (B) and the first mover (A)
    assert last["leader"].tolist() == [True, True, False]
    # on the dip itself the board is at its low: no up-move, no first mover
    dip = lead[lead["date"] == LEAD.index[3]]
    assert dip["mover_rank"].isna().all() and not dip["first_mover"].any()


def test_leaders_errors():
    with pytest.raises(DataError, match="unknown board '白酒行业'.*白酒"):
        leaders(LEAD, bundled_boards(), "白酒行业")
    with pytest.raises(DataError, match="no member among the panel"):
        leaders(LEAD, bundled_boards(), "银行")


def test_leaders_have_no_rows_before_as_of():
    lead = leaders(HAND, SNAP, "白酒", window=2)
    assert lead["date"].min() == IDX[3]


# ----------------------------------------------------------------------------- causality
PANEL = load_ashare().bars.select(start="2018-04-01", end="2019-03-31")
NAMES = [f"sector_{k}_{n}" for k in ("ret", "rel", "breadth", "rank") for n in (5, 20)]


def _perturb_after(bars: Bars, t: int, seed: int) -> Bars:
    """Every price and volume after row t times a random factor (OHLC of a cell together,
    so the bars stay valid)."""
    rng = np.random.default_rng(seed)
    k = rng.uniform(0.5, 2.0, size=bars.shape)
    k[: t + 1] = 1.0
    v = rng.uniform(0.1, 10.0, size=bars.shape)
    v[: t + 1] = 1.0
    new = {f: getattr(bars, f) * k for f in ("open", "high", "low", "close")}
    return bars.replace(volume=bars.volume * v, **new)


def _same(x: pd.DataFrame, y: pd.DataFrame) -> bool:
    """Exactly equal, NaN / NaT in the same places."""
    return x.equals(y)


def _outputs(bars: Bars) -> dict[str, pd.DataFrame]:
    out = dict(compute_features(bars, NAMES))
    p = sector_panel(bars, bundled_boards(), "industry", 20)
    for name in ("ret", "breadth", "surge", "score", "rank_pct"):
        out[f"panel.{name}"] = getattr(p, name)
    out["strength"] = sector_strength(bars, window=20)
    out["concept strength"] = sector_strength(bars, board_type="concept", window=10)
    out["leaders"] = leaders(bars, None, "白酒", window=20)
    out["rotation"] = rotation_ranks(bars, freq="ME")
    return out


def _upto(frame: pd.DataFrame, when: pd.Timestamp) -> pd.DataFrame:
    if "date" in frame.columns:
        return frame[frame["date"] <= when].reset_index(drop=True)
    return frame[frame.index <= when]


@pytest.mark.parametrize(("day", "seed"), [("2018-06-15", 0), ("2018-07-02", 1),
                                           ("2018-10-31", 2), ("2019-01-17", 3)])
def test_nothing_after_t_changes_anything_at_or_before_t(day, seed):
    t = int(PANEL.index.searchsorted(pd.Timestamp(day, tz="UTC")))
    when = PANEL.index[t]
    base, moved = _outputs(PANEL), _outputs(_perturb_after(PANEL, t, seed))
    for name, frame in base.items():
        assert _same(_upto(frame, when), _upto(moved[name], when)), f"{name} leaks at {day}"
        # and the test is not vacuous: the perturbation does change later rows
        later_a, later_b = frame[~frame.index.isin(_upto(frame, when).index)], \
            moved[name][~moved[name].index.isin(_upto(moved[name], when).index)]
        if name != "rotation" or len(later_a):
            assert not _same(later_a, later_b), f"{name}: perturbation changed nothing"


def test_every_sector_value_is_nan_before_as_of():
    before = PANEL.index.tz_localize(None) < pd.Timestamp("2018-07-01")
    assert before.sum() > 40
    out = _outputs(PANEL)
    for name in [*NAMES, "panel.ret", "panel.score", "panel.rank_pct"]:
        frame = out[name]
        assert frame[before].isna().all().all(), name
        assert frame[~before].iloc[25:].notna().any().any(), name
    assert out["leaders"]["date"].min() >= pd.Timestamp("2018-07-01", tz="UTC")
    assert out["rotation"].index.min() >= pd.Timestamp("2018-07-01", tz="UTC")


def test_rotation_report_and_plot(tmp_path):
    png = tmp_path / "rot" / "rotation.png"
    rep = rotation_report(PANEL, freq="ME", top=2, plot=png)
    assert list(rep.columns) == ["period_end", "boards", "top", "bottom", "risers", "fallers",
                                 "persistence"]
    assert rep["period_end"].iloc[0] == pd.Timestamp("2018-07-31", tz="UTC")
    assert len(rep) == 9  # Jul 2018 .. Mar 2019
    ranks = rotation_ranks(PANEL, freq="ME")
    first, second = ranks.iloc[0].sort_values(), ranks.iloc[1].sort_values()
    assert rep["top"].iloc[0] == ", ".join(first.index[:2])
    assert rep["bottom"].iloc[1] == ", ".join(second.index[::-1][:2])
    assert np.isnan(rep["persistence"].iloc[0])
    assert rep["persistence"].iloc[1] == pytest.approx(
        pd.concat([second, first], axis=1).corr(method="spearman").iloc[0, 1])
    mover = rep["risers"].iloc[1].split(", ")[0]  # "汽车 (+21)"
    name, delta = mover.rsplit(" (", 1)
    assert int(delta.rstrip(")")) == first[name] - second[name] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="freq 'monthly'"):
        rotation_report(PANEL, freq="monthly")


def test_leaders_are_causal_on_many_bars_and_boards():
    """First-mover logic looks back over a moving window: check it at many cuts, on boards
    whose up-moves (with first movers) fall on the cut bar itself."""
    rng = np.random.default_rng(7)
    cuts = sorted(rng.choice(np.arange(70, len(PANEL.index) - 5), size=16, replace=False))
    with_mover = 0
    for i, t in enumerate(cuts):
        moved = _perturb_after(PANEL, int(t), seed=100 + i)
        when = PANEL.index[t]
        for board in ("白酒", "银行", "家电", "保险"):
            a = _upto(leaders(PANEL, None, board, window=10), when)
            b = _upto(leaders(moved, None, board, window=10), when)
            assert _same(a, b), f"leaders of {board} leak at {when.date()}"
            with_mover += bool(a[a["date"] == when]["first_mover"].any())
    assert with_mover >= 10  # the cut bar itself often has a first mover: not vacuous
