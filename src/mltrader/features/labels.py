"""Training labels: the return a position decided at bar t actually earns.

Timing convention: a decision on bar t's close fills at bar t+1 (its open, or its close for
close-only data) and is held until the next decision fills at t+2. So the label is
``P[t+2] / P[t+1] - 1`` with ``P`` the execution price, and it looks `LABEL_LOOKAHEAD` bars
ahead: walk-forward drops that many bars from the end of every training window (embargo).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mltrader.data.bars import Bars

LABEL_LOOKAHEAD = 2  # for the default one-bar horizon


def label_lookahead(horizon: int = 1) -> int:
    """How many bars past t a label of this horizon reads: the fill at t+1 plus `horizon`."""
    return 1 + horizon


def execution_prices(bars: Bars, fill: str) -> pd.DataFrame:
    """The price at which an order filled on each bar executes: open or close."""
    return bars.frame("open" if fill == "next_open" else "close")


def forward_return(bars: Bars, fill: str, horizon: int = 1) -> pd.DataFrame:
    """Label at t: return from the fill at t+1 to the fill `horizon` bars later.

    NaN for the last 1 + horizon bars, whose outcome is not known yet.
    """
    p = execution_prices(bars, fill)
    return p.shift(-(1 + horizon)) / p.shift(-1) - 1.0


def forward_price(bars: Bars, fill: str, horizon: int = 1) -> pd.DataFrame:
    """Price target at t: the execution price `horizon` bars after the fill at t+1.

    A model that predicts it is turned into an expected return against bar t's close
    (`price_to_return`), so the same rules can trade it.
    """
    return execution_prices(bars, fill).shift(-(1 + horizon))


def price_to_return(pred_price: np.ndarray, bars: Bars) -> np.ndarray:
    """Expected return of a predicted price, measured from the decision bar's close."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return pred_price / bars.close - 1.0
