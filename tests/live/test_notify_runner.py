"""The runner notifies: a paper session with a webhook configured posts every fill, a daily
summary per finished session day and each guard trip, and trades exactly as without it."""

from __future__ import annotations

from mltrader.config import config_from_dict
from mltrader.data.files import save_file
from mltrader.live.journal import Journal
from mltrader.live.session import paper_session
from mltrader.pipeline import load_data
from mltrader.testing import synthetic_bars
from tests.live.test_notify import FakeHttp

CONFIG = {
    "name": "notify",
    "strategy": {"name": "crossover", "fast": 3, "slow": 12},
    "walk_forward": {"first_test_year": 2001},
    "execution": {"size_at": "decision", "rebalance_band": 0.0},
    "costs": {"commission_bps": 1, "slippage_bps": 5},
    "risk": {"daily_loss_limit": 0.004},
}


def test_a_paper_session_notifies_fills_summaries_and_guards(tmp_path):
    hook = FakeHttp()
    try:
        path = save_file(synthetic_bars(330, 3, seed=8, ohlc=True, start="2000-01-03"),
                         tmp_path / "bars.csv")
        data = {"source": "file", "path": str(path)}
        plain = config_from_dict({**CONFIG, "data": data})
        told = config_from_dict({**CONFIG, "data": data, "notify": {
            "webhook": {"url": hook.url}, "min_interval_s": 0, "retries": 1}})
        bars, _ = load_data(plain)
        quiet = paper_session(plain, bars, tmp_path / "quiet")
        res = paper_session(told, bars, tmp_path / "told")
    finally:
        hook.stop()
    assert res.fills == quiet.fills and res.equity == quiet.equity  # trading unchanged
    events = [r["json"] for r in hook.requests]
    kinds = [e["event"] for e in events]
    assert kinds.count("fill") == res.fills > 10
    days = int((bars.index.year >= 2001).sum())  # the replayed (out-of-sample) sessions
    assert kinds.count("daily_summary") == days - 1  # one per finished session day
    j = Journal(f"sqlite:///{tmp_path / 'told' / 'journal.db'}")
    try:
        trips = int((j.audit_frame()["action"] == "guard_tripped").sum())
    finally:
        j.close()
    assert kinds.count("guard") == trips > 0  # each daily-loss stop, as journaled
    fill = next(e for e in events if e["event"] == "fill")
    assert fill["source"] == "notify" and {"symbol", "side", "qty", "price"} <= set(fill["data"])
