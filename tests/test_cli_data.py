"""`mltrader data fetch / check / cache` from the command line, offline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrader.data import fetch as fetch_mod
from mltrader.data.files import load_file, save_file
from mltrader.data.sources.base import SourceError
from mltrader.testing import synthetic_bars
from tests.test_cli import assert_one_line_error, invoke, plain


class FakeSource:
    def __init__(self, name, fail=()):
        self.name, self.fail, self.calls = name, set(fail), 0

    def fetch(self, symbol, start, end, interval, adjusted=True):
        self.calls += 1
        if symbol in self.fail:
            raise SourceError(f"{self.name}: {symbol}: HTTP 503 three times")
        idx = pd.bdate_range("2021-01-04", "2021-03-31", tz="UTC")
        idx = idx[(idx >= start) & (idx <= end)]
        c = 100 + np.arange(len(idx), dtype=float)
        return pd.DataFrame({"open": c, "high": c + 1, "low": c - 1, "close": c,
                             "volume": np.full(len(idx), 1e6)}, index=idx)


@pytest.fixture
def sources(monkeypatch, tmp_path):
    made = {"yahoo": FakeSource("yahoo", fail={"MSFT"}), "alphavantage": FakeSource("alphavantage")}
    monkeypatch.setattr(fetch_mod, "make_source", lambda name, **kw: made[name])
    monkeypatch.setenv("MLTRADER_CACHE_DIR", str(tmp_path / "cache"))
    return made


def test_fetch_falls_back_writes_a_file_and_uses_the_cache(sources, tmp_path):
    out = tmp_path / "prices.parquet"
    args = ["data", "fetch", "--symbols", "AAPL,MSFT", "--start", "2021-01-04", "--end",
            "2021-02-26", "--source", "yahoo", "--source", "alphavantage", "-o", out]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    text = plain(r.stdout)
    assert "yahoo: AAPL" in text and "alphavantage: MSFT" in text and "fell back for MSFT" in text
    bars = load_file(out)
    assert bars.symbols == ("AAPL", "MSFT") and len(bars) == 40
    calls = sources["alphavantage"].calls
    assert invoke(*args).exit_code == 0
    assert sources["alphavantage"].calls == calls  # served from the cache the second time
    r = invoke("data", "cache")
    assert "MSFT" in plain(r.stdout)
    r = invoke("data", "cache", "--clear")
    assert "Removed 2" in plain(r.stdout)


def test_fetch_failing_everywhere_is_one_line(sources):
    assert_one_line_error(
        invoke("data", "fetch", "--symbols", "MSFT", "--start", "2021-01-04", "--source",
               "yahoo", "--no-cache"), "MSFT: every source failed", "503")


def test_check_passes_clean_data_and_fails_an_unadjusted_split(tmp_path):
    good = tmp_path / "good.csv"
    bars = synthetic_bars(300, 2, seed=0, ohlc=True, start="2019-01-02")
    save_file(bars, good)
    r = invoke("data", "check", good)
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.csv"
    frames = {f: bars.frame(f).copy() for f in ("open", "high", "low", "close", "volume")}
    for f in ("open", "high", "low", "close"):
        frames[f].iloc[150:, 0] /= 2  # S00 splits 2-for-1 on bar 150, unadjusted
    from mltrader.data.bars import Bars

    save_file(Bars.from_frames(frames, source="t"), bad)
    assert_one_line_error(invoke("data", "check", bad), "fatal")


def test_check_says_how_the_file_read(tmp_path):
    """The first line: layout, symbols, bars and span, fields, separator and decimal mark;
    then the loader's notes, and missing prices handled as --clean says (counted)."""
    p = tmp_path / "eu.csv"
    p.write_text("Date;Open;High;Low;Close;Volume\n2024-01-02;10,5;11;10;10,75;100\n"
                 "2024-01-03;10,75;12;10,5;NA;200\n2024-01-04;11;12;10,5;11,5;300\n")
    r = invoke("data", "check", p)
    assert_one_line_error(r, "1 missing", "data check --clean drop or --clean ffill")
    r = invoke("data", "check", p, "--clean", "ffill")
    assert r.exit_code == 0, r.output
    text = plain(r.output)
    assert (f"{p}: single layout, 1 symbol(s) (EU), 3 bars 2024-01-02 .. 2024-01-04, OHLCV, "
            "semicolon-separated, decimal ','") in text
    assert "forward-filled" in text and "judged against calendar XNYS" in text
