"""AlphaVantageSource against recorded Alpha Vantage bodies, through httpx's real client code.

HTTP goes through ``httpx.MockTransport`` (and once through a real server on 127.0.0.1);
sleeping and both clocks are fakes, so retries and rate limiting take no time. Any socket
connection to a non-local address fails the test.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mltrader.data.sources.alphavantage import AlphaVantageSource, RateLimiter
from mltrader.data.sources.base import COLUMNS, Source, SourceError

KEY = "TESTKEY123XYZ"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "alphavantage"
PREMIUM_TEXT = ("Thank you for using Alpha Vantage! This is a premium endpoint. You may subscribe "
                "to any of the premium plans at https://www.alphavantage.co/premium/ to "
                "instantly unlock all premium endpoints")
EXHAUSTED = ("alphavantage: AAPL: rate-limited 5 times (the free key allows 25 requests a day "
             "/ 5 a minute); wait or set calls_per_minute lower")


def body(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


DAILY = "time_series_daily_IBM_compact-2bars.json"
DAILY_ADJ = "time_series_daily_adjusted_IBM_2bars_with_dividend.json"
INTRA_5 = "time_series_intraday_IBM_5min_2bars.json"
INTRA_1 = "time_series_intraday_MSFT_1min_TRIMMED-20bars.json"




class Fake:
    """Fake monotonic clock + sleep (sleep advances the clock) and a fixed wall clock."""

    def __init__(self, now="2020-05-09 12:00"):
        self.t = 0.0
        self.sleeps: list[float] = []
        self.wall = pd.Timestamp(now, tz="UTC")

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s

    def now(self) -> pd.Timestamp:
        return self.wall


def make(answers, now="2020-05-09 12:00", **kw):
    """A source whose HTTP answers come from `answers` (list, consumed in order, or callable)."""
    fake = Fake(now)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        ans = answers(request) if callable(answers) else answers.pop(0)
        if isinstance(ans, Exception):
            raise ans
        if isinstance(ans, httpx.Response):
            return ans
        return httpx.Response(200, json=ans)

    kw.setdefault("calls_per_minute", 1000)
    src = AlphaVantageSource(api_key=KEY, sleep=fake.sleep, clock=fake.clock, now=fake.now,
                             transport=httpx.MockTransport(handler), **kw)
    return src, seen, fake


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


# --- parsing ---------------------------------------------------------------------------------

def test_daily_raw_parsed_into_standard_frame():
    src, seen, _ = make([body(DAILY)])
    assert isinstance(src, Source) and src.name == "alphavantage"
    df = src.fetch("IBM", ts("2020-05-01"), ts("2020-05-31"), "1d", adjusted=False)
    assert list(df.columns) == list(COLUMNS)
    assert all(str(t) == "float64" for t in df.dtypes)
    assert str(df.index.tz) == "UTC"
    # 2020-05-08 was refreshed at 14:07 New York time, mid-session: not a completed bar
    assert list(df.index) == [ts("2020-05-07")]
    row = df.loc[ts("2020-05-07")]
    assert row.tolist() == [122.98, 123.26, 120.85, 121.23, 4412047.0]
    q = seen[0].url.params
    assert q["function"] == "TIME_SERIES_DAILY" and q["symbol"] == "IBM"
    assert q["outputsize"] == "compact" and q["apikey"] == KEY


def test_daily_full_history_asks_for_outputsize_full():
    src, seen, _ = make([body(DAILY)])
    src.fetch("IBM", ts("2015-01-01"), ts("2020-05-31"), "1d", adjusted=False)
    assert seen[0].url.params["outputsize"] == "full"


def test_daily_bar_kept_once_closed_and_refreshed_dropped_while_open():
    data = body(DAILY)
    data["Meta Data"]["3. Last Refreshed"] = "2020-05-08"     # the day's final data
    after_close = make([data], now="2020-05-08 20:00")[0]      # 16:00 New York (EDT)
    df = after_close.fetch("IBM", ts("2020-05-01"), ts("2020-05-31"), "1d", adjusted=False)
    assert list(df.index) == [ts("2020-05-07"), ts("2020-05-08")]
    assert df.loc[ts("2020-05-08"), "close"] == 121.79
    during = make([data], now="2020-05-08 19:59")[0]
    df = during.fetch("IBM", ts("2020-05-01"), ts("2020-05-31"), "1d", adjusted=False)
    assert list(df.index) == [ts("2020-05-07")]


def test_daily_adjusted_uses_adjusted_close_and_scales_the_bar():
    data = body(DAILY_ADJ)
    src, seen, _ = make([json.loads(json.dumps(data))])
    df = src.fetch("IBM", ts("2020-05-01"), ts("2020-05-31"), "1d", adjusted=True)
    assert seen[0].url.params["function"] == "TIME_SERIES_DAILY_ADJUSTED"
    assert df.loc[ts("2020-05-07")].tolist() == [122.98, 123.26, 120.85, 121.23, 4412047.0]
    # a bar whose adjusted close differs: open/high/low scale with it, volume stays
    data["Time Series (Daily)"]["2020-05-07"]["5. adjusted close"] = "119.6000"
    src, _, _ = make([data])
    row = src.fetch("IBM", ts("2020-05-07"), ts("2020-05-07"), "1d").loc[ts("2020-05-07")]
    f = 119.6 / 121.23
    assert row["close"] == pytest.approx(119.6)
    assert row[["open", "high", "low"]].tolist() == pytest.approx(
        [122.98 * f, 123.26 * f, 120.85 * f])
    assert row["volume"] == 4412047.0


def test_daily_date_filter_is_inclusive_and_can_be_empty():
    src, _, _ = make([body(DAILY), body(DAILY)])
    one = src.fetch("IBM", ts("2020-05-07"), ts("2020-05-07"), "1d", adjusted=False)
    assert list(one.index) == [ts("2020-05-07")]
    none = src.fetch("IBM", ts("2020-06-01"), ts("2020-06-30"), "1d", adjusted=False)
    assert none.empty and list(none.columns) == list(COLUMNS)


def test_intraday_new_york_keys_become_utc_bar_starts_and_open_bar_dropped():
    src, seen, _ = make([body(INTRA_5)], now="2020-05-08 18:09")   # 14:09 New York
    df = src.fetch("IBM", ts("2020-05-08"), ts("2020-05-08 23:59"), "5m")
    # 14:05 New York is still forming at 14:09; 14:00 EDT = 18:00 UTC
    assert list(df.index) == [ts("2020-05-08 18:00")]
    assert df.iloc[0].tolist() == [121.685, 121.80, 121.685, 121.78, 29277.0]
    q = seen[0].url.params
    assert (q["function"], q["interval"], q["month"], q["outputsize"]) == (
        "TIME_SERIES_INTRADAY", "5min", "2020-05", "full")
    assert (q["adjusted"], q["extended_hours"]) == ("true", "false")
    src, _, _ = make([body(INTRA_5)], now="2020-05-08 18:10")
    df = src.fetch("IBM", ts("2020-05-08"), ts("2020-05-08 23:59"), "5m", adjusted=False)
    assert list(df.index) == [ts("2020-05-08 18:00"), ts("2020-05-08 18:05")]


def test_intraday_winter_time_and_date_filter():
    src, _, _ = make([body(INTRA_1)], now="2018-01-01")
    # 14:40..14:50 EST = 19:40..19:50 UTC, inclusive at both ends
    df = src.fetch("MSFT", ts("2017-12-18 19:40"), ts("2017-12-18 19:50"), "1m")
    assert len(df) == 11
    assert df.index[0] == ts("2017-12-18 19:40") and df.index[-1] == ts("2017-12-18 19:50")
    assert df.loc[ts("2017-12-18 19:50")].tolist() == [86.5053, 86.53, 86.5, 86.525, 29096.0]
    assert df.loc[ts("2017-12-18 19:40")].tolist() == [86.585, 86.585, 86.56, 86.57, 22129.0]


def test_intraday_range_over_months_asks_month_by_month():
    src, seen, _ = make(lambda r: body(INTRA_5), now="2020-05-08 20:00")
    src.fetch("IBM", ts("2020-03-20"), ts("2020-05-08 20:00"), "1h")
    assert [r.url.params["month"] for r in seen] == ["2020-03", "2020-04", "2020-05"]
    assert {r.url.params["interval"] for r in seen} == {"60min"}


# --- errors and retries ----------------------------------------------------------------------

def test_throttle_note_and_information_retried_then_succeed():
    src, seen, fake = make([body("rate_limit_note_per-minute_2018.json"),
                            body("rate_limit_information_daily_2025.json"), body(DAILY)])
    df = src.fetch("IBM", ts("2020-05-07"), ts("2020-05-07"), "1d", adjusted=False)
    assert len(df) == 1 and len(seen) == 3
    assert fake.sleeps == [15.0, 30.0]


def test_retries_exhausted_give_one_line_error():
    note = body("rate_limit_note_per-minute_2018.json")
    src, seen, fake = make(lambda r: note)
    with pytest.raises(SourceError) as e:
        src.fetch("AAPL", ts("2020-05-07"), ts("2020-05-07"), "1d")
    assert str(e.value) == EXHAUSTED
    assert len(seen) == 5 and fake.sleeps == [15.0, 30.0, 60.0, 120.0]


def test_error_message_not_retried_and_names_symbol():
    src, seen, fake = make(lambda r: body("error_message_invalid_api_call_FX_DAILY.json"))
    with pytest.raises(SourceError) as e:
        src.fetch("NOSUCH", ts("2020-05-07"), ts("2020-05-07"), "1d")
    msg = str(e.value)
    assert len(seen) == 1 and fake.sleeps == []
    assert msg.startswith("alphavantage: NOSUCH: ") and "check the symbol" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("info, expect", [
    (PREMIUM_TEXT, "adjusted=False"),
    (None, "MLTRADER_ALPHAVANTAGE_KEY"),            # the demo-key answer
])
def test_premium_and_demo_key_information_not_retried(info, expect):
    answer = {"Information": info} if info else body("information_demo_key.json")
    src, seen, fake = make(lambda r: answer)
    with pytest.raises(SourceError) as e:
        src.fetch("IBM", ts("2020-05-07"), ts("2020-05-07"), "1d", adjusted=True)
    assert len(seen) == 1 and fake.sleeps == []
    assert expect in str(e.value) and "IBM" in str(e.value)


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("MLTRADER_ALPHAVANTAGE_KEY", raising=False)
    monkeypatch.delenv("ALPHAVANTAGE_API_KEY", raising=False)
    seen = []
    src = AlphaVantageSource(transport=httpx.MockTransport(lambda r: seen.append(r)))
    with pytest.raises(SourceError, match="set MLTRADER_ALPHAVANTAGE_KEY"):
        src.fetch("IBM", ts("2020-05-07"), ts("2020-05-07"), "1d")
    assert seen == []


def test_key_from_fallback_environment_variable(monkeypatch):
    monkeypatch.delenv("MLTRADER_ALPHAVANTAGE_KEY", raising=False)
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "ENVKEY42")
    seen = []

    def handler(r):
        seen.append(r)
        return httpx.Response(200, json=body(DAILY))

    src = AlphaVantageSource(transport=httpx.MockTransport(handler),
                             now=lambda: ts("2020-05-09"))
    src.fetch("IBM", ts("2020-05-07"), ts("2020-05-07"), "1d", adjusted=False)
    assert seen[0].url.params["apikey"] == "ENVKEY42"


def test_429_5xx_and_network_error_retried():
    src, seen, fake = make([httpx.Response(429, text="Too Many Requests"),
                            httpx.Response(503, text="unavailable"),
                            httpx.ConnectError("connection refused"),
                            body(DAILY)])
    df = src.fetch("IBM", ts("2020-05-07"), ts("2020-05-07"), "1d", adjusted=False)
    assert len(df) == 1 and len(seen) == 4
    assert fake.sleeps == [15.0, 30.0, 60.0]


def test_network_errors_exhausted_and_key_never_in_messages_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    answers = [body(DAILY)] + [httpx.ConnectError(f"refused {KEY}")] * 3
    src, seen, _ = make(answers, max_retries=2)
    src.fetch("IBM", ts("2020-05-07"), ts("2020-05-07"), "1d", adjusted=False)
    with pytest.raises(SourceError) as e:
        src.fetch("IBM", ts("2020-05-07"), ts("2020-05-07"), "1d", adjusted=False)
    msg = str(e.value)
    assert msg.startswith("alphavantage: IBM: request failed 3 times (last: ConnectError")
    assert KEY not in msg and KEY not in repr(src)
    assert "HTTP Request: GET" in caplog.text          # httpx logged the URL ...
    assert KEY not in caplog.text                       # ... without the key
    assert all(r.url.params["apikey"] == KEY for r in seen)


def test_rate_limiter_spaces_calls_with_fake_clock():
    seen_at: list[float] = []

    def answer(request):
        seen_at.append(fake.t)                 # the fake clock when the request went out
        return body(DAILY)

    src, seen, fake = make(answer, calls_per_minute=2)
    for _ in range(5):
        src.fetch("IBM", ts("2020-05-07"), ts("2020-05-07"), "1d", adjusted=False)
    assert seen_at == [0.0, 0.0, 60.0, 60.0, 120.0]
    assert len(seen) == 5


def test_rate_limiter_sliding_window():
    fake = Fake()
    lim = RateLimiter(3, clock=fake.clock, sleep=fake.sleep)
    times = []
    for gap in (0, 10, 10, 0, 45, 0):
        fake.t += gap
        lim.acquire()
        times.append(fake.t)
    # 4th call waits until the 1st is 60 s old; 6th until the 3rd is
    assert times == [0, 10, 20, 60, 105, 105]


# --- a real HTTP server on 127.0.0.1 ---------------------------------------------------------

def test_against_local_http_server():
    payloads = [body("rate_limit_note_per-minute_2018.json"), body(INTRA_5)]
    got: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            got.append(self.path)
            data = json.dumps(payloads.pop(0)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        fake = Fake("2020-05-08 20:00")
        src = AlphaVantageSource(api_key=KEY, base_url=f"http://127.0.0.1:{server.server_port}/query",
                                 sleep=fake.sleep, clock=fake.clock, now=fake.now, timeout=5)
        with src:
            df = src.fetch("IBM", ts("2020-05-08"), ts("2020-05-08 23:00"), "5m")
    finally:
        server.shutdown()
        server.server_close()
    assert len(got) == 2 and fake.sleeps == [15.0]
    assert got[1].startswith("/query?") and f"apikey={KEY}" in got[1]
    assert "function=TIME_SERIES_INTRADAY" in got[1] and "symbol=IBM" in got[1]
    assert list(df.index) == [ts("2020-05-08 18:00"), ts("2020-05-08 18:05")]
    assert df.loc[ts("2020-05-08 18:05"), "close"] == 121.74
