"""Board snapshots: the bundled 2018 one (as-of rule, lookups, close-match errors) and East
Money's through akshare, here a fake module that returns the documented output frames."""

from __future__ import annotations

import io
import sys
import types

import numpy as np
import pandas as pd
import pytest

from mltrader.data.cn_boards import (
    BUNDLED_AS_OF,
    UNCLASSIFIED,
    BoardSnapshot,
    bundled_boards,
    members,
    membership_matrix,
    online_board_list,
    online_boards,
    sector_map,
)
from mltrader.errors import DataError

# East Money outputs with their real headers: rows of the akshare doc samples in
# ../shared/fixtures/akshare (stock_board_concept_name_em / stock_board_concept_cons_em)
NAME_CSV = ("排名,板块名称,板块代码,最新价,涨跌额,涨跌幅,总市值,换手率,上涨家数,下跌家数,"
            "领涨股票,领涨股票-涨跌幅\n") + """\
1,乳业,BK0892,1045.53,42.05,,,2.85,26,3,庄园牧场,10.04
2,免税概念,BK0927,1308.35,48.13,,,2.58,30,1,海南发展,10.01
3,退税商店,BK0933,1214.86,40.97,,,2.33,10,0,广百股份,9.97
"""
CONS_CSV = ("序号,代码,名称,最新价,涨跌幅,涨跌额,成交量,成交额,振幅,最高,最低,今开,昨收,换手率,"
            "市盈率-动态,市净率\n") + """\
1,301557,N常友,89.99,211.60,,,,,,,80.23,28.88,83.66,37.89,4.00
2,603409,N汇通,50.81,110.13,,,,,,,48.50,24.18,75.43,38.13,4.44
3,832149,利尔达,17.29,30.00,,,,,,,13.01,13.30,37.53,-49.74,10.49
"""


def _csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype={"代码": str, "板块代码": str})


def _fake_akshare(monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None,
                  cons: str = CONS_CSV) -> list[tuple[str, tuple]]:
    calls: list[tuple[str, tuple]] = []

    def make(name: str, text: str):
        def fn(*args: object) -> pd.DataFrame:
            calls.append((name, args))
            if fail is not None:
                raise fail
            return _csv(text)
        return fn

    mod = types.ModuleType("akshare")
    for kind in ("industry", "concept"):
        setattr(mod, f"stock_board_{kind}_name_em", make(f"{kind}_name", NAME_CSV))
        setattr(mod, f"stock_board_{kind}_cons_em", make(f"{kind}_cons", cons))
    monkeypatch.setitem(sys.modules, "akshare", mod)
    return calls


# ----------------------------------------------------------------------------- bundled
def test_bundled_snapshot_as_of_and_types():
    snap = bundled_boards()
    assert snap.as_of == pd.Timestamp("2018-07-01") == BUNDLED_AS_OF
    assert snap.board_types == ("industry", "concept", "region", "index")
    assert snap.membership["symbol"].nunique() == 3631
    # every stock has at most one industry
    assert not snap.of_type("industry")["symbol"].duplicated().any()


def test_moutai_is_baijiu_and_catl_concepts():
    snap = bundled_boards()
    assert sector_map(["600519.SH"]) == {"600519.SH": "白酒"}
    concepts = set(snap.of_type("concept").query("symbol == '300750.SZ'")["board"])
    assert {"锂电池", "新能源车"} <= concepts
    # other spellings of the code map too; keys stay as given
    assert sector_map(["sh600519", "AAPL", "688981.SH"]) == {
        "sh600519": "白酒", "AAPL": UNCLASSIFIED, "688981.SH": UNCLASSIFIED}


def test_sector_map_can_leave_unknown_symbols_out():
    assert sector_map(["600519.SH", "AAPL"], unknown=None) == {"600519.SH": "白酒"}
    assert sector_map(["600519.SH"], at="2018-01-02", unknown=None) == {}


def test_sector_map_is_unclassified_before_as_of():
    assert sector_map(["600519.SH"], at="2018-06-29") == {"600519.SH": UNCLASSIFIED}
    assert sector_map(["600519.SH"], at=pd.Timestamp("2018-07-02", tz="UTC")) == {
        "600519.SH": "白酒"}


def test_members_of_a_board():
    got = members(bundled_boards(), "白酒")
    assert {"600519.SH", "000858.SZ", "000568.SZ"} <= set(got)
    assert got == sorted(got)
    assert "300750.SZ" in members(bundled_boards(), "锂电池", "concept")


