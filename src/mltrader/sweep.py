"""`mltrader sensitivity`: one config backtested over a grid of parameter values.

The model is trained once when every grid key is a strategy, risk, cost or execution
setting (the predictions do not depend on them); each cell then re-runs only the rule and
the engine. A grid over model or data keys retrains per cell. The backtest period is cut at
`split`: the cell with the best Sharpe before it is "chosen" (in-sample for the choice), and
its Sharpe after it is the honest estimate of what choosing by this grid is worth.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mltrader.backtest.engine import run_backtest
from mltrader.config import CostsConfig, ExecutionConfig, RiskConfig, RunConfig, load_config
from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.parallel import session
from mltrader.pipeline import (
    ProgressFactory,
    Signals,
    compute_signals,
    load_bars,
    run,
    run_clock,
    trade_targets,
)
from mltrader.plan import engine_settings, judged_start
from mltrader.sensitivity import GridAxis, check_grid, default_split, run_grid_units
from mltrader.strategy.base import StrategyInputs
from mltrader.strategy.registry import get_strategy, run_strategy
from mltrader.trials import (
    RUN_ONLY_KEYS,
    Trial,
    TrialRegistry,
    config_hash,
    data_fingerprint,
    per_bar_sharpe,
)

_CHEAP_SECTIONS = ("strategy.", "risk.", "costs.", "execution.")
_EXPENSIVE_STRATEGY_KEYS = ("strategy.name", "strategy.models", "strategy.regimes")


@dataclass(frozen=True)
class SweepOutput:
    """The grid's table (one row per cell), its axes, the split date and the base config."""

    config: RunConfig
    table: pd.DataFrame
    axes: tuple[GridAxis, ...]
    split: pd.Timestamp
    retrained: bool


def resolve_key(key: str, cfg: RunConfig) -> str:
    """A grid key as a dotted config path: `threshold` -> `strategy.threshold` and so on."""
    if "." in key:
        return key
    if key in get_strategy(cfg.strategy.name).params.model_fields:
        return f"strategy.{key}"
    for section, model in (("risk", RiskConfig), ("costs", CostsConfig),
                           ("execution", ExecutionConfig)):
        if key in model.model_fields:
            return f"{section}.{key}"
    raise ConfigError(f"grid key {key!r} is not a parameter of strategy {cfg.strategy.name!r} "
                      "nor a risk, costs or execution setting; use a dotted path such as "
                      "model.params.learning_rate")


def _cheap(path: str) -> bool:
    return path.startswith(_CHEAP_SECTIONS) and not path.startswith(_EXPENSIVE_STRATEGY_KEYS)


@dataclass(frozen=True)
class SweepPlan:
    """A checked grid: every cell's config, the bars, the split; nothing trained yet."""

    base: RunConfig
    axes: tuple[GridAxis, ...]
    configs: dict[tuple[tuple[str, str], ...], RunConfig]
    bars: Bars
    split: pd.Timestamp
    retrain: bool


def plan(config: Path, axes: Sequence[GridAxis], overrides: dict[str, Any] | None = None,
         split: str | None = None) -> SweepPlan:
    """Check the grid (keys, values, every cell's config, the split) before any training."""
    overrides = dict(overrides or {})
    base = load_config(config, overrides)
    paths = [resolve_key(a.key, base) for a in axes]
    axes = tuple(GridAxis(p, a.values) for p, a in zip(paths, axes, strict=True))
    check_grid(axes)
    cells = [dict(zip(paths, values, strict=True)) for values in _product(axes)]
    configs = {_key(cell): load_config(config, {**overrides, **cell}) for cell in cells}
    bars = load_bars(base)
    oos_index = bars.index[judged_start(bars, base):]
    at = pd.Timestamp(split) if split else default_split(oos_index)
    if at.tzinfo is None and oos_index.tz is not None:
        at = at.tz_localize(oos_index.tz)
    if not oos_index[0] < at <= oos_index[-1]:
        raise ConfigError(f"--split {at.date()} is outside the out-of-sample period "
                          f"{oos_index[0].date()}..{oos_index[-1].date()}; pick a date inside")
    retrain = not all(_cheap(p) for p in paths)
    return SweepPlan(base, axes, configs, bars, at, retrain)


