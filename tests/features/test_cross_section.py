"""Cross-sectional labels (target.cross_section): per-bar ranks or z-scores, never across time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrader.config import config_from_dict
from mltrader.errors import ConfigError
from mltrader.features.labels import cross_sectional


def _labels() -> pd.DataFrame:
    return pd.DataFrame([[0.01, 0.03, -0.02, np.nan], [0.5, np.nan, np.nan, np.nan],
                         [0.0, 0.0, 0.1, 0.2]], columns=list("ABCD"))


def test_rank_is_each_bars_percentile_centred_with_unit_variance():
    out = cross_sectional(_labels(), "rank").to_numpy()
    s12 = np.sqrt(12.0)
    np.testing.assert_allclose(out[0, :3], (np.array([2, 3, 1]) / 3 - 0.5) * s12)
    assert np.isnan(out[0, 3]) and np.isnan(out[1]).all()  # one label in a bar: no ranking
    np.testing.assert_allclose(out[2], (np.array([1.5, 1.5, 3, 4]) / 4 - 0.5) * s12)


def test_zscore_and_none():
    lab = _labels()
    z = cross_sectional(lab, "zscore").to_numpy()
    row = lab.iloc[0, :3].to_numpy()
    np.testing.assert_allclose(z[0, :3], (row - row.mean()) / row.std(ddof=1))
    assert cross_sectional(lab, "none") is lab


def test_each_bar_uses_only_its_own_labels():
    lab = _labels()
    other = lab.copy()
    other.iloc[2] = [9.0, -9.0, 1.0, 2.0]
    a, b = cross_sectional(lab, "rank"), cross_sectional(other, "rank")
    np.testing.assert_array_equal(a.to_numpy()[:2], b.to_numpy()[:2])


def test_only_for_returns():
    with pytest.raises(ConfigError, match="cross_section"):
        config_from_dict({"target": {"kind": "direction", "cross_section": "rank"}})
