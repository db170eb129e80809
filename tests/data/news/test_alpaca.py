"""AlpacaNews against a local HTTP server speaking Alpaca's news API, and AlpacaNewsStream's
message -> item conversion through alpaca-py's own stream dispatch.

The REAL alpaca-py `NewsClient` is pointed at 127.0.0.1 with `url_override`, so its request
building, pagination (next_page_token) and `News` parsing all run; the server answers with
fixtures/get_news_page1.json then get_news_page2.json (see fixtures/README.md).
"""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest

from mltrader.data.news import AlpacaNews, AlpacaNewsStream, NewsError, NewsSource

from .conftest import FIXTURES

alpaca = pytest.importorskip("alpaca")
PAGE1 = (FIXTURES / "get_news_page1.json").read_bytes()
PAGE2 = (FIXTURES / "get_news_page2.json").read_bytes()
TOKEN2 = json.loads(PAGE1)["next_page_token"]
UTC = "UTC"


def _pages(path, query):
    assert path == "/v1beta1/news"
    if query.get("page_token") == [TOKEN2]:
        return 200, PAGE2, "application/json"
    return 200, PAGE1, "application/json"


def _source(server) -> AlpacaNews:
    return AlpacaNews(api_key="test-key", secret_key="test-secret", url_override=server.url)


def test_fetch_follows_pages_and_maps_fields(local_server):
    server = local_server(_pages)
    src = _source(server)
    assert isinstance(src, NewsSource)
    df = src.fetch(["aapl", "CWAN"], pd.Timestamp("2024-08-01", tz=UTC),
                   pd.Timestamp("2024-12-01", tz=UTC))
    assert len(server.requests) == 2  # page 1, then page 2 by next_page_token
    q = server.requests[0].query
    assert q["symbols"] == ["AAPL,CWAN"] and q["sort"] == ["asc"]
    assert q["start"][0].startswith("2024-08-01T00:00:00")
    assert server.requests[1].query["page_token"] == [TOKEN2]
    assert server.requests[0].headers["APCA-API-KEY-ID"] == "test-key"
    assert df.to_dict("records") == [
        {"id": "40432158", "time": pd.Timestamp("2024-08-18T20:15:44Z"),
         "symbols": ("AAPL", "QCOM"), "headline": "headline", "summary": "summary",
         "source": "source", "provider": "alpaca"},
        {"id": "41799100", "time": pd.Timestamp("2024-11-07T09:16:41Z"), "symbols": ("CWAN",),
         "headline": "Piper Sandler Maintains Neutral on Clearwater Analytics Hldg, Raises "
                     "Price Target to $28", "summary": "", "source": "benzinga",
         "provider": "alpaca"}]


def test_fetch_keeps_only_asked_symbols_and_range(local_server):
    src = _source(local_server(_pages))
    df = src.fetch(["AAPL"], pd.Timestamp("2024-08-01", tz=UTC),
                   pd.Timestamp("2024-12-01", tz=UTC))
    assert df["id"].tolist() == ["40432158"]
    df = src.fetch(["AAPL", "CWAN"], pd.Timestamp("2024-09-01", tz=UTC),
                   pd.Timestamp("2024-12-01", tz=UTC))
    assert df["id"].tolist() == ["41799100"]


def test_http_error_is_one_line(local_server):
    server = local_server(lambda p, q: (403, b'{"message": "forbidden."}', "application/json"))
    with pytest.raises(NewsError) as e:
        _source(server).fetch(["AAPL"], pd.Timestamp("2024-08-01", tz=UTC),
                              pd.Timestamp("2024-12-01", tz=UTC))
    msg = str(e.value)
    assert "\n" not in msg and "HTTP 403" in msg and "API key was rejected" in msg


def test_missing_keys_is_one_line():
    with pytest.raises(NewsError, match="no API key: set MLTRADER_ALPACA_KEY"):
        AlpacaNews().fetch(["AAPL"], pd.Timestamp("2024-08-01", tz=UTC),
                           pd.Timestamp("2024-12-01", tz=UTC))


def _wire(msg: dict) -> list[dict]:
    """The message as alpaca-py's stream receives it: a msgpack frame [msg] whose times are
    msgpack Timestamps (the stream speaks msgpack), unpacked as `DataStream._consume` does."""
    import msgpack

    m = dict(msg)
    for k in ("created_at", "updated_at"):
        m[k] = msgpack.Timestamp.from_datetime(pd.Timestamp(m[k]).to_pydatetime())
    return msgpack.unpackb(msgpack.packb([m]), timestamp=0)


def test_stream_message_becomes_a_one_row_frame():
    msg = json.loads((FIXTURES / "alpaca_news_stream_message.json").read_text())
    got: list[pd.DataFrame] = []

    async def callback(frame: pd.DataFrame) -> None:  # coroutine callbacks are awaited
        got.append(frame)

    stream = AlpacaNewsStream(["crsr"], callback, api_key="k", secret_key="s")
    assert stream.stream._handlers["news"].keys() == {"CRSR"}

    async def deliver() -> None:
        for m in _wire(msg):
            await stream.stream._dispatch(m)  # alpaca-py's own dispatch and News parsing

    asyncio.run(deliver())
    assert len(got) == 1
    assert got[0].to_dict("records") == [{
        "id": "24918784", "time": pd.Timestamp("2022-01-05T22:00:37Z"), "symbols": ("CRSR",),
        "headline": msg["headline"], "summary": msg["summary"], "source": "benzinga",
        "provider": "alpaca"}]


def test_stream_plain_callback_and_raw_dicts():
    got: list[pd.DataFrame] = []
    stream = AlpacaNewsStream(["*"], got.append, api_key="k", secret_key="s")
    raw = json.loads((FIXTURES / "alpaca_news_stream_message.json").read_text())
    asyncio.run(stream.on_news(raw))  # raw_data=True streams hand over dicts
    asyncio.run(stream.on_news({**raw, "headline": ""}))  # no headline: skipped
    asyncio.run(stream.on_news({**raw, "created_at": "soon"}))  # no usable time: skipped
    asyncio.run(stream.on_news({**raw, "created_at": None}))
    assert len(got) == 1 and got[0]["time"].iloc[0] == pd.Timestamp("2022-01-05T22:00:37Z")
