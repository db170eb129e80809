"""PyTorch sequence models: sklearn API, no-cheat scaling, determinism, pickle-free persistence."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from sklearn.base import clone  # noqa: E402

from mltrader.models.torch_models import (  # noqa: E402
    CNNClassifier,
    CNNLSTMRegressor,
    LSTMRegressor,
)

FAST = dict(epochs=2, batch_size=64, patience=2, threads=1)


def _tiny(cls, **kw):
    net = {"hidden": 8, "layers": 1} if cls is LSTMRegressor else {}
    if cls is CNNLSTMRegressor:
        net = {"channels": 4, "hidden": 8}
    if cls is CNNClassifier:
        net = {"channels": 4}
    return cls(**{**net, **FAST, **kw})


def _data(n=400, window=20, n_features=3, seed=0):
    """Windows of noise; the target is the mean of the last 5 bars of feature 0 (learnable)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, window, n_features))
    y = x[:, -5:, 0].mean(axis=1)
    return x, y


ALL = [LSTMRegressor, CNNLSTMRegressor, CNNClassifier]


def _target(cls, y):
    return (y > 0).astype(int) if cls is CNNClassifier else y


@pytest.mark.parametrize("cls", ALL)
def test_shapes_with_the_8_input_preset_and_window_60(cls):
    x, y = _data(n=200, window=60, n_features=8)
    m = _tiny(cls).fit(x, _target(cls, y))
    pred = m.predict(x[:37])
    assert pred.shape == (37,)
    assert m.n_features_in_ == 8 and m.window_ == 60
    if cls is CNNClassifier:
        assert set(np.unique(pred)) <= {0, 1}
        assert m.predict_proba(x[:37]).shape == (37, 2)
        assert list(m.classes_) == [0, 1]
    else:
        assert pred.dtype == np.float64
    with pytest.raises(ValueError, match="window"):
        m.predict(x[:5, :50])


def test_default_lstm_is_the_specified_architecture():
    m = LSTMRegressor()
    assert (m.hidden, m.layers, m.dropout) == (50, 2, 0.2)
    x, y = _data(n=120, window=10, n_features=8)
    m.set_params(epochs=1, threads=1).fit(x, y)
    lstm = m.net_.lstm
    assert (lstm.hidden_size, lstm.num_layers, lstm.dropout, lstm.input_size) == (50, 2, 0.2, 8)
    assert [(layer.input_size, layer.hidden_size) for layer in lstm.layers] == [(8, 50), (50, 50)]
    assert m.net_.head.out_features == 1


@pytest.mark.parametrize("cls", [LSTMRegressor, CNNLSTMRegressor])
def test_regressors_learn_an_easy_signal_out_of_sample(cls):
    x, y = _data(n=1400)
    m = _tiny(cls, epochs=15, patience=4, lr=1e-2).fit(x[:1000], y[:1000])
    corr = np.corrcoef(m.predict(x[1000:]), y[1000:])[0, 1]
    assert corr > 0.5


def test_cnn_classifier_probabilities_and_accuracy():
    x, y = _data(n=1400)
    yc = (y > 0).astype(int)
    c = _tiny(CNNClassifier, epochs=15, patience=4, lr=1e-2).fit(x[:1000], yc[:1000])
    proba = c.predict_proba(x[1000:])
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (c.predict(x[1000:]) == yc[1000:]).mean() > 0.7
    assert c.score(x[1000:], yc[1000:]) > 0.7  # ClassifierMixin


def test_classifier_keeps_arbitrary_binary_labels():
    x, y = _data(n=200)
    labels = np.where(y > 0, "up", "down")
    c = _tiny(CNNClassifier).fit(x, labels)
    assert list(c.classes_) == ["down", "up"]
    assert set(c.predict(x)) <= {"down", "up"}


@pytest.mark.parametrize("cls", ALL)
def test_same_seed_same_predictions(cls):
    x, y = _data(n=300)
    yy = _target(cls, y)
    a = _tiny(cls, seed=7).fit(x, yy)
    b = _tiny(cls, seed=7).fit(x, yy)
    c = _tiny(cls, seed=8).fit(x, yy)
    pa = a.predict_proba(x) if cls is CNNClassifier else a.predict(x)
    pb = b.predict_proba(x) if cls is CNNClassifier else b.predict(x)
    pc = c.predict_proba(x) if cls is CNNClassifier else c.predict(x)
    assert np.array_equal(pa, pb)
    assert not np.array_equal(pa, pc)


def test_fit_leaves_global_torch_state_alone():
    x, y = _data(n=200)
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _tiny(LSTMRegressor).fit(x, y).predict(x)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det


@pytest.mark.parametrize("cls", ALL)
def test_save_load_round_trip_without_pickle(cls, tmp_path, monkeypatch):
    x, y = _data(n=200)
    m = _tiny(cls).fit(x, _target(cls, y))
    before = m.predict_proba(x) if cls is CNNClassifier else m.predict(x)

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, no_pickle)
    written = m.save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model")
    monkeypatch.undo()

    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["params.json", "weights.safetensors"]
    assert sorted(p.name for p in written) == files
    assert all(p.is_file() for p in written)
    after = loaded.predict_proba(x) if cls is CNNClassifier else loaded.predict(x)
    assert np.array_equal(before, after)
    assert loaded.get_params() == m.get_params()
    np.testing.assert_array_equal(loaded.x_mean_, m.x_mean_)
    doc = json.loads((tmp_path / "model" / "params.json").read_text())
    assert doc["class"] == cls.__name__


