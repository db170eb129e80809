"""Save and load trained models as plain data files, behind a sha256 manifest checked on load.

An artifact is a directory ``directory/name/`` holding the model's files and ``manifest.json``::

    {"format": "lightgbm-text" | "skops" | "torch-safetensors",
     "class": "<module.Class>",
     "files": {"<relative posix path>": "<sha256 hex of the file bytes>", ...},
     "mltrader_version": "...",
     "extra": {...}}

``manifest.json`` is not in its own file list. `load_model` recomputes every file's sha256 and
refuses (`ArtifactError`) an artifact with a changed, missing or unlisted file before it reads
any model bytes.

Formats:

* ``lightgbm-text`` - fitted ``LGBMRegressor`` / ``LGBMClassifier``: ``booster.txt`` (LightGBM's
  own text model format) and ``params.json`` (``get_params()`` plus the few fitted attributes the
  scikit-learn wrapper needs: feature count, classes, objective). LightGBM 4.7 has no public
  way to rebuild a fitted wrapper from a Booster, so loading builds the estimator from its params
  and sets the same private attributes ``fit()`` sets (``_Booster``, ``fitted_``,
  ``_n_features``, ``_n_classes``, ``_classes``, ``_le``, ...). If a future LightGBM no longer
  has those attributes, loading falls back to `LightGBMBoosterModel`, a small estimator around
  the Booster with ``predict`` (and ``predict_proba`` for classifiers).
* ``skops`` - any other scikit-learn estimator or pipeline, written with ``skops.io.dump``.
  Loading passes ``skops.io.load`` an explicit trusted list: the file's untrusted types, each of
  which must start with ``sklearn.`` or ``numpy.``; any other type is refused by name.
* ``torch-safetensors`` - duck-typed: an object with ``save(path: Path) -> list[Path]`` (``path``
  is the artifact directory; it returns the files it wrote there, e.g. ``.safetensors`` +
  ``.json``) and a classmethod ``load(path)``. The class is re-imported on load only if its
  module is inside the ``mltrader`` package; nothing else is ever imported from a manifest.

Every artifact is written into a temporary sibling directory and moved into place with
``os.replace``, so a crash never leaves a half-written artifact under the final name.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from mltrader.errors import MltraderError

MANIFEST = "manifest.json"
FORMAT_LIGHTGBM = "lightgbm-text"
FORMAT_SKOPS = "skops"
FORMAT_TORCH = "torch-safetensors"
FORMATS = (FORMAT_LIGHTGBM, FORMAT_SKOPS, FORMAT_TORCH)

SKOPS_FILE = "model.skops"
LGBM_BOOSTER_FILE = "booster.txt"
LGBM_PARAMS_FILE = "params.json"
# Type-name prefixes a skops file may contain (beyond skops' own default-trusted types).
SKOPS_ALLOWED_PREFIXES = ("sklearn.", "numpy.")
# Only classes from these modules may be imported by `load_model` for duck-typed (torch) models.
IMPORT_ALLOWED_PACKAGE = "mltrader"
_LGBM_CLASSES = {
    "lightgbm.sklearn.LGBMRegressor": "LGBMRegressor",
    "lightgbm.sklearn.LGBMClassifier": "LGBMClassifier",
}
# Private attributes of LightGBM's sklearn wrapper (4.x) that `fit()` sets and `predict` reads.
_LGBM_PRIVATE = (
    "_Booster",
    "_n_features",
    "_n_features_in",
    "_objective",
    "_n_classes",
    "_classes",
    "_class_map",
    "_fitted_with_feature_names",
    "_best_iteration",
    "_best_score",
    "_evals_result",
)


class ArtifactError(MltraderError):
    """A model artifact that cannot be saved or loaded: modified, corrupt, or untrusted."""


# ----------------------------------------------------------------------------- helpers


def _class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_via(path: Path, writer: Callable[[Path], Any]) -> None:
    """Let ``writer`` write a temp file next to ``path``, then move it into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    _atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def _json_safe(value: Any, where: str) -> Any:
    """``value`` as plain JSON; ArtifactError naming ``where`` for anything that is not data."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int | float):
        if isinstance(value, float) and not np.isfinite(value):
            raise ArtifactError(f"cannot save model: {where} = {value!r} is not finite")
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _json_safe(v, f"{where}[{k!r}]") for k, v in value.items()}
        # Non-string keys (e.g. class_weight={0: 1.0, 1: 3.0}) keep their type as pairs.
        return {
            "__items__": [
                [_json_safe(k, f"{where} key"), _json_safe(v, f"{where}[{k!r}]")]
                for k, v in value.items()
            ]
        }
    raise ArtifactError(
        f"cannot save model: {where} = {value!r} ({_class_path(value)}) is not plain data; "
        "set it to a number, string or None before saving"
    )


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__items__"}:
            return {_from_json(k): _from_json(v) for k, v in value["__items__"]}
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _list_files(root: Path) -> list[str]:
    """Every file under ``root`` except the manifest, as sorted relative posix paths."""
    out = []
    for path in root.rglob("*"):
        if path.is_file() or path.is_symlink():
            rel = path.relative_to(root).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def _safe_relpath(rel: str, root: Path) -> Path:
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        raise ArtifactError(f"model artifact {root}: bad file name {rel!r} in {MANIFEST}")
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise ArtifactError(f"model artifact {root}: bad file name {rel!r} in {MANIFEST}")
    return root / rel


# ----------------------------------------------------------------------------- save


def _is_lightgbm(model: Any) -> bool:
    return _class_path(model) in _LGBM_CLASSES


def _is_duck_saveable(model: Any) -> bool:
    save = getattr(model, "save", None)
    load = inspect.getattr_static(type(model), "load", None)
    return callable(save) and isinstance(load, classmethod)


def _save_lightgbm(model: Any, root: Path) -> list[str]:
    if not getattr(model, "fitted_", False):
        raise ArtifactError(f"cannot save {type(model).__name__}: it is not fitted; call fit first")
    params = {k: _json_safe(v, f"param {k!r}") for k, v in model.get_params().items()}
    objective = model._objective
    if not isinstance(objective, str):
        raise ArtifactError(
            f"cannot save {type(model).__name__}: objective {objective!r} is not a built-in "
            "LightGBM objective name, so it cannot be saved as data"
        )
    fitted: dict[str, Any] = {
        "objective": objective,
        "n_features": int(model._n_features),
        "n_features_in": int(model._n_features_in),
        "fitted_with_feature_names": bool(getattr(model, "_fitted_with_feature_names", False)),
        "n_classes": int(getattr(model, "_n_classes", -1)),
    }
    classes = getattr(model, "_classes", None)
    if classes is not None:
        classes = np.asarray(classes)
        if classes.dtype.kind not in "biufUO":
            raise ArtifactError(f"cannot save model: class labels of dtype {classes.dtype}")
        fitted["classes"] = _json_safe(classes.tolist(), "classes_")
        fitted["classes_dtype"] = classes.dtype.str if classes.dtype.kind != "O" else "object"
    _atomic_write_via(root / LGBM_BOOSTER_FILE, lambda p: model.booster_.save_model(str(p)))
    _write_json(root / LGBM_PARAMS_FILE, {"params": params, "fitted": fitted})
    return [LGBM_BOOSTER_FILE, LGBM_PARAMS_FILE]


def _check_skops_types(types: list[str], where: str) -> None:
    for name in types:
        if not name.startswith(SKOPS_ALLOWED_PREFIXES):
            raise ArtifactError(
                f"{where}: type {name!r} is not trusted (only {', '.join(SKOPS_ALLOWED_PREFIXES)}"
                " types may be loaded); refusing to load it"
            )


def _save_skops(model: Any, root: Path) -> list[str]:
    import skops.io as sio

    path = root / SKOPS_FILE
    _atomic_write_via(path, lambda p: sio.dump(model, p))
    # Fail now rather than at load time if the model holds a type load_model would refuse.
    _check_skops_types(sio.get_untrusted_types(file=path), f"cannot save {type(model).__name__}")
    return [SKOPS_FILE]


def _save_duck(model: Any, root: Path) -> list[str]:
    # The model gets an absolute root, so the paths it returns are absolute or relative to
    # the root, never relative to the working directory (a relative `runs/` root once had
    # its prefix joined on twice: every PyTorch config failed to save from the CLI).
    root = root.resolve()
    written = model.save(root)
    if not isinstance(written, list | tuple) or not written:
        raise ArtifactError(
            f"cannot save {type(model).__name__}: its save() must return the list of files it "
            f"wrote, got {written!r}"
        )
    rels = []
    for item in written:
        path = Path(item)
        path = path if path.is_absolute() else root / path
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise ArtifactError(
                f"cannot save {type(model).__name__}: save() wrote {item} outside the artifact "
                f"directory {root}"
            ) from None
        if not path.is_file():
            raise ArtifactError(
                f"cannot save {type(model).__name__}: save() listed {item}, which is not a file"
            )
        rels.append(rel)
    return sorted(set(rels))


def save_model(
    model: Any, directory: Path, *, name: str = "model", extra: dict | None = None
) -> dict:
    """Write ``model`` to ``directory/name/`` with a sha256 manifest; return the manifest.

    An existing artifact of the same name is replaced; an existing directory of that name that is
    not an artifact (no ``manifest.json``, not empty) is left alone and `ArtifactError` raised.
    """
    from mltrader import __version__

    directory = Path(directory)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ArtifactError(f"cannot save model: bad artifact name {name!r}; use a plain name")
    extra_json = _json_safe(dict(extra or {}), "extra")
    target = directory / name
    if target.exists() and not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise ArtifactError(
            f"cannot save model to {target}: it exists and is not a model artifact; "
            "choose another name or remove it"
        )

    if _is_lightgbm(model):
        fmt, saver = FORMAT_LIGHTGBM, _save_lightgbm
    elif _is_duck_saveable(model):
        fmt, saver = FORMAT_TORCH, _save_duck
    elif isinstance(model, BaseEstimator):
        fmt, saver = FORMAT_SKOPS, _save_skops
    else:
        raise ArtifactError(
            f"cannot save model of type {_class_path(model)}: expected a LightGBM or "
            "scikit-learn estimator, or an object with save(path) and classmethod load(path)"
        )

    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=f".{name}.", suffix=".tmp"))
    try:
        saver(model, staging)
        files = _list_files(staging)
        manifest = {
            "format": fmt,
            "class": _class_path(model),
            "files": {rel: _sha256(staging / rel) for rel in files},
            "mltrader_version": __version__,
            "extra": extra_json,
        }
        _write_json(staging / MANIFEST, manifest)
        if target.exists():
            old = directory / f".{name}.{uuid.uuid4().hex}.old"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


# ----------------------------------------------------------------------------- load


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"model artifact {root}: {MANIFEST} is missing; not a saved model")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(
            f"model artifact {root}: {MANIFEST} is unreadable ({err}); the artifact was "
            "modified or is corrupt"
        ) from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") not in FORMATS
        or not isinstance(manifest.get("class"), str)
        or not isinstance(manifest.get("files"), dict)
        or not all(isinstance(v, str) for v in manifest["files"].values())
    ):
        raise ArtifactError(
            f"model artifact {root}: {MANIFEST} lacks a valid format/class/files entry; "
            "the artifact was modified or is corrupt"
        )
    return manifest


def _verify_files(root: Path, files: dict[str, str]) -> None:
    for rel in files:
        _safe_relpath(rel, root)
    present = set(_list_files(root))
    for rel in sorted(files):
        if rel not in present:
            raise ArtifactError(
                f"model artifact {root}: file {rel!r} is missing; the artifact was modified "
                "or is corrupt"
            )
    for rel in sorted(present - set(files)):
        raise ArtifactError(
            f"model artifact {root}: file {rel!r} is not in {MANIFEST}; the artifact was "
            "modified or is corrupt"
        )
    for rel, expected in sorted(files.items()):
        path = root / rel
        if path.is_symlink() or _sha256(path) != expected.lower():
            raise ArtifactError(
                f"model artifact {root}: file {rel!r} does not match its sha256 in {MANIFEST}; "
                "the artifact was modified or is corrupt"
            )


def load_model(path: Path) -> Any:
    """Load an artifact written by `save_model`, after checking every file's sha256."""
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"model artifact {root} does not exist or is not a directory")
    manifest = _read_manifest(root)
    _verify_files(root, manifest["files"])
    fmt = manifest["format"]
    if fmt == FORMAT_LIGHTGBM:
        return _load_lightgbm(root, manifest)
    if fmt == FORMAT_SKOPS:
        return _load_skops(root, manifest)
    return _load_duck(root, manifest)