def test_unknown_board_lists_close_matches_on_one_line():
    with pytest.raises(DataError) as e:
        members(bundled_boards(), "白酒行业")
    msg = str(e.value)
    assert "\n" not in msg and "unknown board '白酒行业'" in msg
    assert "白酒" in msg.split("close matches:")[1]
    assert "mltrader sectors list" in msg
    with pytest.raises(DataError, match="board type 'sector'"):
        members(bundled_boards(), "白酒", "sector")


def test_membership_matrix_is_nan_before_as_of():
    idx = pd.date_range("2018-06-28", periods=4, freq="D", tz="UTC")  # 06-28 .. 07-01
    mats = membership_matrix(bundled_boards(), idx, ["600519.SH", "601398.SH", "AAPL"])
    assert set(mats) == {"白酒", "银行"}  # only boards with a member among the symbols
    m = mats["白酒"]
    assert m.shape == (4, 3)
    assert m.iloc[:3].isna().all().all()
    assert m.iloc[3].tolist() == [1.0, 0.0, 0.0]


def test_snapshot_validates_its_columns():
    with pytest.raises(DataError, match="no board column"):
        BoardSnapshot(pd.DataFrame({"symbol": ["600519.SH"], "board_type": ["industry"]}),
                      pd.Timestamp("2020-01-01"), "x")
    with pytest.raises(DataError, match="unknown board_type 'sector'"):
        BoardSnapshot(pd.DataFrame({"symbol": ["a"], "board_type": ["sector"], "board": ["b"]}),
                      pd.Timestamp("2020-01-01"), "x")


# ----------------------------------------------------------------------------- online
def test_online_board_list_maps_the_chinese_headers(monkeypatch):
    calls = _fake_akshare(monkeypatch)
    frame = online_board_list("concept")
    assert calls == [("concept_name", ())]
    assert {"rank", "board", "code", "advancers", "leader"} <= set(frame.columns)
    assert frame["board"].tolist() == ["乳业", "免税概念", "退税商店"]
    assert frame["code"].iloc[0] == "BK0892"


def test_online_boards_build_a_snapshot_known_from_the_fetch_day(monkeypatch):
    calls = _fake_akshare(monkeypatch)
    snap = online_boards("concept", boards=["乳业"], as_of="2026-11-22")
    assert calls == [("concept_name", ()), ("concept_cons", ("乳业",))]
    assert snap.as_of == pd.Timestamp("2026-11-22") and snap.source == "eastmoney:concept"
    assert members(snap, "乳业") == ["301557.SZ", "603409.SH", "832149.BJ"]
    assert set(snap.membership["board_type"]) == {"concept"}
    # every board: one constituent request per board, progress after each
    seen: list[str] = []
    full = online_boards("industry", progress=seen.append)
    assert seen == ["乳业", "免税概念", "退税商店"]
    assert full.boards()["members"].tolist() == [3, 3, 3]
    assert full.as_of == pd.Timestamp.now(tz="Asia/Shanghai").tz_localize(None).normalize()
    idx = pd.date_range(full.as_of - pd.Timedelta(days=1), periods=2, freq="D", tz="UTC")
    m = membership_matrix(full, idx, ["301557.SZ"])["乳业"]
    assert np.isnan(m.iloc[0, 0]) and m.iloc[1, 0] == 1.0


def test_online_unknown_board_and_type(monkeypatch):
    _fake_akshare(monkeypatch)
    with pytest.raises(DataError, match="unknown East Money concept board '乳品'.*乳业"):
        online_boards("concept", boards=["乳品"])
    with pytest.raises(DataError, match="industry or concept, not 'region'"):
        online_boards("region")


def test_online_without_akshare_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "akshare", None)  # import akshare -> ImportError
    with pytest.raises(DataError) as e:
        online_board_list("industry")
    msg = str(e.value)
    assert "akshare" in msg and "not installed" in msg and "bundled" in msg and "\n" not in msg


def test_online_network_failure_is_one_line(monkeypatch):
    _fake_akshare(monkeypatch, fail=ConnectionError("Max retries exceeded\nwith url: /api"))
    with pytest.raises(DataError) as e:
        online_boards("industry")
    msg = str(e.value)
    assert "East Money board fetch failed" in msg and "ConnectionError" in msg
    assert "bundled" in msg and "\n" not in msg


def test_online_changed_headers_are_named(monkeypatch):
    _fake_akshare(monkeypatch, cons="code,name\n600519,贵州茅台\n")
    with pytest.raises(DataError, match="no 代码 column.*upgrade akshare"):
        online_boards("industry", boards=["乳业"])