def test_load_refuses_another_class_or_mismatched_weights(tmp_path):
    x, y = _data(n=200)
    _tiny(LSTMRegressor).fit(x, y).save(tmp_path / "a")
    with pytest.raises(ValueError, match="LSTMRegressor"):
        CNNLSTMRegressor.load(tmp_path / "a")
    # weights from a differently sized net under the same params.json
    _tiny(LSTMRegressor, hidden=4).fit(x, y).save(tmp_path / "b")
    (tmp_path / "b" / "params.json").write_text((tmp_path / "a" / "params.json").read_text())
    with pytest.raises(ValueError, match="does not fit"):
        LSTMRegressor.load(tmp_path / "b")


def test_scalers_use_training_rows_only():
    x, y = _data(n=400)
    x[340:] += 1000.0  # the last 15% (validation slice) lives elsewhere
    y = y.copy()
    y[340:] += 1000.0
    m = _tiny(LSTMRegressor, epochs=1, val_fraction=0.15, embargo=2).fit(x, y)
    n_train = 400 - 60 - 2  # ceil(0.15 * 400) validation samples, 2 embargoed
    np.testing.assert_allclose(m.x_mean_, x[:n_train].reshape(-1, 3).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.x_std_, x[:n_train].reshape(-1, 3).std(axis=0), rtol=1e-12)
    assert m.y_mean_ == pytest.approx(y[:n_train].mean(), rel=1e-12)
    assert abs(m.x_mean_).max() < 1.0


def test_early_stopping_keeps_the_best_validation_epoch():
    x, y = _data(n=300)
    m = _tiny(LSTMRegressor, epochs=6, patience=1, lr=5e-2).fit(x, y)
    val = [h["val_loss"] for h in m.history_]
    assert m.best_epoch_ == int(np.argmin(val)) + 1
    assert len(m.history_) <= 6
    assert len(m.history_) == 6 or len(m.history_) == m.best_epoch_ + 1
    # the kept weights reproduce the best validation loss
    xt = m._scale_x(x[-45:])
    yt = torch.from_numpy(m._targets(y[-45:]))
    loss = torch.nn.functional.mse_loss(m._forward(m.net_, xt), yt).item()
    assert loss == pytest.approx(min(val), rel=1e-5)


def test_clone_and_params():
    m = LSTMRegressor(hidden=16, epochs=3, seed=1)
    c = clone(m)
    assert c is not m and c.get_params() == m.get_params()
    c.set_params(hidden=8)
    assert c.hidden == 8 and m.hidden == 16
    x, y = _data(n=200)
    fitted = _tiny(CNNClassifier).fit(x, (y > 0).astype(int))
    fresh = clone(fitted)
    assert not hasattr(fresh, "net_")
    assert fresh.get_params() == fitted.get_params()


@pytest.mark.parametrize(
    "x_fn, y_fn, match",
    [
        (lambda x: x[:, :, 0], lambda y: y, "3-D"),
        (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), lambda y: y,
         "NaN"),
        (lambda x: x, lambda y: np.where(np.arange(len(y)) == 3, np.nan, y), "NaN"),
        (lambda x: x[:5], lambda y: y[:5], "too few samples"),
        (lambda x: x, lambda y: y[:-1], "1-D"),
    ],
)
def test_clear_errors(x_fn, y_fn, match):
    x, y = _data(n=100)
    with pytest.raises(ValueError, match=match) as info:
        _tiny(LSTMRegressor).fit(x_fn(x), y_fn(y))
    assert "\n" not in str(info.value)


def test_classifier_needs_two_classes_and_unfitted_predict_fails():
    x, _ = _data(n=100)
    with pytest.raises(ValueError, match="2 classes"):
        _tiny(CNNClassifier).fit(x, np.ones(100, dtype=int))
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        LSTMRegressor().predict(x)


def test_numpy_scalar_params_save_as_plain_json(tmp_path):
    x, y = _data(n=200)
    m = _tiny(LSTMRegressor, lr=np.float64(1e-3), epochs=np.int64(1)).fit(x, y)
    m.save(tmp_path / "m")
    loaded = LSTMRegressor.load(tmp_path / "m")
    assert loaded.lr == 1e-3 and type(loaded.lr) is float
    assert np.array_equal(loaded.predict(x), m.predict(x))


def test_fast_dropout_matches_nn_dropout_in_distribution():
    from mltrader.models.torch_nets import fast_dropout

    x = torch.ones(200_000)
    torch.manual_seed(0)
    out = fast_dropout(x, 0.2, training=True)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.8))
    assert abs(out.mean().item() - 1.0) < 0.01  # inverted dropout keeps the mean
    assert fast_dropout(x, 0.2, training=False) is x
