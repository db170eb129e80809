"""The daily guards count the calendar's trading sessions when the caller passes them: an FX
day ends at 17:00 New York (21:00 or 22:00 UTC with DST), not at midnight UTC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrader.backtest.engine import EngineSettings, run_backtest, session_days
from mltrader.data.bars import Bars
from mltrader.data.calendars import session_ids
from mltrader.errors import MltraderError
from mltrader.risk.guards import Guards


def _fx_bars(first: str, hours: int, drop_at: str) -> Bars:
    idx = pd.date_range(first, periods=hours, freq="h", tz="UTC")
    close = np.where(idx >= pd.Timestamp(drop_at, tz="UTC"), 90.0, 100.0)
    return Bars(index=idx, symbols=("EURUSD",), close=close[:, None], source="t")


def _reentry(bars: Bars, sessions: np.ndarray | None) -> pd.Timestamp:
    """The first fill after the daily loss limit flattened the position."""
    targets = pd.DataFrame(1.0, index=bars.index, columns=list(bars.symbols))
    s = EngineSettings(fill="next_close", guards=Guards(daily_loss_limit=0.02))
    res = run_backtest(bars, targets, s, sessions=sessions)
    t = res.trades
    assert t.iloc[0]["exit_reason"] == "daily_loss_limit"
    return pd.Timestamp(t.iloc[1]["entry_date"])


@pytest.mark.parametrize(("first", "roll"), [
    ("2024-03-07 12:00", "2024-03-07 22:00"),  # EST: 17:00 New York is 22:00 UTC
    ("2024-03-11 12:00", "2024-03-11 21:00"),  # EDT (DST began 03-10): 21:00 UTC
])
def test_daily_loss_limit_resets_at_the_fx_roll(first, roll):
    drop = pd.Timestamp(first) + pd.Timedelta(hours=3)  # -10 % on the FX day's 4th bar
    bars = _fx_bars(first, 24, str(drop))
    roll_ts = pd.Timestamp(roll, tz="UTC")
    # FX sessions: blocked until the roll; the order decided on the roll bar fills next bar
    assert _reentry(bars, session_ids("24/5", bars.index)) == roll_ts + pd.Timedelta(hours=1)
    # without a calendar the session is the UTC date: blocked until midnight UTC
    midnight = roll_ts.normalize() + pd.Timedelta(days=1)
    assert _reentry(bars, None) == midnight + pd.Timedelta(hours=1)


def test_sessions_must_have_one_number_per_bar():
    idx = pd.date_range("2024-03-07", periods=5, freq="h", tz="UTC")
    assert list(session_days(idx, np.arange(5))) == [0, 1, 2, 3, 4]
    with pytest.raises(MltraderError, match="one session number per bar"):
        session_days(idx, np.arange(4))
