"""Adapters that run the canonical strategy (bench/reference.py) in each library.

Every adapter returns a `PeerResult` in one shape, so engine_vs_peers.py and the golden test
can compare them trade for trade.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PeerResult:
    """Trades as rows (book, entry_bar, exit_bar, entry_price, exit_price, qty, reason) with
    reason one of "signal", "stop", "target", "open" or "" when the library does not say;
    an open trade at the end has exit_bar = last bar and exit_price = last close.
    final_equity: one value per book (independent symbols) or one for a shared book."""

    trades: list[tuple]
    final_equity: np.ndarray
    note: str = ""


def from_reference(results) -> PeerResult:
    """Wrap reference.run_reference(_books) output."""
    if not isinstance(results, list):
        results = [results]
    rows = [(j, t.entry_bar, t.exit_bar, t.entry_price, t.exit_price, t.qty, t.reason)
            for j, r in enumerate(results) for t in r.trades]
    return PeerResult(rows, np.array([r.final_equity for r in results]))
