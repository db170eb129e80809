"""The trading commands end to end (Typer's CliRunner): paper, status, flatten, parity, live.

`live --broker alpaca` talks to the fake Alpaca Trading API of tests/live/brokers/test_alpaca.py
on 127.0.0.1; nothing here touches the network.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner, Result

from mltrader import cli_live
from mltrader.cli import app
from mltrader.data.feeds import BarEvent
from mltrader.data.files import save_file
from mltrader.live.journal import Journal
from mltrader.testing import synthetic_bars
from tests.test_cli import assert_one_line_error, plain

pytestmark = pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated")
runner = CliRunner(env={"COLUMNS": "200", "FORCE_COLOR": None, "NO_COLOR": "1"})

CONFIG = {
    "name": "clilive",
    "strategy": {"name": "crossover", "fast": 3, "slow": 12},
    "walk_forward": {"first_test_year": 2001},
    "execution": {"size_at": "decision", "rebalance_band": 0.0},
    "costs": {"commission_bps": 1, "slippage_bps": 5},
}


def invoke(*args: str | Path, input: str | None = None) -> Result:
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli_live")
    data = save_file(synthetic_bars(330, 3, seed=5, ohlc=True, start="2000-01-03"),
                     d / "bars.csv")
    cfg = d / "cross.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "data": {"source": "file", "path": str(data)},
                                   "output_dir": str(d / "runs")}))
    return {"dir": d, "data": data, "config": cfg}


@pytest.fixture(scope="module")
def session(files) -> tuple[Path, Result]:
    folder = files["dir"] / "sess"
    result = invoke("paper", "-c", files["config"], "--session", folder)
    assert result.exit_code == 0, result.output
    return folder, result


def test_paper_keeps_a_session_log_for_the_dashboard(session):
    log = (session[0] / "session.log").read_text()
    assert "INFO mltrader.live" in log and "journal" in log


def copy_of(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(folder, dst)
    return dst


# ------------------------------------------------------------------------------ help
@pytest.mark.parametrize("cmd", ["paper", "live", "status", "flatten", "parity"])
def test_every_trading_command_has_help_with_an_example(cmd):
    result = invoke(cmd, "--help")
    assert result.exit_code == 0, result.output
    text = plain(result.stdout)
    assert "Usage" in text and f"Example:  mltrader {cmd}" in text
    assert cmd in plain(invoke("--help").stdout)


# ------------------------------------------------------------------------------ paper
def test_paper_session_summary_and_resume(session, files):
    folder, first = session
    text = plain(first.stdout)
    assert "Run 1: replayed" in text and "out-of-sample bars" in text
    assert "orders" in text and "fills" in text and "equity" in text and "cash" in text
    assert "journal.db" in text and {p.name for p in folder.iterdir()} >= {
        "config.yaml", "journal.db", "broker.db"}
    again = invoke("paper", "--session", folder)  # no -c: the folder's own config
    assert again.exit_code == 0, again.output
    assert "Resumed run 1: replayed 0 more bar(s)" in plain(again.stdout)


def test_paper_without_session_makes_a_new_folder(files, tmp_path):
    result = invoke("paper", "-c", files["config"], "-o", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    dirs = list((tmp_path / "runs").iterdir())
    assert len(dirs) == 1 and (dirs[0] / "journal.db").is_file()


def test_paper_bad_inputs_are_one_line(files, session, tmp_path):
    folder, _ = session
    assert_one_line_error(invoke("paper", "-c", files["config"], "--session", folder, "-o",
                                 tmp_path), "not both")
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    assert_one_line_error(invoke("paper", "-c", files["config"], "--session", a_file),
                          "is a file")
    other = tmp_path / "other.yaml"
    other.write_text(files["config"].read_text().replace("fast: 3", "fast: 4"))
    assert_one_line_error(invoke("paper", "-c", other, "--session", folder),
                          "different config", "strategy")
    typo = tmp_path / "typo.yaml"
    typo.write_text(files["config"].read_text() + "strateggy: {}\n")
    assert_one_line_error(invoke("paper", "-c", typo, "--session", tmp_path / "new"),
                          "strateggy")


# ------------------------------------------------------------------------------ status
def test_status_shows_the_latest_run(session):
    folder, _ = session
    result = invoke("status", "--session", folder)
    assert result.exit_code == 0, result.output
    text = plain(result.stdout)
    for needle in ("crossover", "paper", "last bar", "equity", "cash", "Positions",
                   "Open orders", "audit events", "reconciled"):
        assert needle in text, needle
    by_url = invoke("status", "--journal", f"sqlite:///{folder / 'journal.db'}")
    assert by_url.exit_code == 0 and "crossover" in plain(by_url.stdout)


def test_status_errors_are_one_line(tmp_path, session):
    folder, _ = session
    assert_one_line_error(invoke("status", "--session", tmp_path / "nope"), "not found")
    assert_one_line_error(invoke("status", "--session", tmp_path), "journal.db")
    assert_one_line_error(invoke("status", "--journal", tmp_path / "none.db"), "no journal")
    assert not (tmp_path / "none.db").exists()  # the look-up created nothing
    assert_one_line_error(invoke("status"), "--session", "--journal")
    assert_one_line_error(invoke("status", "--session", folder, "--journal", "x.db"),
                          "not both")
    Journal(f"sqlite:///{tmp_path / 'empty.db'}").close()
    assert_one_line_error(invoke("status", "--journal", tmp_path / "empty.db"), "no runs")


# ------------------------------------------------------------------------------ flatten
def test_flatten_a_paper_session(session, tmp_path):
    folder = copy_of(session[0], tmp_path)
    result = invoke("flatten", "--broker", "paper", "--session", folder, "--yes")
    assert result.exit_code == 0, result.output
    text = plain(result.stdout)
    assert "sent 2 closing order(s)" in text and "next bar" in text
    j = Journal(f"sqlite:///{folder / 'journal.db'}")
    try:
        audit = j.audit_frame()
        pending = j.pending_orders()
    finally:
        j.close()
    flat = audit[audit["action"] == "flatten"]
    assert len(flat) == 1 and flat["actor"].iloc[0] == "operator"
    assert {o["side"] for o in pending} == {"sell"} and len(pending) == 2
    shown = plain(invoke("status", "--session", folder).stdout)
    assert "Open orders" in shown and "sell" in shown


def test_flatten_asks_and_refuses_without_a_terminal(session, tmp_path, monkeypatch):
    folder = copy_of(session[0], tmp_path)
    assert_one_line_error(invoke("flatten", "--broker", "paper", "--session", folder),
                          "--yes")
    monkeypatch.setattr(cli_live, "_interactive", lambda: True)
    no = invoke("flatten", "--broker", "paper", "--session", folder, input="n\n")
    assert no.exit_code == 1 and "nothing was sent" in plain(no.stdout)
    yes = invoke("flatten", "--broker", "paper", "--session", folder, input="y\n")
    assert yes.exit_code == 0, yes.output
    assert "sent 2 closing order(s)" in plain(yes.stdout)


def test_flatten_bad_inputs_are_one_line(tmp_path):
    assert_one_line_error(invoke("flatten", "--broker", "etrade", "--yes"), "etrade",
                          "paper, alpaca, ib")
    assert_one_line_error(invoke("flatten", "--broker", "paper", "--yes"), "--session")
    assert_one_line_error(invoke("flatten", "--broker", "paper", "--session",
                                 tmp_path / "nope", "--yes"), "not found")
    assert_one_line_error(invoke("flatten", "--broker", "alpaca", "--yes"), "-c CONFIG")


# ------------------------------------------------------------------------------ parity
def test_parity_of_a_session_and_of_a_tampered_copy(session, tmp_path):
    folder, _ = session
    ok = invoke("parity", folder)
    assert ok.exit_code == 0, ok.output
    text = plain(ok.stdout)
    assert "PARITY" in text and "0 only in the backtest, 0 only in the journal" in text
    assert "match" in text
    bad = copy_of(folder, tmp_path)
    with sqlite3.connect(bad / "journal.db") as db:
        db.execute("UPDATE fills SET qty = qty + 1 WHERE fill_id = "
                   "(SELECT fill_id FROM fills ORDER BY time LIMIT 1)")
    result = invoke("parity", bad, "--diff-only")
    assert result.exit_code == 1
    text = plain(result.stdout)
    assert "MISMATCH" in text and "differs" in text and text.count("differs") >= 1
    assert_one_line_error(invoke("parity", tmp_path / "nope"), "not found")


# ------------------------------------------------------------------------------ live
pytest.importorskip("alpaca")
try:  # the shared fake Alpaca Trading API (tests/live/fake_alpaca.py)
    from tests.live import fake_alpaca as alpaca_fake
except ImportError:  # older layout: the fake lived in the adapter's test module
    from tests.live.brokers import test_alpaca as alpaca_fake  # type: ignore[no-redef]
KEY, SECRET = alpaca_fake.KEY, alpaca_fake.SECRET


@pytest.fixture
def fake(monkeypatch):
    server = alpaca_fake.FakeAlpaca()
    monkeypatch.setattr(cli_live, "ALPACA_URL", server.url)
    yield server
    server.stop()


def _no_secrets(result: Result, *paths: Path) -> None:
    for text in (result.output, *(p.read_bytes().decode("latin-1") for p in paths)):
        assert KEY not in text and SECRET not in text


def test_live_alpaca_paper_max_bars_zero(fake, files, tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRADER_ALPACA_KEY", KEY)
    monkeypatch.setenv("MLTRADER_ALPACA_SECRET", SECRET)
    db = tmp_path / "live.db"
    result = invoke("live", "--broker", "alpaca", "-c", files["config"], "--max-bars", "0",
                    "--journal", f"sqlite:///{db}", "--allow-stale-history")
    assert result.exit_code == 0, result.output
    text = plain(result.stdout)
    assert "Started run 1" in text and "paper account" in text and "reconciled" in text
    assert "0 bar(s) traded" in text
    assert fake.count("GET", "/v2/account") >= 1
    j = Journal(f"sqlite:///{db}")
    try:
        runs = j.runs_frame()
    finally:
        j.close()
    assert list(runs["broker"]) == ["alpaca"] and list(runs["mode"]) == ["paper"]
    _no_secrets(result, db)
    # a restart with the same config continues that run
    again = invoke("live", "--broker", "alpaca", "-c", files["config"], "--max-bars", "0",
                   "--journal", f"sqlite:///{db}", "--allow-stale-history")
    assert again.exit_code == 0 and "Continuing run 1" in plain(again.stdout)


def test_live_keys_from_a_dotenv_file_and_a_fake_feed(fake, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"# alpaca paper keys\nexport APCA_API_KEY_ID={KEY}\n"
                                   f"APCA_API_SECRET_KEY=\"{SECRET}\"\n")
    syms = ("S00", "S01", "S02")
    events = [BarEvent(s, pd.Timestamp(d, tz="UTC"), 50, 51, 49, 50.5, 1000, "1d")
              for d in ("2024-03-15", "2024-03-16") for s in syms]  # Friday, Saturday

    class ListFeed:
        interval = "1d"

        def bars(self):
            yield from events

        def close(self):
            pass

    monkeypatch.setattr(cli_live, "_make_feed", lambda *a, **k: ListFeed())
    db = tmp_path / "live.db"
    monkeypatch.setattr(cli_live, "_now", lambda: pd.Timestamp("2001-04-09 21:00", tz="UTC"))
    result = invoke("live", "--broker", "alpaca", "-c", files["config"], "--journal",
                    f"sqlite:///{db}")  # a history that ends at the last close: current
    assert result.exit_code == 0, result.output
    assert "1 bar(s) traded, 1 outside market hours, 0 failed" in plain(result.stdout)
    _no_secrets(result, db)


def test_live_refuses_real_money_without_a_typed_confirmation(fake, files, monkeypatch):
    monkeypatch.setenv("MLTRADER_ALPACA_KEY", KEY)
    monkeypatch.setenv("MLTRADER_ALPACA_SECRET", SECRET)
    assert_one_line_error(invoke("live", "--broker", "alpaca", "-c", files["config"],
                                 "--live", "--max-bars", "0"), "interactive terminal")
    monkeypatch.setattr(cli_live, "_interactive", lambda: True)
    result = invoke("live", "--broker", "alpaca", "-c", files["config"], "--live",
                    "--max-bars", "0", input="yes\n")
    assert result.exit_code != 0 and "not confirmed" in plain(result.stderr)
    assert fake.log == []  # nothing reached the broker


def test_live_bad_inputs_are_one_line(files, tmp_path):
    assert_one_line_error(invoke("live", "--broker", "alpaca", "-c", files["config"]),
                          "MLTRADER_ALPACA_KEY", ".env")
    assert_one_line_error(invoke("live", "--broker", "robinhood", "-c", files["config"]),
                          "robinhood", "alpaca, ib")
    assert_one_line_error(invoke("live", "--broker", "ib", "-c", files["config"],
                                 "--max-bars", "-1"), "--max-bars")
    # a history that ends long before today is refused before anything is opened
    assert_one_line_error(invoke("live", "--broker", "ib", "-c", files["config"],
                                 "--max-bars", "0", "--journal", tmp_path / "ib.db"),
                          "the history ends 2001-04-06", "sessions before the last close",
                          "data.source", "--allow-stale-history")
    assert not (tmp_path / "ib.db").exists()
    typo = tmp_path / "typo.yaml"
    typo.write_text(files["config"].read_text() + "modle: {}\n")
    assert_one_line_error(invoke("live", "--broker", "alpaca", "-c", typo), "modle")


def test_flatten_an_alpaca_paper_account(fake, files, tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRADER_ALPACA_KEY", KEY)
    monkeypatch.setenv("MLTRADER_ALPACA_SECRET", SECRET)
    db = tmp_path / "flat.db"
    result = invoke("flatten", "--broker", "alpaca", "-c", files["config"], "--journal",
                    f"sqlite:///{db}", "--yes")
    assert result.exit_code == 0, result.output
    sent = sorted((o["symbol"], o["side"], float(o["qty"])) for o in fake.orders.values())
    assert sent == [("AAPL", "sell", 5.0), ("TSLA", "buy", 3.0)]  # the fake's two positions
    j = Journal(f"sqlite:///{db}")
    try:
        orders = j.orders_frame()
        actions = set(j.audit_frame()["action"])
    finally:
        j.close()
    assert sorted(orders["symbol"]) == ["AAPL", "TSLA"] and {"flatten", "reconciled"} <= actions
    _no_secrets(result, db)


def test_live_history_freshness_counts_exchange_sessions(files, monkeypatch):
    """Three sessions behind is tolerated (a weekend, a holiday, a late fetch); more is not."""
    from mltrader.config import load_config
    from mltrader.pipeline import load_data

    history, _ = load_data(load_config(files["config"]))
    assert history.index[-1] == pd.Timestamp("2001-04-06", tz="UTC")  # a Friday
    cfg = load_config(files["config"])
    for now, ok in (("2001-04-06 21:00", True),   # that session closed
                    ("2001-04-11 21:00", True),   # Mon, Tue, Wed: 3 sessions behind
                    ("2001-04-12 21:00", False),  # 4 behind
                    ("2001-04-12 19:00", True)):  # Thursday not closed yet: 3 behind
        monkeypatch.setattr(cli_live, "_now", lambda now=now: pd.Timestamp(now, tz="UTC"))
        if ok:
            cli_live._check_fresh(history, cfg, "XNYS", allow=False)
        else:
            with pytest.raises(cli_live.MltraderError, match="4 XNYS sessions"):
                cli_live._check_fresh(history, cfg, "XNYS", allow=False)
            cli_live._check_fresh(history, cfg, "XNYS", allow=True)  # warned, allowed


def test_live_ib_polls_ibs_own_bars_over_the_brokers_connection(files):
    """With no network data.source, `live --broker ib` polls IB's historical bars through
    the adapter's ib_async client (one connection, one client id)."""
    from mltrader.config import load_config
    from mltrader.data.feeds import PollingFeed
    from mltrader.data.sources.ib import IBSource
    from mltrader.live.brokers.ib import IBBroker
    from tests.data.sources.test_ib import FakeIB

    ib = FakeIB()
    adapter = IBBroker(ib=ib)
    feed = cli_live._make_feed("ib", load_config(files["config"]), ["AAPL"], None, adapter)
    assert isinstance(feed, PollingFeed) and isinstance(feed.source, IBSource)
    assert feed.source._ib is ib and feed.source._ensure == adapter.connect
    assert feed.interval == "1d"


