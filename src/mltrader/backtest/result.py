"""`BacktestResult`: everything a backtest produced, in plain pandas objects."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

FILL_COLUMNS = ("date", "symbol", "qty", "price", "notional", "commission", "slippage")
TRADE_COLUMNS = (
    "symbol", "entry_date", "exit_date", "entry_price", "exit_price", "max_qty",
    "pnl", "return", "bars_held", "open",
)


@dataclass(frozen=True)
class BacktestResult:
    """Per-bar state and the event tables of one backtest.

    - ``equity``, ``cash``: Series on the bar index; equity = cash + sum(shares x close).
    - ``positions``: shares held after each bar (T x N); ``weights``: position value / equity.
    - ``fills``: one row per execution, columns FILL_COLUMNS; ``qty`` signed (+buy, -sell),
      ``price`` includes slippage, ``notional`` = |qty| x price, ``commission`` and
      ``slippage`` are the money each cost took (both >= 0).
    - ``trades``: round trips per symbol (flat -> position -> flat), columns TRADE_COLUMNS;
      ``pnl`` is net of costs, ``return`` = pnl / money put in, ``open`` is True for a trade
      still open at the end (marked at the last close).
    - ``fill_timing``: words for the report, e.g. "next bar's close".
    """

    equity: pd.Series
    cash: pd.Series
    positions: pd.DataFrame
    weights: pd.DataFrame
    fills: pd.DataFrame
    trades: pd.DataFrame
    initial_cash: float
    fill_timing: str = "next bar's open"
