"""A-share financial statements: the field dictionary, translation, the bundled values, and
the point-in-time rule (usable from the first bar after the announcement, never from the
report period; the statutory deadline when the date is unknown)."""

from __future__ import annotations

import re
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from mltrader.data import cn_financials as cn
from mltrader.errors import DataError

T = pd.Timestamp


def test_dictionary_has_400_plus_unique_fields_all_filled():
    f = cn.field_dictionary()
    assert list(f.columns) == ["field_cn", "field_en", "statement", "unit", "source"]
    assert f[["field_cn", "field_en", "statement", "unit", "source"]].notna().all().all()
    assert (f.astype(str).apply(lambda c: c.str.strip().str.len()) > 0).all().all()
    assert not f.duplicated(["field_cn", "statement"]).any()
    assert f["field_en"].nunique() >= 400 and len(f) >= 400
    assert set(f["statement"]) == set(cn.STATEMENTS)
    assert set(f["unit"]) <= set(cn.UNITS)
    assert f["field_en"].map(lambda s: re.fullmatch(r"[a-z][a-z0-9_]*", s) is not None).all()
    # one English name, one unit; each source is zvt, the akshare docs or authored
    assert (f.groupby("field_en")["unit"].nunique() == 1).all()
    assert f["source"].str.match(r"^(zvt|akshare-docs|authored):").all()
    # bank / insurer / broker items are in
    for cn_name in ("吸收存款", "已赚保费", "代理买卖证券款", "不良贷款率(%)", "拨备覆盖率(%)"):
        assert cn_name in set(f["field_cn"])


def test_known_translations():
    assert cn.translate(["资产总计", "其中: 归属于母公司股东的净利润", "经营活动产生的现金流量净额",
                         "基本每股收益"]) == ["total_assets", "net_profit_attributable_to_parent",
                                        "net_operating_cash_flow", "basic_eps"]
    # spacing, full-width colon and 加:/减: prefixes do not matter; keys and English pass
    assert cn.translate(["其中：归属于母公司股东的净利润", "投资收益", "symbol", "报告期",
                         "total_assets"]) == ["net_profit_attributable_to_parent",
                                              "investment_income", "symbol", "report_period",
                                              "total_assets"]
    # a name in two statements: the one asked for first
    assert cn.translate(["其他综合收益"], "balance_sheet") == [
        "accumulated_other_comprehensive_income"]
    assert cn.translate(["其他综合收益"], "income_statement") == ["other_comprehensive_income"]


def test_unknown_chinese_name_is_one_line_naming_it():
    with pytest.raises(DataError, match="'不存在的科目'") as e:
        cn.translate(["资产总计", "不存在的科目"])
    assert "\n" not in str(e.value) and "fields.csv" in str(e.value)
    with pytest.raises(DataError, match="unknown statement"):
        cn.translate(["资产总计"], "cashflow")


@pytest.mark.parametrize("kind", cn.KINDS)
def test_every_shipped_column_translates(kind):
    path = resources.files("mltrader.data.bundled").joinpath("cn_financials", f"{kind}.csv")
    with path.open("rb") as fh:
        raw = pd.read_csv(fh, nrows=1)
    names = cn.translate(raw.columns, kind)
    assert names[:4] == list(cn.ID_COLUMNS)
    df = cn.load_statements(kind)
    assert list(df.columns[:4]) == list(cn.ID_COLUMNS)
    assert set(df.columns[4:]) == set(names[4:])  # aliases merged, nothing lost
    assert not df.duplicated(["symbol", "report_period"]).any()
    assert (df.dtypes.iloc[4:] == "float64").all()
    assert set(df["report_type"]) == set(cn.REPORT_TYPES)
    known = df.dropna(subset=["announced"])
    assert (known["announced"] > known["report_period"]).all()


def test_known_values():
    inc = cn.load_statements("income_statement", ["601318.SH"])
    row = inc[inc["report_period"] == T("2019-12-31")].iloc[0]
    assert row["report_type"] == "year"
    assert row["net_profit_attributable_to_parent"] == pytest.approx(1.494e11, rel=1e-3)
    bs = cn.load_statements("balance_sheet", ["601318.SH"])
    assert bs.loc[bs["report_period"] == T("2019-12-31"), "total_assets"].iloc[0] == \
        pytest.approx(8.22e12, rel=1e-3)
    bank = cn.load_statements("income_statement", ["000001.SZ"])
    r18 = bank[bank["report_period"] == T("2018-12-31")].iloc[0]
    assert r18["net_profit"] == pytest.approx(2.482e10, rel=1e-3)
    assert r18["announced"] == T("2019-03-07")
    # 股本 (bank) and 实收资本（或股本） (others) both load as share_capital
    bs_all = cn.load_statements("balance_sheet", ["000001.SZ", "000338.SZ"])
    assert bs_all.groupby("symbol")["share_capital"].count().min() > 50
    assert cn.load_statements("balance_sheet", ["NOPE.SH"]).empty


