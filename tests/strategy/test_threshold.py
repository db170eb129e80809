import numpy as np
import pandas as pd

from mltrader.strategy.threshold import rebalance_mask, threshold_weights


def test_threshold_rule_long_flat_hold():
    idx = pd.bdate_range("2021-01-04", periods=6, tz="UTC")
    pred = pd.DataFrame({"A": [0.02, 0.0, -0.02, 0.005, np.nan, 0.02],
                         "B": [-0.02, 0.02, 0.0, 0.0, 0.0, 0.02]}, index=idx)
    w = threshold_weights(pred, 0.01, "daily")
    # A: long, hold (inside band), flat, hold flat, hold (no prediction), long
    # B: flat, long, hold, hold, hold, long
    np.testing.assert_allclose(w["A"], [1.0, 0.5, 0.0, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(w["B"], [0.0, 0.5, 1.0, 1.0, 1.0, 0.5])


def test_weekly_rebalance_decides_on_the_first_bar_of_each_week():
    idx = pd.bdate_range("2021-01-04", periods=10, tz="UTC")  # Mon 4th .. Fri 15th
    mask = rebalance_mask(idx, "weekly")
    assert list(np.flatnonzero(mask)) == [0, 5]
    pred = pd.DataFrame({"A": np.linspace(-0.01, 0.01, 10)}, index=idx)
    w = threshold_weights(pred, 0.0, "weekly")
    assert w["A"].isna().sum() == 8  # no decision between rebalances
    assert w["A"].iloc[0] == 0.0 and w["A"].iloc[5] == 1.0


def test_monthly_mask():
    idx = pd.bdate_range("2021-01-04", "2021-04-30", tz="UTC")
    mask = rebalance_mask(idx, "monthly")
    assert [str(d.date()) for d in idx[mask]] == [
        "2021-01-04", "2021-02-01", "2021-03-01", "2021-04-01"]
