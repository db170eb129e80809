"""`mltrader compare`: several models on the same walk-forward folds, judged out of sample.

Every model sees the same features, labels, folds, strategy rule and costs; the leaderboard
shows prediction quality (IC, hit rate against coin flips and "always up", MSE against the
zero forecast) and what trading on the predictions earned after costs, next to
buy-and-hold over the same bars. A model that loses to the naive baselines shows as losing.
"""

from __future__ import annotations

import contextvars
import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mltrader.backtest.deflated import deflated_sharpe_ratio
from mltrader.backtest.engine import run_backtest
from mltrader.backtest.metrics import compute_metrics
from mltrader.backtest.result import BacktestResult
from mltrader.config import ModelConfig, RunConfig, StrategyConfig
from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.models.evaluation import prediction_stats
from mltrader.models.registry import CLASSIFIERS, PANEL_MODELS
from mltrader.models.units import parallel_active
from mltrader.parallel import session
from mltrader.pipeline import (
    ProgressFactory,
    buy_and_hold_targets,
    compute_signals,
    load_bars,
    run_clock,
    trade_targets,
)
from mltrader.plan import allows_short, engine_settings, resolve_fill
from mltrader.risk.guards import Guards
from mltrader.strategy.registry import get_strategy
from mltrader.trials import (
    RUN_ONLY_KEYS,
    TrialRegistry,
    TrialStats,
    config_hash,
    data_fingerprint,
    deflation_inputs,
    per_bar_sharpe,
    trials_of_run,
)

LEADERBOARD_COLUMNS = (
    "model", "rule", "ic_mean", "ic_t", "hit_rate", "hit_p_value", "always_up_rate", "mse_ratio",
    "sharpe", "deflated_sharpe", "dsr_trials", "n_trials", "cagr", "max_drawdown",
    "total_return", "turnover", "cost_drag", "trades",
)


@dataclass(frozen=True)
class CompareOutput:
    """The leaderboard and each model's backtest, plus buy-and-hold on the same bars."""

    config: RunConfig
    leaderboard: pd.DataFrame
    results: dict[str, BacktestResult]
    benchmark: BacktestResult
    oos: dict[str, object]


def model_config(cfg: RunConfig, mc: ModelConfig) -> RunConfig:
    """The run config one compared model is run with: `cfg` with its model, and, for a
    policy that outputs positions (rl_sharpe, the RL agents) under a forecast rule, the
    positions rule in its place (same shorting), since a position is not a forecast."""
    update: dict[str, object] = {"model": mc, "compare": []}
    if mc.add_features:
        update["features"] = list(dict.fromkeys([*cfg.features, *mc.add_features]))
    out = cfg.model_copy(update=update)
    if mc.name in PANEL_MODELS and cfg.strategy.name != "positions":
        rule = StrategyConfig(name="positions", allow_short=allows_short(cfg))
        out = out.model_copy(update={"strategy": rule})
    return out


def _label(mc: ModelConfig) -> str:
    return mc.label or mc.name


def _deflate(rows: list[dict], results: dict[str, BacktestResult], n_trials: int,
             stats: TrialStats | None = None) -> None:
    """Deflated Sharpe of every model: picking the best of all trials is a multiple test.

    All configurations tried (every model, and every tuning trial) count as trials; their
    spread is estimated from the per-bar Sharpes of the models on the leaderboard, or, with
    fewer than two of them, taken as the sampling variance of one Sharpe over these bars
    (1 / T: the floor `mltrader backtest` uses too; a variance of 0 would deflate nothing).
    With a trial registry's `stats`, every trial recorded on this data counts instead.
    Each row records the trials its deflation used (``dsr_trials``).
    """
    rets = {name: res.equity.pct_change().dropna().to_numpy() for name, res in results.items()}
    sharpes = np.array([r.mean() / r.std(ddof=1) for r in rets.values() if r.std(ddof=1) > 0])
    trials = max(n_trials, 1)
    for row in rows:
        if row["model"] not in rets:  # buy-and-hold was not chosen among trials
            continue
        r = rets[row["model"]]
        spread = len(sharpes) > 1 and trials > 1
        n, var = ((trials, None if spread else 1.0 / max(len(r), 1)) if stats is None
                  else deflation_inputs(stats, len(r)))
        try:
            out = deflated_sharpe_ratio(
                r, n, trial_sharpes=sharpes if stats is None and spread else None,
                sr_variance=var)
            row["deflated_sharpe"] = out["dsr"]
        except ValueError:
            row["deflated_sharpe"] = None
        row["dsr_trials"] = n


def _run_models(shared: _Shared, models: list[ModelConfig],
                unit_progress: ProgressFactory | None) -> list[_ModelOut]:
    """Every model, in order. On workers or Ray the models run side by side in threads of
    this process, so the folds of all of them (the units) queue together and keep every
    worker busy; in this process one after another, with each model's fold progress."""
    if not parallel_active():
        return [_run_model(shared, mc) for mc in models]
    quiet = dataclasses.replace(shared, progress=None)  # fold bars would interleave
    ctx = unit_progress(len(models)) if unit_progress else nullcontext(lambda _msg: None)
    pool = ThreadPoolExecutor(len(models), "compare")
    outs: dict[int, _ModelOut] = {}
    with ctx as advance:
        futures = {pool.submit(contextvars.copy_context().run, _run_model, quiet, mc): i
                   for i, mc in enumerate(models)}
        try:
            for f in as_completed(futures):
                outs[futures[f]] = f.result()
                advance(f"{_label(models[futures[f]])} ({len(outs)} of {len(models)})")
        finally:  # on Ctrl-C or a failed model, do not wait here: the session's close
            # stops the units the other models wait on, and their threads end with them
            pool.shutdown(wait=not _unfinished(futures), cancel_futures=True)
    return [outs[i] for i in range(len(models))]


