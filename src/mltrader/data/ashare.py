"""China A-share panels: the signal prices, the traded prices and the exchange's reference data.

An A-share run needs two views of the same bars (the issue's rule: "prices adjusted for
signals, fills at the real unadjusted price of the day"):
- `bars`: prices adjusted for dividends and bonus shares (forward, qfq: the last bar's prices
  are real; backward, hfq: the first bar's are; or none), what features and models see;
- `exec_bars`: the real traded prices of each day, what orders fill at and what the market's
  rules (board lots, price limits, minimum commissions) are judged on.
Both carry NaN on suspended days (baostock fills those rows with the previous close and zero
volume): no fill can happen there and positions are marked at the last traded price.
`preclose` is the exchange's reference previous close (ex-rights adjusted on ex-dates), the
base of the daily price limits; `adj_factor` links the two views.

Input is the canonical long frame (one row per symbol and day; see the bundled file's
README): date, symbol, open, high, low, close, volume, amount, turnover, preclose, pct_chg,
trade_status, is_st, adj_factor.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

import numpy as np
import pandas as pd

from mltrader.data.bars import Bars
from mltrader.data.cn_codes import board
from mltrader.errors import DataError

Adjust = Literal["qfq", "hfq", "none"]
ADJUSTS: tuple[str, ...] = ("qfq", "hfq", "none")
ASHARE_FILE = "ashare_csi300_44_daily_2017_2023.csv.gz"
INDEX_FILE = "ashare_index_daily_2010_2024.csv.gz"
SYMBOLS_FILE = "ashare_symbols.csv"
CSI300 = "000300.SH"
REQUIRED = ("date", "symbol", "open", "high", "low", "close", "volume")
NO_ROWS = -(10**9)  # `AshareData.listing` of a symbol without rows


@dataclass(frozen=True, eq=False)
class AshareData:
    """One A-share panel: signal bars, traded bars and the exchange's per-day reference data.

    Arrays are (T, N) on `bars.index` x `bars.symbols`. `listing` is each symbol's first row
    in the source data (its IPO when `ipo_in_data`; negative when before the panel's first
    bar, NO_ROWS when it has no row at all).
    """

    bars: Bars
    exec_bars: Bars
    preclose: np.ndarray
    is_st: np.ndarray
    suspended: np.ndarray
    amount: np.ndarray
    adj_factor: np.ndarray
    listing: np.ndarray
    ipo_in_data: np.ndarray
    boards: tuple[str, ...]
    adjust: str

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.bars.symbols

    def select(self, symbols: list[str] | None = None, start: object = None,
               end: object = None) -> AshareData:
        """A sub-panel by symbols and inclusive dates (listing stays relative to the cut)."""
        bars = self.bars.select(symbols, start, end)
        rows = self.bars.index.get_indexer(bars.index)
        cols = [self.bars.symbols.index(s) for s in bars.symbols]
        listing = self.listing[cols] - int(rows[0])
        return AshareData(
            bars=bars, exec_bars=self.exec_bars.select(symbols, start, end),
            preclose=self.preclose[np.ix_(rows, cols)], is_st=self.is_st[np.ix_(rows, cols)],
            suspended=self.suspended[np.ix_(rows, cols)], amount=self.amount[np.ix_(rows, cols)],
            adj_factor=self.adj_factor[np.ix_(rows, cols)],
            listing=np.where(self.listing[cols] > NO_ROWS, listing, NO_ROWS),
            ipo_in_data=self.ipo_in_data[cols], boards=tuple(self.boards[c] for c in cols),
            adjust=self.adjust)


def _wide(df: pd.DataFrame, col: str, index: pd.DatetimeIndex, symbols: list[str]
          ) -> np.ndarray:
    return np.array(df.pivot(index="date", columns="symbol", values=col)
                    .reindex(index=index, columns=symbols).to_numpy(np.float64))


def ashare_panel(frame: pd.DataFrame, adjust: str = "qfq", source: str = "ashare",
                 ipo_in_data: dict[str, bool] | None = None) -> AshareData:
    """The canonical long frame as an `AshareData` (see the module docstring).

    `ipo_in_data`: per symbol, whether its first row is its listing day (the bundled file
    says so for its IPOs); unknown symbols are taken as listed before the data starts.
    """
    if adjust not in ADJUSTS:
        raise DataError(f"data.adjust must be one of {', '.join(ADJUSTS)}; got {adjust!r}")
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: the A-share table has no {', '.join(missing)} column(s); "
                        f"it needs {', '.join(REQUIRED)}")
    df = frame.copy()
    df["date"] = pd.to_datetime(df["date"])
    df["symbol"] = df["symbol"].astype(str)
    if df.duplicated(["symbol", "date"]).any():
        r = df[df.duplicated(["symbol", "date"])].iloc[0]
        raise DataError(f"{source}: {r['symbol']} has two rows on {r['date'].date()}; "
                        "keep one row per symbol and day")
    df = df.sort_values(["symbol", "date"])
    if "preclose" not in df:
        df["preclose"] = df.groupby("symbol")["close"].shift(1)
    df["preclose"] = df["preclose"].fillna(df["open"])
    if "trade_status" not in df:
        df["trade_status"] = 1
    if "is_st" not in df:
        df["is_st"] = 0
    if "amount" not in df:
        df["amount"] = np.nan
    if "adj_factor" not in df:
        prev = df.groupby("symbol")["close"].shift(1)
        step = (prev / df["preclose"]).where(prev.notna(), 1.0)
        df["adj_factor"] = step.groupby(df["symbol"]).cumprod()
    dates = pd.DatetimeIndex(sorted(df["date"].unique()))
    index = dates.tz_localize("UTC") if dates.tz is None else dates.tz_convert("UTC")
    df["date"] = df["date"].dt.tz_localize("UTC") if df["date"].dt.tz is None else df["date"]
    symbols = sorted(df["symbol"].unique())
    susp = _wide(df, "trade_status", index, symbols) == 0
    factor = _wide(df, "adj_factor", index, symbols)
    raw = {c: _wide(df, c, index, symbols) for c in ("open", "high", "low", "close", "volume")}
    for a in raw.values():
        a[susp] = np.nan
    if adjust == "none":
        scale = np.ones_like(factor)
    elif adjust == "hfq":
        scale = factor
    else:  # qfq: relative to each symbol's last factor, so the last prices are real
        last = pd.DataFrame(factor).ffill().to_numpy()[-1]
        scale = factor / last
    adj = {c: raw[c] * scale for c in ("open", "high", "low", "close")}
    with np.errstate(invalid="ignore", divide="ignore"):
        adj["volume"] = raw["volume"] / scale
    src = f"{source} ({adjust})"
    bars = Bars(index=index, symbols=tuple(symbols), source=src, **adj)
    exec_bars = Bars(index=index, symbols=tuple(symbols), source=f"{source} (traded prices)",
                     **raw)
    present = ~np.isnan(_wide(df, "close", index, symbols))
    listing = np.where(present.any(axis=0), present.argmax(axis=0), NO_ROWS)
    known = ipo_in_data or {}
    return AshareData(
        bars=bars, exec_bars=exec_bars, preclose=_wide(df, "preclose", index, symbols),
        is_st=_wide(df, "is_st", index, symbols) == 1, suspended=susp,
        amount=_wide(df, "amount", index, symbols), adj_factor=factor, listing=listing,
        ipo_in_data=np.array([bool(known.get(s, False)) for s in symbols]),
        boards=tuple(board(s) for s in symbols), adjust=adjust)


def _bundled(filename: str) -> pd.DataFrame:
    with resources.files("mltrader.data.bundled").joinpath(filename).open("rb") as fh:
        return pd.read_csv(fh, compression="gzip" if filename.endswith(".gz") else None,
                           dtype={"symbol": str})


def bundled_symbols() -> pd.DataFrame:
    """The bundled stocks: symbol, Chinese name, sector hint, board, first / last date."""
    return _bundled(SYMBOLS_FILE)


@lru_cache(maxsize=4)
def load_ashare(adjust: str = "qfq") -> AshareData:
    """The bundled 44 CSI 300 stocks, 2017-01-03 .. 2023-02-13 (baostock, unadjusted)."""
    meta = bundled_symbols()
    first_day = str(_bundled(ASHARE_FILE)["date"].min())
    ipo = {r.symbol: str(r.first_date) > first_day for r in meta.itertuples()}
    return ashare_panel(_bundled(ASHARE_FILE), adjust, "bundled:ashare_csi300", ipo)


@lru_cache(maxsize=4)
def load_cn_index(symbol: str = CSI300) -> Bars:
    """A bundled index (000300.SH CSI 300, 000001.SH SSE Composite), daily OHLCV."""
    df = _bundled(INDEX_FILE)
    if symbol not in set(df["symbol"]):
        raise DataError(f"unknown index {symbol!r}; bundled: "
                        f"{', '.join(sorted(set(df['symbol'])))}")
    one = df[df["symbol"] == symbol]
    idx = pd.DatetimeIndex(pd.to_datetime(one["date"])).tz_localize("UTC")

    def col(c: str) -> np.ndarray:
        return one[[c]].to_numpy(np.float64)

    return Bars(index=idx, symbols=(symbol,), open=col("open"), high=col("high"),
                low=col("low"), close=col("close"), volume=col("volume"),
                source=f"bundled:{symbol}")


_PANELS: weakref.WeakKeyDictionary[Bars, AshareData] = weakref.WeakKeyDictionary()


def register_panel(data: AshareData) -> AshareData:
    """Remember `data` as the panel behind its signal bars, so `panel_of` finds it."""
    _PANELS[data.bars] = data
    return data


def panel_of(bars: Bars) -> AshareData:
    """The A-share panel behind `bars`: the registered one (loaded with its reference data),
    else one derived from the bars alone (they are the traded prices; the reference close is
    the previous close, no ST flags, listings unknown), as for a plain file of A-shares."""
    found = _PANELS.get(bars)
    if found is not None:
        return found
    frame = bars.to_long()
    return ashare_panel(frame, "none", bars.source or "bars")