# ------------------------------------------------------------------------------ review fixes
def test_paper_needs_a_config_for_a_new_session_and_keeps_a_sessions_own(files, session,
                                                                         tmp_path):
    assert_one_line_error(invoke("paper", "--session", tmp_path / "fresh"),
                          "a new session needs its config", "-c")
    folder = copy_of(session[0], tmp_path)
    (folder / "config.yaml").unlink()
    assert_one_line_error(invoke("paper", "--session", folder), "has no config.yaml",
                          "restore it")
    assert_one_line_error(invoke("paper", "-c", files["config"], "--speed", "-1",
                                 "--session", tmp_path / "s"), "--speed", "0 (as fast")


def test_ctrl_c_in_a_paper_session_says_how_to_continue(files, tmp_path, monkeypatch):
    from mltrader.live.runner import Runner

    real, calls = Runner.on_bar, {"n": 0}

    def interrupted(self, time, events):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt
        return real(self, time, events)

    monkeypatch.setattr(Runner, "on_bar", interrupted)
    folder = tmp_path / "stopped"
    result = invoke("paper", "-c", files["config"], "--session", folder)
    assert result.exit_code == 130
    err = plain(result.stderr)
    assert "Stopped after the bar of" in err and "29 of" in err
    assert f"mltrader paper --session {folder}" in " ".join(err.split())
    assert "Traceback" not in result.output


