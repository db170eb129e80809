"""Operator controls of a running runner: pause / resume, flatten, kill switch, and edits of a
whitelist of parameters, sent through the journal's ``commands`` table.

Whoever controls a run (the dashboard, in this process or on another machine) only writes a
command row (``Journal.add_command``); the runner reads the pending ones at the start of each
bar, before it decides anything (`apply_pending`), applies each (`apply_command`) and marks
it "applied" or "refused" with what changed (``old`` -> ``new``) or why not. The journal
audits the request and the outcome (``command_requested``, ``command_applied`` /
``command_refused``, actor: who asked). A command addressed to no run is claimed by the
first run that reads it.

Kinds (`KINDS`):

* ``pause``: the runner sends no order that adds exposure (a new entry, a bigger position,
  the far side of a flip); orders that reduce a position, time stops and the protective
  exits (stop loss, trailing stop, take profit) still go. ``resume`` lifts it.
* ``flatten``: at this bar's close every position gets a closing order (instead of the
  strategy's orders of that bar), filled at the next fill like a risk guard's flatten;
  params ``{"pause": true}`` also pauses, else the strategy may enter again on later bars.
* ``kill``: the kill switch: flatten, and never add exposure again in this run (the risk
  gate's kill switch; ``resume`` is refused).
* ``set``: params ``{"param": "<path>", "value": <number or null>}`` for one path of
  `EDITABLE`; the value is validated with the config's own rules (a new pydantic-validated
  config copy) and the runner trades with it from this bar on: risk limits go to the risk
  gate's guard vector and the sizing caps, strategy parameters to the strategy's call.

Everything a command changes is kept in the runner's saved state (``"controls"``), so a
restarted runner (``Runner(..., run_id=N)``) comes back paused, killed or edited as it was.
The config hash of the run does not change: a restart of the same config file finds the run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from mltrader.config import RunConfig

log = logging.getLogger("mltrader.live.runner")  # the runner's log: one stream per run

KINDS = ("pause", "resume", "flatten", "kill", "set")

# path -> what a valid value is (the config's own validators decide; this is the reason text)
EDITABLE: dict[str, str] = {
    "strategy.threshold": "a number the strategy accepts (threshold: 0 <= x < 1)",
    "strategy.sell_threshold": "a number the strategy accepts (0 <= x < 1), or null",
    "strategy.buy_above": "a number (regime_filter: enter long above it)",
    "strategy.sell_below": "a number (regime_filter: exit below it)",
    "risk.daily_loss_limit": "a fraction in (0, 1), or null (off)",
    "risk.kill_switch_drawdown": "a fraction in (0, 1), or null (off)",
    "risk.max_position": "a fraction of equity in (0, 10], or null (off)",
    "risk.max_trades_per_day": "a whole number >= 1, or null (off)",
}
_INTEGER = {"risk.max_trades_per_day"}


class Refused(ValueError):
    """A command that cannot be applied; its message is the one-line reason."""


@dataclass
class ControlState:
    """What the operator's commands set on a runner (saved with the runner's state)."""

    paused: bool = False
    killed: bool = False
    flatten: str | None = None  # a requested flatten, done by the next bar's orders
    overrides: dict[str, Any] = field(default_factory=dict)  # path -> value set

    def blocks_adds(self) -> str | None:
        """Why orders that add exposure are held back now (None: they are not)."""
        if self.killed:
            return "kill switch (operator)"
        return "paused (operator)" if self.paused else None

    def flatten_reason(self) -> str | None:
        """Why this bar's orders must flatten everything: the kill switch (every bar), or a
        requested flatten (once: taking it clears it)."""
        if self.killed:
            return "operator kill switch"
        reason, self.flatten = self.flatten, None
        return reason

    def state(self) -> dict[str, Any]:
        return {"paused": self.paused, "killed": self.killed, "flatten": self.flatten,
                "overrides": dict(self.overrides)}

    @classmethod
    def from_state(cls, saved: Mapping[str, Any] | None) -> ControlState:
        saved = saved or {}
        return cls(paused=bool(saved.get("paused", False)),
                   killed=bool(saved.get("killed", False)),
                   flatten=saved.get("flatten") or None,
                   overrides=dict(saved.get("overrides") or {}))


# --------------------------------------------------------------------------- parameters


def editable(cfg: RunConfig) -> list[str]:
    """The `EDITABLE` paths that this config's strategy and risk rules have."""
    from mltrader.strategy.registry import STRATEGIES  # lazy: as config does

    fields = STRATEGIES[cfg.strategy.name].params.model_fields
    return [p for p in EDITABLE
            if not p.startswith("strategy.") or p.split(".", 1)[1] in fields]


