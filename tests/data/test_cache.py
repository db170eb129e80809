"""The Parquet bar cache: incremental updates, merges, atomic writes, corruption, housekeeping."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys

import numpy as np
import pandas as pd
import pytest

from mltrader.data.cache import BarCache, default_cache_dir
from mltrader.data.sources.base import COLUMNS
from mltrader.errors import DataError

LONG_AGO = pd.Timestamp("2024-01-01", tz="UTC")  # "now" for tests about 2020-2021 data


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def bars(start, end, value=None, freq="B") -> pd.DataFrame:
    """A standard frame with a bar every weekday (the fake source knows no holidays)."""
    idx = pd.date_range(ts(start), ts(end), freq=freq)
    x = np.arange(len(idx), dtype=float) + 100.0 if value is None else np.full(len(idx), value)
    return pd.DataFrame({"open": x, "high": x + 1, "low": x - 1, "close": x,
                         "volume": np.full(len(idx), 1e6)}, index=idx)


class FakeFetch:
    """Counts calls; returns weekday bars inside the asked range (or nothing)."""

    def __init__(self, empty: bool = False, freq: str = "B"):
        self.calls: list[tuple[pd.Timestamp, pd.Timestamp]] = []
        self.empty, self.freq = empty, freq

    def __call__(self, a: pd.Timestamp, b: pd.Timestamp) -> pd.DataFrame:
        self.calls.append((a, b))
        if self.empty:
            return pd.DataFrame(columns=list(COLUMNS))
        return bars(a.tz_convert(None), b.tz_convert(None), freq=self.freq)


@pytest.fixture
def cache(tmp_path):
    return BarCache(tmp_path / "cache", clock=lambda: LONG_AGO)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- incremental
def test_second_request_is_served_from_the_cache(cache):
    f = FakeFetch()
    a = cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", "2021-01-15", f)
    b = cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", "2021-01-15", f)
    assert len(f.calls) == 1
    assert len(a) == 10
    pd.testing.assert_frame_equal(a, b, check_freq=False)
    assert a.index.tz is not None and str(a.index.tz) == "UTC"
    assert list(a.columns) == list(COLUMNS) and (a.dtypes == "float64").all()


def test_incremental_update_fetches_only_the_tail_then_the_head(cache):
    f = FakeFetch()
    cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", "2021-01-15", f)
    out = cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", "2021-01-29", f)
    # the tail starts after MLK day (2021-01-18, no NYSE session) and ends at the request end
    assert f.calls[1:] == [(ts("2021-01-19"), ts("2021-01-29"))]
    out = cache.get("yahoo", "AAPL", "1d", True, "2020-12-01", "2021-01-29", f)
    assert f.calls[2:] == [(ts("2020-12-01"), ts("2020-12-31"))]  # only the head
    assert out.index[0] == ts("2020-12-01") and out.index[-1] == ts("2021-01-29")
    assert not out.index.duplicated().any() and out.index.is_monotonic_increasing
    cache.get("yahoo", "AAPL", "1d", True, "2020-12-10", "2021-01-20", f)
    assert len(f.calls) == 3  # inside the covered range: nothing to fetch


def test_request_outside_the_covered_range_keeps_it_one_interval(cache):
    f = FakeFetch()
    cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", "2021-01-08", f)
    out = cache.get("yahoo", "AAPL", "1d", True, "2021-02-01", "2021-02-05", f)
    assert f.calls[1] == (ts("2021-01-11"), ts("2021-02-05"))  # up to it, no hole left
    assert out.index[0] == ts("2021-02-01") and len(out) == 5
    assert cache.missing_ranges("yahoo", "AAPL", "1d", True, "2021-01-04", "2021-02-05") == []


@pytest.mark.parametrize("start, end, end2", [
    ("2020-12-14", "2020-12-24", "2020-12-27"),  # Christmas Friday + weekend
    ("2020-11-16", "2020-11-25", "2020-11-26"),  # Thanksgiving
    ("2021-01-04", "2021-01-15", "2021-01-18"),  # weekend + MLK day
])
def test_an_end_on_a_weekend_or_holiday_is_covered(cache, start, end, end2):
    f = FakeFetch()
    cache.get("yahoo", "SPY", "1d", True, start, end, f)
    assert cache.missing_ranges("yahoo", "SPY", "1d", True, start, end2) == []
    cache.get("yahoo", "SPY", "1d", True, start, end2, f)
    assert len(f.calls) == 1


def test_a_crypto_weekend_is_fetched_not_taken_as_covered(cache):
    """BTC-USD trades on Saturday and Sunday (calendar 24/7): after Friday's bars the weekend
    is still missing; judged on NYSE sessions it looked covered and went stale."""
    f = FakeFetch(freq="D")
    cache.get("yahoo", "BTC-USD", "1d", True, "2021-01-04", "2021-01-08", f, calendar="24/7")
    assert cache.missing_ranges("yahoo", "BTC-USD", "1d", True, "2021-01-04", "2021-01-10",
                                calendar="24/7") == [(ts("2021-01-09"), ts("2021-01-10"))]
    out = cache.get("yahoo", "BTC-USD", "1d", True, "2021-01-04", "2021-01-10", f,
                    calendar="24/7")
    assert len(out) == 7 and out.index[-1] == ts("2021-01-10")
    # FX keeps weekdays: its weekend holds no FX day to fetch
    assert cache.missing_ranges("yahoo", "EURUSD=X", "1d", True, "2021-01-04", "2021-01-08",
                                calendar="24/5") == [(ts("2021-01-04"), ts("2021-01-08"))]


def test_fetch_judges_crypto_on_its_own_calendar(tmp_path, monkeypatch):
    """fetch_bars hands the cache the symbol's calendar (24/7 for BTC-USD, NYSE for AAPL)."""
    from mltrader.data import fetch as fetch_mod

    seen = {}

    def fake_get(self, source, symbol, interval, adjusted, start, end, fetch, calendar="XNYS"):
        seen[symbol] = calendar
        return bars("2021-01-04", "2021-01-08")

    monkeypatch.setattr(BarCache, "get", fake_get)

    class Src:
        name = "fake"

    for sym in ("BTC-USD", "AAPL", "EURUSD=X"):
        fetch_mod._one(Src(), sym, ts("2021-01-04"), ts("2021-01-08"), "1d", True,
                       BarCache(tmp_path))
    assert seen == {"BTC-USD": "24/7", "AAPL": "XNYS", "EURUSD=X": "24/5"}