def test_parity_of_a_session_stopped_inside_a_bar(files, tmp_path, monkeypatch):
    """The bar the session stopped in may have journaled its fills already: parity compares
    up to the last COMPLETED bar and says how many later fills wait for the resume."""
    from mltrader.live.runner import Runner

    real, calls = Runner._plan, {"n": 0}

    def stop_after_fills(self, *a, **k):  # the bar's fills are journaled before planning
        calls["n"] += 1
        if calls["n"] > 20:
            f = self.journal.fills_for(self.run_id)
            if (pd.to_datetime(f["time"], utc=True) == self._time).any():
                raise KeyboardInterrupt  # stop inside the first later bar that filled
        return real(self, *a, **k)

    folder = tmp_path / "inside"
    monkeypatch.setattr(Runner, "_plan", stop_after_fills)
    assert invoke("paper", "-c", files["config"], "--session", folder).exit_code == 130
    monkeypatch.setattr(Runner, "_plan", real)
    j = Journal(f"sqlite:///{folder / 'journal.db'}")
    try:
        fills, eq = j.fills_for(), j.equity_frame(1)
    finally:
        j.close()
    later = pd.to_datetime(fills["time"], utc=True) > eq.index[-1]
    assert later.any(), "pick a stop bar whose fills are journaled"
    result = invoke("parity", folder)
    assert result.exit_code == 0, result.output
    text = " ".join(plain(result.stdout).split())
    assert "PARITY" in text and "after the last completed one" in text
    assert invoke("paper", "--session", folder).exit_code == 0  # resumed to the end
    assert "PARITY" in plain(invoke("parity", folder).stdout)


