"""YahooSource driving the real yfinance code offline, against recorded Yahoo chart JSON.

yfinance accepts a ``requests.Session``; the one given here has a transport adapter mounted
for http(s) that answers every request from memory: Yahoo's cookie (fc.yahoo.com) and crumb
endpoints get dummy answers, ``/v8/finance/chart/{symbol}`` gets the recorded JSON, and
anything else (consent page, quoteSummary) a 404. Everything above the adapter (yfinance's
YfData, cookie/crumb logic, chart parsing, time zones, adjustment) runs as in production.
Any socket connection to a non-local address fails the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

yf = pytest.importorskip("yfinance")
requests = pytest.importorskip("requests")

from requests.adapters import BaseAdapter  # noqa: E402
from yfinance.data import YfData  # noqa: E402

from mltrader.data.sources.base import COLUMNS, Source, SourceError  # noqa: E402
from mltrader.data.sources.yahoo import YahooSource  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "yahoo"
IBM_1D = "chart_IBM_interval-1d_range-1y_TRIMMED-20bars_with_dividend.json"
AMZN_1H = "chart_AMZN_interval-1h_period1-period2_TRIMMED-21bars.json"
MSFT_1D = "chart_MSFT_interval-1d_range-1d.json"
NO_DATA = "chart_error_no_data_RECONSTRUCTED.json"


def chart(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


@pytest.fixture(autouse=True)
def no_curl_network(monkeypatch):
    """The suite's socket guard (tests/conftest.py) cannot see libcurl: block curl_cffi."""
    try:  # yfinance's default session is curl_cffi, whose libcurl bypasses Python's sockets
        from curl_cffi.requests import Session as CurlSession
    except ImportError:
        return

    def refuse(self, method, url, *args, **kwargs):
        raise AssertionError(f"test tried to reach the network through curl_cffi: {url}")

    monkeypatch.setattr(CurlSession, "request", refuse)


@pytest.fixture(scope="module", autouse=True)
def yf_cache_dir(tmp_path_factory):
    """yfinance's time-zone and cookie caches in a temporary folder, not the user's."""
    yf.set_tz_cache_location(str(tmp_path_factory.mktemp("yfinance-cache")))


@pytest.fixture(autouse=True)
def fresh_yfinance():
    """yfinance keeps one YfData (session, cookie, crumb) per process and memoizes answers."""
    YfData.cache_get.cache_clear()
    YfData._instances.pop(YfData, None)
    yield
    YfData.cache_get.cache_clear()
    YfData._instances.pop(YfData, None)


class FakeYahoo(BaseAdapter):
    """A requests transport adapter playing Yahoo from memory; records every request."""

    def __init__(self, charts: dict):
        super().__init__()
        self.charts = charts          # symbol -> dict | callable(params) -> answer
        self.log: list[tuple[str, dict]] = []

    def chart_calls(self, history_only: bool = True) -> list[dict]:
        return [q for u, q in self.log if "/v8/finance/chart/" in u
                and (not history_only or "period1" in q)]

    def send(self, request, **kwargs):
        u = urlsplit(request.url)
        params = {k: v[0] for k, v in parse_qs(u.query).items()}
        self.log.append((u.netloc + u.path, params))
        status, body = 404, b"Not Found"
        if u.netloc == "fc.yahoo.com":
            status, body = 200, b""
        elif u.path.endswith("/v1/test/getcrumb"):
            status, body = 200, b"fake-crumb"
        elif u.path.startswith("/v8/finance/chart/"):
            answer = self.charts.get(u.path.rsplit("/", 1)[1], (404, chart(NO_DATA)))
            if callable(answer):
                answer = answer(params)
            if isinstance(answer, Exception):
                raise answer
            status, payload = answer if isinstance(answer, tuple) else (200, answer)
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        resp = requests.Response()
        resp.status_code, resp._content, resp.url, resp.request = status, body, request.url, request
        resp.headers["Content-Type"] = "application/json"
        return resp

    def close(self):
        pass


class Sleeps(list):
    def __call__(self, s):
        self.append(s)


