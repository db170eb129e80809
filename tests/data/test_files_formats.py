"""Files as tools write them (pandas index, European CSV, FRED, MetaTrader, Binance, yfinance)
load to the same `Bars` as the plain file; missing prices follow ``clean``; messages stay short."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mltrader.data.bars import Bars
from mltrader.data.files import LoadReport, load_file, load_file_report
from mltrader.errors import DataError

FIELDS = ("open", "high", "low", "close", "volume")
PLAIN_OHLCV = ("date,open,high,low,close,volume\n2024-01-02,10,12,9,11,100\n"
               "2024-01-03,11,13,10,12.5,200\n2024-01-04,12.5,13,11,12,0\n")
PLAIN_WIDE = "date,AAA,BBB\n2024-01-02,1.5,\n2024-01-03,2.5,3\n2024-01-04,3,4.25\n"


def write(tmp_path: Path, text: str, name: str = "prices.csv", encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding=encoding)
    return p


def plain(tmp_path: Path, text: str, name: str) -> Bars:
    return load_file(write(tmp_path, text, name))


def error(path: Path, **kw: str) -> str:
    with pytest.raises(DataError) as info:
        load_file(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def assert_same(a: Bars, b: Bars) -> None:
    assert a.index.equals(b.index) and str(a.index.tz) == str(b.index.tz) == "UTC"
    assert a.symbols == b.symbols
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=f)


def ohlcv_frame() -> pd.DataFrame:
    return pd.DataFrame({"open": [10, 11, 12.5], "high": [12, 13, 13], "low": [9, 10, 11],
                         "close": [11, 12.5, 12], "volume": [100, 200, 0]},
                        index=pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"]))


# ---------------------------------------------------------------------------- (a) pandas index
def test_to_csv_with_range_index_drops_the_row_numbers(tmp_path: Path) -> None:
    want = plain(tmp_path, PLAIN_OHLCV, "x.csv")
    df = ohlcv_frame().reset_index(names="date")
    (tmp_path / "a").mkdir()
    df.to_csv(tmp_path / "a" / "x.csv")  # ",date,open,..." with 0, 1, 2 in column 1
    assert (tmp_path / "a" / "x.csv").read_text().startswith(",date,")
    got, rep = load_file_report(tmp_path / "a" / "x.csv")
    assert_same(got, want)
    assert any("row numbers" in n for n in rep.notes)
    # read back and saved again: the index column is now called 'Unnamed: 0'
    (tmp_path / "b").mkdir()
    pd.read_csv(tmp_path / "a" / "x.csv").to_csv(tmp_path / "b" / "x.csv", index=False)
    assert (tmp_path / "b" / "x.csv").read_text().startswith("Unnamed: 0,date,")
    assert_same(load_file(tmp_path / "b" / "x.csv"), want)


def test_to_csv_with_unnamed_datetime_index_reads_it_as_the_dates(tmp_path: Path) -> None:
    want = plain(tmp_path, PLAIN_WIDE, "w.csv")
    df = pd.DataFrame({"AAA": [1.5, 2.5, 3], "BBB": [np.nan, 3, 4.25]},
                      index=pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"]))
    df.to_csv(tmp_path / "w_idx.csv")
    assert (tmp_path / "w_idx.csv").read_text().startswith(",AAA,BBB")
    got = load_file(tmp_path / "w_idx.csv")
    assert got.symbols == ("AAA", "BBB")
    np.testing.assert_array_equal(got.close, want.close)
    assert got.index.equals(want.index)


@pytest.mark.parametrize("name", [None, "Date"])
def test_parquet_with_datetime_index(tmp_path: Path, name: str | None) -> None:
    want = plain(tmp_path, PLAIN_OHLCV, "x.csv")
    df = ohlcv_frame()
    df.index.name = name
    df.to_parquet(tmp_path / "x.parquet")
    got = load_file(tmp_path / "x.parquet")
    assert got.index.equals(want.index) and got.symbols == ("X",)
    np.testing.assert_array_equal(got.close, want.close)
    np.testing.assert_array_equal(got.volume, want.volume)


def test_unnamed_first_column_that_is_neither_dates_nor_row_numbers(tmp_path: Path) -> None:
    msg = error(write(tmp_path, ",date,close\nx,2024-01-02,1\ny,2024-01-03,2\n"))
    assert "column 1 has no name in the header; name it or delete it" in msg


def test_trailing_separator_column_is_dropped(tmp_path: Path) -> None:
    want = plain(tmp_path, PLAIN_WIDE, "w.csv")
    text = "".join(line + ";\n" for line in PLAIN_WIDE.replace(",", ";").splitlines())
    got, rep = load_file_report(write(tmp_path, text, "w2.csv"))
    assert_same(got, want)
    assert any("empty column" in n for n in rep.notes)


# ---------------------------------------------------------------------------- (b) separators
def test_semicolon_and_decimal_comma(tmp_path: Path) -> None:
    want = plain(tmp_path, "Date,Open,High,Low,Close\n2024-01-02,1234.5,1240,1230,1235.5\n"
                           "2024-01-03,1235.5,1241,1231,1236.25\n", "x.csv")
    eu = "Date;Open;High;Low;Close\n2024-01-02;1234,5;1240,0;1230,0;1235,5\n" \
         "2024-01-03;1235,5;1241;1231;1236,25\n"
    got, rep = load_file_report(write(tmp_path, eu, "eu/x.csv"))
    assert_same(got, want)
    assert (rep.separator, rep.decimal) == (";", ",")


@pytest.mark.parametrize("sep", ["\t", "|", ";"])
def test_other_separators_with_decimal_points(tmp_path: Path, sep: str) -> None:
    want = plain(tmp_path, PLAIN_OHLCV, "x.csv")
    got, rep = load_file_report(write(tmp_path, PLAIN_OHLCV.replace(",", sep), "sep/x.csv"))
    assert_same(got, want)
    assert (rep.separator, rep.decimal) == (sep, ".")


def test_thousands_separators_are_an_error_with_the_fix(tmp_path: Path) -> None:
    p = write(tmp_path, "Date;Close\n2024-01-02;1.234,5\n")
    assert error(p) == (f"{p}, row 2, column 'Close': cannot read number '1.234,5': '.' is a "
                        "thousands separator; remove it (1234,5) or save the file without "
                        "thousands separators")
    q = write(tmp_path, 'date,close\n2024-01-02,"1,234.5"\n', "us.csv")
    assert "',' is a thousands separator; remove it (1234.5)" in error(q)


def test_semicolon_file_says_which_separator_was_seen(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "Datum;Schluss\n02.01.2024;1,5\n"))
    assert "no date column (columns are 'Datum', 'Schluss'; read with semicolon separator)" in msg
    bad = error(write(tmp_path, "Date;Close\n2024-01-02;1\n2024-01-03;1;2\n", "m.csv"))
    assert "malformed CSV" in bad and "semicolon-separated fields" in bad


def test_european_day_first_dates(tmp_path: Path) -> None:
    got = load_file(write(tmp_path, "Datum;Close\n02.01.2024;1,5\n03.01.2024;2\n".replace(
        "Datum", "Date")))
    assert list(got.index.strftime("%Y-%m-%d")) == ["2024-01-02", "2024-01-03"]
    np.testing.assert_array_equal(got.close[:, 0], [1.5, 2])


# ---------------------------------------------------------------------------- (c) missing values
FRED = "DATE,SP500\n2020-01-02,3257.85\n2020-01-03,.\n2020-01-06,3246.28\n2020-01-07,NA\n" \
       "2020-01-08,3253.05\n"


def test_fred_dots_are_an_error_naming_the_count_and_the_fix(tmp_path: Path) -> None:
    p = write(tmp_path, FRED, "sp500.csv")
    assert error(p) == (
        f"{p}, row 3, column 'SP500': no price for SP500 inside its history (it has prices "
        "before and after); the file has 2 such missing cell(s) (SP500 2, written as '.', "
        "'NA'); fill them in the file, or set data.clean: drop (delete those dates) or ffill "
        "(carry the previous price forward); only leading (not yet listed) and trailing "
        "(delisted) gaps are allowed as they are")


def test_fred_dots_dropped_or_forward_filled(tmp_path: Path) -> None:
    p = write(tmp_path, FRED.replace("DATE", "observation_date"), "sp500.csv")
    dropped, rep = load_file_report(p, clean="drop")
    assert list(dropped.index.day) == [2, 6, 8]
    assert (rep.rows_dropped, rep.cells_filled, rep.layout) == (2, 0, "wide")
    filled, rep = load_file_report(p, clean="ffill")
    np.testing.assert_array_equal(filled.close[:, 0], [3257.85, 3257.85, 3246.28, 3246.28,
                                                       3253.05])
    assert (rep.rows_dropped, rep.cells_filled) == (0, 2)
    assert rep.notes == (f"{p}: 2 missing price(s) inside a history (SP500 2, written as '.', "
                         "'NA') forward-filled (data.clean: ffill)",)


@pytest.mark.parametrize("token", [".", "NA", "null", "", "N/A", "nan", "#N/A"])
def test_missing_spellings_in_single_symbol_ohlcv(tmp_path: Path, token: str) -> None:
    text = PLAIN_OHLCV.replace("2024-01-03,11,13,10,12.5,200", f"2024-01-03,11,13,10,{token},200")
    p = write(tmp_path, text, "x.csv")
    assert "close is " in error(p) and "set data.clean: drop" in error(p)
    dropped, rep = load_file_report(p, clean="drop")
    assert list(dropped.index.day) == [2, 4] and rep.rows_dropped == 1
    filled, rep = load_file_report(p, clean="ffill")
    row = [filled.open[1, 0], filled.high[1, 0], filled.low[1, 0], filled.close[1, 0],
           filled.volume[1, 0]]
    assert row == [11, 11, 11, 11, 0]  # a flat bar at the previous close, no volume
    assert rep.cells_filled == 5 and rep.rows_dropped == 0


def test_long_file_ffill_is_per_symbol_and_leading_gaps_are_dropped(tmp_path: Path) -> None:
    p = write(tmp_path, "date,symbol,close\n2024-01-02,A,1\n2024-01-02,B,.\n2024-01-03,B,5\n"
                        "2024-01-03,A,\n2024-01-04,A,3\n")
    b, rep = load_file_report(p, clean="ffill")
    np.testing.assert_array_equal(b.close, [[1, np.nan], [1, 5], [3, np.nan]])
    assert (rep.cells_filled, rep.rows_dropped) == (1, 1)
    assert any("leading row(s) without a close dropped" in n for n in rep.notes)


def test_clean_must_be_a_known_mode(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="clean='fill' is not a cleaning mode"):
        load_file(write(tmp_path, PLAIN_OHLCV), clean="fill")


# ---------------------------------------------------------------------------- (d) dates
@pytest.mark.parametrize("header, dates", [
    ("Datetime", ["2024-01-02 09:30:00-05:00", "2024-03-11 09:30:00-04:00"]),
    ("timestamp", ["2024-01-02T14:30:00Z", "2024-03-11T13:30:00Z"]),
    ("time", ["1704205800", "1710163800"]),
    ("open_time", ["1704205800000", "1710163800000"]),
])
def test_times_offsets_and_epochs(tmp_path: Path, header: str, dates: list[str]) -> None:
    got = load_file(write(tmp_path, f"{header},close\n{dates[0]},1\n{dates[1]},2\n"))
    assert list(got.index) == [pd.Timestamp("2024-01-02 14:30", tz="UTC"),
                               pd.Timestamp("2024-03-11 13:30", tz="UTC")]


def test_yyyymmdd_text_and_parquet_int(tmp_path: Path) -> None:
    want = plain(tmp_path, PLAIN_OHLCV, "x.csv")
    ymd = PLAIN_OHLCV.replace("2024-01-0", "2024010")
    assert_same(load_file(write(tmp_path, ymd, "ymd/x.csv")), want)
    df = ohlcv_frame().reset_index(names="date")
    df["date"] = df["date"].dt.strftime("%Y%m%d").astype("int64")
    df.to_parquet(tmp_path / "x.parquet")
    got = load_file(tmp_path / "x.parquet")
    assert got.index.equals(want.index)
    np.testing.assert_array_equal(got.close, want.close)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_metatrader5_export(tmp_path: Path, encoding: str) -> None:
    want = load_file(write(tmp_path, "date,open,high,low,close,volume\n"
                                     "2024-01-02 00:00,1.1,1.2,1.0,1.15,100\n"
                                     "2024-01-02 01:00,1.15,1.2,1.1,1.12,90\n", "eurusd.csv"))
    mt5 = ("<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n"
           "2024.01.02\t00:00:00\t1.1\t1.2\t1.0\t1.15\t100\t0\t2\n"
           "2024.01.02\t01:00:00\t1.15\t1.2\t1.1\t1.12\t90\t0\t2\n")
    p = write(tmp_path, mt5, "EURUSD_mt5.csv", encoding)
    got, rep = load_file_report(p)
    assert got.index.equals(want.index)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f))
    assert rep.separator == "\t" and rep.interval == "1h"
    assert any("'<TICKVOL>' used as the volume ('<VOL>' is all 0)" in n for n in rep.notes)


def test_binance_klines_with_and_without_header(tmp_path: Path) -> None:
    rows = ("1704067200000,42283.58,42554.57,42261.02,42475.23,1271.68,1704070799999,"
            "53957248.97,47134,682.57,28995768.10,0\n"
            "1704070800000,42475.23,42775.00,42431.65,42613.56,1196.37,1704074399999,"
            "50976734.10,46467,626.84,26710418.20,0\n")
    header = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
              "taker_buy_volume,taker_buy_quote_volume,ignore\n")
    a = load_file(write(tmp_path, header + rows, "BTCUSDT.csv"))
    b, rep = load_file_report(write(tmp_path, rows, "btcusdt.csv"))
    assert_same(a, b)
    assert a.index[1] == pd.Timestamp("2024-01-01 01:00", tz="UTC") and rep.interval == "1h"
    assert a.close[1, 0] == 42613.56 and a.volume[0, 0] == 1271.68


def test_headerless_file_asks_for_a_header(tmp_path: Path) -> None:
    p = write(tmp_path, "2020-01-01,1,2\n2020-01-02,1,2\n")
    assert error(p) == (f"{p}, row 1: the first line holds data ('2020-01-01', '1', '2'), not "
                        "column names; add a header line such as 'date,open,high,low,close,"
                        "volume' (one symbol) or 'date,AAPL,MSFT' (one close column per symbol)")


def test_yfinance_history_to_csv_equals_yahoo_download(tmp_path: Path) -> None:
    want = load_file(write(tmp_path, "Date,Open,High,Low,Close,Adj Close,Volume\n"
                                     "2024-01-02,10,12,9,11,10.5,100\n"
                                     "2024-01-03,11,13,10,12.5,12,200\n"
                                     "2024-01-04,12.5,13,11,12,11.5,0\n", "AAPL.csv"))
    hist = ohlcv_frame().rename(columns=str.title)
    hist["Dividends"], hist["Stock Splits"] = 0.0, 0.0
    hist.index = hist.index.tz_localize("America/New_York").rename("Date")
    hist.to_csv(tmp_path / "aapl_hist.csv")  # yf.Ticker("AAPL").history(...).to_csv(...)
    assert "2024-01-02 00:00:00-05:00" in (tmp_path / "aapl_hist.csv").read_text()
    got = load_file(tmp_path / "aapl_hist.csv")
    assert got.index.equals(want.index)
    np.testing.assert_array_equal(got.close, want.close)


def test_yfinance_download_two_header_rows(tmp_path: Path) -> None:
    idx = pd.DatetimeIndex(["2024-01-02", "2024-01-03"], name="Date")
    cols = pd.MultiIndex.from_product([["Close", "High", "Low", "Open", "Volume"],
                                       ["AAPL", "MSFT"]], names=["Price", "Ticker"])
    df = pd.DataFrame([[11, np.nan, 12, np.nan, 9, np.nan, 10, np.nan, 100, np.nan],
                       [12, 20, 13, 21, 10, 19, 11, 20, 200, 50]], index=idx, columns=cols)
    df.to_csv(tmp_path / "yf.csv")  # yf.download(["AAPL", "MSFT"]).to_csv(...)
    got = load_file(tmp_path / "yf.csv")
    assert got.symbols == ("AAPL", "MSFT")
    np.testing.assert_array_equal(got.close, [[11, np.nan], [12, 20]])
    np.testing.assert_array_equal(got.volume, [[100, np.nan], [200, 50]])
    df.xs("AAPL", axis=1, level=1, drop_level=False).to_csv(tmp_path / "one.csv")
    one = load_file(tmp_path / "one.csv")
    assert one.symbols == ("AAPL",) and not one.close_only


# ---------------------------------------------------------------------------- messages
def test_long_header_is_cut_in_messages(tmp_path: Path) -> None:
    names = [f"column_with_a_rather_long_name_{i}" for i in range(100)]
    p = write(tmp_path, "day," + ",".join(names) + "\n2020-01-01," + ",".join("1" * 100) + "\n")
    msg = error(p)
    assert "... and 93 more; read with comma separator)" in msg and len(msg) < 500


def test_long_cell_is_clipped_in_messages(tmp_path: Path) -> None:
    p = write(tmp_path, "date,close\n2020-01-01," + "x" * 3000 + "\n")
    msg = error(p)
    assert "cannot read number 'xxx" in msg and "...'" in msg and len(msg) < 300


@pytest.mark.parametrize("row, needle", [
    ("10,10.5,9,11", "column 'high': high 10.5 is below close 11; the high must be >= open and "
                     "close; correct the bar or delete the row"),
    ("8,12,9,11", "column 'low': low 9 is above open 8; the low must be <= open and close"),
])
def test_ohlc_message_names_the_failed_bound(tmp_path: Path, row: str, needle: str) -> None:
    assert needle in error(write(tmp_path, f"date,open,high,low,close\n2020-01-01,{row}\n"))


def test_bars_message_names_the_failed_bound() -> None:
    idx = pd.date_range("2020-01-01", periods=2, tz="UTC")
    c = np.array([[10.0], [11.0]])
    with pytest.raises(DataError) as info:
        Bars(index=idx, symbols=("A",), close=c, open=c, high=np.array([[10.0], [10.5]]),
             low=np.array([[9.0], [9.0]]), source="f.csv")
    assert str(info.value) == ("f.csv: high below open/close for A on 2020-01-02 (row 2): high "
                               "10.5 is below open 11; the high must be >= open and close; fix "
                               "or drop that bar")


def test_missing_file_suggests_a_close_name(tmp_path: Path) -> None:
    write(tmp_path, PLAIN_OHLCV, "prices.csv")
    msg = error(tmp_path / "price.csv")
    assert msg.endswith(f"did you mean {str(tmp_path / 'prices.csv')!r}?")
    assert "current folder" in msg
    with pytest.raises(DataError, match=r"^nope\.csv: file not found \(looked for /"):
        load_file("nope.csv")
    gone = tmp_path / "no" / "x.csv"
    assert f"the folder {tmp_path / 'no'} does not exist" in error(gone)


def test_report_fields(tmp_path: Path) -> None:
    _, rep = load_file_report(write(tmp_path, PLAIN_OHLCV))
    assert rep == LoadReport(path=str(tmp_path / "prices.csv"), layout="single", rows=3,
                             separator=",", decimal=".", interval="1d")


@pytest.mark.parametrize("name", ["p.tsv", "p.tsv.gz"])
def test_tsv_round_trips_tab_separated(tmp_path: Path, name: str) -> None:
    """A .tsv loads like .csv (the separator sniffed); save_file writes it tab-separated.
    A .txt export is refused with the rename that makes it load."""
    from mltrader.data.files import load_file_report, save_file
    from mltrader.testing import synthetic_bars

    bars = synthetic_bars(30, 2, seed=1, ohlc=True)
    save_file(bars, tmp_path / name)
    got, report = load_file_report(tmp_path / name)
    assert report.separator == "\t"
    assert got.symbols == bars.symbols and got.index.equals(bars.index)
    np.testing.assert_allclose(got.close, bars.close)
    (tmp_path / "p.txt").write_text((tmp_path / name).read_text() if name == "p.tsv" else "x")
    with pytest.raises(DataError, match=r"unsupported file type \(a text export: rename it "):
        load_file_report(tmp_path / "p.txt")
