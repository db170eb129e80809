"""The paper broker's state file: every call commits whole, a restart resumes exactly."""

from __future__ import annotations

import itertools
import os
import runpy
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from mltrader.backtest.engine import EngineSettings
from mltrader.data.feeds import ReplayFeed
from mltrader.live.brokers.base import BrokerError, OrderRejected, OrderRequest
from mltrader.live.brokers.paper import PaperBroker
from mltrader.testing import synthetic_bars

COSTS = dict(slippage_bps=5, half_spread_bps=2, commission_bps=1, commission_per_share=0.005,
             commission_min=1.0, slippage_range_frac=0.1)


def _steps(bars):
    return [(t, {e.symbol: e for e in g})
            for t, g in itertools.groupby(ReplayFeed(bars).bars(), key=lambda e: e.time)]


def _state(b: PaperBroker, cids) -> tuple:
    """Everything a caller can see, events excluded (reading those consumes them)."""
    return (b.cash, b.account(), b.positions(), b.open_orders(),
            [b.get_order(c) for c in cids], b.fills())


def test_a_broker_reopened_after_every_call_matches_one_that_never_stopped(tmp_path):
    path = tmp_path / "paper.db"
    settings = EngineSettings(fill="next_open", allow_short=False, max_volume_share=4e-4,
                              initial_cash=50_000.0, **COSTS)
    steps = _steps(synthetic_bars(8, 2, seed=3, ohlc=True))
    ref = PaperBroker(settings)
    live = [PaperBroker(settings, state_path=path)]
    cids: list[str] = []

    def both(call, *args, **kw):
        """Call it on the reference and the durable broker, then reopen the durable one."""
        outs = []
        for b in (ref, live[0]):
            try:
                out = call(b, *args, **kw)
                outs.append(("ok", list(out) if call is PaperBroker.updates else out))
            except BrokerError as e:
                outs.append((type(e).__name__, str(e)))
        assert outs[0] == outs[1]
        live[0].close()
        live[0] = PaperBroker(settings, state_path=path)
        assert _state(live[0], cids) == _state(ref, cids)
        return outs[0]

    def submit(b, *a, **kw):
        return b.submit(OrderRequest(*a, **kw))

    both(PaperBroker.on_bar, *steps[0])
    for cid, args, kw in [
            ("m1", ("S00", "buy", 100), {"time_in_force": "gtc"}),  # fills in parts (volume)
            ("m2", ("S01", "buy", 3), {}),
            ("lim", ("S01", "buy", 2, "limit", "gtc"), {"limit_price": 1.0}),
            ("stp", ("S01", "sell", 3, "stop", "gtc"), {"stop_price": 1.0,
                                                        "take_profit": 1e6})]:
        cids.append(cid)
        both(submit, cid, *args, **kw)
    assert both(submit, "m2", "S01", "buy", 3)[1] == ref.get_order("m2")  # idempotent
    cids.append("short")
    assert both(submit, "short", "S00", "sell", 5_000)[0] == OrderRejected.__name__
    assert both(PaperBroker.on_bar, *steps[1]) == ("ok", True)
    assert both(PaperBroker.on_bar, *steps[1]) == ("ok", False)  # a replayed bar
    assert both(PaperBroker.on_bar, *steps[0]) == ("ok", False)
    assert ref.get_order("m1").status == "partially_filled"
    assert len(both(PaperBroker.updates)[1]) > 3
    assert both(PaperBroker.updates) == ("ok", [])
    both(PaperBroker.replace, "lim", qty=1, limit_price=2.0)
    both(PaperBroker.replace, "stp", stop_price=2.0)
    assert both(PaperBroker.replace, "m2", qty=1)[0] == "BrokerError"  # filled: not working
    both(PaperBroker.cancel, "lim")
    for step in steps[2:5]:
        both(PaperBroker.on_bar, *step)
    both(PaperBroker.cancel, "m1")
    both(submit, "out", "S01", "sell", 3)
    cids.append("out")
    for step in steps[5:]:
        both(PaperBroker.on_bar, *step)
    assert live[0].get_order("stp").status == "cancelled"
    assert live[0].get_order("stp").reason == "position is flat"
    assert both(PaperBroker.updates)[1] and live[0].fills("m1")
    m1 = live[0].get_order("m1")
    assert m1.commission == pytest.approx(sum(f.commission for f in live[0].fills("m1")))
    assert len({f.fill_id for f in live[0].fills()}) == len(live[0].fills())
    live[0].close()


def test_unconsumed_events_survive_a_restart(tmp_path):
    path = tmp_path / "paper.db"
    steps = _steps(synthetic_bars(2, 1, seed=1, ohlc=True))
    b = PaperBroker(state_path=path)
    b.on_bar(*steps[0])
    b.submit(OrderRequest("a", "S00", "buy", 1))
    b.on_bar(*steps[1])
    b.close()
    events = list(PaperBroker(state_path=path).updates())
    assert [u.event for u in events] == ["new", "fill"]
    assert events[1].fill == b.fills("a")[0] and events[1].order == b.get_order("a")
    assert list(PaperBroker(state_path=path).updates()) == []  # consumed for good


