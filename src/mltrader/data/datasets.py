"""Real market histories shipped inside the package, so everything works offline from a clone."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from mltrader.data.bars import Bars
from mltrader.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """One bundled file and what it holds."""

    name: str
    filename: str
    description: str
    close_only: bool


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "sp500_20stocks",
            "sp500_20stocks_close_1990_2022.csv.gz",
            "20 S&P 500 stocks, daily adjusted closes (survivorship-biased: today's large caps)",
            True,
        ),
        Dataset(
            "sp500_index",
            "sp500_index_close_1990_2022.csv.gz",
            "S&P 500 index level, daily closes",
            True,
        ),
        Dataset(
            "sp500_ohlcv",
            "sp500_index_ohlcv_1999_2018.csv.gz",
            "S&P 500 index, daily OHLCV (an index, not tradable; for intrabar logic)",
            False,
        ),
        Dataset(
            "ashare_csi300",
            "ashare_csi300_44_daily_2017_2023.csv.gz",
            "44 CSI 300 A-shares, daily OHLCV 2017-2023, with the exchange's reference prices, "
            "suspensions and listings (use with market: cn_a; signals see qfq prices)",
            False,
        ),
    )
}


def _read(filename: str) -> pd.DataFrame:
    with resources.files("mltrader.data.bundled").joinpath(filename).open("rb") as fh:
        return pd.read_csv(fh, compression="gzip")


@lru_cache(maxsize=8)
def load_bundled(name: str) -> Bars:
    """Load a bundled dataset by name (see `DATASETS`), as `Bars` with a UTC date index."""
    if name not in DATASETS:
        raise DataError(
            f"unknown bundled dataset {name!r}; available: {', '.join(DATASETS)} "
            "(list them with `mltrader data list`)"
        )
    ds = DATASETS[name]
    if name == "ashare_csi300":  # an A-share panel: its forward-adjusted signal prices
        from mltrader.data.ashare import load_ashare

        return load_ashare("qfq").bars
    df = _read(ds.filename)
    dates = pd.to_datetime(df.pop("Date"), format="ISO8601" if ds.close_only else "%m/%d/%Y")
    index = pd.DatetimeIndex(dates).tz_localize("UTC")
    src = f"bundled:{name}"
    if ds.close_only:
        return Bars(index=index, symbols=tuple(df.columns), close=df.to_numpy(np.float64),
                    source=src)
    sym = ("SP500",)

    def col(c: str) -> np.ndarray:
        return df[[c]].to_numpy(np.float64)

    return Bars(index=index, symbols=sym, open=col("Open"), high=col("High"), low=col("Low"),
                close=col("Close"), volume=col("Volume"), source=src)
