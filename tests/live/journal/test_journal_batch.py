"""The journal's batch API: one transaction for a bar's writes, all or nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from mltrader.live.brokers.base import Fill, Order, OrderRequest
from mltrader.live.journal import Journal, JournalError, hash_config

from .test_journal import pg_server, pg_url  # noqa: F401  (the throwaway PostgreSQL server)

T0 = pd.Timestamp("2024-01-02 21:00", tz="UTC")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return request.getfixturevalue("pg_url")


def _req(cid: str, qty: float = 10.0) -> OrderRequest:
    return OrderRequest(cid, "AAA", "buy", qty)


def test_batch_commits_everything_or_nothing(url):
    with Journal(url) as j:
        run = j.start_run("s", "paper", config={"a": 1})
        with j.batch():
            assert j.record_order_intents([_req("c1"), _req("c2")], run, T0) == [True, True]
            j.snapshot(run, T0, [], 100.0, 100.0)
        with pytest.raises(RuntimeError), j.batch():
            j.record_order_intent(_req("c3"), run, T0)
            j.snapshot(run, T0, [], 1.0, 1.0)
            raise RuntimeError("crash inside the bar")
        assert sorted(j.known_client_ids()) == ["c1", "c2"]  # c3 rolled back
        assert list(j.equity_frame(run)["equity"]) == [100.0]
        with pytest.raises(RuntimeError), j.batch():  # an inner batch is the outer one
            with j.batch():
                j.record_order_intent(_req("c4"), run, T0)
            raise RuntimeError("after the inner batch")
        assert "c4" not in j.known_client_ids()
        j.close()
        with pytest.raises(JournalError, match="closed"), j.batch():
            pass


def test_intents_in_one_call_report_duplicates(url):
    with Journal(url) as j:
        run = j.start_run("s", "paper")
        assert j.record_order_intents([_req("c1")], run, T0) == [True]
        assert j.record_order_intents([_req("c1"), _req("c2")], run, T0) == [False, True]
        assert j.record_order_intents([], run, T0) == []


def test_fill_totals_runner_state_and_finding_a_run(url):
    with Journal(url) as j:
        cfg = {"strategy": "x", "n": 3}
        run = j.start_run("x", "paper", config=cfg)
        assert j.find_run(hash_config(cfg), "paper") == run
        assert j.find_run(hash_config({"other": 1}), "paper") is None
        assert j.find_run(hash_config(cfg), "alpaca") is None
        j.record_order_intent(_req("c1", 10), run, T0)
        j.update_order(Order("c1", "b1", "AAA", "buy", 10, 4, "partially_filled"))
        j.record_fill(Fill("c1", "b1", "f1", "AAA", "buy", 4, 100.0, 0.5, T0))
        j.record_fill(Fill("c1", "b1", "f2", "AAA", "buy", 6, 101.0, 0.25, T0))
        assert j.filled_totals("c1") == pytest.approx((10.0, 1006.0, 0.75))
        assert j.filled_totals("nope") == (0.0, 0.0, 0.0)
        assert j.order_row("c1")["status"] == "partially_filled"
        assert j.order_row("nope") is None
        assert j.runner_state(run) is None
        j.save_runner_state(run, T0, {"gate": [1.0, 2.0], "held": {"AAA": 10.0}})
        j.save_runner_state(run, T0 + pd.Timedelta(days=1), {"gate": [3.0]})
        when, state = j.runner_state(run)
        assert when == T0 + pd.Timedelta(days=1) and state == {"gate": [3.0]}
