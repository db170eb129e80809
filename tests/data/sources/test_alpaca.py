"""AlpacaSource against a local HTTP server speaking Alpaca's market-data API.

The REAL alpaca-py `StockHistoricalDataClient` is pointed at 127.0.0.1 with `url_override`;
the server answers with the response bodies stored in fixtures/alpaca/marketdata (copied
below verbatim: mocks with real values from alpaca-py's tests/data/test_historical_stock_data.py
@ bd1fa9ea, Apache-2.0). Nothing here touches the network (see `_no_network`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from mltrader.data.sources.alpaca import AlpacaSource
from mltrader.data.sources.base import COLUMNS, Source, SourceError, standardize

pytest.importorskip("alpaca")

# --------------------------------------------------------------------------- fixtures (verbatim)
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "alpaca" / "marketdata"
# get_stocks_bars_single_with_next_page_token.json
PAGE1 = {"bars": {"AAPL": [
    {"t": "2022-02-01T05:00:00Z", "o": 174, "h": 174.84, "l": 172.31, "c": 174.61,
     "v": 85998033, "n": 732412, "vw": 173.703516},
    {"t": "2022-02-02T05:00:00Z", "o": 174.64, "h": 175.88, "l": 173.33, "c": 175.84,
     "v": 84817432, "n": 675034, "vw": 174.941288}]},
    "next_page_token": "QUFQTHxEfDIwMjItMDItMDJUMDU6MDA6MDAuMDAwMDAwMDAwWg=="}
# get_stocks_bars_multi_symbol.json
MULTI = {"bars": {
    "AAPL": [{"t": "2022-03-09T05:00:00Z", "o": 161.51, "h": 163.41, "l": 159.41, "c": 162.95,
              "v": 88496480, "n": 700291, "vw": 161.942117}],
    "TSLA": [{"t": "2022-03-09T05:00:00Z", "o": 839, "h": 860.56, "l": 832.01, "c": 858.97,
              "v": 19227323, "n": 528531, "vw": 850.616587}]},
    "next_page_token": None}
# get_stocks_bars_desc_with_next_page_token.json
DESC = {"bars": {"TSLA": [
    {"c": 240.5, "h": 245.33, "l": 234.58, "n": 1393690, "o": 244.262,
     "t": "2023-09-27T04:00:00Z", "v": 136616287, "vw": 240.479286},
    {"c": 244.12, "h": 249.55, "l": 241.6601, "n": 1118004, "o": 242.98,
     "t": "2023-09-26T04:00:00Z", "v": 102033779, "vw": 245.559325},
    {"c": 246.99, "h": 247.1, "l": 238.31, "n": 1196613, "o": 243.38,
     "t": "2023-09-25T04:00:00Z", "v": 104668716, "vw": 244.197325}]},
    "next_page_token": "VFNMQXxEfDc1Mjc3NTc2MzYwMDAwMDAwMDA="}
# get_stocks_bars_empty.json
EMPTY = {"bars": {}, "next_page_token": None}
# get_stocks_bars_latest_multi.json (GET /v2/stocks/bars/latest: minute bars)
LATEST = {"bars": {
    "SPY": {"t": "2022-07-26T20:50:00Z", "o": 392.18, "h": 392.18, "l": 392.18, "c": 392.18,
            "v": 2100, "n": 2, "vw": 392.18},
    "TSLA": {"t": "2022-07-26T19:59:00Z", "o": 776.605, "h": 776.95, "l": 776.41, "c": 776.63,
             "v": 5993, "n": 124, "vw": 776.654473}}}
# derived (not a recorded answer): the SPY latest minute bar as a /v2/stocks/bars 1Min page
MINUTE = {"bars": {"SPY": [LATEST["bars"]["SPY"]]}, "next_page_token": None}
TOO_MANY = "Too Many Requests"  # fixtures/alpaca/trading/error_429_body.txt (mock)
# hand-written error bodies in Alpaca's {"code", "message"} shape (no recorded ones found)
FORBIDDEN = {"message": "forbidden."}
INVALID_SYMBOL = {"code": 42210000, "message": "invalid symbol: NOPE!"}

KEY, SECRET = "test-key-id", "test-secret-value"


# --------------------------------------------------------------------------- local server
class MockAlpaca:
    """A tiny Alpaca data API: `respond(path, query) -> (status, body)`, every request kept."""

    def __init__(self, respond):
        self.respond = respond
        self.requests: list[SimpleNamespace] = []
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                mock.requests.append(SimpleNamespace(path=url.path, query=query,
                                                     headers=dict(self.headers)))
                if len(mock.requests) > 20:  # a paging loop in the code under test: fail
                    status, body = 400, {"message": "mock: too many requests"}
                else:
                    status, body = mock.respond(url.path, query)
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def serve():
    servers = []

    def start(respond):
        m = MockAlpaca(respond if callable(respond) else (lambda path, q: (200, respond)))
        servers.append(m)
        return m

    yield start
    for m in servers:
        m.close()


def ts(s):
    return pd.Timestamp(s, tz="UTC")


def ny(s):
    return pd.Timestamp(s, tz="America/New_York").tz_convert("UTC")


def source(mock, clock=ts("2030-01-01"), **kw):
    kw.setdefault("sleep", lambda s: None)
    return AlpacaSource(KEY, SECRET, url_override=mock.url, clock=lambda: clock, **kw)


def paged(path, q):
    return (200, PAGE1) if "page_token" not in q else (200, MULTI)


def page1_only(path, q):
    return (200, PAGE1) if "page_token" not in q else (200, EMPTY)


# --------------------------------------------------------------------------- values
def test_daily_bars_exact_values_and_pages_merged(serve):
    mock = serve(paged)
    df = source(mock).fetch("AAPL", ts("2022-02-01"), ts("2022-03-09"), "1d")
    assert list(df.index) == [ts("2022-02-01"), ts("2022-02-02"), ts("2022-03-09")]
    assert list(df.columns) == list(COLUMNS)
    assert (df.dtypes == "float64").all()
    assert df.loc[ts("2022-02-01")].tolist() == [174.0, 174.84, 172.31, 174.61, 85998033.0]
    assert df.loc[ts("2022-02-02")].tolist() == [174.64, 175.88, 173.33, 175.84, 84817432.0]
    assert df.loc[ts("2022-03-09")].tolist() == [161.51, 163.41, 159.41, 162.95, 88496480.0]
    # the page token was followed by alpaca-py: two requests, the second with the token
    assert [r.path for r in mock.requests] == ["/v2/stocks/bars"] * 2
    first, second = (r.query for r in mock.requests)
    assert "page_token" not in first
    assert second["page_token"] == PAGE1["next_page_token"]
    assert first["symbols"] == "AAPL" and first["timeframe"] == "1Day"
    assert first["adjustment"] == "all" and first["feed"] == "iex"
    # the request spans New York days: 2022-02-01 00:00 EST .. 2022-03-09 23:59:59 EST
    assert pd.Timestamp(first["start"]) == ny("2022-02-01")
    assert pd.Timestamp(first["end"]) == ny("2022-03-09 23:59:59")
    headers = mock.requests[0].headers
    assert headers["APCA-API-KEY-ID"] == KEY and headers["APCA-API-SECRET-KEY"] == SECRET
    assert standardize(df, "alpaca", "AAPL").equals(df)


def test_range_is_inclusive_and_other_symbols_are_ignored(serve):
    mock = serve(paged)
    df = source(mock).fetch("AAPL", ts("2022-02-02"), ts("2022-02-02"), "1d")
    assert list(df.index) == [ts("2022-02-02")]  # the 02-01 and 03-09 rows are outside
    assert df["close"].tolist() == [175.84]
    assert "TSLA" not in str(df)


@pytest.mark.parametrize(("adjusted", "sent"), [(True, "all"), (False, "raw")])
def test_adjusted_flag_is_sent_as_adjustment(serve, adjusted, sent):
    mock = serve(EMPTY)
    source(mock).fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d", adjusted=adjusted)
    assert mock.requests[0].query["adjustment"] == sent


def test_sip_feed_is_sent(serve):
    mock = serve(EMPTY)
    source(mock, feed="sip").fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    assert mock.requests[0].query["feed"] == "sip"


def test_descending_answer_in_summer_time_is_sorted_on_new_york_dates(serve):
    # 04:00Z = midnight EDT; the second page (after the token) is the recorded empty answer
    mock = serve(lambda path, q: (200, DESC) if "page_token" not in q else (200, EMPTY))
    df = source(mock).fetch("TSLA", ts("2023-09-25"), ts("2023-09-27"), "1d")
    assert list(df.index) == [ts("2023-09-25"), ts("2023-09-26"), ts("2023-09-27")]
    assert df["close"].tolist() == [246.99, 244.12, 240.5]
    assert df["open"].tolist() == [243.38, 242.98, 244.262]
    assert len(mock.requests) == 2
    assert pd.Timestamp(mock.requests[0].query["start"]) == ts("2023-09-25 04:00")


def test_empty_answer_is_an_empty_standard_frame(serve):
    mock = serve(EMPTY)
    df = source(mock).fetch("AAPL", ts("2022-02-01"), ts("2022-03-09"), "1d")
    assert df.empty and list(df.columns) == list(COLUMNS)
    assert str(df.index.tz) == "UTC"
    assert len(mock.requests) == 1


# --------------------------------------------------------------------------- completed bars only
def test_the_daily_bar_of_a_session_still_trading_is_dropped(serve):
    mock = serve(page1_only)
    before_close = source(mock, clock=ny("2022-02-02 15:59")).fetch(
        "AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    assert list(before_close.index) == [ts("2022-02-01")]
    # the request never asks beyond now
    assert pd.Timestamp(mock.requests[-1].query["end"]) == ny("2022-02-02 15:59")
    after_close = source(mock, clock=ny("2022-02-02 16:00")).fetch(
        "AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    assert list(after_close.index) == [ts("2022-02-01"), ts("2022-02-02")]


def test_minute_bar_is_stamped_at_its_start_and_only_returned_once_complete(serve):
    mock = serve(MINUTE)
    start, end = ts("2022-07-26 20:45"), ts("2022-07-26 20:55")
    forming = source(mock, clock=ts("2022-07-26 20:50:59")).fetch("SPY", start, end, "1m")
    assert forming.empty
    done = source(mock, clock=ts("2022-07-26 20:51")).fetch("SPY", start, end, "1m")
    assert list(done.index) == [ts("2022-07-26 20:50")]
    assert done.iloc[0].tolist() == [392.18, 392.18, 392.18, 392.18, 2100.0]
    q = mock.requests[-1].query
    assert q["timeframe"] == "1Min"
    assert pd.Timestamp(q["start"]) == start
    assert pd.Timestamp(q["end"]) == ts("2022-07-26 20:51")  # never beyond now


@pytest.mark.parametrize(("interval", "timeframe"),
                         [("5m", "5Min"), ("15m", "15Min"), ("1h", "1Hour")])
def test_intervals_map_to_timeframes(serve, interval, timeframe):
    mock = serve(EMPTY)
    source(mock).fetch("SPY", ts("2022-07-26 14:00"), ts("2022-07-26 20:00"), interval)
    assert mock.requests[0].query["timeframe"] == timeframe


def test_a_range_entirely_in_the_future_asks_nothing(serve):
    mock = serve(PAGE1)
    df = source(mock, clock=ts("2022-01-01")).fetch("AAPL", ts("2022-02-01"), ts("2022-03-01"),
                                                   "1d")
    assert df.empty and mock.requests == []


# --------------------------------------------------------------------------- errors
def one_line_without_keys(err):
    msg = str(err)
    assert "\n" not in msg and KEY not in msg and SECRET not in msg
    return msg


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_keys_say_which_variables_to_check(serve, status):
    mock = serve(lambda path, q: (status, FORBIDDEN))
    with pytest.raises(SourceError) as e:
        source(mock).fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    msg = one_line_without_keys(e.value)
    assert f"HTTP {status}" in msg and "forbidden." in msg and "MLTRADER_ALPACA_KEY" in msg
    assert msg.startswith("alpaca: AAPL:")
    assert len(mock.requests) == 1  # not retried


def test_sip_without_subscription_says_use_iex(serve):
    body = {"message": "subscription does not permit querying recent SIP data"}
    mock = serve(lambda path, q: (403, body))
    with pytest.raises(SourceError, match="feed='iex'"):
        source(mock, feed="sip").fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")


def test_bad_symbol_422_names_the_symbol_and_the_fix(serve):
    mock = serve(lambda path, q: (422, INVALID_SYMBOL))
    with pytest.raises(SourceError) as e:
        source(mock).fetch("NOPE!", ts("2022-02-01"), ts("2022-02-02"), "1d")
    msg = one_line_without_keys(e.value)
    assert "HTTP 422" in msg and "invalid symbol: NOPE!" in msg and "check the symbol" in msg
    assert len(mock.requests) == 1


@pytest.fixture
def alpaca_sleeps(monkeypatch):
    """alpaca-py's own retry sleeps, recorded instead of slept."""
    import alpaca.common.rest as rest

    sleeps = []
    monkeypatch.setattr(rest, "time", SimpleNamespace(sleep=sleeps.append))
    return sleeps


