"""Tests for `mltrader.data.files`: layouts, date/number parsing, one-line errors, round trips."""

from __future__ import annotations

import gzip
import string
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mltrader.data
from mltrader.data.bars import Bars
from mltrader.data.files import load_file, save_file
from mltrader.errors import DataError

BUNDLED = Path(mltrader.data.__file__).parent / "bundled"
FIELDS = ("open", "high", "low", "close", "volume")


def write(tmp_path: Path, text: str, name: str = "prices.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error(path: Path) -> str:
    """Load ``path`` expecting a DataError; return its (single-line) message."""
    with pytest.raises(DataError) as info:
        load_file(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def same(a: Bars, b: Bars) -> bool:
    if not (a.index.equals(b.index) and str(a.index.tz) == str(b.index.tz)):
        return False
    if a.symbols != b.symbols:
        return False
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if (x is None) != (y is None):
            return False
        if x is not None and not np.array_equal(x, y, equal_nan=True):
            return False
    return True


# ---------------------------------------------------------------------------- happy paths
def test_long_csv_pivots_on_union_of_dates(tmp_path: Path) -> None:
    p = write(tmp_path, "Date,Ticker,Close\n2020-01-01,AAA,10\n2020-01-02,AAA,11\n"
                        "2020-01-02,BBB,5\n2020-01-03,BBB,6\n")
    b = load_file(p)
    assert b.symbols == ("AAA", "BBB")
    assert b.close_only and b.open is None and b.volume is None
    assert list(b.index.strftime("%Y-%m-%d")) == ["2020-01-01", "2020-01-02", "2020-01-03"]
    assert str(b.index.tz) == "UTC"
    np.testing.assert_array_equal(b.close, [[10, np.nan], [11, 5], [np.nan, 6]])


def test_long_ohlcv_names_case_insensitive_and_adj_close_ignored(tmp_path: Path) -> None:
    p = write(tmp_path, "DATE,SYMBOL,Open,HIGH,low,Close,Adj Close,Volume\n"
                        "2021-03-01,X,10,12,9,11,5.5,100\n2021-03-02,X,11,13,10,12,6,200\n")
    b = load_file(p)
    assert not b.close_only
    np.testing.assert_array_equal(b.close[:, 0], [11, 12])  # close, not adj close
    np.testing.assert_array_equal(b.volume[:, 0], [100, 200])
    np.testing.assert_array_equal(b.high[:, 0], [12, 13])


def test_adj_close_with_underscore_and_datetime_name(tmp_path: Path) -> None:
    p = write(tmp_path, "datetime,symbol,close,adj_close\n2021-03-01 09:30,X,10,9\n")
    b = load_file(p)
    assert b.index[0] == pd.Timestamp("2021-03-01 09:30", tz="UTC")
    assert b.close[0, 0] == 10


def test_wide_leading_and_trailing_nans_kept(tmp_path: Path) -> None:
    p = write(tmp_path, "date,AAA,BBB\n2020-01-01,1,\n2020-01-02,2,3\n2020-01-03,,4\n")
    b = load_file(p)
    assert b.symbols == ("AAA", "BBB")
    np.testing.assert_array_equal(b.close, [[1, np.nan], [2, 3], [np.nan, 4]])


def test_single_symbol_ohlcv_named_after_stem_with_mdy_dates(tmp_path: Path) -> None:
    p = tmp_path / "spy.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("Date,Open,High,Low,Close,Adj Close,Volume\n"
                 "1/4/1999,10,12,9,11,11,877000000\n12/31/1999,11,12,10,11.5,11.5,1\n")
    b = load_file(p)
    assert b.symbols == ("SPY",)
    assert b.index[1] == pd.Timestamp("1999-12-31", tz="UTC")
    assert b.volume[0, 0] == 877000000


def test_tz_aware_dates_converted_to_utc(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp,A\n2020-01-01T10:00:00+02:00,1\n2020-01-01T09:00:00Z,2\n")
    b = load_file(p)
    assert list(b.index) == [pd.Timestamp("2020-01-01 08:00", tz="UTC"),
                             pd.Timestamp("2020-01-01 09:00", tz="UTC")]


def test_blank_lines_skipped_but_row_numbers_kept(tmp_path: Path) -> None:
    p = write(tmp_path, "date,A\n2020-01-01,1\n\n2020-01-02,x\n")
    assert "row 4, column 'A'" in error(p)
    ok = write(tmp_path, "date,A\n2020-01-01,1\n\n2020-01-02,2\n", "ok.csv")
    assert len(load_file(ok)) == 2


def test_parquet_long_and_wide(tmp_path: Path) -> None:
    long = pd.DataFrame({"Date": pd.to_datetime(["2020-01-01", "2020-01-02"]),
                         "Symbol": ["A", "A"], "Close": [1.0, 2.0]})
    long.to_parquet(tmp_path / "l.parquet")
    b = load_file(tmp_path / "l.parquet")
    assert b.symbols == ("A",) and str(b.index.tz) == "UTC"
    wide = pd.DataFrame({"A": [1.0, 2.0], "B": [np.nan, 3.0]},
                        index=pd.DatetimeIndex(["2020-01-01", "2020-01-02"], name="date"))
    wide.to_parquet(tmp_path / "w.parquet")
    b = load_file(str(tmp_path / "w.parquet"))
    assert b.symbols == ("A", "B")
    np.testing.assert_array_equal(b.close, [[1, np.nan], [2, 3]])


def test_parquet_rows_are_counted_from_one(tmp_path: Path) -> None:
    pd.DataFrame({"date": ["2020-01-01", "2020-01-02"], "A": [1.0, -2.0]}).to_parquet(
        tmp_path / "w.parquet")
    msg = error(tmp_path / "w.parquet")
    assert "data row 2, column 'A'" in msg and "-2.0" in msg


@pytest.mark.parametrize("name, shape, close_only", [
    ("sp500_index_ohlcv_1999_2018.csv.gz", (5031, 1), False),
    ("sp500_20stocks_close_1990_2022.csv.gz", (8313, 20), True),
])
def test_bundled_files_load(name: str, shape: tuple[int, int], close_only: bool) -> None:
    b = load_file(BUNDLED / name)
    assert b.shape == shape and b.close_only is close_only
    assert b.index[0].year in (1990, 1999)


# ---------------------------------------------------------------------------- file-level errors
def test_file_not_found(tmp_path: Path) -> None:
    # changed: the message names the current folder (and the absolute path, if given relative)
    p = tmp_path / "nope.csv"
    assert error(p) == f"{p}: file not found (current folder {Path.cwd()}); check the path"


def test_unsupported_extension(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "date,A\n2020-01-01,1\n", "prices.xlsx"))
    assert "unsupported file type" in msg and ".csv, .csv.gz, .tsv, .tsv.gz, .parquet" in msg


def test_folder_is_loaded_as_one_file_per_symbol(tmp_path: Path) -> None:
    # changed: a folder is loaded (one file per symbol); an empty one says so
    (tmp_path / "d.csv").mkdir()
    assert "the folder holds no data file" in error(tmp_path / "d.csv")


def test_empty_file(tmp_path: Path) -> None:
    assert "empty (0 bytes)" in error(write(tmp_path, ""))


def test_header_only(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "date,symbol,close\n"))
    assert "header but no data rows" in msg and "add at least one row" in msg


