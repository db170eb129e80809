import numpy as np
import pandas as pd
import pytest

from mltrader.data.bars import Bars
from mltrader.data.datasets import DATASETS, load_bundled
from mltrader.errors import DataError
from mltrader.testing import synthetic_bars

IDX = pd.date_range("2020-01-01", periods=3, freq="D", tz="UTC")


def test_valid_bars_and_conversions():
    b = synthetic_bars(50, 3, ohlc=True)
    assert b.shape == (50, 3) and not b.close_only
    long = b.to_long()
    assert len(long) == 150 and set(long.columns) >= {"date", "symbol", "open", "close"}
    assert b.frame("close").shape == (50, 3)
    with pytest.raises(ValueError):
        b.close[0, 0] = 1.0  # arrays are read-only


def test_naive_index_becomes_utc():
    b = Bars(index=IDX.tz_localize(None), symbols=("A",), close=np.ones((3, 1)))
    assert str(b.index.tz) == "UTC"


@pytest.mark.parametrize(
    ("index", "close", "needle"),
    [
        (IDX[[0, 2, 1]], np.ones((3, 1)), "not sorted at row 3"),
        (IDX[[0, 1, 1]], np.ones((3, 1)), "duplicate timestamp 2020-01-02"),
        (IDX, np.array([[1.0], [0.0], [1.0]]), "must be finite and > 0"),
        (IDX, np.array([[1.0], [-2.0], [1.0]]), "2020-01-02"),
        (IDX, np.array([[1.0], [np.inf], [1.0]]), "close of A"),
    ],
)
def test_invalid_bars_name_the_row(index, close, needle):
    with pytest.raises(DataError, match=needle):
        Bars(index=index, symbols=("A",), close=close, source="f.csv")


def test_high_below_low_is_rejected():
    c = np.array([[10.0], [10.0], [10.0]])
    with pytest.raises(DataError, match="high < low for A on 2020-01-02"):
        Bars(index=IDX, symbols=("A",), close=c, open=c, high=np.array([[11.0], [9.0], [11.0]]),
             low=np.array([[9.0], [9.5], [9.0]]))


def test_nan_means_did_not_trade_and_is_allowed():
    c = np.array([[np.nan, 1.0], [2.0, 1.0], [2.0, np.nan]])
    b = Bars(index=IDX, symbols=("A", "B"), close=c)
    assert np.isnan(b.close[0, 0])
    assert len(b.to_long()) == 4


def test_select_errors():
    b = synthetic_bars(30, 2)
    with pytest.raises(DataError, match="unknown symbol 'ZZZ'; available: S00, S01"):
        b.select(["ZZZ"])
    with pytest.raises(DataError, match="no data between 1990-01-01 and 1990-12-31"):
        b.select(None, "1990-01-01", "1990-12-31")
    sub = b.select(["S01"], "2000-01-05", "2000-01-10")
    assert sub.symbols == ("S01",) and len(sub) == 4


def test_bundled_datasets_load():
    for name in DATASETS:
        b = load_bundled(name)
        assert len(b) > (1400 if name == "ashare_csi300" else 4000)
    stocks = load_bundled("sp500_20stocks")
    assert stocks.close_only and len(stocks.symbols) == 20
    assert str(stocks.index[0].date()) == "1990-01-02"
    ohlcv = load_bundled("sp500_ohlcv")
    assert not ohlcv.close_only and ohlcv.volume is not None
    cn = load_bundled("ashare_csi300")
    assert len(cn.symbols) == 44 and str(cn.index[0].date()) == "2017-01-03"
    assert "600519.SH" in cn.symbols and not cn.close_only
    assert str(ohlcv.index[0].date()) == "1999-01-04"


def test_unknown_bundled_dataset():
    with pytest.raises(DataError, match="mltrader data list"):
        load_bundled("nasdaq")
