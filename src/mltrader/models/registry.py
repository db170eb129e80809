"""Models by name: each is a scikit-learn estimator, so sklearn tooling works on all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mltrader.errors import ConfigError


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
        n_jobs=2,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    base.update(params)
    base["random_state"] = seed
    return LGBMRegressor(**base)


def _ridge(params: dict[str, Any], seed: int) -> BaseEstimator:
    base: dict[str, Any] = {"alpha": 10.0}
    base.update(params)
    # The scaler lives inside the pipeline, so it is fit on training rows only.
    return make_pipeline(StandardScaler(), Ridge(**base))


MODELS: dict[str, Callable[[dict[str, Any], int], BaseEstimator]] = {
    "lightgbm": _lightgbm,
    "ridge": _ridge,
}


def _valid_params(name: str) -> set[str]:
    """Parameter names an estimator accepts; LightGBM also takes its core names and aliases."""
    if name == "lightgbm":
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
    return {k.split("__", 1)[-1] for k in model.get_params(deep=True)}


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