def test_corrupt_gzip_and_parquet(tmp_path: Path) -> None:
    assert "cannot read" in error(write(tmp_path, "not gzip", "x.csv.gz"))
    assert "cannot read as Parquet" in error(write(tmp_path, "not parquet", "x.parquet"))


def test_malformed_csv_row(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "date,A\n2020-01-01,1\n2020-01-02,2,3\n"))
    assert "malformed CSV" in msg and "line 3" in msg


def test_symbols_hint_reserved(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="symbols_hint"):
        load_file(write(tmp_path, "date,A\n2020-01-01,1\n"), symbols_hint="A")  # type: ignore


# ---------------------------------------------------------------------------- column errors
def test_missing_date_column(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "day,A\n2020-01-01,1\n"))
    assert "no date column" in msg and "'day'" in msg and "name the date column 'date'" in msg


def test_missing_close_column_long(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "date,symbol,adj close\n2020-01-01,A,1\n"))
    assert "no close column" in msg and "add a 'close' column" in msg


def test_partial_open_high_low(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "date,symbol,high,low,close\n2020-01-01,A,2,1,1.5\n"))
    assert "has high, low but not open" in msg and "all of open, high, low" in msg


def test_several_date_columns_and_duplicate_names(tmp_path: Path) -> None:
    # changed: a date column plus a 'time' column of clock times are merged (MetaTrader)
    assert "several date columns" in error(
        write(tmp_path, "date,timestamp,A\n2020-01-01,2020-01-01,1\n"))
    merged = load_file(write(tmp_path, "date,time,A\n2020-01-01,10:00,1\n", "t.csv"))
    assert merged.index[0] == pd.Timestamp("2020-01-01 10:00", tz="UTC")
    msg = error(write(tmp_path, "date,A,A\n2020-01-01,1,2\n", "d.csv"))
    assert "'A' appears twice (columns 2 and 3)" in msg