def test_a_weekend_start_is_covered_too(cache):
    f = FakeFetch()
    cache.get("yahoo", "SPY", "1d", True, "2021-01-04", "2021-01-08", f)
    assert cache.missing_ranges("yahoo", "SPY", "1d", True, "2021-01-02", "2021-01-08") == []
    assert cache.missing_ranges("yahoo", "SPY", "1d", True, "2020-12-31", "2021-01-08") == [
        (ts("2020-12-31"), ts("2020-12-31"))]


def test_a_range_with_no_bars_is_not_fetched_again(cache):
    f = FakeFetch(empty=True)  # e.g. a halted or not yet listed symbol
    out = cache.get("yahoo", "NEW", "1d", True, "2021-03-01", "2021-03-12", f)
    assert out.empty and list(out.columns) == list(COLUMNS)
    cache.get("yahoo", "NEW", "1d", True, "2021-03-01", "2021-03-12", f)
    assert len(f.calls) == 1
    assert cache.coverage("yahoo", "NEW", "1d", True) == (ts("2021-03-01"), ts("2021-03-12"))


def test_intraday_tail_and_head(cache):
    f = FakeFetch(freq="5min")
    cache.get("alpaca", "AAPL", "5m", False, "2021-01-04 14:30", "2021-01-04 16:00", f)
    cache.get("alpaca", "AAPL", "5m", False, "2021-01-04 14:30", "2021-01-04 17:00", f)
    cache.get("alpaca", "AAPL", "5m", False, "2021-01-04 14:00", "2021-01-04 17:00", f)
    assert f.calls[1:] == [(ts("2021-01-04 16:00"), ts("2021-01-04 17:00")),
                           (ts("2021-01-04 14:00"), ts("2021-01-04 14:30"))]
    out = cache.load("alpaca", "AAPL", "5m", False)
    assert len(out) == 37 and not out.index.duplicated().any()  # 14:00..17:00 every 5 min


