"""End to end in a real browser: Debian's chromium, driven by Playwright, against the
dashboard over a `mltrader paper` session that is replaying bars in another process.

It checks what a trader sees: the equity chart, a new bar and a new fill appear without a
reload (the page's server-sent events), and pause / resume / flatten clicked on the page are
applied by the running session (acknowledged on the page, and visible in its journal).
Screenshots of every page go to test-artifacts/dashboard/ (or $MLTRADER_TEST_ARTIFACTS).

Chromium: `apt-get install chromium` (.ci/run does it when missing). Without it the module
is skipped locally and fails under CI (CI=true), so a CI machine cannot silently skip it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mltrader.dashboard import Source, create_app
from mltrader.data.files import save_file
from mltrader.live.journal import Journal
from mltrader.live.session import journal_url
from mltrader.testing import synthetic_bars
from tests.dashboard.support import CONFIG, TOKEN, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("MLTRADER_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "test-artifacts") / "dashboard"
BAR_SECONDS = 0.25  # one daily bar replayed every 0.25 s
WAIT_MS = 15_000

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"chromium not found at {CHROMIUM}: `apt-get install -y chromium` "
                           "(.ci/run does it)")
    pytest.skip("chromium is not installed (apt-get install chromium)",
                allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


def _journal_has_bars(db: Path, n: int) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM equity").fetchone()[0] >= n
    except sqlite3.Error:
        return False


@pytest.fixture(scope="module")
def replaying(tmp_path_factory):
    """`mltrader paper` replaying ~440 daily bars at one per 0.25 s in a subprocess, as a
    user starts it (relative paths, its own working directory)."""
    d = tmp_path_factory.mktemp("browser")
    save_file(synthetic_bars(700, 3, seed=8, ohlc=True, start="2000-01-03"), d / "bars.csv")
    (d / "paper.yaml").write_text(yaml.safe_dump(
        {**CONFIG, "data": {"source": "file", "path": "bars.csv"}, "output_dir": "runs"}))
    log = open(d / "paper.out", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mltrader", "paper", "-c", "paper.yaml", "--session",
         "runs/sess", "--speed", str(86400 / BAR_SECONDS)],
        cwd=d, stdout=log, stderr=subprocess.STDOUT)
    folder = d / "runs" / "sess"
    try:
        deadline = time.monotonic() + 60
        while not _journal_has_bars(folder / "journal.db", 3):
            assert proc.poll() is None, (d / "paper.out").read_text()
            assert time.monotonic() < deadline, "the paper session wrote no bar in 60 s"
            time.sleep(0.1)
        app = create_app(Source.resolve(session=folder), token=TOKEN, host="127.0.0.1",
                         token_from_env=True, poll_interval=0.2)
        with serve(app) as url:
            yield folder, url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung session
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, replaying):
    _, url, _ = replaying
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=url)
    pg = ctx.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.on("dialog", lambda d: d.accept())  # the flatten / kill confirmations
    pg.goto(f"/login?token={TOKEN}")  # the cookie: the page's controls may post
    pg.wait_for_selector("#live:has-text('live')")  # the event stream is open
    yield pg
    ctx.close()


def _no_reload_mark(pg) -> None:
    pg.evaluate("window.__still_this_page = true")


def _not_reloaded(pg) -> bool:
    return pg.evaluate("window.__still_this_page === true")


def _shot(pg, name: str) -> None:
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_equity_chart_bars_and_fills_update_without_reload(page, replaying):
    _, _, proc = replaying
    # the overview: the equity chart (plotly drew it), buy-and-hold beside it
    page.wait_for_selector("#ov-cards .chart .main-svg")
    legend = page.locator("#ov-cards .chart .legend").text_content()
    assert "equity" in legend and "buy & hold" in legend and "drawdown" in legend
    _no_reload_mark(page)
    bar = page.inner_text("#last-bar")
    points = page.evaluate("document.querySelector('#ov-cards .chart').data[0].x.length")
    page.wait_for_function("b => document.querySelector('#last-bar').textContent !== b", arg=bar)
    page.wait_for_function(
        "n => document.querySelector('#ov-cards .chart').data[0].x.length > n", arg=points)
    assert _not_reloaded(page) and proc.poll() is None
    _shot(page, "overview")
    # positions: a new fill appears at the top of the fills table
    page.goto("/positions")
    page.wait_for_selector("#fills tr.fill")
    _no_reload_mark(page)
    newest = page.inner_text("#fills tr.fill >> nth=0")
    page.wait_for_function(
        "t => document.querySelector('#fills tr.fill').innerText !== t", arg=newest)
    assert _not_reloaded(page)
    assert page.locator("tr.position").count() >= 1
    _shot(page, "positions")


def _command(page, button: str) -> int:
    """Click a control on the overview; return the command id the page says it queued."""
    page.click(f"text={button}")
    page.wait_for_function(
        "() => document.querySelector('#ctl-msg').textContent.includes('queued')")
    msg = page.inner_text("#ctl-msg")
    page.evaluate("document.querySelector('#ctl-msg').textContent = ''")
    return int(msg.split("command ")[1].split(" ")[0])


def _applied(page, cid: int) -> None:
    """The runner applied it: the commands table on the page says so (live, no reload)."""
    page.wait_for_selector(f"#cmd-{cid} .status:has-text('applied')")


def _wait_for_a_position(page) -> None:
    """Flatten is only a test when something is held: wait (bars go on) until it is."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not page.request.get("/api/positions").json()["positions"]:
        assert time.monotonic() < deadline, "the session held nothing for 15 s"
        time.sleep(BAR_SECONDS / 2)