def test_unknown_column_in_long_and_single_layouts(tmp_path: Path) -> None:
    assert "unexpected column 'note'" in error(
        write(tmp_path, "date,symbol,close,note\n2020-01-01,A,1,x\n"))
    assert "column 'AAPL' is not a field" in error(
        write(tmp_path, "date,close,AAPL\n2020-01-01,1,2\n", "s.csv"))


def test_unnamed_column(tmp_path: Path) -> None:
    assert "column 3 has no name" in error(write(tmp_path, "date,A,\n2020-01-01,1,2\n"))


# ---------------------------------------------------------------------------- cell errors
def test_unparseable_date(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "date,A\n2020-01-01,1\n2020-13-45,2\n"))
    assert msg == (f"{tmp_path / 'prices.csv'}, row 3, column 'date': cannot read date "
                   "'2020-13-45'; write dates as YYYY-MM-DD (optionally with time and UTC "
                   "offset) or M/D/YYYY")


def test_empty_date(tmp_path: Path) -> None:
    assert "row 2, column 'date': the date is empty" in error(write(tmp_path, "date,A\n,1\n"))


def test_unparseable_number(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "date,symbol,close\n2020-01-01,A,1\n2020-01-02,A,1.2.3\n"))
    assert "row 3, column 'close': cannot read number '1.2.3'" in msg and "1234.5" in msg


def test_unsorted_long_per_symbol(tmp_path: Path) -> None:
    # other symbols interleave freely; AAA's own dates go backwards on row 5
    p = write(tmp_path, "date,symbol,close\n2020-01-02,AAA,1\n2020-01-01,BBB,1\n"
                        "2020-01-03,AAA,1\n2020-01-01,AAA,2\n")
    msg = error(p)
    assert "row 5" in msg and "AAA date '2020-01-01' comes after '2020-01-03' (row 4)" in msg
    assert "sort each symbol's rows by date" in msg


def test_unsorted_wide(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "date,A\n2020-01-02,1\n2020-01-01,2\n"))
    assert "row 3: date '2020-01-01' comes after '2020-01-02' (row 2)" in msg


def test_duplicate_long(tmp_path: Path) -> None:
    p = write(tmp_path, "date,symbol,close\n2020-01-01,A,1\n2020-01-01,B,1\n2020-01-01,A,2\n")
    msg = error(p)
    assert "row 4: duplicate row for A on '2020-01-01' (same as row 2)" in msg


def test_duplicate_wide_same_instant_different_spelling(tmp_path: Path) -> None:
    msg = error(write(tmp_path, "date,A\n2020-01-01,1\n2020-01-01T00:00:00Z,2\n"))
    assert "row 3: duplicate date '2020-01-01T00:00:00Z' (same time as row 2)" in msg


