"""The dashboard over a journal written by a real paper session (synthetic data)."""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from mltrader.dashboard import Source, create_app
from mltrader.dashboard.data import ReadOnlyJournal
from mltrader.errors import MltraderError
from mltrader.live.brokers.base import Fill
from mltrader.live.journal import Journal
from mltrader.live.session import journal_url
from tests.dashboard.support import LOCAL, TOKEN, serve

HAS_COMMANDS = hasattr(Journal, "add_command")
needs_commands = pytest.mark.skipif(
    not HAS_COMMANDS, reason="Journal.add_command / commands_frame (the runner's command "
    "table) are not in this tree yet: the control endpoint cannot write a command")


def _client(folder, *, client=("127.0.0.1", 5000), host="127.0.0.1", **kw):
    app = create_app(Source(journal_url(folder)), token=TOKEN, host=host,
                     token_from_env=True, **kw)
    return TestClient(app, base_url=LOCAL, client=client)


@pytest.fixture
def client(session):
    with _client(session[0]) as c:
        yield c


def _commands(folder):
    with Journal(journal_url(folder)) as j:
        return j.commands_frame() if HAS_COMMANDS else None


def _files_state(folder):
    """The journal file's mtime and size, and the size of its WAL (a read-only WAL reader
    may create an empty -wal and the -shm index, but never writes a page)."""
    db = folder / "journal.db"
    wal = folder / "journal.db-wal"
    return {"db": (db.stat().st_mtime_ns, db.stat().st_size),
            "wal": wal.stat().st_size if wal.exists() else 0}


# ---------------------------------------------------------------------------- pages


def test_pages_render_the_sessions_numbers(client, session):
    folder, res = session
    with Journal(journal_url(folder)) as j:
        fills = j.fills_for(res.run_id)
        decisions = j.decisions_frame(res.run_id)
    r = client.get("/")
    assert r.status_code == 200
    assert f"{res.equity:,.2f}" in r.text and f"{res.cash:,.2f}" in r.text
    assert "/static/plotly.min.js" in r.text and "cdn" not in r.text.lower()
    r = client.get("/positions")
    assert r.status_code == 200
    last = fills.iloc[-1]
    assert f"{last['price']:,.4f}" in r.text and last["client_order_id"] in r.text
    sym = decisions["symbol"].iloc[0]
    r = client.get("/decisions", params={"symbol": sym})
    assert r.status_code == 200 and sym in r.text
    assert decisions["model_artifact_hash"].iloc[-1][:12] in r.text
    other = [s for s in decisions["symbol"].unique() if s != sym][0]
    assert f">{other}<" not in r.text  # filtered by symbol
    for path in ("/risk", "/health", "/docs"):
        assert client.get(path).status_code == 200, path
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000


def test_api_docs_load_without_a_cdn(client):
    """/docs and /redoc reference only this server's assets (no machine here, and no
    trader's air-gapped box, can reach a CDN), and every asset they reference is served."""
    import re

    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        urls += re.findall(r"""url: ?["']([^"']+)["']""", html)
        assert urls, page
        for url in urls:
            assert not url.startswith(("http:", "https:", "//")), (page, url)
            assert client.get(url).status_code == 200, (page, url)


def test_partial_render_is_only_the_content(client):
    r = client.get("/positions", headers={"X-Partial": "1"})
    assert r.status_code == 200 and "<html" not in r.text and 'id="pos"' in r.text


# ---------------------------------------------------------------------------- API