def _load_skops(root: Path, manifest: dict) -> Any:
    import skops.io as sio

    path = root / SKOPS_FILE
    if SKOPS_FILE not in manifest["files"]:
        raise ArtifactError(f"model artifact {root}: {SKOPS_FILE} is not in {MANIFEST}")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as err:  # a valid hash but unreadable file: written by something else
        raise ArtifactError(f"model artifact {root}: {SKOPS_FILE} is unreadable ({err})") from None
    _check_skops_types(untrusted, f"model artifact {root}: {SKOPS_FILE}")
    model = sio.load(path, trusted=list(untrusted))
    if _class_path(model) != manifest["class"]:
        raise ArtifactError(
            f"model artifact {root}: {SKOPS_FILE} holds {_class_path(model)}, but {MANIFEST} "
            f"says {manifest['class']}; the artifact was modified or is corrupt"
        )
    return model


class LightGBMBoosterModel(BaseEstimator, RegressorMixin):
    """A fitted LightGBM Booster behind the scikit-learn predict API.

    `load_model` returns this only when the installed LightGBM's sklearn wrapper no longer has the
    private attributes needed to rebuild a fitted ``LGBMRegressor``/``LGBMClassifier``. For a
    classifier (``classes`` given) ``predict`` returns labels and ``predict_proba`` probabilities,
    as LightGBM's own classifier does.
    """

    def __init__(self, booster: Any = None, classes: Any = None, params: dict | None = None):
        self.booster = booster
        self.classes = classes
        self.params = params

    def __sklearn_is_fitted__(self) -> bool:
        return self.booster is not None

    @property
    def classes_(self) -> np.ndarray:
        if self.classes is None:
            raise AttributeError("classes_: this LightGBM model is a regressor")
        return np.asarray(self.classes)

    @property
    def n_features_in_(self) -> int:
        return int(self.booster.num_feature())

    def _raw(self, X: Any) -> np.ndarray:
        n_jobs = (self.params or {}).get("n_jobs")
        kwargs = {"num_threads": n_jobs} if isinstance(n_jobs, int) and n_jobs > 0 else {}
        return np.asarray(self.booster.predict(X, **kwargs))

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.classes is None:
            raise AttributeError("predict_proba: this LightGBM model is a regressor")
        out = self._raw(X)
        return out if out.ndim == 2 else np.vstack((1.0 - out, out)).T

    def predict(self, X: Any) -> np.ndarray:
        if self.classes is None:
            return self._raw(X)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def _lightgbm_wrapper_supported(cls: type) -> bool:
    probe = vars(cls())
    return all(name in probe for name in _LGBM_PRIVATE) and hasattr(cls, "__sklearn_is_fitted__")