def test_429_is_retried_by_alpaca_py_then_one_clear_error(serve, alpaca_sleeps):
    mock = serve(lambda path, q: (429, TOO_MANY))
    ours = []
    with pytest.raises(SourceError) as e:
        source(mock, sleep=ours.append).fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    msg = one_line_without_keys(e.value)
    assert "HTTP 429" in msg and "rate limit" in msg and "Too Many Requests" in msg
    assert len(mock.requests) == 4  # alpaca-py: 1 + 3 retries, 3 s apart
    assert alpaca_sleeps == [3, 3, 3]
    assert ours == []  # no second retry layer on top of alpaca-py's


def test_a_passing_429_is_absorbed_by_alpaca_py(serve, alpaca_sleeps):
    answers = iter([(429, TOO_MANY), (200, PAGE1), (200, MULTI)])
    mock = serve(lambda path, q: next(answers))
    df = source(mock).fetch("AAPL", ts("2022-02-01"), ts("2022-03-09"), "1d")
    assert len(df) == 3 and len(mock.requests) == 3 and alpaca_sleeps == [3]


def test_server_errors_are_retried_a_bounded_number_of_times(serve):
    mock = serve(lambda path, q: (500, {"message": "internal server error"}))
    sleeps = []
    with pytest.raises(SourceError) as e:
        source(mock, retries=2, retry_wait=0.5, sleep=sleeps.append).fetch(
            "AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    msg = one_line_without_keys(e.value)
    assert "HTTP 500" in msg and "try again later" in msg
    assert len(mock.requests) == 3 and sleeps == [0.5, 1.0]


def test_a_server_error_then_success_returns_the_bars(serve):
    answers = iter([(502, "bad gateway"), (200, PAGE1), (200, EMPTY)])
    mock = serve(lambda path, q: next(answers))
    df = source(mock).fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    assert df["close"].tolist() == [174.61, 175.84]


def test_a_hanging_server_times_out(serve):
    def slow(path, q):
        time.sleep(1.0)
        return 200, EMPTY

    mock = serve(slow)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="timed out after 2 attempts"):
        source(mock, timeout=0.2, retries=1).fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"),
                                                  "1d")
    assert time.monotonic() - t0 < 1.5


