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


def cross_sectional(labels: pd.DataFrame, how: str) -> pd.DataFrame:
    """Each bar's labels across symbols as ranks or z-scores (Qlib's CSRankNorm /
    CSZScoreNorm): what is learned is which stock beats the others that day, not the
    market's move. "rank": percentile ranks scaled to unit variance, centred on 0; "zscore":
    (label - the bar's mean) / its standard deviation; bars with < 2 labels stay NaN."""
    if how == "none":
        return labels
    values = labels.to_numpy(np.float64)
    ok = np.isfinite(values)
    n = ok.sum(axis=1, keepdims=True)
    if how == "rank":
        pct = labels.rank(axis=1, pct=True).to_numpy(np.float64)
        out = (pct - 0.5) * np.sqrt(12.0)  # uniform(-0.5, 0.5) has variance 1/12
    elif how == "zscore":
        v = np.where(ok, values, 0.0)
        cnt = np.maximum(n, 1)
        mean = v.sum(axis=1, keepdims=True) / cnt
        dev = np.where(ok, values - mean, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt((dev ** 2).sum(axis=1, keepdims=True) / (cnt - 1))
            out = (values - mean) / std
    else:
        raise ValueError(f"cross_sectional: how must be none, rank or zscore; got {how!r}")
    out[(n < 2).repeat(values.shape[1], axis=1) | ~ok] = np.nan
    return pd.DataFrame(out, index=labels.index, columns=labels.columns)