def _unfinished(futures: dict[Future[_ModelOut], int]) -> bool:
    return any(not f.done() for f in futures)


@dataclass(frozen=True)
class _Shared:
    """What every compared model reads."""

    cfg: RunConfig
    bars: Bars
    settings: EngineSettings
    ppy: float
    sessions: np.ndarray | None
    progress: ProgressFactory | None


@dataclass(frozen=True)
class _ModelOut:
    row: dict[str, object]
    result: BacktestResult
    n_trials: int
    start: int
    folds: int
    realised: np.ndarray


def _run_model(shared: _Shared, mc: ModelConfig) -> _ModelOut:
    """One compared model, the same path as `mltrader backtest`: features, tuning,
    walk-forward (same folds: they depend only on the bars and walk_forward settings)."""
    cfg, bars, ppy = shared.cfg, shared.bars, shared.ppy
    mcfg = model_config(cfg, mc)
    sig = compute_signals(bars, mcfg, shared.progress)
    start = sig.start
    sized = trade_targets(sig, bars, mcfg, ppy)
    res = run_backtest(bars, sized.values, shared.settings, start=start, unit=sized.unit,
                       sessions=shared.sessions)
    pred = sig.predictions.to_numpy()
    realised = sig.labels.to_numpy()
    direction = cfg.target.kind == "direction" or mc.name in CLASSIFIERS
    stats = prediction_stats(pred[start:], realised[start:], regression=not direction)
    row = {"model": _label(mc), "rule": mcfg.strategy.name, "n_trials": sig.n_trials,
           "params": sig.params, **stats, **compute_metrics(res, ppy)}
    return _ModelOut(row, res, sig.n_trials, start, len(sig.folds), realised)


def compare(cfg: RunConfig, progress: ProgressFactory | None = None, bars: Bars | None = None,
            registry: TrialRegistry | None = None,
            unit_progress: ProgressFactory | None = None) -> CompareOutput:
    """Train every model of `cfg.compare` (or `cfg.model`) walk-forward and score it.

    `registry`: every model is recorded as a trial on this data and each deflated Sharpe
    counts all the data's trials so far (`mltrader trials`); None: only this compare's."""
    bars = load_bars(cfg) if bars is None else bars
    if not get_strategy(cfg.strategy.name).needs_model:
        raise ConfigError(f"compare: strategy {cfg.strategy.name!r} uses no model, so there "
                          "is nothing to compare; use a model-based strategy (e.g. threshold)")
    models = list(cfg.compare) or [cfg.model]
    labels = [_label(m) for m in models]
    if len(set(labels)) != len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        raise ConfigError(f"compare lists {dup!r} twice; give each entry a distinct `label`")
    fill = resolve_fill(cfg, bars)
    clock = run_clock(cfg, bars)
    ppy, sessions = clock.periods_per_year, clock.sessions
    settings = engine_settings(cfg, fill, ppy)
    rows, results = [], {}
    trials: dict[str, int] = {}
    shared = _Shared(cfg, bars, settings, ppy, sessions, progress)
    with session(cfg.executor):
        outs = _run_models(shared, models, unit_progress)
    start, n_folds, realised = outs[0].start, outs[0].folds, outs[0].realised
    for mc, out in zip(models, outs, strict=True):
        trials[_label(mc)] = out.n_trials
        results[_label(mc)] = out.result
        rows.append(out.row)
    hold = dataclasses.replace(settings, stop_loss=None, take_profit=None, trailing_stop=None,
                               guards=Guards(), allow_short=False)
    bench = run_backtest(bars, buy_and_hold_targets(bars, start), hold, start=start,
                         sessions=sessions)
    always_up = prediction_stats(np.ones_like(realised[start:]), realised[start:],
                                 regression=False)  # the labels are the same for every model
    rows.append({"model": "buy & hold (equal weight)", "hit_rate": always_up["hit_rate"],
                 "always_up_rate": always_up["always_up_rate"], **compute_metrics(bench, ppy)})
    stats = None
    if registry is not None:
        ds = data_fingerprint(bars)
        recorded = []
        for mc in models:
            mcfg = model_config(cfg, mc)
            r = results[_label(mc)].equity.pct_change().dropna().to_numpy()
            recorded += trials_of_run(
                ds, config_hash(mcfg.model_dump(mode="json"), ignore=RUN_ONLY_KEYS),
                "compare", _label(mc), per_bar_sharpe(r), len(r),
                tuning_trials=trials[_label(mc)])
        registry.record_many(recorded)
        stats = registry.stats(ds)
    _deflate(rows, results, sum(trials.values()), stats)
    board = pd.DataFrame(rows)
    board = board[[c for c in LEADERBOARD_COLUMNS if c in board.columns]
                  + [c for c in board.columns if c not in LEADERBOARD_COLUMNS]]
    oos = {"start": str(bars.index[start].date()), "end": str(bars.index[-1].date()),
           "bars": int(len(bars) - start), "folds": n_folds}
    return CompareOutput(cfg, board, results, bench, oos)