def test_only_settled_daily_data_counts_as_covered(tmp_path):
    now = {"t": ts("2021-01-08 15:00")}  # a Friday, NYSE open (close 21:00 UTC)
    cache = BarCache(tmp_path, clock=lambda: now["t"])
    f = FakeFetch()
    cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", now["t"], f)
    assert f.calls == [(ts("2021-01-04"), ts("2021-01-07"))]  # Friday's bar is not done
    cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", now["t"], f)
    assert len(f.calls) == 1  # still nothing new to fetch during the session
    now["t"] = ts("2021-01-08 21:30")  # closed, not yet settled (1 h)
    cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", now["t"], f)
    cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", now["t"], f)
    assert f.calls[1:] == [(ts("2021-01-08"), ts("2021-01-08"))] * 2  # refetched until final
    now["t"] = ts("2021-01-08 22:30")
    cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", now["t"], f)
    now["t"] = ts("2021-01-09 12:00")
    out = cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", now["t"], f)
    assert len(f.calls) == 4 and out.index[-1] == ts("2021-01-08")


# --------------------------------------------------------------------------- merge / files
def test_store_merges_and_new_rows_win_on_overlap(cache):
    cache.store("yahoo", "AAPL", "1d", True, bars("2021-01-04", "2021-01-08", value=1.0))
    cache.store("yahoo", "AAPL", "1d", True, bars("2021-01-07", "2021-01-12", value=2.0))
    out = cache.load("yahoo", "AAPL", "1d", True)
    assert len(out) == 7 and out.index.is_monotonic_increasing
    assert out["close"].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert cache.coverage("yahoo", "AAPL", "1d", True) == (ts("2021-01-04"), ts("2021-01-12"))


def test_paths_are_filename_safe_and_info_keeps_the_symbol(cache):
    for sym in ("BRK/B", "^GSPC", "..", "EURUSD=X"):
        p = cache.path("yahoo", sym, "1d", False)
        assert p.parent == cache.root / "yahoo" / "1d" / "raw"
        assert "/" not in p.name and not p.name.startswith(".")
        cache.store("yahoo", sym, "1d", False, bars("2021-01-04", "2021-01-05"))
    rows = cache.info()
    assert sorted(r["symbol"] for r in rows) == sorted(["BRK/B", "^GSPC", "..", "EURUSD=X"])
    r = rows[0]
    assert r["rows"] == 2 and r["first"] == ts("2021-01-04") and r["last"] == ts("2021-01-05")
    assert r["bytes"] > 0 and r["interval"] == "1d" and r["adjusted"] is False
    assert r["error"] is None
    with pytest.raises(DataError):
        cache.path("yahoo", "", "1d", True)


def test_default_root_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLTRADER_CACHE_DIR", str(tmp_path / "c"))
    assert BarCache().root == tmp_path / "c" == default_cache_dir()
    monkeypatch.delenv("MLTRADER_CACHE_DIR")
    assert default_cache_dir() == __import__("pathlib").Path.home() / ".cache" / "mltrader"


# --------------------------------------------------------------------------- atomic writes
def test_a_write_failing_midway_leaves_the_old_file_intact(cache, monkeypatch):
    import pyarrow.parquet as pq

    cache.store("yahoo", "AAPL", "1d", True, bars("2021-01-04", "2021-01-08"))
    before = cache.load("yahoo", "AAPL", "1d", True)
    folder = cache.path("yahoo", "AAPL", "1d", True).parent

    def half_write(table, where, **kw):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        cache.store("yahoo", "AAPL", "1d", True, bars("2021-01-11", "2021-01-15"))
    monkeypatch.undo()
    pd.testing.assert_frame_equal(cache.load("yahoo", "AAPL", "1d", True), before)
    assert _files(folder) == ["AAPL.parquet"]  # no temp file left behind


def test_a_crash_before_the_rename_leaves_the_old_file_intact(cache, monkeypatch):
    cache.store("yahoo", "AAPL", "1d", True, bars("2021-01-04", "2021-01-08"))
    before = cache.load("yahoo", "AAPL", "1d", True)

    def boom(a, b):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.store("yahoo", "AAPL", "1d", True, bars("2021-01-11", "2021-01-15"))
    monkeypatch.undo()
    pd.testing.assert_frame_equal(cache.load("yahoo", "AAPL", "1d", True), before)
    assert _files(cache.path("yahoo", "AAPL", "1d", True).parent) == ["AAPL.parquet"]


