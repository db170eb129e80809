"""Golden test: the canonical SMA-crossover strategy gives the same trades and final equity in
backtrader, in the plain-Python spec oracle (bench/reference.py) and in mltrader's engine.

The strategy (spec in bench/reference.py): long-only SMA 20/100 cross, next-open fills, size
floor(0.95 x cash / (open x 1.001)), 0.1 % commission, stop -3 % / target +5 % from the fill
price checked from the bar after entry (stop first, gaps fill at the open), a cross-down exit
beats the stops. backtrader runs it with its own SMAs, cheat-on-open market orders and native
Stop/Limit (OCO) orders, so agreement is a real cross-check, not the same code run twice.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("backtrader")

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from peers import PeerResult, backtrader_peer, from_reference  # noqa: E402
from reference import INITIAL_CASH, run_reference_books, synthetic_ohlc  # noqa: E402

from mltrader.data.datasets import load_bundled  # noqa: E402

EQUITY_RTOL = 1e-6
PRICE_RTOL = 1e-9


def _ohlc(name: str, symbol: str | None = None):
    if name == "synthetic":
        o, h, lo, c = synthetic_ohlc(5000)
        return pd.date_range("2000-01-03", periods=len(c), freq="D", tz="UTC"), o, h, lo, c
    b = load_bundled(name)
    j = 0 if symbol is None else b.symbols.index(symbol)
    c = b.close[:, j]
    if b.open is None:  # close-only data: open = high = low = close, fills at the next close
        return b.index, c, c, c, c
    return b.index, b.open[:, j], b.high[:, j], b.low[:, j], c


CASES = {
    "sp500_ohlcv": ("sp500_ohlcv", None),
    # close-only: every fill and every stop lands on a close; a gap is the normal case here
    "AMD_close_only": ("sp500_20stocks", "AMD"),
    # built so that the bar after each cross-down reaches both the stop and the target: there
    # only "the signal exit wins (at the open)" gives the spec's price; real data rarely does
    "synthetic_exit_vs_stops": ("synthetic", None),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    data = _ohlc(*CASES[request.param])
    ref = from_reference(run_reference_books(*data[1:]))
    bt = backtrader_peer.run(*data)
    return request.param, data, ref, bt


def _assert_same(a: PeerResult, b: PeerResult, what: str) -> None:
    pairs = zip(a.trades + [None], b.trades + [None], strict=False)
    assert len(a.trades) == len(b.trades), (
        f"{what}: {len(a.trades)} vs {len(b.trades)} trades; first differing: "
        f"{next((x, y) for x, y in pairs if x != y)}")
    for x, y in zip(a.trades, b.trades, strict=True):
        book, entry_bar, exit_bar, entry_px, exit_px, qty, reason = x
        assert (book, entry_bar, exit_bar, qty) == (y[0], y[1], y[2], y[5]), f"{what}: {x} vs {y}"
        assert reason == y[6] or "" in (reason, y[6]), f"{what}: exit reason {x} vs {y}"
        assert entry_px == pytest.approx(y[3], rel=PRICE_RTOL), f"{what}: {x} vs {y}"
        assert exit_px == pytest.approx(y[4], rel=PRICE_RTOL), f"{what}: {x} vs {y}"
    np.testing.assert_allclose(a.final_equity, b.final_equity, rtol=EQUITY_RTOL,
                               err_msg=f"{what}: final equity")


def test_backtrader_matches_the_reference(case):
    name, _, ref, bt = case
    assert len(ref.trades) > 10, f"{name}: too few trades for a meaningful check"
    reasons = Counter(t[6] for t in ref.trades)
    assert reasons["stop"] > 0 and reasons["target"] > 0 and reasons["signal"] > 0, reasons
    _assert_same(bt, ref, f"{name}: backtrader vs reference")
    assert bt.final_equity[0] != pytest.approx(INITIAL_CASH, rel=1e-3)  # it really traded


def test_synthetic_case_exercises_the_exit_over_stops_rule(case):
    name, data, ref, _ = case
    if name != "synthetic_exit_vs_stops":
        pytest.skip("only the synthetic case is built for this")
    _, _, high, low, _ = data
    both = [t for t in ref.trades if t[6] == "signal"
            and low[t[2]] <= t[3] * 0.97 and high[t[2]] >= t[3] * 1.05]
    assert len(both) >= 3, "the synthetic data no longer tests the exit-over-stops rule"


def test_sp500_golden_numbers(case):
    """Pin the S&P 500 result so a change of spec or data is seen, not silently agreed on."""
    name, _, ref, _ = case
    if name != "sp500_ohlcv":
        pytest.skip("golden numbers are pinned for the S&P 500 OHLCV set only")
    assert len(ref.trades) == 31
    assert Counter(t[6] for t in ref.trades) == {"stop": 15, "target": 14, "signal": 2}
    assert ref.final_equity[0] == pytest.approx(115_718.64204061, rel=1e-9)


def test_mltrader_run_signals_matches_backtrader_and_reference(case):
    try:
        from mltrader.backtest.engine import run_signals  # noqa: F401
    except ImportError as e:  # the engine's signal API has not landed yet
        pytest.skip(f"mltrader run_signals not importable yet: {e}")
    from peers import mltrader_peer

    name, data, ref, bt = case
    ml = mltrader_peer.run(*data, initial_cash=INITIAL_CASH)
    assert len(ml.trades) > 10
    _assert_same(ml, ref, f"{name}: mltrader vs reference")
    _assert_same(ml, bt, f"{name}: mltrader vs backtrader")
