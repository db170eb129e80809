"""Models by name: each is a scikit-learn estimator, so sklearn tooling works on all of them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.tree import DecisionTreeRegressor

from mltrader.errors import ConfigError
from mltrader.models.threads import thread_budget

# LightGBM's names for its thread count besides n_jobs: one given in the config replaces ours
_LGBM_THREAD_ALIASES = frozenset({"n_jobs", "num_threads", "num_thread", "nthread", "nthreads"})


def _lightgbm(params: dict[str, Any], seed: int) -> BaseEstimator:
    from lightgbm import LGBMRegressor

    base: dict[str, Any] = dict(
        n_estimators=300,
        learning_rate=0.02,
        num_leaves=15,
        min_child_samples=200,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        # the thread budget when built (models.threads): all cores given to this process,
        # or its share under an executor; the model is the same for any thread count with
        # deterministic=True + force_row_wise=True (checked in tests/models/test_threads.py)
        n_jobs=thread_budget(),
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    base.update(params)  # an explicit n_jobs (or num_threads alias) in the config wins
    if _LGBM_THREAD_ALIASES & set(params) - {"n_jobs"}:
        del base["n_jobs"]
    base["random_state"] = seed
    return LGBMRegressor(**base)


def _ridge(params: dict[str, Any], seed: int) -> BaseEstimator:
    base: dict[str, Any] = {"alpha": 10.0}
    base.update(params)
    # The scaler lives inside the pipeline, so it is fit on training rows only.
    return make_pipeline(StandardScaler(), Ridge(**base))


def _lightgbm_classifier(params: dict[str, Any], seed: int) -> BaseEstimator:
    from lightgbm import LGBMClassifier

    base = _lightgbm({}, seed).get_params()
    base.update(params)
    if _LGBM_THREAD_ALIASES & set(params) - {"n_jobs"}:
        del base["n_jobs"]
    base["random_state"] = seed
    return LGBMClassifier(**base)


def _linear(params: dict[str, Any], seed: int) -> BaseEstimator:
    return make_pipeline(StandardScaler(), LinearRegression(**params))


def _logistic(params: dict[str, Any], seed: int) -> BaseEstimator:
    base: dict[str, Any] = {"C": 0.1, "max_iter": 500}
    base.update(params)
    return make_pipeline(StandardScaler(), LogisticRegression(random_state=seed, **base))


def _tree(params: dict[str, Any], seed: int) -> BaseEstimator:
    base: dict[str, Any] = {"max_depth": 5, "min_samples_leaf": 500}
    base.update(params)
    return DecisionTreeRegressor(random_state=seed, **base)


def _forest(params: dict[str, Any], seed: int) -> BaseEstimator:
    # one thread: scikit-learn's forest adds its trees' predictions in the order its
    # threads finish, so with n_jobs > 1 a prediction's last bits vary from run to run and
    # between executors (measured: pearson IC differs in the 17th digit)
    base: dict[str, Any] = {"n_estimators": 50, "max_depth": 6, "min_samples_leaf": 200,
                            "max_samples": 0.3, "max_features": 0.5, "n_jobs": 1}
    base.update(params)
    return RandomForestRegressor(random_state=seed, **base)


def _svm(params: dict[str, Any], seed: int) -> BaseEstimator:
    base: dict[str, Any] = {"C": 0.1, "epsilon": 0.001, "max_train_rows": 2000}
    base.update(params)
    return RecentRowsSVR(**base)


def _svm_classifier(params: dict[str, Any], seed: int) -> BaseEstimator:
    base: dict[str, Any] = {"C": 0.1, "max_train_rows": 2000}
    base.update(params)
    return RecentRowsSVC(random_state=seed, **base)


class RecentRowsSVR(RegressorMixin, BaseEstimator):
    """RBF support-vector regression on the most recent `max_train_rows` training rows.

    Kernel SVMs cost O(rows^2) memory and time, so a full pooled panel (10^5 rows) is out of
    reach on 2 cores; the newest rows are the most relevant ones. Features are standardised
    on the rows used.
    """

    def __init__(self, C: float = 0.1, epsilon: float = 0.001, gamma: str | float = "scale",
                 max_train_rows: int = 5000) -> None:
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma
        self.max_train_rows = max_train_rows

    def fit(self, x: np.ndarray, y: np.ndarray) -> RecentRowsSVR:
        keep = slice(max(0, len(y) - self.max_train_rows), None)
        self.model_ = make_pipeline(StandardScaler(), SVR(C=self.C, epsilon=self.epsilon,
                                                          gamma=self.gamma))
        self.model_.fit(x[keep], y[keep])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict(x)


class RecentRowsSVC(ClassifierMixin, BaseEstimator):
    """RBF support-vector classifier on the most recent rows (see `RecentRowsSVR`)."""

    def __init__(self, C: float = 0.1, gamma: str | float = "scale", max_train_rows: int = 5000,
                 random_state: int = 0) -> None:
        self.C = C
        self.gamma = gamma
        self.max_train_rows = max_train_rows
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: np.ndarray) -> RecentRowsSVC:
        keep = slice(max(0, len(y) - self.max_train_rows), None)
        # probabilities by calibrating the SVM's scores (sklearn's replacement for
        # SVC(probability=True)); the calibration folds lie inside the training rows
        svc = SVC(C=self.C, gamma=self.gamma, random_state=self.random_state)
        self.model_ = make_pipeline(StandardScaler(),
                                    CalibratedClassifierCV(svc, ensemble=False, cv=3))
        self.model_.fit(x[keep], y[keep])
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict(x)


def _torch(name: str, cls_name: str, module: str = "torch_models"
           ) -> Callable[[dict[str, Any], int], BaseEstimator]:
    """A factory that imports `mltrader.models.<module>` (and so torch) only when called."""

    def make(params: dict[str, Any], seed: int) -> BaseEstimator:
        try:
            mod = importlib.import_module(f"mltrader.models.{module}")
        except ImportError as e:  # torch is an optional extra
            if (e.name or "").split(".")[0] != "torch":
                raise
            raise ConfigError(f"model {name!r} is a PyTorch network and PyTorch is not installed: "
                              "pip install 'mltrader[torch]' (or torch==2.13.0; never an "
                              "unpinned torch, a multi-GB CUDA build), or choose a model "
                              "without it, e.g. lightgbm or ridge (--model ridge)") from None
        return getattr(mod, cls_name)(seed=seed, **params)

    return make


def _agent(algo: str) -> Callable[[dict[str, Any], int], BaseEstimator]:
    """A factory for a Stable-Baselines3 agent (`models.rl_agent`), imported when called."""

    def make(params: dict[str, Any], seed: int) -> BaseEstimator:
        try:
            mod = importlib.import_module("mltrader.models.rl_agent")
        except ImportError as e:  # gymnasium, stable-baselines3 and torch are the rl extra
            if (e.name or "").split(".")[0] not in ("torch", "gymnasium", "stable_baselines3"):
                raise
            raise ConfigError(f"model {algo!r} is a Stable-Baselines3 agent and {e.name} is not "
                              "installed: pip install 'mltrader[rl]' (it pins torch==2.13.0; "
                              "an unpinned torch is a multi-GB CUDA build), or choose rl_sharpe "
                              "or a supervised model") from None
        if "algo" in params:
            raise ConfigError(f"model {algo!r}: the algorithm is the model name; drop "
                              "model.params.algo")
        return mod.RLAgent(algo=algo, seed=seed, **params)

    return make


MODELS: dict[str, Callable[[dict[str, Any], int], BaseEstimator]] = {
    "lightgbm": _lightgbm,
    "ridge": _ridge,
    "linear": _linear,
    "decision_tree": _tree,
    "random_forest": _forest,
    "svm": _svm,
    "lightgbm_classifier": _lightgbm_classifier,
    "logistic": _logistic,
    "svm_classifier": _svm_classifier,
    "lstm": _torch("lstm", "LSTMRegressor"),
    "cnn": _torch("cnn", "CNNClassifier"),
    "cnn_lstm": _torch("cnn_lstm", "CNNLSTMRegressor"),
    "rl_sharpe": _torch("rl_sharpe", "DirectReinforcement", "rl_sharpe"),
    "ppo": _agent("ppo"),
    "a2c": _agent("a2c"),
    "sac": _agent("sac"),
    "dqn": _agent("dqn"),
}
CLASSIFIERS = frozenset({"lightgbm_classifier", "logistic", "svm_classifier", "cnn"})
# sequence models see each symbol's last `model.window` bars of features, not one row
SEQUENCE_MODELS = frozenset({"lstm", "cnn", "cnn_lstm"})
# agents trade a simulated market while they learn (`models.rl_agent`): deep RL, per fold
AGENTS = frozenset({"ppo", "a2c", "sac", "dqn"})
# panel models fit the whole (T, N, F) block of a fold and output positions in [-1, 1], row
# t from rows <= t (a recurrent policy): walked forward by `models.panel`, not row by row
PANEL_MODELS = frozenset({"rl_sharpe"}) | AGENTS


def _valid_params(name: str) -> set[str]:
    """Parameter names an estimator accepts; LightGBM also takes its core names and aliases."""
    if name in ("lightgbm", "lightgbm_classifier"):
        from lightgbm import LGBMRegressor

        names = set(LGBMRegressor().get_params())
        try:  # LightGBM's own list of core parameters and aliases (private but stable)
            from lightgbm.basic import _ConfigAliases

            for key, aliases in _ConfigAliases._get_all_param_aliases().items():
                names.add(key)
                names.update(aliases)
        except Exception:  # pragma: no cover - older LightGBM: fall back to sklearn names
            pass
        return names
    model = MODELS[name]({}, 0)
    return {k.split("__", 1)[-1] for k in model.get_params(deep=True)} - {"seed", "algo"}


def make_model(name: str, params: dict[str, Any], seed: int) -> BaseEstimator:
    """A fresh, unfitted estimator; bad hyper-parameters become a clear `ConfigError`."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    valid = _valid_params(name)
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"model.params: {key!r} is not a parameter of {name}; check the spelling"
            )
    try:
        return MODELS[name](dict(params), seed)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.params for {name}: {err}") from None
