"""A-share long frames: fetch_ashare through the per-symbol Parquet cache (akshare's real code
with HTTP mocked: a second run makes no request), read_ashare_file on the spellings users
write (600519, sh600519, 600519.SH, 000001 saved as the int 1, Chinese headers, GBK, Parquet)
with the missing columns derived, and check_ashare naming the first bad row."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mltrader.data.cn_fetch import check_ashare, fetch_ashare, read_ashare_file
from mltrader.data.sources.akshare import LONG_COLUMNS, AkshareSource, add_adj_factor
from mltrader.errors import DataError

LATER = pd.Timestamp("2024-06-03", tz="UTC")
BUNDLED = (Path(__file__).resolve().parents[2] / "src" / "mltrader" / "data" / "bundled"
           / "ashare_csi300_44_daily_2017_2023.csv.gz")


# -- fetch_ashare --------------------------------------------------------------------------

def _rows(code: str, dates: list[str], closes: list[float],
          prev: float | None = None) -> pd.DataFrame:
    """Long rows of one symbol (preclose = previous close, the first = `prev` or open)."""
    closes_a = np.asarray(closes, dtype=float)
    pre = np.r_[prev if prev is not None else closes_a[0], closes_a[:-1]]
    df = pd.DataFrame({"date": pd.to_datetime(dates), "symbol": code, "open": pre,
                       "high": np.maximum(pre, closes_a) + 0.1,
                       "low": np.minimum(pre, closes_a) - 0.1, "close": closes_a,
                       "volume": 1e6, "amount": 1e7, "turnover": 0.5, "preclose": pre,
                       "pct_chg": (closes_a / pre - 1) * 100, "trade_status": 1, "is_st": 0})
    df["symbol"] = df["symbol"].astype("str")
    return add_adj_factor(df)[list(LONG_COLUMNS)]


class FakeSource:
    """fetch_long from a table of rows per symbol; records every call."""

    name = "fake"

    def __init__(self, table: dict[str, pd.DataFrame]):
        self.table = table
        self.calls: list[tuple[str, pd.Timestamp, pd.Timestamp]] = []

    def fetch_long(self, symbol, start, end):
        self.calls.append((symbol, pd.Timestamp(start), pd.Timestamp(end)))
        df = self.table[symbol]
        a, b = pd.Timestamp(start).tz_localize(None), pd.Timestamp(end).tz_localize(None)
        return df[(df["date"] >= a.normalize()) & (df["date"] <= b)].reset_index(drop=True)


DAYS = ["2024-05-20", "2024-05-21", "2024-05-22", "2024-05-23", "2024-05-24", "2024-05-27"]


@pytest.fixture
def fake():
    return FakeSource({"600519.SH": _rows("600519.SH", DAYS, [10, 11, 12, 11, 12, 13]),
                       "000001.SZ": _rows("000001.SZ", DAYS[:3] + DAYS[4:],  # 05-23 suspended
                                          [5, 5.1, 5.2, 5.0, 4.9])})


def test_fetch_many_symbols_and_cache(tmp_path, fake):
    df = fetch_ashare(["sh600519", 1], "2024-05-20", "2024-05-27", cache=tmp_path,
                      source=fake, now=lambda: LATER)
    assert list(df.columns) == list(LONG_COLUMNS)
    assert df["symbol"].unique().tolist() == ["000001.SZ", "600519.SH"]
    assert len(df) == 11  # the suspended day is not invented
    assert len(fake.calls) == 2
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == ["ashare/fake/000001.SZ.parquet", "ashare/fake/600519.SH.parquet"]
    again = fetch_ashare(["600519.SH", "000001.SZ"], "2024-05-20", "2024-05-27",
                         cache=tmp_path, source=fake, now=lambda: LATER)
    assert len(fake.calls) == 2  # served from the cache
    pd.testing.assert_frame_equal(again, df)
    inner = fetch_ashare("600519", "2024-05-22", "2024-05-24", cache=tmp_path, source=fake,
                         now=lambda: LATER)
    assert len(fake.calls) == 2 and len(inner) == 3
    assert inner["adj_factor"].iloc[0] == 1.0  # rebased on the first row asked


def test_cache_extends_to_the_union(tmp_path, fake):
    fetch_ashare("600519", "2024-05-22", "2024-05-24", cache=tmp_path, source=fake,
                 now=lambda: LATER)
    df = fetch_ashare("600519", "2024-05-20", "2024-05-27", cache=tmp_path, source=fake,
                      now=lambda: LATER)
    assert len(df) == 6 and len(fake.calls) == 2
    assert fake.calls[-1][1].date().isoformat() == "2024-05-20"
    assert fake.calls[-1][2].date().isoformat() == "2024-05-27"
    fetch_ashare("600519", "2024-05-21", "2024-05-23", cache=tmp_path, source=fake,
                 now=lambda: LATER)
    assert len(fake.calls) == 2


def test_unsettled_day_is_fetched_again(tmp_path, fake):
    at_1430 = pd.Timestamp("2024-05-27 06:30", tz="UTC")  # 14:30 Shanghai on 05-27
    fetch_ashare("600519", "2024-05-20", "2024-05-27", cache=tmp_path, source=fake,
                 now=lambda: at_1430)
    fetch_ashare("600519", "2024-05-20", "2024-05-27", cache=tmp_path, source=fake,
                 now=lambda: at_1430)
    assert len(fake.calls) == 2  # 05-27 not settled: asked again
    fetch_ashare("600519", "2024-05-20", "2024-05-24", cache=tmp_path, source=fake,
                 now=lambda: at_1430)
    assert len(fake.calls) == 2  # up to 05-24 is covered


def test_no_cache_and_no_rows(tmp_path, fake):
    fetch_ashare(["600519"], "2024-05-20", "2024-05-27", cache=False, source=fake,
                 now=lambda: LATER)
    fetch_ashare(["600519"], "2024-05-20", "2024-05-27", cache=False, source=fake,
                 now=lambda: LATER)
    assert len(fake.calls) == 2 and not list(tmp_path.rglob("*"))
    with pytest.raises(DataError, match=r"no rows for 600519\.SH between 2023-01-02"):
        fetch_ashare(["600519"], "2023-01-02", "2023-01-05", cache=False, source=fake,
                     now=lambda: LATER)
    with pytest.raises(DataError, match="after end"):
        fetch_ashare(["600519"], "2024-05-27", "2024-05-20", source=fake, cache=False)
    with pytest.raises(DataError, match="not an A-share code"):
        fetch_ashare(["AAPL"], "2024-05-20", "2024-05-27", source=fake, cache=False)


def test_default_cache_root_is_barcaches(tmp_path, monkeypatch, fake):
    monkeypatch.setenv("MLTRADER_CACHE_DIR", str(tmp_path / "c"))
    fetch_ashare("600519", "2024-05-20", "2024-05-27", source=fake, now=lambda: LATER)
    assert (tmp_path / "c" / "ashare" / "fake" / "600519.SH.parquet").is_file()


def test_damaged_cache_file_is_one_line(tmp_path, fake):
    path = tmp_path / "ashare" / "fake" / "600519.SH.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="unreadable.*delete it") as e:
        fetch_ashare("600519", "2024-05-20", "2024-05-27", cache=tmp_path, source=fake,
                     now=lambda: LATER)
    assert "\n" not in str(e.value)


def test_second_run_makes_no_request_real_akshare(tmp_path, monkeypatch):
    """akshare's real stock_zh_a_hist, requests.get mocked with East Money's kline JSON."""
    pytest.importorskip("akshare")
    requests = pytest.importorskip("requests")
    rows = ["2024-05-22,11.56,11.56,11.70,11.50,1000,1156000.0,2.42,0.09,0.01,1.09",
            "2024-05-23,11.53,11.40,11.60,11.38,2000,2280000.0,1.90,-1.38,-0.16,0.95"]
    hits: list[dict] = []

    class Reply:
        status_code = 200

        def json(self):
            return {"rc": 0, "data": {"code": "000001", "klines": rows}}

    def get(url, params=None, timeout=None, **kw):
        hits.append(dict(params))
        return Reply()

    monkeypatch.setattr(requests, "get", get)
    s = AkshareSource(now=lambda: LATER, sleep=lambda x: None)
    a = fetch_ashare(["000001"], "2024-05-22", "2024-05-23", cache=tmp_path, source=s,
                     now=lambda: LATER)
    assert len(hits) == 1 and hits[0]["secid"] == "0.000001"
    assert a["volume"].tolist() == [100_000.0, 200_000.0]
    assert a["preclose"].tolist() == [11.55, 11.56]

    def refuse(*args, **kw):
        raise AssertionError("the second run reached the network")

    monkeypatch.setattr(requests, "get", refuse)
    b = fetch_ashare(["000001.SZ"], "2024-05-22", "2024-05-23", cache=tmp_path, source=s,
                     now=lambda: LATER)
    pd.testing.assert_frame_equal(a, b)


# -- read_ashare_file ----------------------------------------------------------------------

CSV_ROWS = """date,{code_col},open,high,low,close,volume
2024-05-20,{a},1700.0,1720.0,1690.0,1710.0,25000
2024-05-21,{a},1710.0,1712.0,1680.0,1690.0,30000
2024-05-22,{a},1690.0,1700.0,1660.0,1670.0,0
2024-05-20,{b},11.50,11.60,11.40,11.55,900000
2024-05-21,{b},11.55,11.60,11.50,11.56,800000
"""


@pytest.mark.parametrize("a, b", [("600519", "000001"), ("sh600519", "sz000001"),
                                  ("600519.SH", "000001.SZ"), ("600519", "1"),
                                  ("600519.SS", "1.SZ")])
def test_read_csv_code_spellings(tmp_path, a, b):
    path = tmp_path / "long.csv"
    path.write_text(CSV_ROWS.format(code_col="symbol", a=a, b=b))
    df = read_ashare_file(path)
    assert list(df.columns) == list(LONG_COLUMNS)
    assert df["symbol"].tolist() == ["000001.SZ"] * 2 + ["600519.SH"] * 3
    mt = df[df["symbol"] == "600519.SH"].reset_index(drop=True)
    assert np.isnan(mt["preclose"].iloc[0]) and mt["preclose"].tolist()[1:] == [1710.0, 1690.0]
    assert mt["pct_chg"].iloc[1] == pytest.approx((1690 / 1710 - 1) * 100)
    assert mt["trade_status"].tolist() == [1, 1, 0]  # no shares traded -> suspended
    assert (df["is_st"] == 0).all() and df["amount"].isna().all()
    assert df["turnover"].isna().all() and (df["adj_factor"] == 1.0).all()
    assert df["date"].dtype == "datetime64[ns]" and df["volume"].iloc[0] == 900000


def test_read_int_codes_written_by_pandas(tmp_path):
    """000001 saved as the int 1 (a frame with an int code column written to CSV)."""
    frame = pd.DataFrame({"code": [600519, 1, 2594], "date": ["2024-05-20"] * 3,
                          "open": [10.0] * 3, "high": [11.0] * 3, "low": [9.0] * 3,
                          "close": [10.5] * 3, "volume": [100] * 3})
    path = tmp_path / "ints.csv.gz"
    frame.to_csv(path, index=False)
    assert b"\n1,2024" in gzip.decompress(path.read_bytes())
    df = read_ashare_file(path)
    assert df["symbol"].tolist() == ["000001.SZ", "002594.SZ", "600519.SH"]
    pq = tmp_path / "ints.parquet"
    frame.to_parquet(pq)
    assert read_ashare_file(pq)["symbol"].tolist() == df["symbol"].tolist()
    indexed = tmp_path / "indexed.parquet"
    frame.assign(date=pd.to_datetime(frame["date"])).set_index(["date", "code"]).to_parquet(
        indexed)
    assert read_ashare_file(indexed)["symbol"].tolist() == df["symbol"].tolist()


def test_read_ts_code_and_given_columns_kept(tmp_path):
    path = tmp_path / "ts.csv"
    path.write_text("ts_code,trade_date,open,high,low,close,volume,pre_close,pct_chg,amount,"
                    "turnover,is_st\n"
                    "600519.SH,20240520,10,11,9,10,100,9.5,5.263,1000,0.1,1\n"
                    "600519.SH,20240521,10,11,9,10.5,100,9.0,16.667,1000,0.1,1\n")
    df = read_ashare_file(path)
    assert df["date"].dt.strftime("%Y-%m-%d").tolist() == ["2024-05-20", "2024-05-21"]
    assert df["preclose"].tolist() == [9.5, 9.0] and df["pct_chg"].tolist() == [5.263, 16.667]
    assert df["is_st"].tolist() == [1, 1] and df["amount"].tolist() == [1000.0, 1000.0]
    assert df["adj_factor"].tolist() == pytest.approx([1.0, 10 / 9.0])  # an ex-rights day


def test_read_chinese_headers_gbk_lots(tmp_path):
    """akshare's own export (Chinese headers, 成交量 in lots), saved as GBK."""
    text = ("日期,股票代码,开盘,收盘,最高,最低,成交量,成交额,振幅,涨跌幅,涨跌额,换手率\n"
            "2024-05-22,000001,11.56,11.56,11.70,11.50,1000,1156000.0,2.42,0.09,0.01,1.09\n"
            "2024-05-23,000001,11.53,11.40,11.60,11.38,2000,2280000.0,1.90,-1.38,-0.16,0.95\n")
    path = tmp_path / "ak.csv"
    path.write_bytes(text.encode("gbk"))
    df = read_ashare_file(path)
    assert df["symbol"].tolist() == ["000001.SZ"] * 2
    assert df["volume"].tolist() == [100_000.0, 200_000.0]  # 手 -> shares
    assert df["pct_chg"].tolist() == [0.09, -1.38] and df["turnover"].tolist() == [1.09, 0.95]
    assert df["amount"].tolist() == [1156000.0, 2280000.0]


