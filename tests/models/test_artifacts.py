"""Model artifacts: pickle-free round trips and a sha256 manifest that loading enforces."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeRegressor

import mltrader.models.artifacts as artifacts
from mltrader.errors import MltraderError
from mltrader.models.artifacts import ArtifactError, LightGBMBoosterModel, load_model, save_model
from mltrader.models.registry import make_model

lightgbm = pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 6))
    y = X[:, 0] - 0.5 * X[:, 1] ** 2 + 0.3 * rng.normal(size=400)
    X_new = rng.normal(size=(250, 6))
    return X, y, X_new


def _small_lgbm_params():
    return dict(n_estimators=40, min_child_samples=20, n_jobs=1)


# ----------------------------------------------------------------------------- round trips


def test_lgbm_regressor_round_trip(tmp_path, data):
    X, y, X_new = data
    model = make_model("lightgbm", _small_lgbm_params(), seed=3).fit(X, y)
    manifest = save_model(model, tmp_path, name="lgbm", extra={"fold": 2})
    assert manifest["format"] == "lightgbm-text"
    assert manifest["class"] == "lightgbm.sklearn.LGBMRegressor"
    assert set(manifest["files"]) == {"booster.txt", "params.json"}
    assert manifest["extra"] == {"fold": 2}
    loaded = load_model(tmp_path / "lgbm")
    assert type(loaded) is lightgbm.LGBMRegressor
    assert np.array_equal(loaded.predict(X_new), model.predict(X_new))
    assert loaded.get_params() == model.get_params()
    assert loaded.n_features_in_ == 6
    assert loaded.booster_.num_trees() == model.booster_.num_trees()
    # the booster is stored as LightGBM's text format
    assert (tmp_path / "lgbm" / "booster.txt").read_text().startswith("tree\n")


def test_lgbm_regressor_with_dataframe_feature_names(tmp_path, data):
    pd = pytest.importorskip("pandas")
    X, y, X_new = data
    cols = [f"f{i}" for i in range(X.shape[1])]
    model = lightgbm.LGBMRegressor(**_small_lgbm_params(), verbose=-1).fit(
        pd.DataFrame(X, columns=cols), y
    )
    save_model(model, tmp_path)
    loaded = load_model(tmp_path / "model")
    new = pd.DataFrame(X_new, columns=cols)
    assert np.array_equal(loaded.predict(new), model.predict(new))
    assert list(loaded.feature_names_in_) == cols


@pytest.mark.parametrize("labels", [np.array([0, 1]), np.array(["down", "up"])])
def test_lgbm_binary_classifier_round_trip(tmp_path, data, labels):
    X, y, X_new = data
    yc = labels[(y > 0).astype(int)]
    model = lightgbm.LGBMClassifier(**_small_lgbm_params(), verbose=-1).fit(X, yc)
    save_model(model, tmp_path, name="clf")
    loaded = load_model(tmp_path / "clf")
    assert type(loaded) is lightgbm.LGBMClassifier
    assert np.array_equal(loaded.predict_proba(X_new), model.predict_proba(X_new))
    assert np.array_equal(loaded.predict(X_new), model.predict(X_new))
    assert np.array_equal(loaded.classes_, model.classes_)
    assert loaded.n_classes_ == 2


def test_lgbm_multiclass_classifier_round_trip(tmp_path, data):
    X, y, X_new = data
    yc = np.digitize(y, [-0.5, 0.5]) + 10  # labels 10, 11, 12
    model = lightgbm.LGBMClassifier(**_small_lgbm_params(), verbose=-1).fit(X, yc)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path / "model")
    assert np.array_equal(loaded.predict_proba(X_new), model.predict_proba(X_new))
    assert np.array_equal(loaded.predict(X_new), model.predict(X_new))


def test_lgbm_fallback_wrapper(tmp_path, data, monkeypatch):
    """If LightGBM's private wrapper attributes ever vanish, load returns LightGBMBoosterModel."""
    X, y, X_new = data
    reg = make_model("lightgbm", _small_lgbm_params(), seed=1).fit(X, y)
    clf = lightgbm.LGBMClassifier(**_small_lgbm_params(), verbose=-1).fit(X, y > 0)
    save_model(reg, tmp_path, name="reg")
    save_model(clf, tmp_path, name="clf")
    monkeypatch.setattr(artifacts, "_lightgbm_wrapper_supported", lambda cls: False)
    reg2 = load_model(tmp_path / "reg")
    clf2 = load_model(tmp_path / "clf")
    assert isinstance(reg2, LightGBMBoosterModel) and isinstance(clf2, LightGBMBoosterModel)
    assert np.array_equal(reg2.predict(X_new), reg.predict(X_new))
    assert np.array_equal(clf2.predict_proba(X_new), clf.predict_proba(X_new))
    assert np.array_equal(clf2.predict(X_new), clf.predict(X_new))


