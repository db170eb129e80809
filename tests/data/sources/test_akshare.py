"""AkshareSource offline: akshare's documented outputs (Chinese headers) mapped to the standard
and the canonical long frames (lots -> shares, preclose = close - 涨跌额, qfq / hfq / none),
akshare's REAL stock_zh_a_hist driven through a mocked ``requests.get`` answering East Money's
kline JSON, and every failure (pandas-3 breakage, network, changed headers, missing package)
as one SourceError line. No test reaches the network."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest

ak = pytest.importorskip("akshare")
requests = pytest.importorskip("requests")

from mltrader.data.fetch import NETWORK_SOURCES, make_source  # noqa: E402
from mltrader.data.sources.akshare import LONG_COLUMNS, AkshareSource  # noqa: E402
from mltrader.data.sources.base import COLUMNS, Source, SourceError  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "akshare"
FILES = {"": "stock_zh_a_hist_000001_daily_adjust-none_doc_sample.csv",
         "qfq": "stock_zh_a_hist_000001_daily_adjust-qfq_doc_sample.csv",
         "hfq": "stock_zh_a_hist_000001_daily_adjust-hfq_doc_sample.csv"}
LATER = pd.Timestamp("2024-06-03", tz="UTC")  # every fixture bar has closed by then


def doc_frame(adjust: str = "", fill: bool = True) -> pd.DataFrame:
    """A fixture parsed as akshare returns it: 日期 as datetime.date, 股票代码 str, numbers
    float. fill=True fills the cells the docs elide (the test's own values): 最高/最低 =
    max/min(open, close) +- 0.01, 成交量 = 1000 + row lots, 成交额 = 成交量*100*close."""
    df = pd.read_csv(FIXTURES / FILES[adjust], dtype={"股票代码": str})
    df["日期"] = pd.to_datetime(df["日期"]).dt.date
    if fill:
        o, c = df["开盘"], df["收盘"]
        df["最高"] = np.maximum(o, c) + 0.01
        df["最低"] = np.minimum(o, c) - 0.01
        df["成交量"] = (1000 + np.arange(len(df))).astype("int64")
        df["成交额"] = df["成交量"] * 100.0 * c
    return df


@pytest.fixture
def fake_hist(monkeypatch):
    """akshare.stock_zh_a_hist answering from the fixtures; records its calls."""
    calls: list[dict] = []

    def stock_zh_a_hist(symbol="000001", period="daily", start_date="19700101",
                        end_date="20500101", adjust="", timeout=None):
        calls.append(dict(symbol=symbol, period=period, start_date=start_date,
                          end_date=end_date, adjust=adjust))
        df = doc_frame(adjust)
        d = pd.to_datetime(df["日期"])
        keep = (d >= pd.Timestamp(start_date)) & (d <= pd.Timestamp(end_date))
        return df.loc[keep].reset_index(drop=True)

    monkeypatch.setattr(ak, "stock_zh_a_hist", stock_zh_a_hist)
    return calls


def src(**kw) -> AkshareSource:
    kw.setdefault("now", lambda: LATER)
    kw.setdefault("sleep", lambda s: None)
    return AkshareSource(**kw)


def test_fixture_headers_are_what_we_map():
    cols = pd.read_csv(FIXTURES / "stock_zh_a_hist_columns.csv")["名称"].tolist()
    assert cols == list(doc_frame().columns)
    assert "成交量" in cols and "涨跌额" in cols


def test_registered_and_is_a_source():
    assert "akshare" in NETWORK_SOURCES
    s = make_source("akshare")
    assert isinstance(s, AkshareSource) and isinstance(s, Source) and s.name == "akshare"


def test_fetch_standard_frame_qfq_by_default(fake_hist):
    df = src().fetch("000001.SZ", pd.Timestamp("2017-03-01", tz="UTC"), LATER, "1d")
    assert list(df.columns) == list(COLUMNS) and len(df) == 10
    assert str(df.index.tz) == "UTC" and df.index[0] == pd.Timestamp("2017-03-01", tz="UTC")
    assert (df.index == df.index.normalize()).all() and df.index.is_monotonic_increasing
    assert df["close"].iloc[0] == 8.14 and df["close"].iloc[-1] == 11.40  # qfq
    assert df["volume"].iloc[0] == 1000 * 100  # lots -> shares
    assert fake_hist[0] == dict(symbol="000001", period="daily", start_date="20170301",
                                end_date="20240603", adjust="qfq")


@pytest.mark.parametrize("adjust, adjusted, first_close, asked", [
    ("qfq", True, 8.14, "qfq"), ("hfq", True, 1575.20, "hfq"), ("qfq", False, 9.49, ""),
    ("hfq", False, 9.49, ""),
])
def test_qfq_hfq_none(fake_hist, adjust, adjusted, first_close, asked):
    df = src(adjust=adjust).fetch("sz000001", pd.Timestamp("2017-03-01"), LATER, "1d",
                                  adjusted=adjusted)
    assert df["close"].iloc[0] == first_close
    assert fake_hist[-1]["adjust"] == asked
    # the last bars: qfq equals the raw prices, hfq does not
    if asked == "qfq":
        assert df["close"].iloc[-1] == 11.40


def test_fetch_long_maps_every_column(fake_hist):
    s = src(adjust="hfq")  # fetch_long is always unadjusted, whatever `adjust` says
    df = s.fetch_long(1, "2017-03-01", "2024-05-28")  # an int that lost its zeros
    assert fake_hist[-1]["adjust"] == ""
    assert list(df.columns) == list(LONG_COLUMNS) and len(df) == 10
    raw = doc_frame("")
    assert (df["symbol"] == "000001.SZ").all() and df["symbol"].dtype == "str"
    assert df["date"].dtype == "datetime64[ns]" and df["date"].iloc[0] == pd.Timestamp("2017-03-01")
    np.testing.assert_array_equal(df["open"], raw["开盘"])
    np.testing.assert_array_equal(df["close"], raw["收盘"])
    np.testing.assert_array_equal(df["volume"], raw["成交量"] * 100)  # 手 -> shares
    np.testing.assert_array_equal(df["amount"], raw["成交额"])
    np.testing.assert_array_equal(df["turnover"], raw["换手率"])
    np.testing.assert_array_equal(df["pct_chg"], raw["涨跌幅"])
    np.testing.assert_allclose(df["preclose"], raw["收盘"] - raw["涨跌额"], atol=1e-9)
    # preclose = close - 涨跌额: 2017-03-02 closed 9.43 after -0.06 -> 9.49 (the 03-01 close)
    assert df["preclose"].iloc[1] == 9.49 == df["close"].iloc[0]
    assert df["preclose"].iloc[0] == 9.48  # known even for the first row asked
    assert (df["trade_status"] == 1).all() and (df["is_st"] == 0).all()
    # consecutive days without ex-rights: factor stays 1.0; it starts at 1.0
    assert df["adj_factor"].iloc[:5].tolist() == [1.0] * 5
    # the docs skip 1750 rows, so the 2024 rows' factor is close[t-1]/preclose[t] across them
    assert df["adj_factor"].iloc[5] == pytest.approx(9.45 / 11.55)
    np.testing.assert_allclose(df["adj_factor"].iloc[5:], df["adj_factor"].iloc[5])


def test_fetch_long_only_asks_for_the_range(fake_hist):
    df = src().fetch_long("000001.SZ", "2024-05-23", "2024-05-27")
    assert df["date"].dt.strftime("%Y-%m-%d").tolist() == ["2024-05-23", "2024-05-24",
                                                          "2024-05-27"]
    assert df["adj_factor"].tolist() == [1.0, 1.0, 1.0]
    assert fake_hist[-1]["start_date"] == "20240523" and fake_hist[-1]["end_date"] == "20240527"


def test_a_bar_of_today_waits_for_the_close(fake_hist):
    before = pd.Timestamp("2024-05-28 06:30", tz="UTC")  # 14:30 Shanghai: still trading
    after = pd.Timestamp("2024-05-28 07:00", tz="UTC")  # 15:00 Shanghai: closed
    a = src(now=lambda: before).fetch("000001.SZ", pd.Timestamp("2024-05-20"), before, "1d")
    b = src(now=lambda: after).fetch("000001.SZ", pd.Timestamp("2024-05-20"), after, "1d")
    assert a.index[-1] == pd.Timestamp("2024-05-27", tz="UTC")
    assert b.index[-1] == pd.Timestamp("2024-05-28", tz="UTC")
    long = src(now=lambda: before).fetch_long("000001.SZ", "2024-05-20", "2024-05-28")
    assert long["date"].iloc[-1] == pd.Timestamp("2024-05-27")


def test_only_daily_bars(fake_hist):
    with pytest.raises(SourceError, match=r"only daily bars \(1d\).*not 1h") as e:
        src().fetch("000001.SZ", pd.Timestamp("2024-05-20"), LATER, "1h")
    assert "\n" not in str(e.value) and not fake_hist


def test_bad_symbol_is_a_source_error(fake_hist):
    with pytest.raises(SourceError, match="not an A-share code"):
        src().fetch("AAPL", pd.Timestamp("2024-05-20"), LATER, "1d")
    assert not fake_hist


def test_empty_answer_is_an_empty_frame(monkeypatch):
    monkeypatch.setattr(ak, "stock_zh_a_hist", lambda **kw: pd.DataFrame())
    assert src().fetch("600519", pd.Timestamp("2024-05-20"), LATER, "1d").empty
    long = src().fetch_long("600519", "2024-05-20", LATER)
    assert long.empty and list(long.columns) == list(LONG_COLUMNS)


def test_changed_headers_fail_clearly(monkeypatch):
    df = doc_frame().rename(columns={"涨跌额": "change", "成交量": "vol"})
    monkeypatch.setattr(ak, "stock_zh_a_hist", lambda **kw: df)
    with pytest.raises(SourceError, match=r"no column\(s\) 成交量, 涨跌额.*format changed") as e:
        src().fetch_long("000001", "2017-03-01", LATER)
    assert "\n" not in str(e.value)


# -- failures inside akshare ------------------------------------------------------------

def test_pandas3_breakage_is_one_line(monkeypatch):
    def broken(**kw):  # what akshare's fillna(method=...) functions do on pandas 3
        return pd.DataFrame({"a": [1.0, None]}).fillna(method="ffill")

    monkeypatch.setattr(ak, "stock_zh_a_hist", broken)
    with pytest.raises(SourceError) as e:
        src().fetch("600519.SH", pd.Timestamp("2024-05-20"), LATER, "1d")
    msg = str(e.value)
    assert "\n" not in msg and "stock_zh_a_hist(600519) failed inside akshare" in msg
    assert "TypeError" in msg and "pandas<3" in msg and "fillna(method" in msg


def test_removed_append_is_one_line(monkeypatch):
    def broken(**kw):
        return pd.DataFrame({"a": [1]}).append(pd.DataFrame({"a": [2]}))

    monkeypatch.setattr(ak, "index_stock_cons_csindex", broken)
    with pytest.raises(SourceError, match=r"AttributeError.*pandas<3") as e:
        src().index_constituents("000300")
    assert "\n" not in str(e.value)


def test_network_error_retries_then_one_line(monkeypatch):
    tries, slept = [], []

    def down(**kw):
        tries.append(1)
        raise requests.exceptions.ConnectionError("Max retries exceeded with url: /api/qt/\n"
                                                  "stock/kline/get (Caused by ...)")

    monkeypatch.setattr(ak, "stock_zh_a_hist", down)
    s = src(max_retries=2, backoff=1.5, sleep=slept.append)
    with pytest.raises(SourceError) as e:
        s.fetch_long("600519", "2024-05-20", LATER)
    msg = str(e.value)
    assert "\n" not in msg and "unreachable after 3 tries" in msg and "ConnectionError" in msg
    assert len(tries) == 3 and slept == [1.5, 3.0]


def test_a_socket_blocked_by_the_guard_is_unreachable(monkeypatch):
    """The real akshare call against the test suite's socket guard: an OSError / requests
    ConnectionError from the DNS lookup, reported as unreachable."""
    with pytest.raises(SourceError, match="unreachable after 1 tries"):
        src(max_retries=0, timeout=1).fetch("600519", pd.Timestamp("2024-05-20"), LATER, "1d")


def test_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "akshare", None)
    with pytest.raises(SourceError, match=r"pip install 'mltrader\[cn\]'") as e:
        AkshareSource().fetch_long("600519", "2024-05-20", LATER)
    assert "\n" not in str(e.value)


# -- akshare's real code, HTTP mocked -----------------------------------------------------

def kline(df: pd.DataFrame) -> dict:
    """East Money's kline JSON as akshare reads it: data.klines = "日期,开盘,收盘,最高,最低,
    成交量,成交额,振幅,涨跌幅,涨跌额,换手率" per line."""
    order = ["日期", "开盘", "收盘", "最高", "最低", "成交量", "成交额", "振幅", "涨跌幅",
             "涨跌额", "换手率"]
    lines = [",".join(str(r[c]) for c in order) for _, r in df.iterrows()]
    return {"rc": 0, "rt": 17, "data": {"code": "000001", "market": 0, "name": "平安银行",
                                        "decimal": 2, "dktotal": 1760, "klines": lines}}


class Reply:
    def __init__(self, body: dict):
        self._body = body
        self.status_code = 200

    def json(self):
        return self._body


@pytest.fixture
def east_money(monkeypatch):
    """requests.get answering push2his.eastmoney.com's kline endpoint from the fixtures."""
    seen: list[tuple[str, dict]] = []

    def get(url, params=None, timeout=None, **kw):
        parts = urlsplit(url)
        assert parts.netloc == "push2his.eastmoney.com", url
        assert parts.path == "/api/qt/stock/kline/get"
        seen.append((url, dict(params)))
        adjust = {"0": "", "1": "qfq", "2": "hfq"}[params["fqt"]]
        df = doc_frame(adjust)
        df["日期"] = df["日期"].astype(str)
        d = pd.to_datetime(df["日期"])
        df = df[(d >= pd.Timestamp(params["beg"])) & (d <= pd.Timestamp(params["end"]))]
        return Reply(kline(df))

    monkeypatch.setattr(requests, "get", get)
    return seen


def test_real_stock_zh_a_hist_through_http(east_money):
    s = src()
    long = s.fetch_long("000001.SZ", "2017-03-01", "2024-05-28")
    (url, params), = east_money
    assert params["secid"] == "0.000001" and params["fqt"] == "0" and params["klt"] == "101"
    assert params["beg"] == "20170301" and params["end"] == "20240528"
    raw = doc_frame("")
    assert len(long) == 10 and (long["symbol"] == "000001.SZ").all()
    np.testing.assert_array_equal(long["volume"], raw["成交量"] * 100)
    np.testing.assert_allclose(long["preclose"], raw["收盘"] - raw["涨跌额"], atol=1e-9)
    np.testing.assert_array_equal(long["close"], raw["收盘"])
    std = s.fetch("000001.SZ", pd.Timestamp("2017-03-01"), pd.Timestamp("2024-05-28"), "1d")
    assert east_money[-1][1]["fqt"] == "1" and std["close"].iloc[0] == 8.14


def test_real_code_shanghai_secid(east_money):
    src().fetch("sh600519", pd.Timestamp("2024-05-20"), LATER, "1d")
    assert east_money[-1][1]["secid"] == "1.600519"


def test_real_code_non_json_body_is_one_line(monkeypatch):
    class Html:
        status_code = 200

        def json(self):
            raise requests.exceptions.JSONDecodeError("Expecting value", "<html>", 0)

    monkeypatch.setattr(requests, "get", lambda url, params=None, timeout=None, **k: Html())
    with pytest.raises(SourceError, match="not what akshare expects") as e:
        src().fetch("600519", pd.Timestamp("2024-05-20"), LATER, "1d")
    assert "\n" not in str(e.value)


# -- indices and members ------------------------------------------------------------------

def test_fetch_index(monkeypatch):
    asked = []

    def daily(symbol="csi931151", start_date="19900101", end_date="20500101"):
        asked.append((symbol, start_date, end_date))
        return pd.DataFrame({"date": [pd.Timestamp("2024-05-27").date(),
                                      pd.Timestamp("2024-05-28").date()],
                             "open": [3600.1, 3610.0], "close": [3610.5, 3590.2],
                             "high": [3620.0, 3615.0], "low": [3595.0, 3585.5],
                             "volume": [1.2e8, 1.1e8], "amount": [2.3e11, 2.1e11]})

    monkeypatch.setattr(ak, "stock_zh_index_daily_em", daily)
    s = src()
    df = s.fetch_index("000300", "2024-05-27", "2024-05-28")
    assert asked[-1] == ("sh000300", "20240527", "20240528")
    assert list(df.columns) == list(COLUMNS) and str(df.index.tz) == "UTC"
    assert df["close"].tolist() == [3610.5, 3590.2] and df["volume"].iloc[0] == 1.2e10
    s.fetch_index("000001.SH", "2024-05-27", "2024-05-28")  # SSE Composite, not Ping An
    assert asked[-1][0] == "sh000001"
    s.fetch_index("399001", "2024-05-27", "2024-05-28")
    assert asked[-1][0] == "sz399001"


def test_index_constituents(monkeypatch):
    def cons(symbol="000300"):
        assert symbol == "000300"
        return pd.DataFrame({"日期": ["2024-05-31"] * 3, "指数代码": ["000300"] * 3,
                             "指数名称": ["沪深300"] * 3, "指数英文名称": ["CSI 300"] * 3,
                             "成分券代码": ["600519", "000001", "300750"],
                             "成分券名称": ["贵州茅台", "平安银行", "宁德时代"],
                             "成分券英文名称": ["a", "b", "c"],
                             "交易所": ["上海证券交易所", "深圳证券交易所", "深圳证券交易所"],
                             "交易所英文名称": ["SSE", "SZSE", "SZSE"]})

    monkeypatch.setattr(ak, "index_stock_cons_csindex", cons)
    assert src().index_constituents() == ["000001.SZ", "300750.SZ", "600519.SH"]
    monkeypatch.setattr(ak, "index_stock_cons_csindex",
                        lambda symbol: pd.DataFrame({"code": ["600519"]}))
    with pytest.raises(SourceError, match="no column 成分券代码"):
        src().index_constituents("000300.SH")