def _wait_for_a_blocked_order(page) -> None:
    """The paused session holds back an order that adds exposure (and audits it)."""
    deadline = time.monotonic() + 2 * WAIT_MS / 1000
    while not any(e["action"] == "order_blocked" and e["detail"].get("guard") ==
                  "paused (operator)" for e in page.request.get("/api/risk").json()["events"]):
        assert time.monotonic() < deadline, "nothing was held back in 30 s of pause"
        time.sleep(BAR_SECONDS / 2)


def test_pause_resume_and_flatten_take_effect_in_the_session(page, replaying):
    folder, _, proc = replaying
    page.goto("/")
    page.wait_for_selector("#controls")
    _no_reload_mark(page)
    _wait_for_a_position(page)  # adding to it, or a new entry, is what a pause holds back
    pause = _command(page, "Pause new entries")
    _applied(page, pause)
    _wait_for_a_blocked_order(page)  # bars go on until the strategy wants to add
    resume = _command(page, "Resume")
    _applied(page, resume)
    _wait_for_a_position(page)
    flatten = _command(page, "Flatten all")
    _applied(page, flatten)
    assert _not_reloaded(page)
    _shot(page, "overview-controls")
    time.sleep(4 * BAR_SECONDS)
    assert proc.poll() is None, "the session stopped before the checks"

    with Journal(journal_url(folder)) as j:
        cmds = j.commands_frame().set_index("id")
        audit = j.audit_frame()
        orders = j.orders_frame()
        run_id = int(j.runs_frame()["id"].iloc[-1])
        eq = j.equity_frame(run_id)
    assert list(cmds.loc[[pause, resume, flatten], "status"]) == ["applied"] * 3
    assert set(cmds.loc[[pause, resume, flatten], "actor"]) == {"dashboard@127.0.0.1"}
    assert cmds.loc[pause, "result"]["new"] is True and cmds.loc[resume, "result"]["new"] is False
    paused_from, paused_to = cmds.loc[pause, "applied_at"], cmds.loc[resume, "applied_at"]
    # while paused, the session held back every order that would add exposure...
    blocked = audit[(audit["action"] == "order_blocked")
                    & audit["detail"].map(lambda d: d.get("guard") == "paused (operator)")]
    assert len(blocked) > 0
    assert blocked["time"].between(paused_from, paused_to).all()
    # ...and sent none: each order of those bars reduced a position (sells, long-only)
    during = orders[(orders["created_at"] > paused_from) & (orders["created_at"] < paused_to)]
    assert (during["side"] == "sell").all(), during[["symbol", "side", "qty", "reason"]]
    # flatten: one closing order per position held, then a bar with nothing held
    held = cmds.loc[flatten, "result"]["old"]
    assert held, "nothing was held when flatten was applied"
    why = audit[audit["action"] == "flatten_orders"]
    why = why[why["detail"].map(lambda d: d["reason"] == "operator flatten")]
    assert len(why) == 1
    closing = orders.set_index("client_order_id").loc[list(why["detail"].iloc[0]["orders"])]
    assert set(closing["symbol"]) == set(held)
    assert (closing["side"] == "sell").all() and closing["qty"].tolist() == pytest.approx(
        [held[s] for s in closing["symbol"]])
    after = eq[eq.index > pd.Timestamp(closing["bar_time"].min())]
    assert ((after["equity"] - after["cash"]).abs() < 1e-6 * after["equity"]).any()


def test_every_page_renders_and_is_kept_as_a_screenshot(page):
    for path, name, marker in [("/", "overview-final", "#ov-cards"),
                               ("/positions", "positions-final", "#fills"),
                               ("/decisions", "decisions", "table"),
                               ("/risk", "risk", "h3"),
                               ("/health", "health", "#broker-status"),
                               ("/docs", "api-docs", ".swagger-ui .info")]:
        page.goto(path)
        page.wait_for_selector(marker)
        _shot(page, name)
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name
    page.goto("/health")
    assert "paper (paper): answering" in page.inner_text("#broker-status")
    assert "journal opened" in page.inner_text("#log-tail")  # the session's own log