def test_unknown_kind_raises():
    with pytest.raises(DataError, match="balance_sheet"):
        cn.load_statements("balance")


@pytest.mark.parametrize(("announced", "period", "rtype", "expected"), [
    ("2019-03-07", "2018-12-31", "year", "2019-03-08"),       # Thursday -> Friday
    ("2019-09-27", "2019-06-30", "half_year", "2019-09-30"),  # Friday -> Monday
    ("2019-10-01", "2019-09-30", "season3", "2019-10-08"),    # National Day holiday
    ("2019-03-09", "2018-12-31", "year", "2019-03-11"),       # a Saturday announcement
])
def test_available_from_is_the_next_session_after_the_announcement(announced, period, rtype,
                                                                   expected):
    assert cn.available_from(T(announced), T(period), rtype) == T(expected)


@pytest.mark.parametrize(("period", "rtype", "deadline", "expected"), [
    ("2019-03-31", "season1", "2019-04-30", "2019-05-06"),    # May Day holiday
    ("2019-06-30", "half_year", "2019-08-31", "2019-09-02"),
    ("2019-09-30", "season3", "2019-10-31", "2019-11-01"),
    ("2019-12-31", "year", "2020-04-30", "2020-05-06"),       # annual: next year's Apr 30
    ("2018-12-31", None, "2019-04-30", "2019-05-06"),         # type from the period
])
def test_missing_announcement_uses_the_statutory_deadline(period, rtype, deadline, expected):
    assert cn.disclosure_deadline(T(period), rtype) == T(deadline)
    assert cn.available_from(None, T(period), rtype) == T(expected)
    assert cn.available_from(pd.NaT, T(period), rtype) == T(expected)


def test_available_from_on_an_index_is_a_bar_strictly_after():
    idx = pd.bdate_range("2019-03-01", "2019-03-20", tz="UTC")
    assert cn.available_from(T("2019-03-07"), T("2018-12-31"), "year", idx) == idx[5]
    assert idx[5].date() == T("2019-03-08").date()
    # never the announcement day itself, never the report period
    assert cn.available_from(T("2019-03-20"), T("2018-12-31"), "year", idx) is pd.NaT
    with pytest.raises(DataError, match="quarter end"):
        cn.available_from(None, T("2019-05-31"))


def _values(rows):
    return pd.DataFrame(rows, columns=["symbol", "report_period", "announced", "value"]).assign(
        report_period=lambda d: pd.to_datetime(d["report_period"]),
        announced=lambda d: pd.to_datetime(d["announced"]))


def test_point_in_time_latest_period_never_back_in_time():
    idx = pd.bdate_range("2019-01-01", "2019-12-31", tz="UTC")
    vals = _values([
        ("A.SH", "2018-12-31", "2019-03-07", 1.0),
        ("A.SH", "2019-03-31", "2019-04-25", 2.0),
        # a late 2018 restatement after Q1 is in use: the newer period stays
        ("A.SH", "2018-12-31", "2019-05-10", 99.0),
        # a restatement of the period in use replaces it from its own date
        ("A.SH", "2019-03-31", "2019-06-03", 3.0),
        ("A.SH", "2019-06-30", None, 4.0),  # unknown date: usable after Aug 31
    ])
    pit = cn.point_in_time(vals, idx, ["A.SH", "B.SZ"])
    a = pit["A.SH"]

    def at(day):
        return a[a.index.date == T(day).date()].iloc[0]

    assert np.isnan(at("2019-03-07")) and at("2019-03-08") == 1.0
    assert at("2019-04-25") == 1.0 and at("2019-04-26") == 2.0
    assert at("2019-05-13") == 2.0  # the old period's restatement never comes back
    assert at("2019-06-03") == 2.0 and at("2019-06-04") == 3.0
    assert at("2019-08-30") == 3.0 and at("2019-09-02") == 4.0
    assert pit["B.SZ"].isna().all()
    assert list(pit.columns) == ["A.SH", "B.SZ"] and pit.index.equals(idx)


def test_point_in_time_needs_its_columns():
    with pytest.raises(DataError, match="missing value"):
        cn.point_in_time(pd.DataFrame(columns=["symbol", "report_period", "announced"]),
                         pd.bdate_range("2019-01-01", periods=3, tz="UTC"), ["A"])


def test_quarterly_from_year_to_date():
    inc = cn.load_statements("income_statement", ["000001.SZ"])
    q = cn.quarterly(inc, "net_profit")
    y19 = inc["report_period"].dt.year == 2019
    assert q[y19].sum() == pytest.approx(inc.loc[inc["report_period"] == T("2019-12-31"),
                                                 "net_profit"].iloc[0])
