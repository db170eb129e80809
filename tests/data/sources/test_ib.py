"""IBSource at ib_async's boundary: a fake `IB` whose reqHistoricalData answers like TWS.

The fake keeps a minute-bar tape and a daily tape and serves `reqHistoricalData` the way TWS
plus ib_async's wrapper do: it checks the request (bar size, duration within IB's step limits,
ADJUSTED_LAST only with endDateTime ''), turns each bar's wire date ("YYYYMMDD" for daily
bars, epoch seconds for intraday bars with formatDate=2) into `BarData.date` with ib_async's
own `parseIBDatetime`, returns real `BarData` objects in a `BarDataList`, includes the bar
still forming, and reports failures on `errorEvent` while returning no bars (ib_async's
default RaiseRequestErrors=False). Error texts are modelled on TWS's messages (hand-written).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ib_async")

from eventkit import Event  # noqa: E402
from ib_async import BarData, BarDataList  # noqa: E402
from ib_async.util import formatIBDatetime, parseIBDatetime  # noqa: E402

from mltrader.data.feeds import PollingFeed  # noqa: E402
from mltrader.data.fetch import NETWORK_SOURCES, fetch_bars, make_source  # noqa: E402
from mltrader.data.sources.base import SourceError  # noqa: E402
from mltrader.data.sources.ib import IBSource  # noqa: E402

NOW = pd.Timestamp("2024-03-15 15:03:30", tz="UTC")  # Friday 11:03 New York, session open
LIMITS = {"1 min": pd.Timedelta(days=1), "5 mins": pd.Timedelta(weeks=1),
          "15 mins": pd.Timedelta(weeks=1), "1 hour": pd.Timedelta(days=31)}


def _minute_tape() -> pd.DataFrame:
    """Regular-hours 1-minute bars (start times, UTC) for 2024-03-11 .. NOW (Mon-Fri)."""
    days = pd.bdate_range("2024-03-11", "2024-03-15")
    starts = [t for d in days for t in pd.date_range(
        pd.Timestamp(d.date()).tz_localize("America/New_York") + pd.Timedelta(hours=9.5),
        periods=390, freq="min").tz_convert("UTC") if t <= NOW]
    rng = np.random.default_rng(3)
    close = 170 + np.cumsum(rng.normal(0, 0.05, len(starts)))
    return pd.DataFrame({"open": close - 0.01, "high": close + 0.05, "low": close - 0.05,
                         "close": close, "volume": rng.integers(1_000, 9_000, len(starts))},
                        index=pd.DatetimeIndex(starts))


def _daily_tape() -> pd.DataFrame:
    days = pd.bdate_range("2023-01-02", "2024-03-15")
    close = np.linspace(125.0, 172.0, len(days))
    return pd.DataFrame({"open": close - 0.5, "high": close + 1, "low": close - 1,
                         "close": close, "volume": np.full(len(days), 5e7)},
                        index=pd.DatetimeIndex(days))


def _duration(text: str) -> pd.Timedelta:
    n, unit = text.split()
    return pd.Timedelta(days=int(n) * {"D": 1, "W": 7, "M": 31, "Y": 366}[unit])


class FakeIB:
    """The slice of ib_async.IB that IBSource uses."""

    def __init__(self) -> None:
        self.errorEvent = Event("errorEvent")
        self.connected = False
        self.connects: list[tuple] = []
        self.requests: list[dict] = []
        self.minutes = _minute_tape()
        self.daily = _daily_tape()
        self.fail_next: list[tuple[int, str]] = []  # (code, text) for the next requests
        self.known = {"AAPL": 265598}
        self.next_req = 1

    def connect(self, host, port, clientId, timeout=4, readonly=False, **kw):
        self.connects.append((host, port, clientId, readonly))
        self.connected = True

    def isConnected(self):
        return self.connected

    def disconnect(self):
        self.connected = False

    def qualifyContracts(self, *contracts):
        out = []
        for c in contracts:
            if c.symbol not in self.known:
                self.errorEvent.emit(self.next_req, 200, "No security definition has been "
                                     "found for the request", c)
                out.append(None)
                continue
            c.conId = self.known[c.symbol]
            out.append(c)
        return out

    def reqHistoricalData(self, contract, endDateTime, durationStr, barSizeSetting,
                          whatToShow, useRTH, formatDate=1, keepUpToDate=False,
                          chartOptions=(), timeout=60):
        assert self.connected, "request on a closed connection"
        req = self.next_req
        self.next_req += 1
        self.requests.append({"end": endDateTime, "duration": durationStr,
                              "bar": barSizeSetting, "what": whatToShow, "rth": useRTH,
                              "format": formatDate})
        bars = BarDataList()
        if self.fail_next:
            code, text = self.fail_next.pop(0)
            self.errorEvent.emit(req, code, text, contract)
            return bars
        assert useRTH is True and formatDate == 2
        if whatToShow == "ADJUSTED_LAST":
            assert endDateTime == "", "TWS: ADJUSTED_LAST needs an empty endDateTime"
        wire_end = formatIBDatetime(endDateTime)  # what ib_async sends
        end = (NOW if not wire_end else pd.Timestamp(
            dt.datetime.strptime(wire_end, "%Y%m%d %H:%M:%S UTC"), tz="UTC"))
        span = _duration(durationStr)
        if barSizeSetting == "1 day":
            tape = self.daily
            keep = (tape.index >= (end - span).normalize().tz_localize(None)) & (
                tape.index <= end.tz_localize(None))
            wire_dates = [t.strftime("%Y%m%d") for t in tape.index[keep]]
        else:
            assert span <= LIMITS[barSizeSetting], f"{durationStr} too long for {barSizeSetting}"
            step = {"1 min": "1min", "5 mins": "5min", "15 mins": "15min", "1 hour": "1h"}[
                barSizeSetting]
            tape = self.minutes.resample(step, origin="start_day").agg(
                {"open": "first", "high": "max", "low": "min", "close": "last",
                 "volume": "sum"}).dropna()
            keep = (tape.index >= end - span) & (tape.index < end)
            wire_dates = [str(int(t.timestamp())) for t in tape.index[keep]]
        for wire, row in zip(wire_dates, tape[keep].itertuples(), strict=True):
            bars.append(BarData(date=parseIBDatetime(wire), open=row.open, high=row.high,
                                low=row.low, close=row.close, volume=float(row.volume),
                                average=row.close, barCount=10))
        return bars


def source(ib: FakeIB, **kw) -> IBSource:
    return IBSource(ib, sleep=lambda s: None, clock=lambda: NOW, backoff=0.01, **kw)


def test_ib_is_a_registered_network_source():
    assert "ib" in NETWORK_SOURCES
    src = make_source("ib", ib=FakeIB(), port=4002, client_id=9)
    assert isinstance(src, IBSource) and (src.port, src.client_id) == (4002, 9)


def test_daily_adjusted_bars_come_from_adjusted_last_stamped_at_midnight_utc():
    ib = FakeIB()
    frame = source(ib).fetch("AAPL", pd.Timestamp("2024-01-02", tz="UTC"),
                             pd.Timestamp("2024-03-14", tz="UTC"), "1d")
    (req,) = ib.requests
    assert req["what"] == "ADJUSTED_LAST" and req["end"] == "" and req["bar"] == "1 day"
    assert ib.connects == [("127.0.0.1", 7497, 17, True)]  # its own read-only connection
    assert frame.index[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert frame.index[-1] == pd.Timestamp("2024-03-14", tz="UTC")  # cut at `end`
    assert (frame.index == frame.index.normalize()).all()
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    want = ib.daily.loc["2024-01-02":"2024-03-14", "close"].to_numpy()
    np.testing.assert_allclose(frame["close"].to_numpy(), want)


def test_the_forming_daily_bar_is_dropped_and_raw_bars_use_trades():
    ib = FakeIB()
    frame = source(ib).fetch("AAPL", pd.Timestamp("2023-01-01", tz="UTC"), NOW, "1d",
                             adjusted=False)
    assert ib.requests[0]["what"] == "TRADES" and ib.requests[0]["duration"] == "2 Y"
    assert frame.index[-1] == pd.Timestamp("2024-03-14", tz="UTC")  # 03-15 still trading
    assert len(frame) == len(ib.daily) - 1


def test_intraday_bars_page_back_within_ibs_limits():
    ib = FakeIB()
    start = pd.Timestamp("2024-03-11 13:30", tz="UTC")
    frame = source(ib).fetch("AAPL", start, NOW, "1m")
    assert all(r["duration"] == "1 D" and r["bar"] == "1 min" for r in ib.requests)
    assert len(ib.requests) >= 5
    done = ib.minutes[ib.minutes.index + pd.Timedelta(minutes=1) <= NOW]
    assert frame.index.equals(done.index)  # every finished bar once, the forming one not
    np.testing.assert_allclose(frame["close"].to_numpy(), done["close"].to_numpy())
    assert frame.index.is_unique and frame.index.is_monotonic_increasing


def test_five_minute_bars_in_one_request():
    ib = FakeIB()
    frame = source(ib).fetch("AAPL", pd.Timestamp("2024-03-14", tz="UTC"), NOW, "5m")
    assert [r["duration"] for r in ib.requests] == ["1 W"]
    assert frame.index[-1] == pd.Timestamp("2024-03-15 14:55", tz="UTC")  # 15:00 forming
    assert (frame.index.minute % 5 == 0).all()


def test_unknown_symbol_and_missing_permission_are_one_line_errors():
    ib = FakeIB()
    with pytest.raises(SourceError, match="'ZZZZ' is not a unique stock at IB"):
        source(ib).fetch("ZZZZ", NOW - pd.Timedelta(days=5), NOW, "1d")
    ib.fail_next = [(354, "Requested market data is not subscribed.")]
    with pytest.raises(SourceError, match="no market-data permission") as info:
        source(ib).fetch("AAPL", NOW - pd.Timedelta(days=5), NOW, "1d")
    assert "\n" not in str(info.value)


def test_no_data_is_an_empty_frame_not_an_error():
    ib = FakeIB()
    ib.fail_next = [(162, "Historical Market Data Service error message:HMDS query "
                          "returned no data: AAPL@SMART Trades")]
    frame = source(ib).fetch("AAPL", NOW - pd.Timedelta(days=3), NOW, "1d")
    assert frame.empty and list(frame.columns) == ["open", "high", "low", "close", "volume"]


def test_pacing_violations_are_retried_then_reported():
    ib = FakeIB()
    pacing = (162, "Historical Market Data Service error message:Historical data request "
                   "pacing violation")
    ib.fail_next = [pacing, pacing]
    frame = source(ib).fetch("AAPL", NOW - pd.Timedelta(days=3), NOW, "1d")
    assert len(ib.requests) == 3 and not frame.empty
    ib.fail_next = [pacing] * 4
    with pytest.raises(SourceError, match="after 4 attempts.*pacing"):
        source(ib).fetch("AAPL", NOW - pd.Timedelta(days=3), NOW, "1d")


def test_a_shared_connection_is_ensured_not_opened_and_stays_open():
    ib = FakeIB()
    ensured: list[int] = []

    def ensure() -> None:
        ensured.append(1)
        ib.connected = True

    src = source(ib, ensure_connected=ensure)
    assert not src.fetch("AAPL", NOW - pd.Timedelta(days=3), NOW, "1d").empty
    src.close()
    assert ensured and ib.connects == [] and ib.connected


def test_fetch_bars_closes_the_connection_it_opened(monkeypatch):
    ib = FakeIB()
    import mltrader.data.fetch as fetch_mod

    monkeypatch.setattr(fetch_mod, "make_source", lambda name, **k: source(ib))
    res = fetch_bars(["AAPL"], "2024-03-01", NOW, sources=["ib"])
    assert res.served_by == {"AAPL": "ib"} and not ib.connected


def test_unreachable_tws_is_one_line():
    class Refusing(FakeIB):
        def connect(self, host, port, clientId, timeout=4, readonly=False, **kw):
            raise ConnectionRefusedError(111, f"Connect call failed ('{host}', {port})")

    with pytest.raises(SourceError, match="cannot reach TWS / IB Gateway at 127.0.0.1:7497"):
        source(Refusing()).fetch("AAPL", NOW - pd.Timedelta(days=3), NOW, "1d")


def test_a_polling_feed_over_ib_emits_each_finished_bar_once():
    ib = FakeIB()
    clock = {"now": NOW - pd.Timedelta(minutes=3)}
    src = IBSource(ib, sleep=lambda s: None, clock=lambda: clock["now"])
    feed = PollingFeed(src, ["AAPL"], "1m", poll_seconds=60, clock=lambda: clock["now"],
                       sleep=lambda s: None)
    first = feed.poll()
    clock["now"] = NOW
    second = feed.poll()
    times = [e.time for e in first + second]
    assert times == sorted(set(times)) and times[-1] == pd.Timestamp("2024-03-15 15:02",
                                                                      tz="UTC")