def _store_then_die(root):
    def die(a, b):
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = die  # the temp file is fully written and fsynced, then the process is killed
    BarCache(root, clock=lambda: LONG_AGO).store("yahoo", "AAPL", "1d", True,
                                                 bars("2021-01-11", "2021-01-15"))


@pytest.mark.skipif(sys.platform == "win32", reason="fork + SIGKILL")
def test_a_killed_writer_leaves_the_old_file_loadable(cache):
    cache.store("yahoo", "AAPL", "1d", True, bars("2021-01-04", "2021-01-08"))
    before = cache.load("yahoo", "AAPL", "1d", True)
    p = mp.get_context("fork").Process(target=_store_then_die, args=(cache.root,))
    p.start()
    p.join(20)
    assert p.exitcode == -signal.SIGKILL
    folder = cache.path("yahoo", "AAPL", "1d", True).parent
    assert len(_files(folder)) == 2  # the old file and the orphaned temp file
    pd.testing.assert_frame_equal(cache.load("yahoo", "AAPL", "1d", True), before)
    assert [r["symbol"] for r in cache.info()] == ["AAPL"]  # the temp file is not an entry
    assert cache.clear() == 2 and not cache.root.joinpath("yahoo").exists()


# --------------------------------------------------------------------------- corruption
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_file_is_a_data_error_naming_the_file(cache, damage):
    cache.store("yahoo", "AAPL", "1d", True, bars("2021-01-04", "2021-01-08"))
    p = cache.path("yahoo", "AAPL", "1d", True)
    data = p.read_bytes()
    p.write_bytes(b"not a parquet file" if damage == "garbage" else data[: len(data) // 2])
    for call in (lambda: cache.load("yahoo", "AAPL", "1d", True),
                 lambda: cache.get("yahoo", "AAPL", "1d", True, "2021-01-04", "2021-01-08",
                                   FakeFetch())):
        with pytest.raises(DataError) as e:
            call()
        assert str(p) in str(e.value) and "mltrader data cache --clear" in str(e.value)
        assert "\n" not in str(e.value)
    (row,) = cache.info()
    assert row["error"] and "--clear" in row["error"] and row["rows"] is None
    assert cache.clear() == 1
    assert cache.load("yahoo", "AAPL", "1d", True).empty


# --------------------------------------------------------------------------- clear
def test_clear_one_source_or_all(cache):
    for src in ("yahoo", "alpaca"):
        for sym in ("AAPL", "MSFT"):
            cache.store(src, sym, "1d", True, bars("2021-01-04", "2021-01-05"))
    cache.store("yahoo", "AAPL", "5m", False, bars("2021-01-04", "2021-01-05"))
    assert len(cache.info()) == 5
    assert cache.clear("yahoo") == 3
    assert {r["source"] for r in cache.info()} == {"alpaca"}
    assert cache.clear("nope") == 0
    assert cache.clear() == 2 and cache.info() == []
    assert cache.root.exists() and list(cache.root.iterdir()) == []


# --------------------------------------------------------------------------- concurrency
def _writer(root, symbol, days):
    c = BarCache(root, clock=lambda: LONG_AGO)
    for d in days:
        c.store("yahoo", symbol, "1d", True, bars(d, d))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
@pytest.mark.parametrize("same_symbol", [False, True])
def test_two_processes_writing_at_once_lose_nothing(cache, same_symbol):
    days = [d.strftime("%Y-%m-%d") for d in pd.bdate_range("2021-01-04", periods=30)]
    ctx = mp.get_context("fork")
    syms = ("AAPL", "AAPL") if same_symbol else ("AAPL", "MSFT")
    procs = [ctx.Process(target=_writer, args=(cache.root, syms[i], days[i::2]))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    got = pd.concat([cache.load("yahoo", s, "1d", True) for s in set(syms)])
    assert sorted(got.index.strftime("%Y-%m-%d")) == days
    assert not any(n.endswith(".tmp") for n in _files(cache.root / "yahoo" / "1d" / "adj"))
