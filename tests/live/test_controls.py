"""Operator controls through the journal's command table: a second Journal on the same SQLite
file (as the dashboard in another process) queues commands; the runner applies them between
bars, acknowledges each, audits it and keeps what they changed across a restart."""

from __future__ import annotations

import itertools
import sqlite3

import pandas as pd
import pytest

from mltrader.config import config_from_dict
from mltrader.data.feeds import ReplayFeed
from mltrader.live import controls
from mltrader.live.brokers.paper import PaperBroker
from mltrader.live.journal import SCHEMA_VERSION, Journal
from mltrader.live.runner import Runner
from mltrader.pipeline import engine_settings, resolve_fill
from mltrader.risk.guards import GP_DAILY_LOSS, GP_MAX_POSITION
from mltrader.testing import synthetic_bars

BARS = synthetic_bars(140, 2, seed=7, ohlc=True, start="2020-01-01")
START = 60


def _cfg(threshold=0.02, **risk):
    return config_from_dict({
        "strategy": {"name": "threshold", "threshold": threshold},
        "execution": {"size_at": "decision", "rebalance_band": 0.0},
        "risk": risk})


class Rig:
    """A runner on the paper broker, stepped bar by bar, and the dashboard's own Journal."""

    def __init__(self, tmp_path, cfg, pred=0.05):
        self.cfg = cfg
        self.url = f"sqlite:///{tmp_path / 'journal.db'}"
        self.journal = Journal(self.url)
        self.dashboard = Journal(self.url)  # another connection pool: another process
        self.broker = PaperBroker(engine_settings(cfg, resolve_fill(cfg, BARS)))
        self.pred = {s: pred for s in BARS.symbols}
        self.runner = Runner(cfg, self.broker, BARS.select(None, None, BARS.index[START - 1]),
                             journal=self.journal, signal=self.signal)
        feed = ReplayFeed(BARS, start=BARS.index[START])
        self.bars = ((t, {e.symbol: e for e in g})
                     for t, g in itertools.groupby(feed.bars(), key=lambda e: e.time))
        self.time = None

    def signal(self, w):
        return pd.Series(self.pred).reindex(list(w.symbols))

    def step(self, n=1):
        out = []
        for _ in range(n):
            self.time, group = next(self.bars)
            self.broker.on_bar(self.time, group)
            out += self.runner.on_bar(self.time, group)
        return out

    def held(self):
        return {s: p.qty for s, p in self.broker.positions().items() if abs(p.qty) > 1e-9}

    def command(self, kind, params=None, actor="alice", run_id=None):
        return self.dashboard.add_command(kind, params, actor=actor, run_id=run_id)

    def row(self, cid):
        return self.dashboard.command_row(cid)

    def restart(self):
        """A new runner continuing the run (same broker, its state from the journal)."""
        self.journal.close()
        self.journal = Journal(self.url)
        run_id = self.runner.run_id
        self.runner = Runner(self.cfg, self.broker, BARS.select(None, None, self.time),
                             journal=self.journal, signal=self.signal, run_id=run_id)
        self.runner.reconcile()

    def close(self):
        self.journal.close()
        self.dashboard.close()


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(cfg=None, pred=0.05):
        r = Rig(tmp_path, cfg or _cfg(stop_loss=0.5), pred)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def _adds(reqs, held_before):
    """The orders that add exposure, given the position before them."""
    return [r for r in reqs if (r.side == "buy") == (held_before.get(r.symbol, 0.0) >= 0)
            and r.type == "market"]


# --------------------------------------------------------------------------- pause


def test_pause_stops_entries_and_resume_lets_them_go(rig):
    r = rig()
    cid = r.command("pause")
    sent = r.step(5)
    assert sent == [] and r.held() == {}
    row = r.row(cid)
    assert row["status"] == "applied" and row["run_id"] == r.runner.run_id  # claimed
    assert row["result"] == {"param": "paused", "old": False, "new": True}
    blocked = r.dashboard.audit_frame(action="order_blocked")
    assert len(blocked) and set(d["guard"] for d in blocked["detail"]) == {"paused (operator)"}
    cid2 = r.command("resume")
    sent = r.step(1)
    assert {q.side for q in sent if q.type == "market"} == {"buy"}
    r.step(1)
    assert set(r.held()) == set(BARS.symbols)
    assert r.row(cid2)["result"] == {"param": "paused", "old": True, "new": False}


def test_paused_exits_and_protective_stops_still_go(rig):
    r = rig()
    r.step(3)
    held = r.held()
    assert set(held) == set(BARS.symbols)
    r.command("pause")
    r.step(2)
    # the protective stop (stop_loss) of each position is still working while paused
    stops = {o.symbol for o in r.broker.open_orders() if o.type == "stop"}
    assert stops == set(held)
    r.pred = {s: -0.05 for s in BARS.symbols}  # the strategy exits: reducing orders go
    sent = r.step(1)
    assert {q.side for q in sent if q.type == "market"} == {"sell"}
    r.step(1)
    assert r.held() == {}
    assert r.runner.controls.paused


# --------------------------------------------------------------------------- flatten, kill