def test_api_returns_the_journals_data(client, session):
    folder, res = session
    with Journal(journal_url(folder)) as j:
        fills = j.fills_for(res.run_id)
        eq = j.equity_frame(res.run_id)
        decisions = j.decisions_frame(res.run_id)
        orders = j.orders_frame(res.run_id)
    ov = client.get("/api/overview").json()
    assert ov["equity"] == pytest.approx(res.equity) and ov["cash"] == pytest.approx(res.cash)
    assert ov["bars"] == len(eq) and ov["fills"] == len(fills) == res.fills
    assert ov["run"]["id"] == res.run_id
    assert pd.Timestamp(ov["last_bar"]) == eq.index[-1]
    assert ov["roi_total"] == pytest.approx(res.equity / eq["equity"].iloc[0] - 1)
    assert ov["lag_seconds"] > 0 and ov["closed_trades"] > 0 and 0 <= ov["win_rate"] <= 1
    # buy-and-hold: the first bar's equity spread equally over the universe at its closes
    bh = ov["buy_and_hold"]
    assert len(bh) == len(eq) and bh[0] == pytest.approx(eq["equity"].iloc[0])
    closes = folder.parent.joinpath("bars.csv")
    px = pd.read_csv(closes, parse_dates=["date"]).pivot(index="date", columns="symbol",
                                                         values="close")
    first, last = (px.loc[t] for t in (eq.index[0], eq.index[-1]))
    assert ov["roi_buy_and_hold"] == pytest.approx((last / first).mean() - 1, rel=1e-9)
    pos = client.get("/api/positions").json()
    assert {f["fill_id"] for f in pos["fills"]} == set(fills["fill_id"])
    got = client.get("/api/fills", params={"limit": 3}).json()
    assert [f["price"] for f in got] == pytest.approx(list(fills["price"].iloc[::-1][:3]))
    assert len(client.get("/api/orders").json()) == len(orders)
    dec = client.get("/api/decisions", params={"limit": 100000}).json()
    assert len(dec) == len(decisions)
    sym = decisions["symbol"].iloc[0]
    day = decisions["bar_time"].iloc[len(decisions) // 2].strftime("%Y-%m-%d")
    one = client.get("/api/decisions", params={"symbol": sym, "start": day, "end": day}).json()
    assert len(one) == 1 and one[0]["symbol"] == sym and one[0]["bar_time"].startswith(day)
    assert any(d["order"] for d in dec)
    assert client.get("/api/audit").json()[0]["id"] > 0
    assert client.get("/api/risk").status_code == 200
    h = client.get("/api/health").json()
    assert h["journal_reachable"] and h["journal"].endswith("journal.db")
    assert client.get("/api/decisions", params={"start": "nonsense"}).status_code == 400
    schema = client.get("/openapi.json").json()
    for path in ("/api/overview", "/api/positions", "/api/decisions", "/api/risk",
                 "/api/health", "/api/stream", "/api/control/{kind}", "/api/backtests",
                 "/metrics"):
        assert path in schema["paths"], path


def test_metrics_expose_the_gauges(client, session):
    _, res = session
    text = client.get("/metrics").text
    for name in ("mltrader_equity", "mltrader_exposure", "mltrader_open_orders",
                 "mltrader_rejections", "mltrader_guard_trips",
                 "mltrader_last_bar_lag_seconds", "mltrader_journal_up 1.0"):
        assert name in text, name
    line = next(ln for ln in text.splitlines() if ln.startswith("mltrader_equity "))
    assert float(line.split()[1]) == pytest.approx(res.equity)


# ---------------------------------------------------------------------------- security


def test_reads_need_the_token_off_loopback(session):
    folder, _ = session
    with _client(folder, client=("10.1.2.3", 5000)) as c:
        assert c.get("/api/overview").status_code == 401
        assert c.get("/", follow_redirects=False).status_code == 303
        assert c.get("/metrics").status_code == 401
        ok = c.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert c.get("/api/overview", headers={"Authorization": "Bearer nope"}
                     ).status_code == 401
        r = c.get(f"/login?token={TOKEN}", follow_redirects=False)
        assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/api/overview").status_code == 200  # the cookie now


def test_a_foreign_host_header_is_refused(client):
    r = client.get("/api/overview", headers={"Host": "evil.example:8050"})
    assert r.status_code == 400


def test_non_local_bind_without_env_token_is_refused(session):
    folder, _ = session
    with pytest.raises(MltraderError, match="MLTRADER_DASHBOARD_TOKEN"):
        create_app(Source(journal_url(folder)), token="generated", host="0.0.0.0",
                   token_from_env=False)
    create_app(Source(journal_url(folder)), token=TOKEN, host="0.0.0.0", token_from_env=True)


def test_cli_refuses_a_non_local_bind_in_one_line(session, monkeypatch):
    from typer.testing import CliRunner

    import mltrader.cli_dashboard  # noqa: F401  (registers the command)
    from mltrader.cli_app import app

    monkeypatch.delenv("MLTRADER_DASHBOARD_TOKEN", raising=False)
    r = CliRunner().invoke(app, ["dashboard", "--session", str(session[0]), "--host",
                                 "0.0.0.0"])
    assert r.exit_code == 2
    assert "refusing to serve the dashboard on 0.0.0.0" in r.output
    assert "Traceback" not in r.output


BAD = [
    ({}, 401),  # no token
    ({"Authorization": "Bearer wrong-token"}, 401),
    ({"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}, 403),
    ({"Authorization": f"Bearer {TOKEN}", "Referer": "http://evil.example/x"}, 403),
    ({"Cookie": f"mltrader_token={TOKEN}"}, 401),  # cookie without the CSRF token
    ({"Cookie": f"mltrader_token={TOKEN}", "X-CSRF-Token": "forged"}, 401),
]


@pytest.mark.parametrize("kind", ["pause", "resume", "flatten", "kill", "set"])
def test_controls_are_refused_and_nothing_is_written(client, session, kind):
    folder, _ = session
    before_files = _files_state(folder)
    before = _commands(folder)
    body = {"params": {"param": "risk.max_position", "value": 0.2}} if kind == "set" else {}
    for headers, code in BAD:
        client.cookies.clear()
        r = client.post(f"/api/control/{kind}", json=body, headers=headers)
        assert r.status_code == code, (headers, r.text)
    client.cookies.clear()
    if before is not None:
        after = _commands(folder)
        pd.testing.assert_frame_equal(before, after)
    else:
        assert _files_state(folder) == before_files


@needs_commands
def test_controls_with_the_token_write_a_command(session, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(session[0], folder)
    with _client(folder) as c:
        r = c.post("/api/control/pause", headers={"Authorization": f"Bearer {TOKEN}",
                                                  "Origin": LOCAL})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["actor"] == "dashboard@127.0.0.1" and body["status"] == "pending"
        r = c.post("/api/control/set", json={"params": {"param": "risk.max_position",
                                                         "value": 0.2}},
                   headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 202, r.text
        bad = c.post("/api/control/set", json={"params": {"param": "broker.secret", "value": 1}},
                     headers={"Authorization": f"Bearer {TOKEN}"})
        assert bad.status_code == 400
        # the page's way: login cookie + CSRF token from the page
        c.get(f"/login?token={TOKEN}")
        page = c.get("/").text
        csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
        assert csrf
        r = c.post("/api/control/resume", json={"csrf": csrf}, headers={"Origin": LOCAL})
        assert r.status_code == 202, r.text
        listed = c.get("/api/commands").json()
        assert [x["kind"] for x in listed[:3]] == ["resume", "set", "pause"]
    cmds = _commands(folder)
    assert list(cmds.sort_values("id")["kind"]) == ["pause", "set", "resume"]
    assert set(cmds["actor"]) == {"dashboard@127.0.0.1"}
    assert (cmds["status"] == "pending").all()
    row = cmds[cmds["kind"] == "set"].iloc[0]
    assert row["params"] == {"param": "risk.max_position", "value": 0.2}


def test_health_shows_the_broker_and_the_log_tail(session, tmp_path):
    import shutil

    from mltrader.live.logfile import LOG_NAME

    folder = tmp_path / "copy"
    shutil.copytree(session[0], folder)
    lines = [f"2026-12-06 10:00:{i:02d} INFO mltrader.live.session: line {i}" for i in range(150)]
    (folder / LOG_NAME).write_text("\n".join(lines) + "\n")
    with _client(folder) as c:
        h = c.get("/api/health").json()
        assert h["broker"]["name"] == "paper" and h["broker"]["status"] == "answering"
        assert h["broker"]["last_error"] is None and h["broker"]["last_ok"]
        assert h["log_file"].endswith(LOG_NAME) and h["log_tail"] == lines[-100:]
        page = c.get("/health").text
        assert "line 149" in page and "line 49<" not in page and "answering" in page
        with Journal(journal_url(folder)) as j:  # the broker stops answering
            run_id = int(j.runs_frame()["id"].iloc[-1])
            j.audit("bar_failed", {"bar_time": "2001-06-01", "symbols": ["S00"],
                                   "error": "TransientBrokerError: connection reset"},
                    run_id=run_id)
            j.audit("bar_failed", {"error": "ValueError: a bug of ours"}, run_id=run_id)
        h = c.get("/api/health").json()
        assert h["broker"]["status"] == "failing"
        assert "connection reset" in h["broker"]["last_error"]["detail"]["error"]
        assert "failing" in c.get("/health").text


def test_the_session_log_keeps_info_lines_and_is_found_beside_the_journal(tmp_path):
    import logging

    from mltrader.live.logfile import LOG_NAME, log_beside, session_log, tail

    with session_log(tmp_path / "s" / LOG_NAME):
        logging.getLogger("mltrader.live.session").info("market closed until %s", "Monday")
        logging.getLogger("mltrader.live.session").debug("not kept")
    got = tail(tmp_path / "s" / LOG_NAME)
    assert len(got) == 1 and got[0].endswith("market closed until Monday")
    assert log_beside(f"sqlite:///{tmp_path}/s/journal.db") == tmp_path / "s" / LOG_NAME
    assert log_beside("postgresql+psycopg://u@h/db") is None
    assert tail(tmp_path / "missing.log") == []


def test_a_flat_book_shows_no_positions(session, tmp_path):
    """The newest snapshot with nothing held writes no position rows: the page must not
    show the older snapshot's positions as held."""
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(session[0], folder)
    with _client(folder) as c:
        assert c.get("/api/positions").json()["positions"]  # the session ends holding some
        with Journal(journal_url(folder)) as j:
            run_id = int(j.runs_frame()["id"].iloc[-1])
            j.snapshot(run_id, pd.Timestamp("2030-01-03", tz="UTC"), {}, 5000.0, 5000.0)
        assert c.get("/api/positions").json()["positions"] == []
        assert "Flat." in c.get("/positions").text


def test_a_change_renders_each_page_once_for_every_open_page(session, monkeypatch):
    """20 open pages re-fetch on the same change: the server renders the page once and
    serves the copy; a new change renders it again. The guard still runs first: a remote
    request without the token never gets the loopback readers' copy."""
    with _client(session[0]) as c:
        dash = c.app.state.dashboard
        calls = []
        real = dash.views.positions
        monkeypatch.setattr(dash.views, "positions", lambda: calls.append(1) or real())
        monkeypatch.setattr(type(dash.stream), "clients", property(lambda self: 20))
        pages = [c.get("/positions", headers={"X-Partial": "1"}) for _ in range(20)]
        assert len(calls) == 1 and len({p.text for p in pages}) == 1
        assert pages[0].status_code == 200 and 'id="pos"' in pages[0].text
        dash.stream.seq += 1  # the journal changed
        c.get("/positions", headers={"X-Partial": "1"})
        assert len(calls) == 2
    with _client(session[0], client=("10.0.0.9", 5000), host="0.0.0.0") as remote:
        remote.app.state.dashboard.stream.seq = dash.stream.seq
        r = remote.get("/positions", headers={"X-Partial": "1"}, follow_redirects=False)
        assert r.status_code == 303


# ---------------------------------------------------------------------------- read-only


def test_the_journal_is_never_written_by_reads(session):
    folder, _ = session
    before = _files_state(folder)
    with _client(folder) as c:
        for path in ("/", "/positions", "/decisions", "/risk", "/health", "/api/overview",
                     "/api/positions", "/api/decisions", "/api/risk", "/api/health",
                     "/api/commands", "/metrics"):
            assert c.get(path).status_code == 200, path
    assert _files_state(folder) == before
    ro = ReadOnlyJournal(journal_url(folder))
    try:
        from sqlalchemy import text

        with pytest.raises(MltraderError, match="readonly|read-only|query_only"):
            ro._run(lambda conn: conn.execute(text("DELETE FROM equity")))
        assert len(ro.equity_frame(1)) > 0
    finally:
        ro.close()
    assert _files_state(folder) == before


# ---------------------------------------------------------------------------- live stream


def test_stream_pushes_an_event_after_a_new_fill_and_bar(session, tmp_path):
    import shutil

    folder = tmp_path / "live"
    shutil.copytree(session[0], folder)
    app = create_app(Source(journal_url(folder)), token=TOKEN, host="127.0.0.1",
                     token_from_env=True, poll_interval=0.1)
    with serve(app) as base:
        events: list[tuple[str, dict, float]] = []
        writes: dict[str, float] = {}

        def writer():
            time.sleep(0.5)
            with Journal(journal_url(folder)) as j:
                orders = j.orders_frame()
                o = orders.iloc[-1]
                writes["fill"] = time.monotonic()
                j.record_fill(Fill(fill_id="dash-test-fill", broker_id="b1",
                                   client_order_id=o["client_order_id"],
                                   symbol=o["symbol"], side=o["side"], qty=1.0, price=123.456,
                                   commission=0.01,
                                   time=pd.Timestamp("2030-01-02", tz="UTC")))
                time.sleep(0.5)
                run_id = int(j.runs_frame()["id"].iloc[-1])
                writes["bar"] = time.monotonic()
                j.snapshot(run_id, pd.Timestamp("2030-01-03", tz="UTC"), {}, 1000.0, 5000.0)

        with httpx.Client(base_url=base, timeout=10) as c, \
                c.stream("GET", "/api/stream") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            w = threading.Thread(target=writer)
            name = None
            deadline = time.monotonic() + 8
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:]), time.monotonic()))
                    if name == "hello":
                        w.start()
                    if "bar" in writes and any("equity" in e[1].get("changed", [])
                                               for e in events):
                        break
                if time.monotonic() > deadline:
                    break
            w.join()
        assert events[0][0] == "hello"
        changes = [(e, t) for n, e, t in events if n == "change"]
        fill_ev = [t for e, t in changes if "fills" in e["changed"] and t >= writes["fill"]]
        bar_ev = [t for e, t in changes if "equity" in e["changed"] and t >= writes["bar"]]
        assert fill_ev and fill_ev[0] - writes["fill"] < 1.0
        assert bar_ev and bar_ev[0] - writes["bar"] < 1.0
        assert app.state.dashboard.stream.clients <= 1  # one shared poller, per-client queues
        with httpx.Client(base_url=base) as c:
            page = c.get("/positions").text
        assert "123.4560" in page


# ---------------------------------------------------------------------------- backtests


def test_backtests_table_report_and_overlay(tmp_path):
    runs = tmp_path / "runs"
    idx = pd.date_range("2020-01-01", periods=5, freq="D")
    for i, name in enumerate(["20240101-a", "20240102-b"]):
        d = runs / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(
            {"strategy": {"total_return": 0.1 * (i + 1), "sharpe": 1.5 - i, "cagr": 0.05,
                          "max_drawdown": -0.1},
             "buy_and_hold": {"total_return": 0.07, "sharpe": 0.9}}))
        (d / "report.html").write_text(f"<html>report {name}</html>")
        pd.DataFrame({"strategy": [100.0, 101, 102 + i, 103, 104 + i],
                      "buy_and_hold": [100.0] * 5}, index=idx).to_parquet(d / "equity.parquet")
    (runs / "no-metrics").mkdir()
    app = create_app(Source(runs_dir=runs), token=TOKEN, token_from_env=True)
    with TestClient(app, base_url=LOCAL, client=("127.0.0.1", 1)) as c:
        rows = c.get("/api/backtests").json()
        assert [r["name"] for r in rows] == ["20240101-a", "20240102-b"]
        assert rows[1]["total_return"] == pytest.approx(0.2)
        page = c.get("/backtests", params={"sort": "sharpe", "desc": 1}).text
        assert page.index("20240101-a") < page.index("20240102-b")
        page = c.get("/backtests", params={"sort": "total_return", "desc": 1}).text
        assert page.index(">20240102-b<") < page.index(">20240101-a<")
        assert "report 20240101-a" in c.get("/backtests/20240101-a/report.html").text
        assert c.get("/backtests/..%2F..%2Fetc/report.html").status_code in (400, 404)
        eq = c.get("/api/backtests/20240102-b/equity").json()
        assert eq["equity"][-1] == 105.0 and len(eq["time"]) == 5
        over = c.get("/backtests", params={"a": "20240101-a", "b": "20240102-b"}).text
        assert "data-chart" in over
        assert c.get("/api/backtests/nope/equity").status_code == 404
        assert c.get("/api/overview").status_code == 404  # no journal here
        assert c.get("/", follow_redirects=False).status_code == 303


def test_token_from_env_is_used(monkeypatch, session):
    monkeypatch.setenv("MLTRADER_DASHBOARD_TOKEN", "from-env-token-123456")
    app = create_app(Source(journal_url(session[0])), host="0.0.0.0")
    assert app.state.dashboard.token == "from-env-token-123456"
    assert os.environ["MLTRADER_DASHBOARD_TOKEN"] == "from-env-token-123456"
