"""`--smoke`: the same config on a small budget, to check that it runs end to end in seconds.

Same code path, smaller numbers: a run with a first test year (every model run) keeps four
years of history before it and one quarter of test bars (so one or a few folds), neural
networks and the rl_sharpe policy train one epoch, RL agents 256 steps, tree ensembles at
most 20 trees, tuning two trials (a stacked model's nested years come on top of the four).
The run is named `<name>-smoke` and its figures are not a result.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mltrader.config import RunConfig, config_from_dict

EPOCHS = 1
TREES = 20
TRIALS = 2
STEPS = 256  # an RL agent's training steps
HISTORY_YEARS = 4
SMOKE_NOTE = ("Smoke run (--smoke): a small budget (few folds, 1 epoch, <= 20 trees) to check "
              "that the config runs; its figures are not a result.")


def _shrink_model(mc: dict[str, Any]) -> dict[str, Any]:
    from mltrader.models.registry import AGENTS, PANEL_MODELS, SEQUENCE_MODELS

    params = dict(mc.get("params") or {})
    if mc["name"] in AGENTS:  # a few hundred steps: enough to run every code path once
        params["total_timesteps"] = min(int(params.get("total_timesteps", STEPS)), STEPS)
        params["n_steps"] = min(int(params.get("n_steps", 1024)), STEPS // 2)
        params["batch_size"] = min(int(params.get("batch_size", 256)), STEPS // 4)
    elif mc["name"] in SEQUENCE_MODELS or mc["name"] in PANEL_MODELS:
        params["epochs"] = EPOCHS
    if mc["name"] in ("lightgbm", "lightgbm_classifier", "random_forest"):
        params["n_estimators"] = min(int(params.get("n_estimators", TREES)), TREES)
    out = {**mc, "params": params}
    if mc.get("tune"):
        out["tune"] = {**mc["tune"], "n_trials": TRIALS, "cv_splits": 2}
    return out


def _date(value: Any) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(str(value))


def smoke_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with a smoke budget (see the module docstring); validated like any config."""
    from mltrader.strategy.registry import get_strategy

    raw = cfg.model_dump(mode="json")
    raw["name"] = f"{cfg.name}-smoke"
    raw["model"] = _shrink_model(raw["model"])
    raw["compare"] = [_shrink_model(m) for m in raw["compare"]]
    strategy = raw["strategy"]
    strategy["models"] = [_shrink_model(m) for m in strategy.get("models") or []]
    model = get_strategy(cfg.strategy.name).needs_model or bool(cfg.compare)
    if model or cfg.walk_forward.first_test_year is not None:
        year = cfg.walk_forward.test_year
        start, end = _date(raw["data"]["start"]), _date(raw["data"]["end"])
        nested = max([m.get("nested_years", 0) for m in (raw["model"], *strategy["models"])
                      if m.get("inputs")] or [0])
        lo, hi = dt.date(year - HISTORY_YEARS - nested, 1, 1), dt.date(year, 3, 31)
        raw["data"]["start"] = str(max(start, lo) if start else lo)
        raw["data"]["end"] = str(min(end, hi) if end else hi)
    return config_from_dict(raw, "--smoke")
