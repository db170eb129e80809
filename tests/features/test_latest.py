import numpy as np

from mltrader.config import DEFAULT_FEATURES
from mltrader.data.datasets import load_bundled
from mltrader.features.latest import latest_features
from mltrader.features.registry import compute_features
from mltrader.models.walkforward import stack


def test_latest_row_equals_the_last_row_of_the_full_computation():
    bars = load_bundled("sp500_20stocks")
    names = [*DEFAULT_FEATURES, "sma_20", "ret_3"]
    for end in (300, 2000, len(bars)):
        tail = bars.select(None, bars.index[max(0, end - 260)], bars.index[end - 1])
        full = stack(compute_features(tail, names))[-1]
        np.testing.assert_allclose(latest_features(tail, names), full, rtol=1e-9, atol=1e-12)


def test_short_history_gives_nan_not_garbage():
    bars = load_bundled("sp500_20stocks").select(None, None, "1990-03-01")
    out = latest_features(bars, ["sma_ratio_200", "ret_1"])
    assert np.isnan(out[:, 0]).all() and np.isfinite(out[:, 1]).all()


def test_regime_features_are_computed_not_left_nan():
    bars = load_bundled("sp500_20stocks").select(None, None, "1995-12-31")
    names = ["regime_60", "market_regime_60"]
    out = latest_features(bars, names)
    full = stack(compute_features(bars, names))[-1]
    np.testing.assert_array_equal(out, full)
    assert np.isfinite(out).all()