def test_wrapper_supported_on_installed_lightgbm():
    assert artifacts._lightgbm_wrapper_supported(lightgbm.LGBMRegressor)
    assert artifacts._lightgbm_wrapper_supported(lightgbm.LGBMClassifier)


@pytest.mark.parametrize(
    "factory, classify",
    [
        (lambda: make_model("ridge", {}, seed=0), False),
        (lambda: RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0), False),
        (lambda: DecisionTreeRegressor(max_depth=5, random_state=0), False),
        (lambda: SVC(), True),  # probability=False is the default (passing it warns in 1.9)
        (lambda: LogisticRegression(), True),
    ],
    ids=["ridge-pipeline", "random-forest", "decision-tree", "svc", "logistic"],
)
def test_sklearn_round_trip(tmp_path, data, factory, classify):
    X, y, X_new = data
    target = (y > 0).astype(int) if classify else y
    model = factory().fit(X, target)
    manifest = save_model(model, tmp_path)
    assert manifest["format"] == "skops"
    assert manifest["class"] == f"{type(model).__module__}.{type(model).__qualname__}"
    assert list(manifest["files"]) == ["model.skops"]
    loaded = load_model(tmp_path / "model")
    assert type(loaded) is type(model)
    assert np.array_equal(loaded.predict(X_new), model.predict(X_new))


# ----------------------------------------------------------------------------- manifest


def test_manifest_content_matches_files(tmp_path, data):
    X, y, _ = data
    model = make_model("ridge", {}, seed=0).fit(X, y)
    returned = save_model(model, tmp_path, name="r", extra={"note": "x", "k": [1, 2]})
    root = tmp_path / "r"
    on_disk = json.loads((root / "manifest.json").read_text())
    assert on_disk == returned
    assert set(on_disk) == {"format", "class", "files", "mltrader_version", "extra"}
    assert on_disk["class"] == "sklearn.pipeline.Pipeline"
    assert "manifest.json" not in on_disk["files"]
    for rel, digest in on_disk["files"].items():
        assert re.fullmatch(r"[0-9a-f]{64}", digest)
        assert digest == hashlib.sha256((root / rel).read_bytes()).hexdigest()
    import mltrader

    assert on_disk["mltrader_version"] == mltrader.__version__
    # nothing but the artifact is left in the parent directory (no temp files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "model.skops"]


def test_save_overwrites_existing_artifact(tmp_path, data):
    X, y, X_new = data
    save_model(make_model("ridge", {}, seed=0).fit(X, y), tmp_path)
    tree = DecisionTreeRegressor(max_depth=3).fit(X, y)
    save_model(tree, tmp_path)
    loaded = load_model(tmp_path / "model")
    assert isinstance(loaded, DecisionTreeRegressor)
    assert np.array_equal(loaded.predict(X_new), tree.predict(X_new))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_save_refuses_to_clobber_non_artifact_dir(tmp_path, data):
    X, y, _ = data
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not a model artifact"):
        save_model(make_model("ridge", {}, seed=0).fit(X, y), tmp_path)
    assert (tmp_path / "model" / "notes.txt").read_text() == "mine"


def test_unsupported_objects_and_params(tmp_path, data):
    X, y, _ = data
    with pytest.raises(ArtifactError, match="cannot save model of type"):
        save_model(object(), tmp_path)
    with pytest.raises(ArtifactError, match="not fitted"):
        save_model(lightgbm.LGBMRegressor(), tmp_path)
    model = lightgbm.LGBMRegressor(
        **_small_lgbm_params(), verbose=-1, random_state=np.random.RandomState(0)
    ).fit(X, y)
    with pytest.raises(ArtifactError, match="random_state"):
        save_model(model, tmp_path)
    assert list(tmp_path.iterdir()) == []  # the failed save left nothing behind


# ----------------------------------------------------------------------------- tampering


@pytest.fixture
def lgbm_artifact(tmp_path, data):
    X, y, _ = data
    model = make_model("lightgbm", _small_lgbm_params(), seed=0).fit(X, y)
    save_model(model, tmp_path, name="m")
    return tmp_path / "m"


