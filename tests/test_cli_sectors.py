"""`mltrader sectors`: every command runs offline on the bundled snapshot and 44 stocks (the
--online paths with a fake akshare) and prints what it promises; bad input is one line."""

from __future__ import annotations

import sys
import types

import pandas as pd
import pytest
from typer.testing import CliRunner

import mltrader.cli  # noqa: F401  (registers the commands)
import mltrader.cli_sectors  # noqa: F401
from mltrader.cli_app import app

RUN = CliRunner()


def run(*args: str) -> tuple[int, str]:
    res = RUN.invoke(app, ["sectors", *args], env={"COLUMNS": "200"})
    return res.exit_code, res.output


def test_help_teaches_with_examples():
    code, text = run("--help")
    assert code == 0
    for word in ("list", "members", "strength", "leaders", "rotation", "2018-07-01",
                 "Examples"):
        assert word in text
    code, text = run("strength", "--help")
    assert code == 0 and "breadth" in text and "--window" in text and "Examples" in text


def test_list_industry_and_concept():
    code, text = run("list")
    assert code == 0, text
    assert "白酒" in text and "as of 2018-07-01" in text and "71 industry boards" in text
    code, text = run("list", "--type", "concept")
    assert code == 0 and "锂电池" in text and "163 concept boards" in text


def test_list_unknown_type_is_one_line():
    code, text = run("list", "--type", "sector")
    assert code == 2
    assert text.strip().count("\n") == 0 and "industry, concept, region, index" in text


def test_members_marks_the_panel_stocks():
    code, text = run("members", "白酒")
    assert code == 0, text
    assert "600519.SH" in text and "贵州茅台" in text and "yes" in text
    code, text = run("members", "锂电池", "--type", "concept")
    assert code == 0 and "300750.SZ" in text


def test_members_unknown_board_suggests():
    code, text = run("members", "白酒行业")
    assert code == 2 and "close matches: 白酒" in text and "Traceback" not in text


def test_strength_table_on_a_date():
    code, text = run("strength", "--date", "2020-07-31", "--window", "20")
    assert code == 0, text
    assert "industry board strength on 2020-07-31" in text
    for word in ("rank", "members", "breadth", "vol surge", "白酒", "银行"):
        assert word in text
    # 白酒 holds 3 of the bundled stocks, 银行 5
    line = next(ln for ln in text.splitlines() if "白酒" in ln)
    assert " 3 " in line
    code, text = run("strength", "--date", "2018-03-01")
    assert code == 2 and "unknown before 2018-07-01" in text


def test_leaders_table():
    code, text = run("leaders", "白酒", "--date", "2020-07-31")
    assert code == 0, text
    assert "白酒 leaders on 2020-07-31" in text
    assert "000858.SZ" in text and "五粮液" in text and "first mover" in text
    code, text = run("leaders", "银行", "--date", "not-a-date")
    assert code == 2 and "YYYY-MM-DD" in text


def test_rotation_with_plot(tmp_path):
    png = tmp_path / "rotation.png"
    code, text = run("rotation", "--last", "3", "--plot", str(png))
    assert code == 0, text
    assert "industry rotation" in text and "3 of 56 periods" in text
    assert "2023-02-13" in text and "persistence" in text.lower()
    assert png.read_bytes()[:4] == b"\x89PNG"


NAMES = pd.DataFrame({"排名": [1, 2], "板块名称": ["乳业", "免税概念"],
                      "板块代码": ["BK0892", "BK0927"], "涨跌幅": [4.2, 3.8],
                      "上涨家数": [26, 30], "下跌家数": [3, 1],
                      "领涨股票": ["庄园牧场", "海南发展"]})
CONS = pd.DataFrame({"序号": [1, 2], "代码": ["002910", "600519"],
                     "名称": ["庄园牧场", "贵州茅台"]})


@pytest.fixture
def fake_akshare(monkeypatch):
    mod = types.ModuleType("akshare")
    for kind in ("industry", "concept"):
        setattr(mod, f"stock_board_{kind}_name_em", lambda: NAMES.copy())
        setattr(mod, f"stock_board_{kind}_cons_em", lambda symbol: CONS.copy())
    monkeypatch.setitem(sys.modules, "akshare", mod)


def test_online_list_and_members(fake_akshare):
    code, text = run("list", "--online", "--type", "concept")
    assert code == 0, text
    assert "East Money concept boards" in text and "乳业" in text and "BK0892" in text
    code, text = run("members", "乳业", "--online", "--type", "concept")
    assert code == 0, text
    assert "002910.SZ" in text and "600519.SH" in text and "eastmoney:concept" in text


def test_online_without_akshare_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "akshare", None)
    code, text = run("list", "--online")
    assert code == 2 and "not installed" in text and "bundled" in text
    assert text.strip().count("\n") == 0
