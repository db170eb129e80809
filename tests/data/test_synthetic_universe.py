"""The 500-symbol SYNTHETIC universe (`synthetic_universe_500`): built from the 20 bundled
stocks, the same on every call, labelled synthetic wherever it shows, no two series alike."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mltrader.data.datasets import (
    DATASETS,
    SYNTHETIC_UNIVERSE,
    SYNTHETIC_WARNING,
    load_bundled,
    synthetic_universe,
)

REAL = load_bundled("sp500_20stocks")


@pytest.fixture(scope="module")
def universe():
    return load_bundled(SYNTHETIC_UNIVERSE)


def test_shape_symbols_and_dates(universe) -> None:
    assert universe.close.shape == (len(REAL), 500)
    assert universe.symbols == tuple(f"SYN{i:03d}" for i in range(500))
    assert universe.index.equals(REAL.index)  # the real trading days, 1990-2022
    assert universe.close_only and np.isfinite(universe.close).all()
    assert (universe.close > 0).all()


def test_deterministic_and_fast() -> None:
    t0 = time.perf_counter()
    a = synthetic_universe(REAL, 500)
    elapsed = time.perf_counter() - t0
    b = synthetic_universe(REAL, 500)
    np.testing.assert_array_equal(a.close, b.close)  # bit for bit, every call
    np.testing.assert_array_equal(a.close, load_bundled(SYNTHETIC_UNIVERSE).close)
    assert elapsed < 3.0, elapsed  # 0.2-0.7 s on a shared 2-core machine; vectorised
    assert not np.array_equal(synthetic_universe(REAL, 500, seed=1).close, a.close)


def test_labelled_synthetic_everywhere() -> None:
    ds = DATASETS[SYNTHETIC_UNIVERSE]
    assert ds.synthetic and ds.description.startswith("SYNTHETIC")
    assert not any(d.synthetic for name, d in DATASETS.items() if name != SYNTHETIC_UNIVERSE)
    assert "SYNTHETIC" in load_bundled(SYNTHETIC_UNIVERSE).source
    assert "say nothing about real stocks" in SYNTHETIC_WARNING


def test_no_two_series_are_alike(universe) -> None:
    """No symbol repeats another or a real stock: their daily returns all differ, and no two
    are near copies (25 copies of each real stock, at different time shifts)."""
    rets = np.diff(np.log(universe.close), axis=0)
    real = np.diff(np.log(REAL.close), axis=0)
    both = np.hstack([rets, real])
    assert np.unique(both.round(12), axis=1).shape[1] == both.shape[1]
    corr = np.corrcoef(rets.T)
    np.fill_diagonal(corr, 0.0)
    assert np.abs(corr).max() < 0.9


def test_built_from_real_moves_with_a_real_market(universe) -> None:
    """Each symbol = the real market of the day + a real stock's own returns, shifted and
    rescaled: the cross-section looks like the real one (correlation, equal-weight risk)."""
    rets = np.diff(np.log(universe.close), axis=0)
    real = np.diff(np.log(REAL.close), axis=0)
    market = real.mean(axis=1)
    for k in (0, 137, 499):
        own, src = rets[:, k] - market, real[:, k % 20] - market
        ratio = own.std() / src.std()
        assert 0.6 - 1e-9 <= ratio <= 1.4 + 1e-9
        np.testing.assert_allclose(np.sort(own) / ratio, np.sort(src), atol=1e-9)
        assert not np.allclose(own / ratio, src)  # moved in time, not in place
    ew_vol, real_vol = rets.mean(axis=1).std(), market.std()
    assert 0.8 < ew_vol / real_vol < 1.25
    c = np.corrcoef(rets[:, ::10].T)[np.triu_indices(50, 1)]
    assert 0.2 < np.median(c) < 0.5  # the real 20: 0.30


def test_a_run_on_it_carries_the_synthetic_warning() -> None:
    from mltrader.config import config_from_dict
    from mltrader.pipeline import SURVIVORSHIP_WARNING, run

    cfg = config_from_dict({
        "data": {"source": "bundled", "dataset": SYNTHETIC_UNIVERSE,
                 "symbols": ["SYN000", "SYN021", "SYN499"], "start": "2016-01-01",
                 "end": "2019-06-30"},
        "model": {"name": "ridge"},
        "walk_forward": {"first_test_year": 2019},
    })
    out = run(cfg)
    assert SYNTHETIC_WARNING in out.warnings
    assert SURVIVORSHIP_WARNING not in out.warnings


def test_backtest_and_compare_reports_warn_alike_per_dataset() -> None:
    """One rule decides the data warnings of every report (backtest and compare)."""
    from mltrader.config import config_from_dict
    from mltrader.pipeline import SURVIVORSHIP_WARNING, dataset_warnings

    def warned(data):
        return dataset_warnings(config_from_dict({"data": data}))

    assert warned({"source": "bundled", "dataset": SYNTHETIC_UNIVERSE}) == [SYNTHETIC_WARNING]
    assert warned({"source": "bundled", "dataset": "sp500_20stocks"}) == [SURVIVORSHIP_WARNING]
    assert warned({"source": "bundled", "dataset": "sp500_ohlcv"}) == []