def make(charts: dict, now: str):
    fake = FakeYahoo(charts)
    session = requests.Session()
    session.mount("https://", fake)
    session.mount("http://", fake)
    sleeps = Sleeps()
    src = YahooSource(session=session, sleep=sleeps, now=lambda: ts(now))
    return src, fake, sleeps


# --- parsing ---------------------------------------------------------------------------------

def test_daily_adjusted_and_raw_from_recorded_chart():
    data = chart(IBM_1D)
    q = data["chart"]["result"][0]["indicators"]
    raw_close, adj = q["quote"][0]["close"], q["adjclose"][0]["adjclose"]
    src, fake, _ = make({"IBM": data}, now="2026-12-01")
    assert isinstance(src, Source) and src.name == "yahoo"
    df = src.fetch("IBM", ts("2025-10-01"), ts("2025-12-31"), "1d", adjusted=True)
    assert list(df.columns) == list(COLUMNS) and str(df.index.tz) == "UTC"
    assert all(str(t) == "float64" for t in df.dtypes)
    assert len(df) == 20
    # Yahoo's 13:30 UTC session timestamps become 00:00 UTC of the session date
    assert df.index[0] == ts("2025-10-28") and df.index[-1] == ts("2025-11-24")
    first = df.loc[ts("2025-10-28")]
    assert first["close"] == pytest.approx(adj[0], rel=1e-9)          # 304.65...
    assert first["open"] == pytest.approx(312.6000061035156 * adj[0] / raw_close[0], rel=1e-6)
    assert first["volume"] == 6044800.0
    assert fake.chart_calls()[0]["interval"] == "1d"
    raw = src.fetch("IBM", ts("2025-10-01"), ts("2025-12-31"), "1d", adjusted=False)
    assert raw.loc[ts("2025-10-28"), "close"] == pytest.approx(312.57000732421875, rel=1e-12)
    assert raw.loc[ts("2025-10-28"), "open"] == pytest.approx(312.6000061035156, rel=1e-12)
    # the dividend (ex-date 2025-11-10) lowers the adjusted/raw ratio before that date
    ratio = (df["close"] / raw["close"])
    assert ratio[ts("2025-11-07")] < ratio[ts("2025-11-10")]


def test_daily_date_filter_and_request_window():
    src, fake, _ = make({"IBM": chart(IBM_1D)}, now="2026-12-01")
    df = src.fetch("IBM", ts("2025-11-03"), ts("2025-11-07"), "1d")
    assert list(df.index) == list(pd.date_range("2025-11-03", "2025-11-07", tz="UTC"))
    q = fake.chart_calls()[-1]
    # bare dates, read by yfinance at New York midnight; the end is exclusive, so +1 day
    assert int(q["period1"]) == int(pd.Timestamp("2025-11-03", tz="America/New_York").timestamp())
    assert int(q["period2"]) == int(pd.Timestamp("2025-11-08", tz="America/New_York").timestamp())


def test_intraday_bar_starts_in_utc_and_forming_bar_dropped():
    src, fake, _ = make({"AMZN": chart(AMZN_1H)}, now="2026-08-31 19:45")   # 15:45 New York
    df = src.fetch("AMZN", ts("2026-08-28"), ts("2026-09-02"), "1h")
    # 7 bars on 08-28, then 08-31 up to the 14:30 New York bar; the 15:30 bar is still open
    # and 09-01's bars are in the future
    assert len(df) == 13
    assert df.index[0] == ts("2026-08-28 13:30") and df.index[-1] == ts("2026-08-31 18:30")
    assert df.iloc[0].tolist() == pytest.approx(
        [258.32000732421875, 261.8999938964844, 257.7799987792969, 260.8399963378906, 7802735])
    assert fake.chart_calls()[-1]["interval"] == "1h"
    later, _, _ = make({"AMZN": chart(AMZN_1H)}, now="2026-09-02")
    full = later.fetch("AMZN", ts("2026-08-28 14:30"), ts("2026-09-01 19:30"), "1h")
    assert len(full) == 20 and full.index[-1] == ts("2026-09-01 19:30")