def test_nan_inside_history_wide(tmp_path: Path) -> None:
    p = write(tmp_path, "date,A,B\n2020-01-01,1,1\n2020-01-02,,2\n2020-01-03,3,3\n")
    msg = error(p)
    assert "row 3, column 'A': no price for A inside its history" in msg


def test_nan_marker_inside_history_wide(tmp_path: Path) -> None:
    p = write(tmp_path, "date,A\n2020-01-01,1\n2020-01-02,NaN\n2020-01-03,3\n")
    assert "row 3, column 'A'" in error(p)


def test_row_without_any_price_wide(tmp_path: Path) -> None:
    p = write(tmp_path, "date,A,B\n2020-01-01,,\n2020-01-02,1,2\n")
    assert "row 2: the row has a date but no price for any symbol" in error(p)


def test_column_without_prices_wide(tmp_path: Path) -> None:
    p = write(tmp_path, "date,A,B\n2020-01-01,1,\n2020-01-02,1,\n")
    assert "column 'B': the column has no prices at all" in error(p)


@pytest.mark.parametrize("value", ["0", "-5", "inf"])
def test_non_positive_price(tmp_path: Path, value: str) -> None:
    p = write(tmp_path, f"date,symbol,close\n2020-01-01,A,1\n2020-01-02,A,{value}\n")
    msg = error(p)
    assert f"row 3, column 'close': close is '{value}': prices must be finite and > 0" in msg


def test_negative_volume(tmp_path: Path) -> None:
    p = write(tmp_path, "date,close,volume\n2020-01-01,1,-3\n")
    assert "row 2, column 'volume': volume is '-3'" in error(p)


def test_high_below_low(tmp_path: Path) -> None:
    # changed: the message names the bound that failed
    p = write(tmp_path, "date,symbol,open,high,low,close\n2020-01-01,A,5,4,6,5\n")
    msg = error(p)
    assert msg == (f"{p}, row 2, column 'high': high 4 is below low 6; "
                   "the high must be >= the low; correct the bar or delete the row")


def test_close_above_high(tmp_path: Path) -> None:
    p = write(tmp_path, "date,open,high,low,close\n2020-01-01,5,6,4,7\n")
    assert ("row 2, column 'high': high 6 is below close 7; the high must be >= open and "
            "close") in error(p)


def test_long_nan_close(tmp_path: Path) -> None:
    p = write(tmp_path, "date,symbol,close\n2020-01-01,A,1\n2020-01-02,A,\n")
    msg = error(p)  # changed: counts the missing cells and names data.clean
    assert msg == (f"{p}, row 3, column 'close': close is empty; the file has 1 missing "
                   "cell(s) (close 1, written as empty); fill them in the file, or set "
                   "data.clean: drop (delete those rows) or ffill (carry the previous close "
                   "forward)")


def test_long_empty_symbol(tmp_path: Path) -> None:
    p = write(tmp_path, "date,symbol,close\n2020-01-01,,1\n")
    assert "row 2, column 'symbol': the symbol is empty" in error(p)


def test_single_symbol_missing_volume(tmp_path: Path) -> None:
    p = write(tmp_path, "date,close,volume\n2020-01-01,1,\n")
    assert "volume is empty; the file has 1 missing cell(s) (volume 1" in error(p)


# ---------------------------------------------------------------------------- save / round trip
def _example(ohlcv: bool) -> Bars:
    idx = pd.date_range("2021-01-01", periods=3, freq="D", tz="UTC")
    close = np.array([[np.nan, 10.0], [1.5, 10.25], [1 / 3, np.nan]])
    if not ohlcv:
        return Bars(index=idx, symbols=("ZZZ", "AAA"), close=close)
    return Bars(index=idx, symbols=("ZZZ", "AAA"), close=close, open=close * 0.99,
                high=close * 1.01, low=close * 0.98, volume=np.where(np.isnan(close), np.nan, 7))


