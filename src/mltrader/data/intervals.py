"""Bar interval from the spacing of timestamps: "1m" ... "1mo", for loaders, calendars and
annualisation (so a weekly or monthly file is not treated as daily)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["INTERVALS", "check_interval", "detect_interval"]

INTERVALS = ("1m", "5m", "15m", "30m", "1h", "1d", "1wk", "1mo")

_MIN = 60.0
_DAY = 86_400.0
_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
# Upper bounds (seconds) of the median gap for each interval: intraday sizes split at the
# geometric midpoints; a daily series has 1-4 day gaps (weekends, holidays), a weekly one 5-19
# (a holiday moves a Friday bar), a monthly one 20 or more.
_BOUNDS = (
    ("1m", np.sqrt(1 * 5) * _MIN),
    ("5m", np.sqrt(5 * 15) * _MIN),
    ("15m", np.sqrt(15 * 30) * _MIN),
    ("30m", np.sqrt(30 * 60) * _MIN),
    ("1h", np.sqrt(1 / 24) * _DAY),
    ("1d", 4.5 * _DAY),
    ("1wk", 19.5 * _DAY),
)


def _bucket(seconds: float) -> str:
    """The interval whose band holds a gap of ``seconds``."""
    return next((name for name, bound in _BOUNDS if seconds < bound), "1mo")


def detect_interval(index: pd.DatetimeIndex) -> str:
    """The bar interval (one of `INTERVALS`) from the median gap between sorted, distinct
    timestamps; fewer than two timestamps give "1d". Irregular spacing gives the best guess:
    the band of the median gap, so it holds when half or more (typically 3/4) of gaps agree.
    """
    idx = pd.DatetimeIndex(index)
    ticks = np.unique(idx.asi8[~idx.isna()])  # in the index's own unit (s, ms, us or ns)
    if len(ticks) < 2:
        return "1d"
    gaps = np.diff(ticks) / _PER_SECOND[idx.unit]
    return _bucket(float(np.median(gaps)))


def check_interval(file: object, stated: str | None, detected: str,
                   how: str = "data.interval") -> str:
    """The bars' interval: ``detected`` when nothing is stated, else ``stated``, which must
    agree with it (a daily file declared weekly would be annualised, and gap-checked, as
    weekly). ``how`` names where the stated one came from, for the error."""
    from mltrader.errors import DataError

    if stated is None or stated == detected:
        return detected
    raise DataError(f"{file}: {how} says {stated} bars but they are {detected} apart (detected "
                    f"from their spacing); state {detected} (data.interval: {detected}, "
                    f"--interval {detected}) or leave it out, or check the file")
