"""Real market histories shipped inside the package, so everything works offline from a clone.

One name is not a file: ``synthetic_universe_500`` is built on the fly from the 20 real stocks
(see `synthetic_universe`); it is SYNTHETIC, a universe to measure scaling on, not market data.
"""

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
    synthetic: bool = False


SYNTHETIC_UNIVERSE = "synthetic_universe_500"
SYNTHETIC_SIZE = 500
SYNTHETIC_SEED = 20500  # fixed: the universe is the same on every machine and every run
SYNTHETIC_WARNING = (
    "Synthetic data: the 500 symbols SYN000..SYN499 are made up, tiled from the 20 bundled "
    "stocks' returns (their market of the day plus one stock's own returns, time-shifted and "
    "rescaled). This universe measures speed and scaling; its returns, Sharpe ratios and "
    "rankings say nothing about real stocks."
)
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
        Dataset(
            SYNTHETIC_UNIVERSE,
            "sp500_20stocks_close_1990_2022.csv.gz",
            "SYNTHETIC: 500 made-up symbols SYN000..SYN499, daily closes 1990-2022: the real "
            "20 stocks' market return of each day plus one stock's own returns, time-shifted "
            "and rescaled (a universe to measure scaling on; results on it say nothing about "
            "real stocks)",
            True,
            synthetic=True,
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
    if name == SYNTHETIC_UNIVERSE:
        return synthetic_universe(load_bundled("sp500_20stocks"), SYNTHETIC_SIZE)
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


def synthetic_universe(real: Bars, n: int, seed: int = SYNTHETIC_SEED) -> Bars:
    """``n`` SYNTHETIC close series (SYN000, SYN001, ...) tiled from ``real``'s closes.

    Symbol k takes the daily log returns of real stock ``k % N`` in excess of the real
    stocks' equal-weight mean (the "market"), rolled in time by a per-symbol shift
    (circularly, distinct within each real stock: no two symbols share a (stock, shift)
    pair) and multiplied by a per-symbol scale in [0.6, 1.4]; adds back the market of the
    day itself; and re-compounds the result from a start price in [10, 200]. So every
    series moves with the real market on the real dates (crashes included: the universe
    has a market factor, and an equal-weight book of it is about as volatile as the real
    one), its own part is a real stock's, shifted to other dates, and no two series are
    alike. Deterministic for a given ``seed``; vectorised (500 x 8,313 in well under 1 s).
    """
    close = real.close
    if np.isnan(close).any():
        raise DataError(f"{real.source}: the synthetic universe needs gap-free closes")
    t, m = close.shape
    rets = np.diff(np.log(close), axis=0)  # (t - 1, m)
    market = rets.mean(axis=1)
    own = rets - market[:, None]
    rng = np.random.default_rng(seed)
    base = np.arange(n) % m
    copies = -(-n // m)
    if copies > t - 2:
        raise DataError(f"{n} synthetic series need more than {t} bars of {m} stocks")
    # distinct shifts per real stock, never 0 (no symbol is a real stock's own path)
    shifts = np.stack([rng.choice(np.arange(1, t - 1), size=copies, replace=False)
                       for _ in range(m)], axis=1)  # (copies, m)
    shift = shifts[np.arange(n) // m, base]
    scale = rng.uniform(0.6, 1.4, size=n)
    start = rng.uniform(10.0, 200.0, size=n)
    rows = (np.arange(t - 1)[:, None] + shift[None, :]) % (t - 1)
    synth = own[rows, base[None, :]] * scale[None, :] + market[:, None]
    log_px = np.vstack([np.zeros((1, n)), np.cumsum(synth, axis=0)]) + np.log(start)[None, :]
    width = len(str(n - 1))
    symbols = tuple(f"SYN{i:0{max(width, 3)}d}" for i in range(n))
    return Bars(index=real.index, symbols=symbols, close=np.exp(log_px),
                source=f"bundled:{SYNTHETIC_UNIVERSE} (SYNTHETIC)")