def test_nothing_listening_is_a_network_error():
    with socket.socket() as s:  # a free port, closed again: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = AlpacaSource(KEY, SECRET, url_override=f"http://127.0.0.1:{port}", retries=1,
                       sleep=lambda s: None)
    with pytest.raises(SourceError, match="network error after 2 attempts"):
        src.fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")


# --------------------------------------------------------------------------- keys, set-up
def test_missing_keys_name_the_variables():
    src = AlpacaSource()
    with pytest.raises(SourceError) as e:
        src.fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    msg = str(e.value)
    assert "MLTRADER_ALPACA_KEY" in msg and "MLTRADER_ALPACA_SECRET" in msg
    assert "APCA_API_KEY_ID" in msg


def test_a_missing_secret_alone_is_named(monkeypatch):
    monkeypatch.setenv("MLTRADER_ALPACA_KEY", KEY)
    with pytest.raises(SourceError) as e:
        AlpacaSource().fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    assert "MLTRADER_ALPACA_SECRET" in str(e.value) and "MLTRADER_ALPACA_KEY " not in str(e.value)
    assert KEY not in str(e.value)


@pytest.mark.parametrize(("key_var", "secret_var"),
                         [("MLTRADER_ALPACA_KEY", "MLTRADER_ALPACA_SECRET"),
                          ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY")])
def test_keys_come_from_the_environment(serve, monkeypatch, key_var, secret_var):
    monkeypatch.setenv(key_var, "env-key")
    monkeypatch.setenv(secret_var, "env-secret")
    mock = serve(EMPTY)
    src = AlpacaSource(url_override=mock.url)
    src.fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    assert mock.requests[0].headers["APCA-API-KEY-ID"] == "env-key"
    assert mock.requests[0].headers["APCA-API-SECRET-KEY"] == "env-secret"
    assert "env-key" not in repr(src) and "env-secret" not in repr(src)


def test_mltrader_variables_win_over_alpaca_ones(serve, monkeypatch):
    monkeypatch.setenv("MLTRADER_ALPACA_KEY", "ours")
    monkeypatch.setenv("MLTRADER_ALPACA_SECRET", "ours-secret")
    monkeypatch.setenv("APCA_API_KEY_ID", "theirs")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "theirs-secret")
    mock = serve(EMPTY)
    AlpacaSource(url_override=mock.url).fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")
    assert mock.requests[0].headers["APCA-API-KEY-ID"] == "ours"


def test_without_alpaca_py_the_error_says_what_to_install(monkeypatch):
    import sys

    for mod in [m for m in sys.modules if m == "alpaca" or m.startswith("alpaca.")]:
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setitem(sys.modules, "alpaca", None)
    with pytest.raises(SourceError, match=r'pip install "mltrader\[live\]"'):
        AlpacaSource(KEY, SECRET).fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d")


def test_bad_interval_and_feed_are_clear_errors():
    with pytest.raises(SourceError, match="interval '2h'"):
        AlpacaSource(KEY, SECRET).fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "2h")
    with pytest.raises(SourceError, match="feed 'otc'"):
        AlpacaSource(KEY, SECRET, feed="otc")


