"""Crashes inside a bar, then a restart: the session must place exactly the orders an
uninterrupted one places (found by the crash-safety test with other random kill points).

- After the bar's entry fill is journaled, before its protective stop reaches the broker: the
  restored exit book (saved at the end of the bar before) did not know the entry, so the
  re-run bar placed no stop and the journaled intent was later cancelled as never sent.
- After a strategy order that closes a position reached the broker, before the bar ended:
  the re-run did not count that order (already at the broker, so not sent again) in the
  position to protect, and placed a stop for a position about to be sold.
- After a protective stop reached the broker, before the bar ended: the re-run found it at
  the broker (so did not send it again) but did not remember it as the position's stop, and
  the next bar placed a second one (two stops for one position: a double sell)."""

from __future__ import annotations

import inspect

import pytest

from mltrader.config import config_from_dict
from mltrader.data.files import save_file
from mltrader.live import runner as runner_module
from mltrader.live.journal import Journal
from mltrader.live.session import paper_session
from mltrader.pipeline import load_data
from mltrader.testing import synthetic_bars

CONFIG = {
    "name": "resume",
    "strategy": {"name": "crossover", "fast": 3, "slow": 12},
    "walk_forward": {"first_test_year": 2001},
    "execution": {"size_at": "decision", "rebalance_band": 0.0},
    "costs": {"commission_bps": 1, "slippage_bps": 5},
    "risk": {"stop_loss": 0.03},
}


class _Crash(BaseException):
    """Stands in for SIGKILL at a crash point."""


def _book(folder):
    """(fills, orders with their final status) of a session folder's journal."""
    j = Journal(f"sqlite:///{folder / 'journal.db'}")
    try:
        f, o = j.fills_for(), j.orders_frame()
    finally:
        j.close()
    fills = sorted(zip(f["symbol"], f["side"], f["qty"].round(9), f["price"].round(9),
                       f["time"].astype(str), strict=True))
    orders = sorted(zip(o["client_order_id"], o["type"], o["status"], o["reason"],
                        strict=True))
    return fills, orders


@pytest.mark.parametrize(("point", "in_protect", "nth"), [
    ("intents_journaled", True, 1), ("intents_journaled", True, 3),
    ("submitted", False, 2), ("submitted", False, 5), ("submitted", True, 1),
    ("submitted", True, 4)])
def test_a_crash_inside_a_bar_then_a_restart_places_the_same_orders(tmp_path, monkeypatch,
                                                                    point, in_protect, nth):
    path = save_file(synthetic_bars(330, 3, seed=5, ohlc=True, start="2000-01-03"),
                     tmp_path / "bars.csv")
    cfg = config_from_dict({**CONFIG, "data": {"source": "file", "path": str(path)}})
    bars, _ = load_data(cfg)
    paper_session(cfg, bars, tmp_path / "clean")

    seen = {"n": 0, "crashed": False}
    real = runner_module.checkpoint

    def crash(name: str) -> None:
        callers = {f.function for f in inspect.stack()[1:6]}
        if name == point and ("_protect" in callers) == in_protect and not seen["crashed"]:
            seen["n"] += 1
            if seen["n"] == nth:
                seen["crashed"] = True
                raise _Crash
        real(name)

    monkeypatch.setattr(runner_module, "checkpoint", crash)
    with pytest.raises(_Crash):
        paper_session(cfg, bars, tmp_path / "crashed")
    monkeypatch.setattr(runner_module, "checkpoint", real)
    paper_session(cfg, bars, tmp_path / "crashed")  # the restart
    assert seen["crashed"]
    fills, orders = _book(tmp_path / "crashed")
    want_fills, want_orders = _book(tmp_path / "clean")
    assert not [o for o in orders if o[3] == "never reached the broker"]
    assert orders == want_orders  # the stop was sent once, after the restart
    assert fills == want_fills