def current_value(cfg: RunConfig, path: str) -> Any:
    section, key = path.split(".", 1)
    if section == "risk":
        return getattr(cfg.risk, key)
    from mltrader.strategy.registry import validate_params

    params = validate_params(cfg.strategy.name, cfg.strategy.params)
    return getattr(params, key, cfg.strategy.params.get(key))


def validated(cfg: RunConfig, path: str, value: Any) -> tuple[RunConfig, Any]:
    """(the config with ``path`` set to ``value``, the value as stored), validated by the
    config's own rules; `Refused` with a one-line reason when the key is not editable,
    the value's type is wrong or the value is out of range."""
    if path not in EDITABLE:
        raise Refused(f"unknown parameter {path!r}: editable are {', '.join(EDITABLE)}")
    if path not in editable(cfg):
        raise Refused(f"{path!r} is not a parameter of strategy {cfg.strategy.name!r}; "
                      f"editable here: {', '.join(editable(cfg))}")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Refused(f"{path}: wrong type {type(value).__name__} ({value!r}); "
                          f"want {EDITABLE[path]}")
        if not math.isfinite(value):
            raise Refused(f"{path}: {value!r} is not a finite number; want {EDITABLE[path]}")
        if path in _INTEGER:
            if int(value) != value:
                raise Refused(f"{path}: {value!r} is not a whole number; want {EDITABLE[path]}")
            value = int(value)
        else:
            value = float(value)
    section, key = path.split(".", 1)
    data = cfg.model_dump(mode="json")
    data[section] = {**data[section], key: value}
    if section == "strategy" and value is None:
        data[section].pop(key)  # an unset strategy parameter is its default
    try:
        new = type(cfg).model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        msg = str(e.get("msg", err)).removeprefix("Value error, ")
        raise Refused(f"{path} = {value!r} refused: {msg}") from None
    return new, current_value(new, path)


def install(runner: Any, cfg: RunConfig) -> None:
    """Make the runner trade with ``cfg`` (its risk limits and strategy parameters): the
    guard vector the risk gate reads, the sizing caps and the strategy's parameters."""
    from mltrader.plan import guards as guards_of

    runner.cfg = cfg
    g = guards_of(cfg)
    runner.guards = g
    runner.gate.guards = g
    runner.gate._gp[:] = g.vector()  # the compiled checks read this vector (in place)
    runner.rules = dataclasses.replace(runner.rules, max_position=cfg.risk.max_position)
    if g.active and getattr(runner.broker, "fill_gate", False) is None:
        runner.broker.fill_gate = runner._fill_gate  # a guard switched on: check fills too


def restore(runner: Any, saved: Mapping[str, Any] | None) -> None:
    """Put back the controls of a saved runner state (a restart keeps them)."""
    state = ControlState.from_state(saved)
    cfg = runner.cfg
    kept: dict[str, Any] = {}
    for path, value in state.overrides.items():
        try:
            cfg, kept[path] = validated(cfg, path, value)
        except Refused as e:  # a newer mltrader with other rules: say so, keep the rest
            log.warning("saved operator setting not restored: %s", e)
    state.overrides = kept
    if kept:
        install(runner, cfg)
    if state.killed:
        runner.gate.kill()
    runner.controls = state


# --------------------------------------------------------------------------- commands