def _flip_byte(path: Path, index: int = 100) -> None:
    raw = bytearray(path.read_bytes())
    raw[index] ^= 0x01
    path.write_bytes(bytes(raw))


def test_tampered_weights_file_is_refused(lgbm_artifact):
    _flip_byte(lgbm_artifact / "booster.txt")
    with pytest.raises(ArtifactError) as info:
        load_model(lgbm_artifact)
    msg = str(info.value)
    assert "booster.txt" in msg and "modified or is corrupt" in msg
    assert "\n" not in msg
    assert isinstance(info.value, MltraderError)


def test_tampered_skops_file_is_refused(tmp_path, data):
    X, y, _ = data
    save_model(RandomForestRegressor(n_estimators=3, random_state=0).fit(X, y), tmp_path)
    _flip_byte(tmp_path / "model" / "model.skops", index=-50)
    with pytest.raises(ArtifactError, match=r"'model\.skops'.*modified or is corrupt"):
        load_model(tmp_path / "model")


def test_tampered_params_file_is_refused(lgbm_artifact):
    path = lgbm_artifact / "params.json"
    path.write_text(path.read_text().replace('"n_estimators": 40', '"n_estimators": 41'))
    with pytest.raises(ArtifactError, match=r"'params\.json'.*modified or is corrupt"):
        load_model(lgbm_artifact)


def test_extra_file_is_refused(lgbm_artifact):
    (lgbm_artifact / "sneaky.py").write_text("print('hi')\n")
    with pytest.raises(ArtifactError, match=r"'sneaky\.py'.*modified or is corrupt"):
        load_model(lgbm_artifact)


def test_missing_file_is_refused(lgbm_artifact):
    (lgbm_artifact / "params.json").unlink()
    with pytest.raises(ArtifactError, match=r"'params\.json' is missing"):
        load_model(lgbm_artifact)


