"""`BacktestResult`: everything a backtest produced, in plain pandas objects."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

FILL_COLUMNS = ("date", "symbol", "qty", "price", "notional", "commission", "slippage")
TRADE_COLUMNS = (
    "symbol", "entry_date", "exit_date", "entry_price", "exit_price", "max_qty",
    "pnl", "return", "bars_held", "open",
)
# Added by the engine on top of the columns above (tests and reports may build without them).
FILL_EXTRA_COLUMNS = ("order_id", "reason")
TRADE_EXTRA_COLUMNS = ("entry_bar", "exit_bar", "qty", "mae", "mfe", "exit_reason")
ORDER_COLUMNS = (
    "order_id", "symbol", "created", "type", "intent", "value", "limit_price", "stop_price",
    "filled_qty", "status", "reason", "closed",
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
    - ``orders``: every order with its final status and the reason (ORDER_COLUMNS);
      ``book_equity``: equity per symbol when each symbol trades its own book;
      ``borrow_costs``: money paid to borrow shares for shorts.
    - A market's rules (core/market.py): ``held_back`` counts the exits a rule held back
      (name, count), e.g. a stop on a stock locked at limit-down; ``payouts`` is the cash
      credited to holders on ex-rights days.
    - Trades from the engine also carry ``entry_bar``/``exit_bar`` (positions in the bar
      index), signed ``qty`` (largest position), ``mae``/``mfe`` (worst / best price move
      from entry while open, as fractions: mae <= 0 <= mfe) and ``exit_reason``.
    """

    equity: pd.Series
    cash: pd.Series
    positions: pd.DataFrame
    weights: pd.DataFrame
    fills: pd.DataFrame
    trades: pd.DataFrame
    initial_cash: float
    fill_timing: str = "next bar's open"
    orders: pd.DataFrame | None = None
    book_equity: pd.DataFrame | None = None
    borrow_costs: float = 0.0
    held_back: tuple[tuple[str, int], ...] = ()
    payouts: float = 0.0


def _lazy_table(name: str) -> property:
    def get(self: LazyBacktestResult) -> pd.DataFrame | None:
        built = self.__dict__["_built"]
        if name not in built:
            built[name] = self.__dict__["_builders"][name]()
        return built[name]

    return property(get, doc=f"The {name} table, built from the engine's records on first use.")


class LazyBacktestResult(BacktestResult):
    """A `BacktestResult` whose weights and event tables are built on first use.

    Building them costs a few milliseconds (tens on large panels), most of a short run;
    parameter sweeps that only read equity never pay it. Reads behave exactly like the
    eager class. (Not for `dataclasses.replace`: build a `BacktestResult` instead.)
    """

    positions = _lazy_table("positions")  # type: ignore[assignment]
    weights = _lazy_table("weights")  # type: ignore[assignment]
    book_equity = _lazy_table("book_equity")  # type: ignore[assignment]
    fills = _lazy_table("fills")  # type: ignore[assignment]
    trades = _lazy_table("trades")  # type: ignore[assignment]
    orders = _lazy_table("orders")  # type: ignore[assignment]

    def __init__(self, *, builders: dict[str, Callable[[], pd.DataFrame]],
                 **fields: object) -> None:
        for key, value in fields.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_builders", builders)
        object.__setattr__(self, "_built", {})

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Pickled (to another process: a worker's result) as the eager `BacktestResult`
        with every table built: the builders are closures over the engine's arrays."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(BacktestResult)}
        return _eager, (values,)


def _eager(values: dict[str, object]) -> BacktestResult:
    return BacktestResult(**values)  # type: ignore[arg-type]