def _load_lightgbm(root: Path, manifest: dict) -> Any:
    import lightgbm
    from sklearn.preprocessing import LabelEncoder

    for rel in (LGBM_BOOSTER_FILE, LGBM_PARAMS_FILE):
        if rel not in manifest["files"]:
            raise ArtifactError(f"model artifact {root}: {rel} is not in {MANIFEST}")
    cls_name = _LGBM_CLASSES.get(manifest["class"])
    if cls_name is None:
        raise ArtifactError(
            f"model artifact {root}: class {manifest['class']!r} is not a supported LightGBM "
            "estimator"
        )
    cls = getattr(lightgbm, cls_name)
    try:
        saved = json.loads((root / LGBM_PARAMS_FILE).read_text(encoding="utf-8"))
        params = _from_json(saved["params"])
        fitted = saved["fitted"]
        booster = lightgbm.Booster(model_file=str(root / LGBM_BOOSTER_FILE))
        classes = None
        if "classes" in fitted:
            dtype = object if fitted["classes_dtype"] == "object" else fitted["classes_dtype"]
            classes = np.asarray(_from_json(fitted["classes"]), dtype=dtype)
    except (KeyError, TypeError, ValueError, lightgbm.basic.LightGBMError) as err:
        raise ArtifactError(
            f"model artifact {root}: cannot read the LightGBM model ({err}); the artifact was "
            "modified or is corrupt"
        ) from None

    if not _lightgbm_wrapper_supported(cls):
        return LightGBMBoosterModel(booster=booster, classes=classes, params=params)

    model = cls(**params)
    model._Booster = booster
    model._objective = fitted["objective"]
    model._n_features = int(fitted["n_features"])
    model._n_features_in = int(fitted["n_features_in"])
    model._fitted_with_feature_names = bool(fitted["fitted_with_feature_names"])
    model._n_classes = int(fitted["n_classes"])
    model._best_iteration = booster.best_iteration
    model._best_score = {}
    model._evals_result = {}
    if classes is not None:
        le = LabelEncoder()
        le.classes_ = classes
        model._le = le
        model._classes = classes
        model._class_map = {c: i for i, c in enumerate(classes.tolist())}
    model.fitted_ = True
    if model._n_features != booster.num_feature():
        raise ArtifactError(
            f"model artifact {root}: {LGBM_PARAMS_FILE} says {model._n_features} features but "
            f"{LGBM_BOOSTER_FILE} has {booster.num_feature()}; the artifact is corrupt"
        )
    return model


def _load_duck(root: Path, manifest: dict) -> Any:
    class_path = manifest["class"]
    module_name, _, qualname = class_path.rpartition(".")
    if (
        not (
            module_name == IMPORT_ALLOWED_PACKAGE
            or module_name.startswith(IMPORT_ALLOWED_PACKAGE + ".")
        )
        or not qualname
    ):
        raise ArtifactError(
            f"model artifact {root}: refusing to import class {class_path!r}; only classes "
            f"inside the {IMPORT_ALLOWED_PACKAGE!r} package can be loaded"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ArtifactError(
            f"model artifact {root}: class {class_path!r} cannot be imported ({err}); is this "
            "the mltrader version that saved it?"
        ) from None
    if not isinstance(obj, type) or not isinstance(
        inspect.getattr_static(obj, "load", None), classmethod
    ):
        raise ArtifactError(
            f"model artifact {root}: {class_path!r} is not a class with a classmethod load(path)"
        )
    return obj.load(root)


__all__ = [
    "ArtifactError",
    "LightGBMBoosterModel",
    "load_model",
    "save_model",
]