def test_missing_or_broken_manifest(lgbm_artifact, tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_model(tmp_path / "nope")
    (lgbm_artifact / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json is unreadable"):
        load_model(lgbm_artifact)
    (lgbm_artifact / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        load_model(lgbm_artifact)


def test_manifest_path_escape_is_refused(lgbm_artifact):
    mpath = lgbm_artifact / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["files"]["../outside.txt"] = "0" * 64
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="bad file name"):
        load_model(lgbm_artifact)


def test_manifest_class_swap_is_refused(lgbm_artifact):
    mpath = lgbm_artifact / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["class"] = "os.system"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a supported LightGBM"):
        load_model(lgbm_artifact)


# ----------------------------------------------------------------------------- skops trust


def not_a_sklearn_function(x):
    return x


def test_untrusted_skops_type_is_refused_on_save(tmp_path, data):
    X, y, _ = data
    model = FunctionTransformer(not_a_sklearn_function).fit(X)
    with pytest.raises(ArtifactError, match="not_a_sklearn_function.*not trusted"):
        save_model(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_untrusted_skops_type_is_refused_on_load(tmp_path, data):
    """A hand-built artifact whose hashes are right but whose skops file holds a foreign type."""
    import skops.io as sio

    X, y, _ = data
    root = tmp_path / "evil"
    root.mkdir()
    sio.dump(FunctionTransformer(not_a_sklearn_function).fit(X), root / "model.skops")
    manifest = {
        "format": "skops",
        "class": "sklearn.preprocessing._function_transformer.FunctionTransformer",
        "files": {"model.skops": hashlib.sha256((root / "model.skops").read_bytes()).hexdigest()},
        "mltrader_version": "0",
        "extra": {},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError) as info:
        load_model(root)
    assert "test_artifacts.not_a_sklearn_function" in str(info.value)
    assert "not trusted" in str(info.value)


# ----------------------------------------------------------------------------- torch (duck-typed)


class TinyNet:
    """Stand-in for mltrader.models.torch_models: save() -> [.safetensors, .json], load()."""

    def __init__(self, weight: np.ndarray, bias: float):
        self.weight = np.asarray(weight, dtype=np.float32)
        self.bias = float(bias)

    def predict(self, X):
        return np.asarray(X, dtype=np.float32) @ self.weight + np.float32(self.bias)

    def save(self, path: Path) -> list[Path]:
        from safetensors.numpy import save_file

        path = Path(path)
        weights = path / "weights.safetensors"
        config = path / "config.json"
        save_file({"weight": self.weight}, str(weights))
        config.write_text(json.dumps({"bias": self.bias}))
        return [weights, config]

    @classmethod
    def load(cls, path: Path) -> TinyNet:
        from safetensors.numpy import load_file

        path = Path(path)
        tensors = load_file(str(path / "weights.safetensors"))
        config = json.loads((path / "config.json").read_text())
        return cls(tensors["weight"], config["bias"])


@pytest.fixture
def tinynet_in_mltrader(monkeypatch):
    """Make TinyNet importable as mltrader.models._tinynet_for_tests.TinyNet."""
    pytest.importorskip("safetensors")
    module = types.ModuleType("mltrader.models._tinynet_for_tests")
    cls = type("TinyNet", (TinyNet,), {"__module__": module.__name__})
    module.TinyNet = cls
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return cls


def test_torch_duck_round_trip(tmp_path, data, tinynet_in_mltrader):
    X, _, X_new = data
    net = tinynet_in_mltrader(np.arange(6, dtype=np.float32) / 7, 0.25)
    manifest = save_model(net, tmp_path, name="net")
    assert manifest["format"] == "torch-safetensors"
    assert manifest["class"] == "mltrader.models._tinynet_for_tests.TinyNet"
    assert set(manifest["files"]) == {"weights.safetensors", "config.json"}
    loaded = load_model(tmp_path / "net")
    assert type(loaded) is tinynet_in_mltrader
    assert np.array_equal(loaded.predict(X_new), net.predict(X_new))


def test_torch_duck_saves_under_a_relative_directory(tmp_path, data, tinynet_in_mltrader,
                                                     monkeypatch):
    """The CLI saves under the relative runs/ folder: a save() that returns paths built on
    its (relative) root must not get the root joined on twice (every PyTorch config once
    failed this way from a fresh working directory)."""
    X, _, X_new = data
    monkeypatch.chdir(tmp_path)
    net = tinynet_in_mltrader(np.arange(6, dtype=np.float32) / 7, 0.25)
    manifest = save_model(net, Path("runs/r1/artifacts"), name="model")
    assert set(manifest["files"]) == {"weights.safetensors", "config.json"}
    loaded = load_model(Path("runs/r1/artifacts/model"))
    assert np.array_equal(loaded.predict(X_new), net.predict(X_new))


def test_torch_tampered_weights_are_refused(tmp_path, tinynet_in_mltrader):
    net = tinynet_in_mltrader(np.ones(6, dtype=np.float32), 0.0)
    save_model(net, tmp_path, name="net")
    _flip_byte(tmp_path / "net" / "weights.safetensors", index=-3)
    with pytest.raises(ArtifactError, match=r"'weights\.safetensors'.*modified or is corrupt"):
        load_model(tmp_path / "net")


def test_torch_class_outside_mltrader_is_not_imported(tmp_path):
    pytest.importorskip("safetensors")
    net = TinyNet(np.ones(6, dtype=np.float32), 0.0)  # lives in tests.models.test_artifacts
    manifest = save_model(net, tmp_path, name="net")
    assert manifest["class"].endswith("test_artifacts.TinyNet")
    with pytest.raises(ArtifactError, match="refusing to import class"):
        load_model(tmp_path / "net")


def test_save_writing_outside_artifact_is_refused(tmp_path, tinynet_in_mltrader):
    outside = tmp_path / "elsewhere.bin"

    class Escaper(tinynet_in_mltrader):
        def save(self, path):
            outside.write_bytes(b"x")
            return [outside]

    with pytest.raises(ArtifactError, match="outside the artifact"):
        save_model(Escaper(np.ones(6), 0.0), tmp_path / "arts")
    assert not (tmp_path / "arts" / "model").exists()


# ----------------------------------------------------------------------------- no pickle


def test_artifacts_source_has_no_pickle():
    source = Path(artifacts.__file__).read_text()
    for banned in ("pickle", "joblib", "torch.save", "torch.load", "cloudpickle", "dill"):
        assert banned not in source, banned


def test_real_torch_model_round_trip(tmp_path):
    """The other half of the contract: mltrader.models.torch_models, when it is installed."""
    pytest.importorskip("torch")
    tm = pytest.importorskip("mltrader.models.torch_models")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5, 3)).astype(np.float32)
    y = X[:, -1, 0]
    model = tm.LSTMRegressor(hidden=4, layers=1, epochs=1, threads=1).fit(X, y)
    manifest = save_model(model, tmp_path)
    assert manifest["format"] == "torch-safetensors"
    assert manifest["class"] == "mltrader.models.torch_models.LSTMRegressor"
    loaded = load_model(tmp_path / "model")
    assert np.array_equal(loaded.predict(X), model.predict(X))