def test_it_is_a_source_and_the_registry_builds_it():
    from mltrader.data.fetch import make_source

    src = make_source("alpaca", api_key=KEY, secret_key=SECRET)
    assert isinstance(src, AlpacaSource) and isinstance(src, Source) and src.name == "alpaca"


def test_an_injected_model_client_is_used_as_is():
    """A non-raw client (alpaca-py BarSet of Bar models) gives the same frame."""
    from alpaca.data.models import BarSet

    class Client:
        def __init__(self):
            self.requests = []

        def get_stock_bars(self, request):
            self.requests.append(request)
            return BarSet({"AAPL": PAGE1["bars"]["AAPL"]})

    client = Client()
    src = AlpacaSource(client=client, clock=lambda: ts("2030-01-01"))
    df = src.fetch("AAPL", ts("2022-02-01"), ts("2022-02-02"), "1d", adjusted=False)
    assert df["close"].tolist() == [174.61, 175.84]
    assert list(df.index) == [ts("2022-02-01"), ts("2022-02-02")]
    assert client.requests[0].adjustment.value == "raw"


def test_embedded_bodies_equal_the_fixture_files():
    def load(name):
        return json.loads((FIXTURES / name).read_text())

    assert load("get_stocks_bars_single_with_next_page_token.json") == PAGE1
    assert load("get_stocks_bars_multi_symbol.json") == MULTI
    assert load("get_stocks_bars_desc_with_next_page_token.json") == DESC
    assert load("get_stocks_bars_empty.json") == EMPTY
    assert load("get_stocks_bars_latest_multi.json") == LATEST