def sensitivity(p: SweepPlan, progress: ProgressFactory | None = None,
                on_cell: Callable[[str], None] | None = None,
                registry: TrialRegistry | None = None) -> SweepOutput:
    """Backtest every cell of a checked grid out of sample; see the module docstring.

    Every cell is a unit of work on the config's executor (`executor:`; this process,
    local workers or Ray); the signals of a cheap grid are computed once, their folds on
    that executor too. The results are the same whichever runs them.
    `registry`: every cell is recorded as a trial on this data (`mltrader trials`), so a
    later backtest of the chosen cell is deflated by the whole grid."""
    bars = p.bars
    with session(p.base.executor):
        sig = None if p.retrain else _cell_signals(compute_signals(bars, p.base, progress))
        clock = run_clock(p.base, bars)
        ppy = clock.periods_per_year
        shared = GridCells(bars, p.configs, sig, ppy, clock.sessions)
        table, equities = run_grid_units(p.axes, grid_cell_equity, shared, p.split,
                                         progress=on_cell, initial_cash=p.base.initial_cash,
                                         periods_per_year=ppy)
    if registry is not None:  # here, in product order, whatever order the cells finished in
        dataset = data_fingerprint(bars)
        keys = [a.key for a in p.axes]
        trials = []
        for values, equity in zip(_product(p.axes), equities, strict=True):
            cell = dict(zip(keys, values, strict=True))
            cfg = p.configs[_key(cell)]
            r = equity.pct_change().dropna().to_numpy()
            trials.append(Trial(
                dataset, config_hash(cfg.model_dump(mode="json"), ignore=RUN_ONLY_KEYS),
                "sensitivity", ", ".join(f"{k}={v}" for k, v in cell.items()),
                per_bar_sharpe(r), len(r)))
        registry.record_many(trials)
    return SweepOutput(p.base, table, p.axes, p.split, p.retrain)


@dataclass(frozen=True)
class GridCells:
    """What every cell of a grid reads (shipped once to each worker): the bars, every cell's
    config, the signals when the model is not retrained (None: each cell retrains), the bars
    a year and each bar's trading session."""

    bars: Bars
    configs: dict[tuple[tuple[str, str], ...], RunConfig]
    sig: Signals | None
    ppy: float
    sessions: np.ndarray


def grid_cell_equity(shared: GridCells, cell: dict[str, object]) -> pd.Series:
    """One cell's equity: its rule and the engine on the shared signals, or (a grid over
    model or data keys) a whole run of its config, its folds one after another on a worker."""
    cfg = shared.configs[_key(cell)]
    bars, sig = shared.bars, shared.sig
    if sig is None:
        return run(cfg, bars=bars).strategy.equity
    inputs = StrategyInputs(bars=bars, predictions=sig.members or {}, regimes=sig.regimes)
    weights = run_strategy(cfg.strategy.name, inputs, cfg.strategy.params)
    cell_sig = dataclasses.replace(sig, weights=weights)
    sized = trade_targets(cell_sig, bars, cfg, shared.ppy)
    res = run_backtest(bars, sized.values, engine_settings(cfg, sig.fill, shared.ppy),
                       start=sig.start, unit=sized.unit, sessions=shared.sessions)
    return res.equity


def _cell_signals(sig: Signals) -> Signals:
    """The signals without what no cell reads (the features, the fitted models), so less
    travels to the workers."""
    return dataclasses.replace(sig, features={}, folds=[], last_model=None)


def _product(axes: Sequence[GridAxis]) -> list[tuple[object, ...]]:
    return list(itertools.product(*(a.values for a in axes)))


def _key(cell: dict[str, object]) -> tuple[tuple[str, str], ...]:
    return tuple((k, repr(v)) for k, v in cell.items())
