"""SIGKILL the paper session at random points, restart it each time: nothing is lost or doubled.

The session (`mltrader paper --session DIR`) runs in a child process. Most kills land on the
runner's crash points (`live/crashpoints.py`: after the broker's events are taken but before
they are journaled, after intents are journaled but before they are sent, after a send,
after a bar is done), picked at random; the others land at a random instant (mid-write,
mid-import, anywhere). After every kill the same command runs again on the same folder.
The finished session must equal one uninterrupted run: the same orders (each journaled and
sent once), the same fills, the same positions and cash at the broker.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mltrader.data.files import save_file
from mltrader.live.brokers.paper import PaperBroker
from mltrader.live.journal import Journal
from mltrader.pipeline import engine_settings, resolve_fill
from mltrader.testing import synthetic_bars

MIN_KILLS = 12

CONFIG = {
    "name": "crash",
    "data": {"source": "file"},
    "strategy": {"name": "crossover", "fast": 3, "slow": 12},
    "walk_forward": {"first_test_year": 2001},
    "execution": {"size_at": "decision", "rebalance_band": 0.0},
    "costs": {"commission_bps": 1, "slippage_bps": 5},
    "risk": {"stop_loss": 0.03, "daily_loss_limit": 0.04},
}


def _session(cfg: Path, data: Path, session: Path, env: dict[str, str],
             kill_after: float | None = None) -> int:
    cmd = [sys.executable, "-m", "mltrader.cli", "paper", "-c", str(cfg), "--replay",
           str(data), "--session", str(session)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"session failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return proc.returncode


def _state(session: Path, cfg) -> dict:
    j = Journal(f"sqlite:///{session / 'journal.db'}")
    try:
        orders = j.orders_frame()
        fills = j.fills_for()
        audit = j.audit_frame()
    finally:
        j.close()
    broker = PaperBroker(engine_settings(cfg, "next_open"), state_path=session / "broker.db")
    acct = broker.account()
    positions = {s: round(p.qty, 9) for s, p in broker.positions().items()}
    broker_fills = broker.fills()
    return {"orders": orders, "fills": fills, "audit": audit, "cash": acct.cash,
            "equity": acct.equity, "positions": positions, "broker_fills": broker_fills}


def _fills_key(fills: pd.DataFrame) -> list[tuple]:
    return sorted(zip(fills["symbol"], fills["side"], fills["qty"].round(9),
                      fills["price"].round(9), fills["commission"].round(9),
                      fills["time"].astype(str), strict=True))


def test_sigkill_at_random_points_loses_and_doubles_nothing(tmp_path):
    bars = synthetic_bars(330, 3, seed=5, ohlc=True, start="2000-01-03")
    data = tmp_path / "bars.csv"
    save_file(bars, data)
    cfg_path = tmp_path / "crash.yaml"
    cfg_path.write_text(yaml.safe_dump({**CONFIG, "data": {"source": "file",
                                                           "path": str(data)}}))
    from mltrader.config import load_config

    cfg = load_config(cfg_path)
    assert resolve_fill(cfg, bars) == "next_open"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLTRADER_CRASH")}
    env["CI"] = "true"

    t0 = time.monotonic()
    assert _session(cfg_path, data, tmp_path / "clean", env) == 0
    clean_seconds = time.monotonic() - t0
    want = _state(tmp_path / "clean", cfg)
    assert len(want["fills"]) >= 15, "the session must trade enough to be a test"

    rng = random.Random(20261204)
    crashed = tmp_path / "crashed"
    log = tmp_path / "crash_points.log"
    kills = timed = 0
    for attempt in range(200):
        run_env = dict(env)
        timed_kill = attempt % 4 == 3
        if timed_kill:  # anywhere: inside a write, an import, a fsync
            rc = _session(cfg_path, data, crashed, run_env,
                          kill_after=rng.uniform(0.3, 1.2) * clean_seconds)
            timed += rc == -signal.SIGKILL
        else:
            run_env["MLTRADER_CRASH_AT"] = str(rng.randint(1, 30))
            run_env["MLTRADER_CRASH_LOG"] = str(log)
            rc = _session(cfg_path, data, crashed, run_env)
        if rc == 0:
            if kills >= MIN_KILLS:
                break
            continue  # finished before the kill: already complete, runs again as a no-op
        kills += 1
        if kills >= MIN_KILLS + 5:
            break
    # and once more without faults, to finish whatever is left
    assert _session(cfg_path, data, crashed, env) == 0
    points = log.read_text().split() if log.exists() else []
    assert kills >= MIN_KILLS, f"only {kills} kills landed"
    assert len(set(points)) >= 4, f"kills landed on too few kinds of points: {set(points)}"

    got = _state(crashed, cfg)
    # the same orders, each journaled once (client order ids are the primary key) ...
    assert sorted(got["orders"]["client_order_id"]) == sorted(want["orders"]["client_order_id"])
    assert (got["orders"]["status"].to_numpy() != "pending").all()
    # ... the same fills, none lost, none twice, and the journal agrees with the broker
    assert _fills_key(got["fills"]) == _fills_key(want["fills"])
    assert len(got["broker_fills"]) == len(got["fills"])
    assert {f.fill_id for f in got["broker_fills"]} == set(got["fills"]["fill_id"])
    # ... and the same account
    assert got["positions"] == want["positions"]
    assert got["cash"] == pytest.approx(want["cash"], rel=1e-12)
    assert got["equity"] == pytest.approx(want["equity"], rel=1e-12)
    # every restart reconciled journal and broker before its first bar: each kill at a crash
    # point came after one (a timed kill may land before, while the process is importing)
    assert (got["audit"]["action"] == "reconciled").sum() >= kills - timed