def apply_command(runner: Any, row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Apply one command row (a dict of the commands columns) to the runner; returns
    ("applied" | "refused", result): ``param``, ``old`` and ``new`` when applied, ``reason``
    when refused (one line)."""
    kind = str(row.get("kind", ""))
    params = dict(row.get("params") or {})
    fn = _APPLY.get(kind)
    try:
        if fn is None:
            raise Refused(f"unknown command {kind!r}: use one of {', '.join(KINDS)}")
        return "applied", fn(runner, params)
    except Refused as e:
        return "refused", {"kind": kind, "reason": str(e)}


def _pause(runner: Any, params: dict[str, Any]) -> dict[str, Any]:
    st = runner.controls
    old, st.paused = st.paused, True
    return {"param": "paused", "old": old, "new": True}


def _resume(runner: Any, params: dict[str, Any]) -> dict[str, Any]:
    st = runner.controls
    if st.killed:
        raise Refused("the kill switch is on for good in this run: start a new run to trade")
    old, st.paused = st.paused, False
    return {"param": "paused", "old": old, "new": False}


def _positions(runner: Any) -> dict[str, float]:
    try:
        return {s: float(p.qty) for s, p in runner.broker.positions().items() if p.qty != 0}
    except Exception as e:  # the broker is down: the bar's own orders see it too
        log.warning("flatten: positions unavailable (%s)", e)
        return {}


def _flatten(runner: Any, params: dict[str, Any]) -> dict[str, Any]:
    pause = params.get("pause", False)
    if not isinstance(pause, bool):
        raise Refused(f"flatten: pause must be true or false, not {pause!r}")
    st = runner.controls
    st.flatten = "operator flatten"
    out: dict[str, Any] = {"param": "positions", "old": _positions(runner), "new": {}}
    if pause:
        out["paused"] = {"old": st.paused, "new": True}
        st.paused = True
    return out


def _kill(runner: Any, params: dict[str, Any]) -> dict[str, Any]:
    st = runner.controls
    old, st.killed = st.killed, True
    runner.gate.kill()
    return {"param": "killed", "old": old, "new": True, "positions": _positions(runner)}


def _set(runner: Any, params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - {"param", "value"})
    if unknown or "param" not in params or "value" not in params:
        raise Refused('set: params must be {"param": "<path>", "value": <number or null>}'
                      + (f"; unknown key(s) {', '.join(unknown)}" if unknown else ""))
    path = str(params["param"])
    old = current_value(runner.cfg, path) if path in editable(runner.cfg) else None
    cfg, new = validated(runner.cfg, path, params["value"])
    install(runner, cfg)
    runner.controls.overrides[path] = new
    return {"param": path, "old": old, "new": new}


_APPLY = {"pause": _pause, "resume": _resume, "flatten": _flatten, "kill": _kill, "set": _set}


def apply_pending(runner: Any) -> list[tuple[int, str, dict[str, Any]]]:
    """Apply the journal's pending commands for the runner's run (and those addressed to no
    run, claimed first), oldest first; each is marked applied / refused and the runner's
    state (with the controls) is saved in the same transaction. Call between bars only."""
    j, run_id = runner.journal, runner.run_id
    if j is None or run_id is None:
        return []
    done: list[tuple[int, str, dict[str, Any]]] = []
    for row in j.pending_commands(run_id):
        if row["run_id"] is None and not j.claim_command(row["id"], run_id):
            continue  # another run took it
        try:
            status, result = apply_command(runner, row)
        except Exception as e:  # a bug, not the operator's input: refuse, keep trading
            log.exception("command %s (%s) failed", row["id"], row["kind"])
            status, result = "refused", {"kind": row["kind"],
                                         "reason": f"failed: {type(e).__name__}: {e}"}
        log.warning("operator command %s %s by %s: %s %s", row["id"], row["kind"],
                    row["actor"], status, result)
        done.append((int(row["id"]), status, result))
    if done:
        with j.batch():
            for cid, status, result in done:
                j.finish_command(cid, status, result, run_id=run_id)
            if runner._last_done is not None:  # before the first bar: saved with it
                j.save_runner_state(run_id, runner._last_done, runner._state())
    return done
