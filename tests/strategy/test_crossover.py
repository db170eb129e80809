import math

import numpy as np
import pytest

from mltrader.data.datasets import load_bundled
from mltrader.strategy.crossover import sma, sma_cross_signals


def fsum_sma(x: np.ndarray, n: int) -> np.ndarray:
    """The slow, exactly rounded reference: math.fsum over each window (as backtrader)."""
    out = np.full(len(x), np.nan)
    for t in range(n - 1, len(x)):
        w = x[t - n + 1 : t + 1]
        if not np.isnan(w).any():
            out[t] = math.fsum(w) / n
    return out


def reference_signals(x: np.ndarray, fast: int, slow: int):
    f, s = fsum_sma(x, fast), fsum_sma(x, slow)
    with np.errstate(invalid="ignore"):
        up = np.r_[False, (f[:-1] < s[:-1]) & (f[1:] > s[1:])]
        down = np.r_[False, (f[:-1] > s[:-1]) & (f[1:] < s[1:])]
    return up, down


def test_sma_matches_exact_window_sums_over_a_long_series():
    rng = np.random.default_rng(0)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 20_000)))
    np.testing.assert_allclose(sma(x, 50), fsum_sma(x, 50), rtol=1e-12, equal_nan=True)


def test_sma_nan_windows():
    x = np.arange(1.0, 11.0)
    x[4] = np.nan
    out = sma(x, 3)
    assert np.isnan(out[[0, 1, 4, 5, 6]]).all()
    assert out[7] == pytest.approx(7.0) and out[2] == pytest.approx(2.0)


def test_signals_equal_exact_reference_on_every_bundled_stock_in_any_panel():
    close = load_bundled("sp500_20stocks").close
    panel_up, panel_down = sma_cross_signals(close, 20, 100)
    for j in range(close.shape[1]):
        up, down = reference_signals(close[:, j], 20, 100)
        alone_up, alone_down = sma_cross_signals(close[:, j], 20, 100)
        assert np.array_equal(panel_up[:, j], up) and np.array_equal(panel_down[:, j], down)
        assert np.array_equal(alone_up, up) and np.array_equal(alone_down, down)


def test_a_real_tie_is_settled_exactly():
    # AMD's 20- and 100-bar means are both 7.095 at bar 3262 of the bundled set: a tie in
    # real numbers, where summation order alone would decide the crossing bar
    b = load_bundled("sp500_20stocks")
    amd = b.close[:, b.symbols.index("AMD")]
    fast, slow = math.fsum(amd[3243:3263]) / 20, math.fsum(amd[3163:3263]) / 100
    assert abs(fast - slow) < 1e-12 * slow  # 141.9 / 20 and 709.5 / 100
    up, down = sma_cross_signals(amd, 20, 100)
    ref_up, ref_down = reference_signals(amd, 20, 100)
    assert np.array_equal(up, ref_up) and np.array_equal(down, ref_down)


def test_bad_windows():
    with pytest.raises(ValueError):
        sma_cross_signals(np.ones(10), 5, 5)


@pytest.mark.parametrize("cols", [1, 3, 12])
def test_all_code_paths_agree_with_the_exact_reference(cols):
    """Clean few-column, clean many-column and with-NaN (late listing) paths."""
    rng = np.random.default_rng(cols)
    x = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (3000, cols)), axis=0))
    gappy = x.copy()
    gappy[:200, 0] = np.nan  # listed late
    for data in (x, gappy):
        up, down = sma_cross_signals(data, 20, 100)
        for j in range(cols):
            ref_up, ref_down = reference_signals(data[:, j], 20, 100)
            assert np.array_equal(up[:, j], ref_up) and np.array_equal(down[:, j], ref_down)