def test_daily_bar_of_a_session_not_closed_yet_is_dropped():
    data = chart(MSFT_1D)            # session 2026-09-25, regular close 20:00 UTC
    before, _, _ = make({"MSFT": data}, now="2026-09-25 19:59")
    assert before.fetch("MSFT", ts("2026-09-20"), ts("2026-09-26"), "1d").empty
    after, _, _ = make({"MSFT": data}, now="2026-09-25 20:00")
    df = after.fetch("MSFT", ts("2026-09-20"), ts("2026-09-26"), "1d")
    assert list(df.index) == [ts("2026-09-25")]
    assert df.iloc[0].tolist() == pytest.approx(
        [499.0400085449219, 519.4000244140625, 497.25, 516.1699829101562, 38154200])


# --- ranges Yahoo cannot serve ---------------------------------------------------------------

@pytest.mark.parametrize("interval, days", [("1m", 31), ("5m", 61), ("15m", 61), ("1h", 731)])
def test_intraday_out_of_reach_refused_before_any_request(interval, days):
    src, fake, _ = make({"AMZN": chart(AMZN_1H)}, now="2026-09-02")
    start = ts("2026-09-02") - pd.Timedelta(days=days)
    with pytest.raises(SourceError) as e:
        src.fetch("AMZN", start, ts("2026-09-01"), interval)
    assert fake.log == []
    msg = str(e.value)
    assert msg.startswith(f"yahoo: AMZN: Yahoo serves {interval} bars for the last")
    assert "\n" not in msg


def test_one_minute_range_split_into_seven_day_requests_and_empty_range_is_empty():
    empty = chart(MSFT_1D)
    res = empty["chart"]["result"][0]
    res.pop("timestamp")
    res["indicators"] = {"quote": [{}]}
    src, fake, sleeps = make({"MSFT": empty}, now="2026-09-25 21:00")
    df = src.fetch("MSFT", ts("2026-09-05"), ts("2026-09-25 20:00"), "1m")
    assert df.empty and list(df.columns) == list(COLUMNS)
    calls = fake.chart_calls()
    spans = [int(q["period2"]) - int(q["period1"]) for q in calls]
    assert len(calls) == 3 and max(spans) <= 7 * 86400
    assert int(calls[0]["period1"]) == int(ts("2026-09-05").timestamp())
    assert int(calls[-1]["period2"]) == int(ts("2026-09-25 20:01").timestamp())
    assert sleeps == []                                    # a known symbol: no retries


# --- failures --------------------------------------------------------------------------------

def test_unknown_symbol_fails_at_once_naming_it():
    src, _, sleeps = make({}, now="2026-12-01")            # every chart: 404 + error body
    with pytest.raises(SourceError) as e:
        src.fetch("NOSUCHSYM", ts("2025-10-01"), ts("2025-12-01"), "1d")
    assert str(e.value).startswith("yahoo: NOSUCHSYM: ") and "no data found" in str(e.value)
    assert sleeps == []


def test_delisted_answer_for_the_range_names_the_symbol():
    ok = chart(IBM_1D)
    src, _, sleeps = make({"GONE": lambda q: ok if "range" in q else (404, chart(NO_DATA))},
                          now="2026-12-01")
    with pytest.raises(SourceError) as e:
        src.fetch("GONE", ts("2025-10-01"), ts("2025-12-01"), "1d")
    assert str(e.value).startswith("yahoo: GONE: Yahoo says: No data found, symbol may be "
                                   "delisted; check the symbol")
    assert sleeps == []


def flaky(failures: list, then: dict):
    """A chart answer that fails with the given answers/exceptions first, then succeeds."""
    def answer(params):
        return failures.pop(0) if failures else then
    return answer


def test_network_errors_and_rate_limit_retried_then_succeed():
    down = (503, b"<html>Will be right back</html>")
    failures = [requests.exceptions.ConnectionError("connection reset"),
                (429, b"Too Many Requests"), (429, b"Too Many Requests"), down, down]
    src, fake, sleeps = make({"IBM": flaky(failures, chart(IBM_1D))}, now="2026-12-01")
    df = src.fetch("IBM", ts("2025-11-03"), ts("2025-11-07"), "1d")
    assert len(df) == 5 and failures == []
    assert sleeps == [2.0, 4.0, 8.0]


