"""Parity on A-shares: a paper session replaying real CSI 300 stocks under the market's rules
(lots, T+1, limits, minimum commission, stamp duty, ex-rights payouts) trades exactly what its
backtest trades."""

from __future__ import annotations

import pytest

from mltrader.config import config_from_dict
from mltrader.errors import ConfigError
from mltrader.live.session import paper_session
from mltrader.parity import parity_report
from mltrader.pipeline import load_data

CONFIG = {
    "name": "parity_cn",
    "market": "cn_a",
    "initial_cash": 1_000_000,
    "data": {"source": "bundled", "dataset": "ashare_csi300", "adjust": "none",
             "symbols": ["600519.SH", "000858.SZ", "300750.SZ", "601088.SH"],
             "start": "2019-06-01", "end": "2021-06-30"},
    "strategy": {"name": "crossover", "fast": 3, "slow": 12},
    "walk_forward": {"first_test_year": 2020},
    "execution": {"size_at": "decision", "rebalance_band": 0.0},
    "costs": {"commission_bps": 2.5, "slippage_bps": 5},
}


def test_a_share_paper_session_matches_its_backtest(tmp_path):
    cfg = config_from_dict(CONFIG)
    bars, _ = load_data(cfg)
    res = paper_session(cfg, bars, tmp_path / "sess")
    rep = parity_report(tmp_path / "sess")
    assert rep.ok, rep.summary()
    assert rep.matched == res.fills > 20
    assert rep.max_qty_diff == rep.max_price_diff == rep.max_commission_diff == 0.0
    assert rep.equity_backtest == pytest.approx(res.equity, rel=1e-9)


def test_paper_on_a_shares_needs_real_prices(tmp_path):
    cfg = config_from_dict({**CONFIG, "data": {**CONFIG["data"], "adjust": "qfq"}})
    bars, _ = load_data(cfg)
    with pytest.raises(ConfigError, match="data.adjust: none"):
        paper_session(cfg, bars, tmp_path / "sess")
