"""Stable-Baselines3 agents as panel models: trained per fold in the run's own market,
traded out of sample by the positions rule, reproducible by seed, saved without pickle,
and refused in one line where a setting cannot work."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from mltrader.config import config_from_dict  # noqa: E402
from mltrader.errors import ConfigError  # noqa: E402
from mltrader.models.artifacts import load_model, save_model  # noqa: E402
from mltrader.models.registry import make_model  # noqa: E402
from mltrader.pipeline import compute_signals, run  # noqa: E402
from mltrader.runs import metrics_json  # noqa: E402
from mltrader.smoke import smoke_config  # noqa: E402
from mltrader.testing import synthetic_bars  # noqa: E402

BARS = synthetic_bars(900, 4, seed=3, ohlc=True)
TINY = {"total_timesteps": 256, "n_steps": 32, "batch_size": 32, "n_envs": 2, "window": 3,
        "episode_length": 64, "net_arch": [16]}


def _cfg(name: str = "ppo", params: dict | None = None, **extra):
    raw = {
        "name": "agent-test",
        "features": ["ret_5", "vol_20"],
        "model": {"name": name, "params": {**TINY, **(params or {})}},
        "walk_forward": {"first_test_year": 2002, "retrain": "yearly", "min_train_rows": 100},
        "strategy": {"name": "positions"},
        "execution": {"rebalance_band": 0.0},
    }
    return config_from_dict({**raw, **extra})


@pytest.fixture(scope="module")
def ppo_run():
    return run(_cfg(), bars=BARS)


def test_a_ppo_agent_trades_out_of_sample_only(ppo_run):
    sig = ppo_run.signals
    pred = sig.predictions.to_numpy()
    first = sig.folds[0].fold.test_start
    assert np.isnan(pred[:first]).all()
    assert np.isfinite(pred[first + 25:]).all()
    assert np.nanmax(np.abs(pred)) <= 1.0
    assert len(sig.folds) >= 2
    m = ppo_run.metrics
    assert m["model"]["name"] == "ppo" and m["model"]["params"]["total_timesteps"] == 256
    w = ppo_run.strategy.weights.to_numpy()
    assert np.nanmax(np.abs(w)) <= 1 / 4 + 1e-12  # positions x allocation / N
    text = " ".join(ppo_run.notes)
    assert "Stable-Baselines3 PPO agent trained per fold for 256 steps" in text
    assert "the run's own costs" in text


def test_same_seed_same_bytes_and_the_seed_matters(ppo_run):
    again = run(_cfg(), bars=BARS)
    assert metrics_json(again) == metrics_json(ppo_run)
    other = run(_cfg().model_copy(update={"seed": 7}), bars=BARS)
    assert not np.array_equal(other.signals.predictions.to_numpy(),
                              ppo_run.signals.predictions.to_numpy(), equal_nan=True)


def test_the_backtest_trades_what_the_agent_decided(ppo_run):
    """The weights the run traded are the agent's positions x allocation / N, row by row."""
    pred = ppo_run.signals.predictions.to_numpy()
    w = ppo_run.signals.weights.to_numpy()
    ok = np.isfinite(pred)
    np.testing.assert_allclose(w[ok], np.clip(pred[ok], -1, 1) / 4, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("name", "params"), [
    ("a2c", {}), ("ppo", {"discrete": True}), ("sac", {"buffer_size": 500, "batch_size": 16}),
    ("dqn", {"buffer_size": 500, "batch_size": 16}),
])
def test_every_algorithm_runs_walk_forward(name, params):
    sig = compute_signals(BARS, _cfg(name, {**params, "total_timesteps": 128}))
    pred = sig.predictions.to_numpy()[sig.start + 25:]
    assert np.isfinite(pred).all() and np.abs(pred).max() <= 1.0
    if name == "dqn":  # one decision for the basket: every symbol the same
        assert (pred == pred[:, :1]).all()
        assert set(np.unique(pred)) <= {-1.0, 0.0, 1.0}
    if params.get("discrete"):
        assert set(np.unique(pred)) <= {-1.0, 0.0, 1.0}


def test_the_fitted_policy_saves_without_pickle_and_predicts_the_same(tmp_path, ppo_run):
    model = ppo_run.signals.last_model
    manifest = save_model(model, tmp_path / "m", name="model")
    files = {p.name for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert {"policy.safetensors", "params.json"} <= files
    assert not any(f.endswith((".pkl", ".zip", ".pt")) for f in files)
    doc = json.loads(next((tmp_path / "m").rglob("params.json")).read_text())
    assert doc["params"]["algo"] == "ppo"
    back = load_model(tmp_path / "m" / "model")
    obs = np.random.default_rng(0).normal(size=(5, model.obs_mean_.shape[0]))
    for row in obs:
        np.testing.assert_array_equal(back._act(row), model._act(row))
    assert manifest is not None


@pytest.mark.parametrize(("name", "params", "needle"), [
    ("ppo", {"reward": "sharpe"}, "model.params.reward for ppo"),
    ("ppo", {"total_timesteps": 0}, "total_timesteps for ppo"),
    ("ppo", {"gamma": 1.5}, "gamma for ppo"),
    ("ppo", {"net_arch": "big"}, "net_arch for ppo"),
    ("sac", {"discrete": True}, "SAC needs continuous actions"),
    ("ppo", {"algo": "sac"}, "'algo' is not a parameter of ppo"),
    ("ppo", {"lr": 0.1}, "'lr' is not a parameter of ppo"),
])
def test_bad_agent_settings_are_refused_in_one_line(name, params, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        compute_signals(BARS, _cfg(name, params))
    assert "\n" not in str(e.value)


def test_an_agent_needs_next_bar_returns_as_its_target():
    with pytest.raises(ConfigError, match="horizon 5"):
        compute_signals(BARS, _cfg(target={"kind": "return", "horizon": 5}))


def test_smoke_caps_the_training_steps():
    cfg = smoke_config(_cfg(params={"total_timesteps": 50_000, "n_steps": 2048,
                                    "batch_size": 512}))
    p = cfg.model.params
    assert p["total_timesteps"] == 256 and p["n_steps"] <= 128 and p["batch_size"] <= 64


def test_make_model_names_the_algorithm():
    assert make_model("a2c", {}, 3).get_params()["algo"] == "a2c"
    assert make_model("a2c", {}, 3).get_params()["seed"] == 3


def test_the_agent_trains_under_the_runs_risk_guards_not_its_intrabar_exits():
    """The market an agent learns in applies the run's guards (as the backtest does); the
    intrabar exits, which the environment does not simulate, are left to the backtest."""
    from mltrader.plan import panel_market

    cfg = _cfg(risk={"daily_loss_limit": 0.02, "max_trades_per_day": 5, "stop_loss": 0.05})
    x = np.zeros((len(BARS), BARS.shape[1], 2))
    env = panel_market(cfg, BARS, x, "next_open")(10, 300, window=3, flat=True)
    assert env.settings.guards.daily_loss_limit == 0.02
    assert env.settings.guards.max_trades_per_day == 5
    assert env.settings.stop_loss is None
    sig = compute_signals(BARS, cfg)  # and the walk-forward trains and trades under them
    assert np.isfinite(sig.predictions.to_numpy()[sig.start + 25:]).all()
