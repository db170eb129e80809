"""read_news_file / write_news_file / FileNews: every bad input is one clear line."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from mltrader.data.news import (
    FileNews,
    NewsError,
    NewsSource,
    news_frame,
    read_news_file,
    write_news_file,
)
from mltrader.errors import ConfigError, MltraderError

HEADER = "timestamp,symbols,headline,summary,source\n"


def _csv(tmp_path, body: str, header: str = HEADER, name: str = "news.csv"):
    p = tmp_path / name
    p.write_text(header + body)
    return p


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, MltraderError)
    return msg


def test_reads_csv_with_offsets_and_symbol_separators(tmp_path):
    p = _csv(tmp_path, '2024-01-02T15:30:00-05:00,"AAPL MSFT",Apple up,,benzinga\n'
                       "2024-01-02T10:00:00Z,aapl|tsla,Tesla down,s,\n")
    df = read_news_file(p)
    assert df["time"].tolist() == [pd.Timestamp("2024-01-02T10:00Z"),
                                   pd.Timestamp("2024-01-02T20:30Z")]
    assert df["symbols"].tolist() == [("AAPL", "TSLA"), ("AAPL", "MSFT")]
    assert df["provider"].unique().tolist() == ["file"]
    assert df["id"].str.len().eq(16).all()  # a stable hash when the file has no id
    assert read_news_file(p)["id"].tolist() == df["id"].tolist()


def test_missing_file(tmp_path):
    with pytest.raises(NewsError) as e:
        read_news_file(tmp_path / "nope.csv")
    assert "not found" in _one_line(e)


def test_no_timestamp_column_names_the_columns_found(tmp_path):
    p = _csv(tmp_path, "2024-01-02,AAPL,h\n", header="date,symbols,headline\n")
    with pytest.raises(NewsError) as e:
        read_news_file(p)
    assert "no 'timestamp' column (columns found: date, symbols, headline)" in _one_line(e)


@pytest.mark.parametrize("missing", ["headline", "symbols"])
def test_no_headline_or_symbols_column(tmp_path, missing):
    cols = [c for c in ("timestamp", "symbols", "headline") if c != missing]
    p = _csv(tmp_path, "", header=",".join(cols) + "\n")
    with pytest.raises(NewsError, match=f"no '{missing}' column"):
        read_news_file(p)


def test_unparseable_timestamp_names_row_and_value(tmp_path):
    p = _csv(tmp_path, "2024-01-02T10:00Z,AAPL,a,,\nyesterday noon,AAPL,b,,\n")
    with pytest.raises(NewsError) as e:
        read_news_file(p)
    assert "row 2: timestamp 'yesterday noon' is not a date/time" in _one_line(e)


def test_naive_timestamps_need_a_zone(tmp_path):
    p = _csv(tmp_path, "2024-01-02 15:30:00,AAPL,a,,\n")
    with pytest.raises(NewsError) as e:
        read_news_file(p)
    msg = _one_line(e)
    assert "have no time zone: add an offset (2024-01-02T15:30:00-05:00)" in msg
    assert ("set news.tz in the config (--tz for `mltrader news import`), e.g. "
            "America/New_York") in msg


def test_tz_localizes_naive_and_converts_aware(tmp_path):
    p = _csv(tmp_path, "2024-01-02 15:30:00,AAPL,a,,\n2024-07-01T09:00:00+02:00,AAPL,b,,\n")
    df = read_news_file(p, tz="America/New_York")
    assert df["time"].tolist() == [pd.Timestamp("2024-01-02T20:30Z"),
                                   pd.Timestamp("2024-07-01T07:00Z")]
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Base'"):
        read_news_file(p, tz="Mars/Base")


def test_empty_headline_names_the_row(tmp_path):
    p = _csv(tmp_path, "2024-01-02T10:00Z,AAPL,a,,\n2024-01-02T11:00Z,AAPL,  ,,\n")
    with pytest.raises(NewsError) as e:
        read_news_file(p)
    assert "row 2: empty headline" in _one_line(e)


def test_row_without_symbols(tmp_path):
    p = _csv(tmp_path, "2024-01-02T10:00Z,,a,,\n")
    with pytest.raises(NewsError, match="row 1: no symbols"):
        read_news_file(p)


def test_unknown_symbol_names_row_and_universe(tmp_path):
    rows = "".join(f"2024-01-02T10:{i:02d}Z,A,h{i},,\n" for i in range(16))
    p = _csv(tmp_path, rows + "2024-01-02T11:00Z,B XYZ,h,,\n")
    with pytest.raises(NewsError) as e:
        read_news_file(p, symbols=["A", "B", "C"])
    msg = _one_line(e)
    assert "unknown symbol 'XYZ' in row 17:" in msg and msg.endswith("the universe is A, B, C")


def test_duplicate_ids_keep_the_first_with_a_warning(tmp_path, caplog):
    p = _csv(tmp_path, "2024-01-02T10:00Z,A,first,,,x\n2024-01-03T10:00Z,A,second,,,x\n",
             header="timestamp,symbols,headline,summary,source,id\n")
    with caplog.at_level(logging.WARNING):
        df = read_news_file(p)
    assert df["headline"].tolist() == ["first"]
    assert "1 row(s) repeat an earlier id" in caplog.text


@pytest.mark.parametrize("name", ["out.csv", "out.parquet", "out.csv.gz"])
def test_write_then_read_round_trips(tmp_path, name):
    df = news_frame([
        {"id": "7", "time": pd.Timestamp("2024-01-02T15:30:00.123456-05:00"),
         "symbols": ("AAPL", "MSFT"), "headline": 'Apple, "quoted" | piped', "summary": "",
         "source": "benzinga", "provider": "alpaca"},
        {"id": "8", "time": pd.Timestamp("2024-01-01T00:00Z"), "symbols": ("TSLA",),
         "headline": "h", "summary": "line1\nline2", "source": "", "provider": "file"}])
    back = read_news_file(write_news_file(df, tmp_path / name))
    pd.testing.assert_frame_equal(back, df)


def test_parquet_symbols_may_be_lists(tmp_path):
    p = tmp_path / "n.parquet"
    pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-02T10:00Z"]),
                  "symbols": [["aapl", "msft"]], "headline": ["h"]}).to_parquet(p)
    assert read_news_file(p)["symbols"].tolist() == [("AAPL", "MSFT")]


def test_file_news_is_a_source_filtering_symbols_and_range(tmp_path):
    p = _csv(tmp_path, "2024-01-02T10:00Z,AAPL,a,,\n2024-01-03T10:00Z,MSFT,b,,\n"
                       "2024-01-05T10:00Z,AAPL,c,,\n")
    src = FileNews(p)
    assert isinstance(src, NewsSource)
    got = src.fetch(["aapl"], pd.Timestamp("2024-01-01", tz="UTC"),
                    pd.Timestamp("2024-01-04", tz="UTC"))
    assert got["headline"].tolist() == ["a"]


def test_csv_with_a_byte_order_mark(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes(("\ufeff" + HEADER + "2024-01-02T10:00Z,AAPL,h,,\n").encode())
    assert read_news_file(p)["headline"].tolist() == ["h"]
