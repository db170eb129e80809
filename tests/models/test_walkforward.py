import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, RegressorMixin

from mltrader.errors import ConfigError
from mltrader.models.registry import make_model
from mltrader.models.walkforward import make_folds, walk_forward_predict

INDEX = pd.bdate_range("2000-01-03", "2006-12-29", tz="UTC")


def test_yearly_folds_cover_test_years_and_embargo_the_label():
    folds = make_folds(INDEX, first_test_year=2003, retrain="yearly", lookahead=2, embargo=3)
    assert [INDEX[f.test_start].year for f in folds] == [2003, 2004, 2005, 2006]
    for f in folds:
        assert f.train_start == 0  # expanding
        assert f.train_stop == f.test_start - 5  # 2-bar label + 3 extra bars
        assert INDEX[f.test_stop - 1].year == INDEX[f.test_start].year
    assert folds[-1].test_stop == len(INDEX)
    for a, b in zip(folds, folds[1:], strict=False):
        assert a.test_stop == b.test_start


def test_rolling_and_monthly_folds():
    folds = make_folds(INDEX, first_test_year=2004, retrain="monthly", lookahead=2,
                       window="rolling", train_years=2)
    assert len(folds) == 36
    f = folds[0]
    assert (INDEX[f.test_start] - INDEX[f.train_start]).days <= 2 * 366


def test_first_test_year_outside_data():
    with pytest.raises(ConfigError, match="after the data's last bar"):
        make_folds(INDEX, first_test_year=2030, retrain="yearly", lookahead=2)
    with pytest.raises(ConfigError, match="no training data"):
        make_folds(INDEX, first_test_year=1990, retrain="yearly", lookahead=2)


class _Recorder(BaseEstimator, RegressorMixin):
    """Remembers which training rows it saw (the first feature is the bar position)."""

    seen: list[np.ndarray] = []

    def fit(self, x, y):
        _Recorder.seen.append(x[:, 0].copy())
        return self

    def predict(self, x):
        return np.zeros(len(x))


def test_training_rows_never_reach_the_test_window():
    t, n = len(INDEX), 3
    x = np.repeat(np.arange(t, dtype=float)[:, None, None], n, axis=1)
    y = np.random.default_rng(0).normal(size=(t, n))
    folds = make_folds(INDEX, first_test_year=2003, retrain="quarterly", lookahead=2)
    _Recorder.seen = []
    pred, reports = walk_forward_predict(x, y, folds, _Recorder, min_train_rows=10)
    for fold, seen in zip(folds, _Recorder.seen, strict=True):
        assert seen.max() == fold.test_start - 3  # label of the last row ends at test_start-1
    assert np.isnan(pred[: folds[0].test_start]).all()
    assert not np.isnan(pred[folds[0].test_start :]).any()
    assert len(reports) == len(folds)


def test_scaler_is_fit_on_training_rows_only():
    rng = np.random.default_rng(1)
    t, n = len(INDEX), 2
    x = rng.normal(size=(t, n, 1))
    y = rng.normal(size=(t, n))
    folds = make_folds(INDEX, first_test_year=2006, retrain="yearly", lookahead=2)
    fitted = []

    def factory():
        m = make_model("ridge", {}, 0)
        fitted.append(m)
        return m

    walk_forward_predict(x, y, folds, factory, min_train_rows=10)
    scaler = fitted[0].steps[0][1]
    train = x[: folds[0].train_stop].reshape(-1)
    assert scaler.mean_[0] == pytest.approx(train.mean())
    assert scaler.mean_[0] != pytest.approx(x.reshape(-1).mean())


def test_too_few_training_rows_is_a_clear_error():
    x = np.ones((len(INDEX), 1, 1))
    y = np.ones((len(INDEX), 1))
    folds = make_folds(INDEX, first_test_year=2001, retrain="yearly", lookahead=2)
    with pytest.raises(ConfigError, match="min_train_rows"):
        walk_forward_predict(x, y, folds, lambda: make_model("ridge", {}, 0),
                             min_train_rows=10_000, index=INDEX)


def test_lightgbm_is_deterministic():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 5))
    y = x[:, 0] * 0.1 + rng.normal(size=3000)
    a = make_model("lightgbm", {"n_estimators": 20}, 7).fit(x, y).predict(x)
    b = make_model("lightgbm", {"n_estimators": 20}, 7).fit(x, y).predict(x)
    assert np.array_equal(a, b)


def test_fold_message_shows_hit_rate_where_no_ic_exists() -> None:
    """One symbol has no cross-sectional IC: the progress bar says why and shows the hit
    rate instead of 'IC +nan'."""
    from mltrader.models.walkforward import fold_message

    pred = np.array([[0.1], [-0.2], [0.3], [np.nan]])
    real = np.array([[0.01], [0.02], [0.03], [0.01]])
    assert fold_message(pred, real, float("nan")) == ("hit rate 66.7% (IC ranks >= 3 "
                                                      "symbols a bar)")
    assert fold_message(pred, real, 0.0123) == "IC +0.012"
    assert "nan" not in fold_message(np.full((2, 1), np.nan), real[:2], float("nan"))


def _scipy_daily_ic(pred, realised):
    """The per-bar loop `daily_ic` replaced: scipy's spearmanr on each bar's valid pairs."""
    from scipy.stats import spearmanr

    out = np.full(pred.shape[0], np.nan)
    for t in range(pred.shape[0]):
        ok = ~(np.isnan(pred[t]) | np.isnan(realised[t]))
        if ok.sum() < 3:
            continue
        with np.errstate(invalid="ignore"):  # ptp of [inf, inf] is inf - inf
            if np.ptp(pred[t, ok]) > 0 and np.ptp(realised[t, ok]) > 0:
                out[t] = spearmanr(pred[t, ok], realised[t, ok]).statistic
    return out


_CELL = st.one_of(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 1.0, 2.0]),
                  st.floats(-1e6, 1e6, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.lists(st.lists(_CELL, min_size=n, max_size=n), min_size=1, max_size=8),
    st.lists(st.lists(_CELL, min_size=n, max_size=n), min_size=1, max_size=8))))
def test_daily_ic_is_bit_for_bit_scipys_spearman(rows):
    """Ties, NaN, infinities, constant bars, fewer than 3 pairs: the same floats."""
    from mltrader.models.walkforward import daily_ic

    k = min(len(rows[0]), len(rows[1]))
    pred, realised = np.array(rows[0][:k]), np.array(rows[1][:k])
    assert np.array_equal(daily_ic(pred, realised), _scipy_daily_ic(pred, realised),
                          equal_nan=True)


def test_daily_ic_matches_scipy_on_a_real_sized_block():
    from mltrader.models.walkforward import daily_ic

    rng = np.random.default_rng(3)
    pred = rng.normal(size=(300, 40))
    realised = np.round(rng.normal(size=(300, 40)), 2)  # many ties
    pred[rng.random(pred.shape) < 0.1] = np.nan
    got = daily_ic(pred, realised)
    assert np.isfinite(got).sum() > 290
    assert np.array_equal(got, _scipy_daily_ic(pred, realised), equal_nan=True)