@pytest.mark.parametrize("ohlcv", [False, True])
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_save_round_trip(tmp_path: Path, ohlcv: bool, suffix: str) -> None:
    b = _example(ohlcv)
    p = save_file(b, tmp_path / f"out{suffix}")
    assert p == tmp_path / f"out{suffix}"
    assert same(load_file(p), b)


def test_save_refuses_what_long_format_cannot_hold(tmp_path: Path) -> None:
    idx = pd.date_range("2021-01-01", periods=2, freq="D", tz="UTC")
    no_prices = Bars(index=idx, symbols=("A", "B"), close=np.array([[1.0, np.nan]] * 2))
    with pytest.raises(DataError, match="B: it has no close prices"):
        save_file(no_prices, tmp_path / "x.csv")
    empty_date = Bars(index=idx, symbols=("A",), close=np.array([[1.0], [np.nan]]))
    with pytest.raises(DataError, match="no symbol has a close"):
        save_file(empty_date, tmp_path / "x.csv")
    vol_gap = Bars(index=idx, symbols=("A",), close=np.ones((2, 1)), open=np.ones((2, 1)),
                   high=np.ones((2, 1)), low=np.ones((2, 1)), volume=np.array([[1.0], [np.nan]]))
    with pytest.raises(DataError, match="volume of A .* missing"):
        save_file(vol_gap, tmp_path / "x.parquet")
    with pytest.raises(DataError, match="unsupported file type"):
        save_file(_example(False), tmp_path / "x.txt")
    with pytest.raises(DataError, match="cannot write"):
        save_file(_example(False), tmp_path / "no" / "such" / "x.csv")


def test_save_non_utc_comes_back_as_same_instants_in_utc(tmp_path: Path) -> None:
    idx = pd.date_range("2021-01-01", periods=2, freq="D", tz="America/New_York")
    b = Bars(index=idx, symbols=("A",), close=np.array([[1.0], [2.0]]))
    back = load_file(save_file(b, tmp_path / "ny.csv"))
    assert str(back.index.tz) == "UTC"
    assert (back.index == idx).all()
    np.testing.assert_array_equal(back.close, b.close)


@st.composite
def panels(draw: st.DrawFn) -> Bars:
    t = draw(st.integers(1, 6))
    n = draw(st.integers(1, 4))
    symbols = draw(st.lists(st.text(string.ascii_uppercase + string.digits + ".-", min_size=1,
                                    max_size=5), min_size=n, max_size=n, unique=True))
    seconds = sorted(draw(st.lists(st.integers(0, 10**9), min_size=t, max_size=t, unique=True)))
    index = pd.Timestamp("1995-01-01", tz="UTC") + pd.to_timedelta(seconds, unit="s")
    mask = np.array(draw(st.lists(st.booleans(), min_size=t * n, max_size=t * n))).reshape(t, n)
    mask[np.arange(t), np.arange(t) % n] = True  # every date has a close
    mask[np.arange(n) % t, np.arange(n)] = True  # every symbol has a close

    def grid(lo: float, hi: float) -> np.ndarray:
        vals = draw(st.lists(st.floats(lo, hi), min_size=t * n, max_size=t * n))
        return np.where(mask, np.array(vals).reshape(t, n), np.nan)

    close = grid(1e-6, 1e9)
    if not draw(st.booleans()):
        return Bars(index=pd.DatetimeIndex(index), symbols=tuple(symbols), close=close)
    opn = grid(1e-6, 1e9)
    high = np.maximum(opn, close) * grid(1.0, 2.0)
    low = np.minimum(opn, close) / grid(1.0, 2.0)
    return Bars(index=pd.DatetimeIndex(index), symbols=tuple(symbols), close=close, open=opn,
                high=high, low=low, volume=grid(0.0, 1e12))


@settings(max_examples=60, deadline=None)
@given(bars=panels(), suffix=st.sampled_from([".csv", ".parquet"]))
def test_save_load_round_trip_property(bars: Bars, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = save_file(bars, Path(d) / f"panel{suffix}")
        assert same(load_file(p), bars)