def test_flatten_closes_everything_at_the_next_fill(rig):
    r = rig()
    r.step(3)
    held = r.held()
    assert held
    cid = r.command("flatten", {"pause": True})
    sent = r.step(1)
    res = r.row(cid)["result"]
    assert set(res["old"]) == set(held) and res["new"] == {}
    # every position as it stood at the bar (after the previous bar's fills) is sold
    assert sorted((q.symbol, q.side, q.qty) for q in sent if q.type == "market") == sorted(
        (s, "sell", pytest.approx(q)) for s, q in res["old"].items())
    r.step(1)
    assert r.held() == {}
    assert not [o for o in r.broker.open_orders()]  # the protective stops went with them
    r.step(3)
    assert r.held() == {}  # paused with it: no re-entry
    assert res["paused"] == {"old": False, "new": True}


def test_flatten_without_pause_lets_the_strategy_enter_again(rig):
    r = rig()
    r.step(3)
    r.command("flatten")
    r.step(2)
    assert r.held() == {}
    r.step(1)
    assert set(r.held()) == set(BARS.symbols)


@pytest.mark.parametrize("risk", [{}, {"daily_loss_limit": 0.5}])
def test_kill_flattens_and_no_exposure_is_added_afterwards(rig, risk):
    r = rig(_cfg(**risk))
    r.step(3)
    assert r.held()
    cid = r.command("kill", actor="bob")
    r.step(2)
    assert r.held() == {}
    n = len(r.runner.sent)
    r.step(5)
    assert r.held() == {} and len(r.runner.sent) == n
    assert r.row(cid)["result"]["new"] is True and r.row(cid)["result"]["old"] is False
    assert r.runner.gate.state()[0][4] == 1.0  # the gate's kill switch (GS_KILLED)
    cid2 = r.command("resume")
    r.step(1)
    row = r.row(cid2)
    assert row["status"] == "refused" and "kill switch" in row["result"]["reason"]
    assert r.held() == {}


# --------------------------------------------------------------------------- set


def test_set_max_position_is_used_by_the_next_decisions(rig):
    r = rig(_cfg(max_position=0.9))
    r.step(3)
    cid = r.command("set", {"param": "risk.max_position", "value": 0.1})
    r.step(2)
    eq = r.broker.account().equity
    held = r.held()
    assert set(held) == set(BARS.symbols)  # resized (0.5 of equity each before), not closed
    for s, q in held.items():
        assert abs(q) * r.runner._last_close[s] / eq < 0.12
    assert r.runner.gate._gp[GP_MAX_POSITION] == 0.1
    assert r.runner.rules.max_position == 0.1 and r.runner.cfg.risk.max_position == 0.1
    assert r.row(cid)["result"] == {"param": "risk.max_position", "old": 0.9, "new": 0.1}


def test_set_strategy_threshold_is_used_by_the_next_decisions(rig):
    r = rig(_cfg(threshold=0.1), pred=0.05)
    r.step(3)
    assert r.held() == {}  # 0.05 is below the threshold
    cid = r.command("set", {"param": "strategy.threshold", "value": 0.02})
    sent = r.step(1)
    assert {q.side for q in sent if q.type == "market"} == {"buy"}
    assert r.row(cid)["result"] == {"param": "strategy.threshold", "old": 0.1, "new": 0.02}
    assert r.runner.cfg.strategy.params["threshold"] == 0.02
    # the run keeps its config hash: a restart of the same config file still finds it
    assert Runner.resume_point(r.journal, r.cfg, r.broker.name)[0] == r.runner.run_id


@pytest.mark.parametrize("params, why", [
    ({"param": "risk.stop_loss", "value": 0.1}, "unknown parameter"),
    ({"param": "strategy.buy_above", "value": 0.1}, "not a parameter of strategy"),
    ({"param": "risk.max_position", "value": "abc"}, "wrong type"),
    ({"param": "risk.max_position", "value": True}, "wrong type"),
    ({"param": "risk.max_position", "value": 50}, "risk.max_position = 50.0 refused"),
    ({"param": "risk.daily_loss_limit", "value": 1.5}, "refused"),
    ({"param": "risk.max_trades_per_day", "value": 2.5}, "whole number"),
    ({"param": "strategy.threshold", "value": -1}, "refused"),
    ({"param": "risk.max_position"}, "params must be"),
    ({"param": "risk.max_position", "value": 0.1, "extra": 1}, "unknown key"),
])
def test_a_bad_set_is_refused_with_a_reason_and_changes_nothing(rig, params, why):
    r = rig(_cfg(max_position=0.5, daily_loss_limit=0.2))
    r.step(2)
    before_cfg, before_gp = r.runner.cfg, r.runner.gate._gp.copy()
    cid = r.command("set", params)
    r.step(1)
    row = r.row(cid)
    assert row["status"] == "refused"
    reason = row["result"]["reason"]
    assert why in reason and "\n" not in reason
    assert r.runner.cfg == before_cfg and (r.runner.gate._gp == before_gp).all()
    assert r.runner.controls.overrides == {}
    refused = r.dashboard.audit_frame(action="command_refused")
    assert refused["detail"].iloc[-1]["result"]["reason"] == reason