@pytest.mark.parametrize("text, match", [
    ("date,open,high,low,close,volume\n2024-05-20,1,1,1,1,1\n", r"no symbol column"),
    ("date,symbol,open,high,low,close,volume\n2024-05-20,AAPL,1,1,1,1,1\n",
     "not an A-share code"),
    ("date,symbol,open,high,low,close,volume\n2024-05-20,600519,1,x,1,1,1\n",
     r"row 2, column high: 'x' is not a number"),
    ("date,symbol,open,high,low,close,volume\nsoon,600519,1,1,1,1,1\n", "'soon' is not a date"),
    ("date,code,symbol,open,high,low,close,volume\n2024-05-20,1,1,1,1,1,1,1\n",
     "both mean symbol"),
    ("date,symbol,open,high,low,close,volume\n", "no rows"),
    ("date,symbol,open,high,low,close,volume,is_st\n2024-05-20,600519,1,1,1,1,1,2\n",
     "is_st is 2.0; use 0 or 1"),
])
def test_read_bad_files_one_line(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        read_ashare_file(path)
    assert "\n" not in str(e.value)


def test_read_missing_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_ashare_file(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_bytes(b"")
    with pytest.raises(DataError, match="unknown file type"):
        read_ashare_file(tmp_path / "x.xlsx")


@pytest.mark.skipif(not BUNDLED.is_file(), reason="bundled A-share file not present")
def test_derived_adj_factor_matches_the_bundled_one(tmp_path):
    """The bundled file's adj_factor (convert.py) is reproduced from preclose (2 stocks)."""
    full = pd.read_csv(BUNDLED, dtype={"symbol": str})
    part = full[full["symbol"].isin(["600519.SH", "002475.SZ"])]
    path = tmp_path / "b.csv"
    part.drop(columns=["adj_factor"]).to_csv(path, index=False)
    df = read_ashare_file(path)
    want = part.sort_values(["symbol", "date"])["adj_factor"].to_numpy()
    np.testing.assert_allclose(df["adj_factor"].to_numpy(), want, rtol=1e-7)
    assert df["trade_status"].tolist() == part.sort_values(["symbol", "date"])[
        "trade_status"].tolist()


# -- check_ashare --------------------------------------------------------------------------

def _good() -> pd.DataFrame:
    return pd.concat([_rows("600519.SH", DAYS[:3], [10, 11, 12]),
                      _rows("000001.SZ", DAYS[:3], [5, 5.1, 5.2])], ignore_index=True)


def test_check_good_frame_notes():
    notes = check_ashare(_good())
    assert notes[0].startswith("A-share data: 6 rows, 2 symbols, 2024-05-20 .. 2024-05-22")
    df = _good()
    df.loc[1, "preclose"] = 9.0  # an ex-rights day
    df.loc[2, "trade_status"] = 0
    notes = check_ashare(df)
    assert any("1 ex-rights days" in n for n in notes)
    assert any("1 suspended rows" in n for n in notes)


@pytest.mark.parametrize("row, col, value, match", [
    (1, "close", 0.0, r"600519\.SH 2024-05-21: close is 0.0; prices must be positive"),
    (4, "open", -1.0, r"000001\.SZ 2024-05-21: open is -1.0"),
    (2, "high", 11.5, r"600519\.SH 2024-05-22: high 11.5 is below max\(open 11.0, close 12.0\)"),
    (0, "low", 10.5, r"600519\.SH 2024-05-20: low 10.5 is above min"),
    (5, "volume", -5.0, r"000001\.SZ 2024-05-22: volume -5.0 is negative"),
])
def test_check_names_the_first_bad_row(row, col, value, match):
    df = _good()
    df.loc[row, col] = value
    with pytest.raises(DataError, match=match) as e:
        check_ashare(df)
    assert "\n" not in str(e.value)


def test_check_duplicates_and_columns():
    df = pd.concat([_good(), _good().iloc[[4]]], ignore_index=True)
    with pytest.raises(DataError, match=r"000001\.SZ 2024-05-21 appears.*one row per symbol"):
        check_ashare(df)
    with pytest.raises(DataError, match="no volume column"):
        check_ashare(_good().drop(columns=["volume"]))
