"""The thread budget (models.threads) and the models that read it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mltrader.errors import ConfigError
from mltrader.models.registry import make_model
from mltrader.models.threads import ENV_VAR, available_cores, limit_threads, thread_budget


def test_budget_is_the_cores_given_without_the_env_var(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert thread_budget() == available_cores() >= 1


def test_env_var_sets_the_budget(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "3")
    assert thread_budget() == 3
    monkeypatch.setenv(ENV_VAR, " 1 ")
    assert thread_budget() == 1


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_bad_env_var_is_a_one_line_config_error(monkeypatch, bad):
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(ConfigError) as err:
        thread_budget()
    msg = str(err.value)
    assert "\n" not in msg and ENV_VAR in msg and repr(bad) in msg and "unset" in msg


def test_limit_threads_nests_and_restores(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "2")
    assert thread_budget() == 2
    with limit_threads(1) as n:
        assert n == 1 and thread_budget() == 1
        with limit_threads(3):
            assert thread_budget() == 3
        assert thread_budget() == 1
    assert thread_budget() == 2
    with pytest.raises(RuntimeError), limit_threads(1):
        raise RuntimeError("boom")
    assert thread_budget() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.0, True, "1"])
def test_limit_threads_refuses_a_bad_n(bad):
    with pytest.raises(ValueError), limit_threads(bad):
        pass


def test_limit_threads_limits_blas_and_openmp_pools_and_restores():
    from threadpoolctl import threadpool_info

    before = [(p["internal_api"], p["num_threads"]) for p in threadpool_info()]
    with limit_threads(1):
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert [(p["internal_api"], p["num_threads"]) for p in threadpool_info()] == before


def test_limit_threads_sets_torch_only_if_already_imported():
    torch = sys.modules.get("torch")
    if torch is None:
        with limit_threads(1):
            pass
        assert "torch" not in sys.modules  # never imported just for this
        return
    prev = torch.get_num_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == prev


def test_the_forest_predicts_on_one_thread_whatever_the_budget():
    """scikit-learn's forest adds its trees' predictions in the order its threads finish:
    more than one thread makes the last bits depend on timing (and on the executor)."""
    with limit_threads(2):
        assert make_model("random_forest", {}, 0).get_params()["n_jobs"] == 1


@pytest.mark.parametrize("name", ["lightgbm", "lightgbm_classifier"])
def test_models_read_the_budget_when_built(monkeypatch, name):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with limit_threads(1):
        assert make_model(name, {}, 0).get_params()["n_jobs"] == 1
    monkeypatch.setenv(ENV_VAR, "2")
    assert make_model(name, {}, 0).get_params()["n_jobs"] == 2


def test_an_explicit_thread_count_in_the_config_wins():
    with limit_threads(1):
        assert make_model("lightgbm", {"n_jobs": 2}, 0).get_params()["n_jobs"] == 2
        params = make_model("lightgbm", {"num_threads": 2}, 0).get_params()
        assert params["num_threads"] == 2 and params["n_jobs"] is None
        assert make_model("random_forest", {"n_jobs": 2}, 0).get_params()["n_jobs"] == 2


@pytest.mark.parametrize("name", ["lightgbm", "lightgbm_classifier"])
def test_lightgbm_gives_the_same_model_with_1_and_2_threads(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 6))
    y = 0.3 * x[:, 0] - 0.2 * x[:, 1] ** 2 + rng.normal(scale=0.5, size=len(x))
    if name == "lightgbm_classifier":
        y = (y > 0).astype(int)
    params = {"n_estimators": 30, "min_child_samples": 20}
    preds = []
    for n in (1, 2):
        with limit_threads(n):
            model = make_model(name, params, 7)
            assert model.get_params()["n_jobs"] == n
            model.fit(x, y)
            preds.append(model.predict_proba(x) if name.endswith("classifier")
                         else model.predict(x))
    np.testing.assert_array_equal(preds[0], preds[1])