def test_flatten_waits_for_a_running_session(session, tmp_path):
    from mltrader.live.lock import hold

    folder = copy_of(session[0], tmp_path)
    with hold(folder / ".lock", "x"):
        assert_one_line_error(invoke("flatten", "--broker", "paper", "--session", folder,
                                     "--yes"), "in use by another mltrader process")
        assert_one_line_error(invoke("paper", "--session", folder), "in use")
    assert invoke("flatten", "--broker", "paper", "--session", folder, "--yes").exit_code == 0


def test_parity_and_ib_arguments_are_checked(session, tmp_path):
    folder, _ = session
    assert_one_line_error(invoke("parity", folder, "--tolerance", "-1"), "--tolerance")
    assert_one_line_error(invoke("parity", folder, "--tolerance", "nan"), "--tolerance")
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    assert_one_line_error(invoke("parity", a_file), "is a file")
    from mltrader.errors import MltraderError

    for port in (99999, 0):
        with pytest.raises(MltraderError, match="not a TCP port"):
            cli_live._make_broker("ib", False, None, "127.0.0.1", port, 1)
    with pytest.raises(MltraderError, match="--ib-host"):
        cli_live._make_broker("ib", False, None, "not a host", 7497, 1)


def test_dotenv_comments_bom_and_an_unterminated_quote(tmp_path):
    from mltrader.errors import MltraderError

    env = tmp_path / ".env"
    env.write_text("\ufeffMLTRADER_ALPACA_KEY=abc123 # my paper key\n"
                   "export MLTRADER_ALPACA_SECRET=\"s e#c\" # quoted\n", encoding="utf-8")
    assert cli_live._dotenv(env) == {"MLTRADER_ALPACA_KEY": "abc123",
                                     "MLTRADER_ALPACA_SECRET": "s e#c"}
    env.write_text("MLTRADER_ALPACA_KEY=\"abc\n")
    with pytest.raises(MltraderError, match="line 1: MLTRADER_ALPACA_KEY's value opens a"):
        cli_live._dotenv(env)
