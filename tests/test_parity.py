"""Parity: a replayed crossover session trades exactly what its backtest trades, and a
tampered journal is caught."""

from __future__ import annotations

import shutil
import sqlite3
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mltrader.config import config_from_dict
from mltrader.data.files import save_file
from mltrader.errors import MltraderError
from mltrader.live.session import paper_session
from mltrader.parity import compare_fills, parity_frame, parity_report
from mltrader.pipeline import load_data
from mltrader.testing import synthetic_bars

CONFIG = {
    "name": "parity",
    "strategy": {"name": "crossover", "fast": 3, "slow": 12},
    "walk_forward": {"first_test_year": 2001},
    "execution": {"size_at": "decision", "rebalance_band": 0.0},
    "costs": {"commission_bps": 1, "slippage_bps": 5},
}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    d = tmp_path_factory.mktemp("parity")
    path = save_file(synthetic_bars(330, 3, seed=8, ohlc=True, start="2000-01-03"),
                     d / "bars.csv")
    cfg = config_from_dict({**CONFIG, "data": {"source": "file", "path": str(path)}})
    bars, _ = load_data(cfg)
    folder = d / "sess"
    res = paper_session(cfg, bars, folder)
    return folder, res


def test_every_trade_matches_with_zero_differences(session):
    folder, res = session
    rep = parity_report(folder)
    assert rep.ok, rep.summary()
    assert rep.matched == res.fills > 10
    assert rep.backtest_only == rep.journal_only == rep.differs == 0
    assert rep.max_qty_diff == rep.max_price_diff == rep.max_commission_diff == 0.0
    assert rep.equity_backtest == pytest.approx(res.equity, rel=1e-9)
    assert rep.equity_journal == pytest.approx(res.equity, rel=1e-12)
    assert rep.notes == []
    frame = parity_frame(folder)
    assert (frame["status"] == "match").all() and len(frame) == res.fills
    assert rep.summary().startswith("PARITY")


def test_a_tampered_fill_price_is_reported(session, tmp_path):
    folder, _ = session
    copy = tmp_path / "tampered"
    shutil.copytree(folder, copy)
    with sqlite3.connect(copy / "journal.db") as db:
        fid, = db.execute("SELECT fill_id FROM fills ORDER BY time LIMIT 1 OFFSET 3").fetchone()
        db.execute("UPDATE fills SET price = price * 1.001 WHERE fill_id = ?", (fid,))
    rep = parity_report(copy)
    assert not rep.ok and rep.differs == 1
    bad = rep.frame[rep.frame["status"] == "differs"]
    assert len(bad) == 1 and bad["price_diff"].abs().iloc[0] > 0
    assert bad["qty_diff"].iloc[0] == 0
    assert rep.max_price_diff == pytest.approx(bad["price_diff"].abs().iloc[0])
    assert rep.summary().startswith("MISMATCH")


def test_unmatched_trades_on_either_side():
    t = pd.Timestamp("2024-01-02", tz="UTC")
    bt = pd.DataFrame({"date": [t, t], "symbol": ["A", "B"], "qty": [10.0, -5.0],
                       "price": [100.0, 50.0], "commission": [0.1, 0.025]})
    jn = pd.DataFrame({"time": [t, t + pd.Timedelta(days=1)], "symbol": ["A", "B"],
                       "side": ["buy", "sell"], "qty": [10.0, 5.0], "price": [100.0, 50.0],
                       "commission": [0.1, 0.025]})
    f = compare_fills(bt, jn)
    assert list(f["status"]) == ["match", "backtest only", "journal only"]
    assert list(f["side"]) == ["buy", "sell", "sell"]
    assert np.isnan(f.loc[1, "qty_journal"]) and np.isnan(f.loc[2, "qty_backtest"])


def test_size_at_fill_is_said_and_compared_anyway(session, tmp_path):
    folder, _ = session
    copy = tmp_path / "fill-sized"
    shutil.copytree(folder, copy)
    text = (copy / "config.yaml").read_text().replace("size_at: decision", "size_at: fill")
    (copy / "config.yaml").write_text(text)
    rep = parity_report(copy)
    assert any("size_at" in n for n in rep.notes)
    assert rep.matched + rep.backtest_only > 0


def test_not_a_session_folder(tmp_path):
    with pytest.raises(MltraderError, match="not found"):
        parity_report(tmp_path / "missing")
    with pytest.raises(MltraderError, match="config.yaml"):
        parity_report(tmp_path)


def test_dust_fills_are_no_trade_on_either_side():
    """Fills worth under a cent (the engine's resizing to the leverage room leaves 1e-11
    shares) count as no trade, whichever side has them and however they differ."""
    t = pd.Timestamp("2024-01-02", tz="UTC")
    u = t + pd.Timedelta(days=1)
    bt = pd.DataFrame({"date": [t, t, u, u], "symbol": ["A", "B", "C", "D"],
                       "qty": [10.0, 1e-11, 1.35e-11, 1e-11],
                       "price": [100.0, 15.2, 60.7, 40.0],
                       "commission": [0.1, 2e-14, 1e-14, 1.0]})
    jn = pd.DataFrame({"time": [t, u], "symbol": ["A", "C"], "side": ["buy", "buy"],
                       "qty": [10.0, 1.42e-11], "price": [100.0, 60.7],
                       "commission": [0.1, 1e-14]})
    f = compare_fills(bt, jn)
    # B: dust in the backtest only; C: dust on both sides (5% apart); D: a dust quantity
    # that paid a real commission is a trade
    assert list(f["symbol"]) == ["A", "B", "C", "D"]
    assert list(f["status"]) == ["match", "dust", "dust", "backtest only"]


def test_a_backtest_fill_of_1e_11_shares_does_not_break_parity(session, monkeypatch):
    folder, res = session
    import mltrader.pipeline as pipeline

    real = pipeline.run

    def with_dust(cfg, *args, **kwargs):
        """The backtest with one more fill of 1e-11 shares (as the kernel resizes an order
        at the leverage cap), on a bar and symbol that trade nothing else."""
        out = real(cfg, *args, **kwargs)
        fills = out.strategy.fills
        taken = set(zip(fills["symbol"].astype(str), fills["date"], strict=True))
        when = next(d for d in out.strategy.equity.index[5:] if ("S00", d) not in taken)
        dust = pd.DataFrame({"date": [when], "symbol": ["S00"], "qty": [1e-11],
                             "price": [50.0], "commission": [5e-15]})
        strat = SimpleNamespace(fills=pd.concat([fills, dust], ignore_index=True),
                                equity=out.strategy.equity)
        return SimpleNamespace(strategy=strat)

    monkeypatch.setattr(pipeline, "run", with_dust)
    rep = parity_report(folder)
    assert rep.ok, rep.summary()
    assert rep.dust == 1 and rep.backtest_only == 0 and rep.matched == res.fills
    assert any("worth under 0.01 left out (S00 " in n for n in rep.notes)
    assert "1 worth under 0.01: dust, left out" in rep.summary()
    assert (rep.frame["status"] == "match").all()