def test_a_stale_or_foreign_state_file_is_refused(tmp_path):
    path = tmp_path / "paper.db"
    PaperBroker(EngineSettings(initial_cash=1_000.0), state_path=path).close()
    with pytest.raises(BrokerError, match=r"paper\.db was written with other settings "
                       r"\(initial_cash 1000\.0 -> 2000\.0\); delete it"):
        PaperBroker(EngineSettings(initial_cash=2_000.0), state_path=path)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(BrokerError, match="not a paper broker state file"):
        PaperBroker(state_path=other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BrokerError, match="cannot open state file .*junk.db"):
        PaperBroker(state_path=junk)


def test_a_call_that_fails_midway_leaves_no_trace(tmp_path):
    class Boom:
        def check(self, symbol: str, adds: bool, ref_price: float) -> str | None:
            if symbol == "S01":
                raise RuntimeError("guard crashed")
            return None

        def filled(self, symbol: str) -> None:
            pass

    path = tmp_path / "paper.db"
    steps = _steps(synthetic_bars(2, 2, seed=1, ohlc=True))
    b = PaperBroker(state_path=path, fill_gate=Boom())
    b.on_bar(*steps[0])
    b.submit(OrderRequest("a", "S00", "buy", 1))
    b.submit(OrderRequest("b", "S01", "buy", 1))
    before = _state(b, ["a", "b"])
    with pytest.raises(RuntimeError):
        b.on_bar(*steps[1])  # S00 filled before S01's guard raised
    assert _state(b, ["a", "b"]) == before
    b.fill_gate = None
    assert b.on_bar(*steps[1]) is True  # the bar was not marked as processed
    assert len(b.fills()) == 2
    b.close()
    assert _state(PaperBroker(state_path=path), ["a", "b"]) == _state(b, ["a", "b"])


# --------------------------------------------------------------- SIGKILL in the middle
CHILD = textwrap.dedent("""
    import itertools, sys
    from mltrader.backtest.engine import EngineSettings
    from mltrader.data.feeds import ReplayFeed
    from mltrader.live.brokers.base import OrderRequest
    from mltrader.live.brokers.paper import PaperBroker
    from mltrader.testing import synthetic_bars

    SETTINGS = EngineSettings(fill="next_open", allow_short=True, initial_cash=1e6,
                              slippage_bps=5, commission_bps=1, commission_min=1.0)

    def drive(path, verbose=False):
        bars = synthetic_bars(1200, 3, seed=7, ohlc=True)
        broker = PaperBroker(SETTINGS, state_path=path)
        for i, (t, g) in enumerate(itertools.groupby(ReplayFeed(bars).bars(),
                                                     key=lambda e: e.time)):
            g = {e.symbol: e for e in g}
            if broker.on_bar(t, g) and verbose:
                print(i, flush=True)
            broker.updates()
            for k, (s, e) in enumerate(g.items()):
                side = "buy" if (i + k) % 2 == 0 else "sell"
                broker.submit(OrderRequest(f"o{i}{s}", s, side, 10 + k))
                if i % 7 == 1:
                    broker.submit(OrderRequest(f"x{i}{s}", s, "sell", 5, "stop", "gtc",
                                               stop_price=e.close * 0.995,
                                               take_profit=e.close * 1.005))
        return broker

    if __name__ == "__main__":
        drive(sys.argv[1], verbose=True).close()
""")


def _consistent(b: PaperBroker) -> None:
    """Cash and positions are what the committed fills imply; orders agree with fills."""
    fills = b.fills()
    sign = {"buy": 1.0, "sell": -1.0}
    spent = sum(sign[f.side] * f.qty * f.price + f.commission for f in fills)
    assert b.cash == pytest.approx(1e6 - spent, rel=1e-12, abs=1e-6)
    pos: dict[str, float] = {}
    for f in fills:
        pos[f.symbol] = pos.get(f.symbol, 0.0) + sign[f.side] * f.qty
    assert {s: p.qty for s, p in b.positions().items()} == pytest.approx(
        {s: q for s, q in pos.items() if abs(q) > 1e-9})
    for cid in {f.client_order_id for f in fills}:
        order = b.get_order(cid)
        mine = b.fills(cid)
        assert order.filled_qty == pytest.approx(sum(f.qty for f in mine))
        assert order.commission == pytest.approx(sum(f.commission for f in mine))
    assert all(not o.done for o in b.open_orders())


def test_sigkill_mid_loop_leaves_a_consistent_file_and_a_resume_equals_no_crash(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = tmp_path / "paper.db"
    index = synthetic_bars(1200, 3, seed=7, ohlc=True).index
    done = -1  # the last bar the file has processed
    for kill_after in (100, 300):  # bars this run processes before the kill
        proc = subprocess.Popen([sys.executable, str(script), str(path)], cwd=tmp_path,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        seen = 0
        for line in proc.stdout:
            seen += 1
            assert int(line) > done  # a restarted run processes only new bars
            if seen >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        ns = runpy.run_path(str(script))
        b = PaperBroker(ns["SETTINGS"], state_path=path)
        _consistent(b)
        last = index.get_loc(b._last_bar)
        assert done + kill_after <= last < len(index) - 1  # killed mid-loop
        done = last
        b.close()
    subprocess.run([sys.executable, str(script), str(path)], cwd=tmp_path, check=True,
                   stdout=subprocess.DEVNULL, timeout=120)
    resumed = PaperBroker(ns["SETTINGS"], state_path=path)
    _consistent(resumed)
    ref = ns["drive"](None)
    cids = [o.client_order_id for o in ref._orders.values()]
    assert _state(resumed, cids) == _state(ref, cids)
    assert len(ref.fills()) > 1000
