import numpy as np
import pandas as pd
import pytest
import talib

from mltrader.data.datasets import load_bundled
from mltrader.errors import ConfigError
from mltrader.features import indicators as ind
from mltrader.features.labels import LABEL_LOOKAHEAD, forward_return
from mltrader.features.registry import compute_features
from mltrader.testing import synthetic_bars


@pytest.fixture(scope="module")
def close() -> pd.DataFrame:
    return load_bundled("sp500_20stocks").frame("close").iloc[:1500]


def test_rsi_matches_talib(close):
    ours = ind.rsi(close, 14)
    for sym in ("AAPL", "XOM", "GE"):
        ref = talib.RSI(close[sym].to_numpy(), timeperiod=14)
        np.testing.assert_allclose(ours[sym].to_numpy(), ref, atol=1e-9, equal_nan=True)


def test_rsi_handles_leading_nans_like_talib(close):
    c = close[["AAPL"]].copy()
    c.iloc[:30] = np.nan
    ours = ind.rsi(c, 14)["AAPL"].to_numpy()
    ref = talib.RSI(close["AAPL"].to_numpy()[30:], timeperiod=14)
    np.testing.assert_allclose(ours[30:], ref, atol=1e-9, equal_nan=True)
    assert np.isnan(ours[:44]).all()


def test_sma_ratio_and_volatility_match_talib(close):
    x = close["MSFT"].to_numpy()
    np.testing.assert_allclose(ind.sma_ratio(close, 50)["MSFT"], x / talib.SMA(x, 50) - 1,
                               rtol=1e-10, atol=1e-12, equal_nan=True)
    logret = np.log(x[1:] / x[:-1])
    ref = talib.STDDEV(logret, 20, 1.0) * np.sqrt(20 / 19)  # talib uses ddof=0
    np.testing.assert_allclose(ind.volatility(close, 20)["MSFT"].to_numpy()[1:], ref,
                               rtol=1e-6, equal_nan=True)


def test_returns(close):
    r = ind.returns(close, 5)
    assert r["KO"].iloc[10] == pytest.approx(close["KO"].iloc[10] / close["KO"].iloc[5] - 1)
    assert r.iloc[:5].isna().all().all()


def test_compute_features_shapes_and_unknown_name():
    bars = synthetic_bars(300, 3)
    feats = compute_features(bars, ["ret_1", "rsi_14", "sma_ratio_200"])
    assert list(feats) == ["ret_1", "rsi_14", "sma_ratio_200"]
    assert all(f.shape == (300, 3) for f in feats.values())
    assert feats["sma_ratio_200"].iloc[:199].isna().all().all()
    assert feats["sma_ratio_200"].iloc[199:].notna().all().all()
    with pytest.raises(ConfigError, match="unknown feature 'macd'"):
        compute_features(bars, ["ret_1", "macd"])


@pytest.mark.parametrize(("fill", "field"), [("next_close", "close"), ("next_open", "open")])
def test_label_is_the_return_the_position_earns(fill, field):
    bars = synthetic_bars(50, 2, ohlc=True)
    y = forward_return(bars, fill)
    p = getattr(bars, field)
    t = 10
    # decided at t, filled at t+1, held until the next fill at t+2
    assert y.iloc[t, 0] == pytest.approx(p[t + 2, 0] / p[t + 1, 0] - 1)
    assert y.iloc[-LABEL_LOOKAHEAD:].isna().all().all()
    assert y.iloc[: -LABEL_LOOKAHEAD].notna().all().all()