def test_retries_exhausted_give_one_line_error():
    err = requests.exceptions.ConnectionError("connection refused")
    src, fake, sleeps = make({"AAPL": lambda q: err}, now="2026-12-01")
    with pytest.raises(SourceError) as e:
        src.fetch("AAPL", ts("2025-11-03"), ts("2025-11-07"), "1d")
    msg = str(e.value)
    assert msg.startswith("yahoo: AAPL: no usable answer in 4 tries (last: ConnectionError")
    assert "\n" not in msg
    assert sleeps == [2.0, 4.0, 8.0]
    assert len(fake.chart_calls(history_only=False)) == 4


def test_empty_answer_body_retried():
    failures = [{}, {"chart": {"result": None, "error": None}}, b""]
    src, _, sleeps = make({"EMPTY": flaky(failures, chart(IBM_1D))}, now="2026-12-01")
    assert len(src.fetch("EMPTY", ts("2025-11-03"), ts("2025-11-07"), "1d")) == 5
    assert failures == [] and sleeps == [2.0, 4.0, 8.0]


def test_missing_yfinance_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "yfinance", None)
    src = YahooSource(now=lambda: ts("2026-12-01"))
    with pytest.raises(SourceError, match=r'pip install "mltrader\[data\]"'):
        src.fetch("IBM", ts("2025-11-03"), ts("2025-11-07"), "1d")


# --- yfinance's own CSVs load as the same bars -----------------------------------------------

def _recorded_session():
    fake = FakeYahoo({"IBM": chart(IBM_1D)})
    session = requests.Session()
    session.mount("https://", fake)
    session.mount("http://", fake)
    return session


def _plain(frame: pd.DataFrame, path: Path) -> Path:
    """The same bars as a plain single-symbol file: date (YYYY-MM-DD), OHLCV."""
    plain = pd.DataFrame({"date": frame.index.strftime("%Y-%m-%d"),
                          **{c.lower(): frame[c].to_numpy() for c in
                             ("Open", "High", "Low", "Close", "Volume")}})
    plain.to_csv(path, index=False)
    return path


def test_yfinance_history_to_csv_loads_as_the_same_bars(tmp_path):
    """`yf.Ticker(...).history(...).to_csv(...)` as yfinance itself writes it (a tz-aware
    New York midnight index named Date, Dividends and Stock Splits columns)."""
    from mltrader.data.files import load_file

    hist = yf.Ticker("IBM", session=_recorded_session()).history(
        period="1y", interval="1d", auto_adjust=False)
    assert len(hist) >= 15 and "Dividends" in hist.columns
    hist.to_csv(tmp_path / "IBM.csv")
    got = load_file(tmp_path / "IBM.csv")
    (tmp_path / "plain").mkdir()
    want = load_file(_plain(hist, tmp_path / "plain" / "IBM.csv"))
    assert got.symbols == want.symbols == ("IBM",)
    assert got.index.equals(want.index)
    for f in ("open", "high", "low", "close", "volume"):
        assert (getattr(got, f) == getattr(want, f)).all(), f


def test_yfinance_download_to_csv_loads_as_the_same_bars(tmp_path):
    """`yf.download(...).to_csv(...)`: yfinance's two header rows (Price, Ticker)."""
    from mltrader.data.files import load_file

    df = yf.download("IBM", period="1y", interval="1d", auto_adjust=False,
                     session=_recorded_session(), progress=False, threads=False)
    assert len(df) >= 15
    df.to_csv(tmp_path / "download.csv")
    assert (tmp_path / "download.csv").read_text().startswith("Price,")
    got = load_file(tmp_path / "download.csv")
    (tmp_path / "plain").mkdir()
    flat = df.xs("IBM", axis=1, level=1)
    want = load_file(_plain(flat, tmp_path / "plain" / "IBM.csv"))
    assert got.symbols == ("IBM",)
    assert got.index.equals(want.index)
    for f in ("open", "high", "low", "close", "volume"):
        assert (getattr(got, f) == getattr(want, f)).all(), f
