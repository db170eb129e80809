"""Trial accounting through real runs: every configuration tried on the same data deflates
every later run's Sharpe as the formula says, and `mltrader trials --reset` restores it."""

from __future__ import annotations

import numpy as np
import pytest

from mltrader.backtest.deflated import deflated_sharpe_ratio
from mltrader.config import config_from_dict
from mltrader.pipeline import run
from mltrader.testing import synthetic_bars
from mltrader.trials import TrialRegistry

BARS = synthetic_bars(1200, 4, seed=5, ohlc=True, drift=0.0006, start="2000-01-03")
BASE = {"walk_forward": {"first_test_year": 2001}}


def _cfg(fast: int, slow: int):
    return config_from_dict({**BASE, "strategy": {"name": "crossover", "fast": fast,
                                                  "slow": slow}})


def test_fifty_random_configurations_deflate_every_later_run_and_reset_restores(tmp_path):
    reg = TrialRegistry(tmp_path / "runs" / "trials.jsonl")
    first = run(_cfg(10, 40), bars=BARS, registry=reg).metrics["deflated_sharpe"]
    assert first["n_trials"] == 1
    rng = np.random.default_rng(0)
    tried = set()
    while len(tried) < 50:  # 50 distinct random configurations on the same data
        fast = int(rng.integers(3, 30))
        slow = int(rng.integers(fast + 5, 120))
        if (fast, slow) != (10, 40):
            tried.add((fast, slow))
    for fast, slow in sorted(tried):
        run(_cfg(fast, slow), bars=BARS, registry=reg)
    again = run(_cfg(10, 40), bars=BARS, registry=reg)  # the same config: not a new trial
    later = again.metrics["deflated_sharpe"]
    assert later["n_trials"] == 51
    sharpes = [t.sharpe for t in reg.trials() if t.sharpe is not None]
    assert len(sharpes) == 51
    r = again.strategy.equity.pct_change().dropna().to_numpy()
    expected = deflated_sharpe_ratio(r, 51, sr_variance=float(np.var(sharpes, ddof=1)))["dsr"]
    assert later["dsr"] == pytest.approx(expected, rel=1e-12)
    assert later["dsr"] < first["dsr"]
    # the active-return deflation counts the same trials
    active = again.metrics["vs_buy_and_hold_significance"]["active_deflated_sharpe"]
    assert active["n_trials"] == 51
    assert reg.reset() == 51
    restored = run(_cfg(10, 40), bars=BARS, registry=reg).metrics["deflated_sharpe"]
    assert restored["n_trials"] == 1 and restored["dsr"] == pytest.approx(first["dsr"])


def test_without_a_registry_a_run_counts_only_itself_and_writes_nothing(tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run(_cfg(10, 40), bars=BARS)
    assert out.metrics["deflated_sharpe"]["n_trials"] == 1
    assert not (tmp_path / "runs").exists()
    verdict = out.metrics["vs_buy_and_hold_significance"]
    assert verdict["summary"] and isinstance(verdict["beats_benchmark"], bool)
    assert any(n.startswith("Verdict: The strategy") for n in out.notes)