def test_an_unknown_command_is_refused(rig):
    r = rig()
    cid = r.command("explode")
    r.step(1)
    assert r.row(cid)["status"] == "refused"
    assert "unknown command 'explode'" in r.row(cid)["result"]["reason"]


def test_set_switches_a_guard_on_in_the_running_gate(rig):
    r = rig(_cfg())
    assert not r.runner.guards.active
    r.step(2)
    r.command("set", {"param": "risk.daily_loss_limit", "value": 0.05})
    r.step(1)
    assert r.runner.guards.active and r.runner.gate._gp[GP_DAILY_LOSS] == 0.05
    assert r.broker.fill_gate is r.runner._fill_gate


# --------------------------------------------------------------------------- audit, restart


def test_every_command_is_audited_with_actor_old_and_new(rig):
    r = rig(_cfg(max_position=0.5))
    ids = [r.command("pause", actor="alice"),
           r.command("set", {"param": "risk.max_position", "value": 0.2}, actor="bob"),
           r.command("set", {"param": "risk.max_position", "value": "x"}, actor="carol"),
           r.command("resume", actor="alice")]
    r.step(1)
    audit = r.dashboard.audit_frame()
    req = audit[audit["action"] == "command_requested"]
    assert [d["command_id"] for d in req["detail"]] == ids
    assert list(req["actor"]) == ["alice", "bob", "carol", "alice"]
    done = audit[audit["action"].isin(["command_applied", "command_refused"])]
    assert [d["command_id"] for d in done["detail"]] == ids
    assert list(done["actor"]) == ["alice", "bob", "carol", "alice"]
    assert list(done["action"]) == ["command_applied", "command_applied", "command_refused",
                                    "command_applied"]
    assert (done["run_id"] == r.runner.run_id).all()
    set_ok = done["detail"].iloc[1]["result"]
    assert (set_ok["old"], set_ok["new"]) == (0.5, 0.2)
    frame = r.dashboard.commands_frame()
    assert list(frame["id"]) == ids and list(frame["status"]) == [
        "applied", "applied", "refused", "applied"]
    assert frame["applied_at"].notna().all()
    assert r.dashboard.pending_commands() == []


def test_a_restart_keeps_the_paused_and_edited_state(rig):
    r = rig(_cfg(max_position=0.5))
    r.step(2)
    r.command("set", {"param": "risk.max_position", "value": 0.2})
    r.command("set", {"param": "strategy.threshold", "value": 0.03})
    r.command("pause")
    r.step(1)
    r.restart()
    runner = r.runner
    assert runner.controls.paused
    assert runner.controls.overrides == {"risk.max_position": 0.2, "strategy.threshold": 0.03}
    assert runner.cfg.risk.max_position == 0.2 and runner.rules.max_position == 0.2
    assert runner.gate._gp[GP_MAX_POSITION] == 0.2
    assert runner.cfg.strategy.params["threshold"] == 0.03
    held = r.held()
    sent = r.step(3)
    assert _adds(sent, held) == []


def test_a_restart_before_the_next_bar_keeps_a_command_applied_between_bars(rig):
    """The controls are saved with finish_command, not only with the next bar's state."""
    r = rig()
    r.step(2)
    r.command("kill")
    controls.apply_pending(r.runner)  # as the start of a bar that then never finishes
    r.restart()
    assert r.runner.controls.killed and r.runner.gate.state()[0][4] == 1.0


# --------------------------------------------------------------------------- journal


def test_commands_addressed_to_a_run_or_to_the_first_run_that_reads_them(tmp_path):
    with Journal(f"sqlite:///{tmp_path / 'j.db'}") as j:
        a = j.start_run("threshold", "paper")
        b = j.start_run("threshold", "paper")
        to_b = j.add_command("pause", run_id=b)
        anyone = j.add_command("resume")
        assert [c["id"] for c in j.pending_commands(a)] == [anyone]
        assert [c["id"] for c in j.pending_commands(b)] == [to_b, anyone]
        assert j.claim_command(anyone, a) and not j.claim_command(anyone, b)
        assert [c["id"] for c in j.pending_commands(b)] == [to_b]
        j.finish_command(anyone, "applied", {"param": "paused", "old": True, "new": False})
        with pytest.raises(Exception, match="already applied"):
            j.finish_command(anyone, "refused", {"reason": "x"})
        with pytest.raises(Exception, match="use 'applied' or 'refused'"):
            j.finish_command(to_b, "done", {})
        assert j.command_row(anyone)["run_id"] == a


def test_an_old_journal_gets_the_commands_table(tmp_path):
    path = tmp_path / "old.db"
    Journal(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:  # as a version-1 journal was
        db.execute("DROP TABLE commands")
        db.execute("DELETE FROM schema_version WHERE version > 1")
    with Journal(f"sqlite:///{path}") as j:
        j.add_command("pause")
        assert len(j.commands_frame()) == 1
    with sqlite3.connect(path) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM schema_version")]
    assert max(versions) == SCHEMA_VERSION >= 2
