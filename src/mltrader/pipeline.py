"""One run end to end: data -> features -> walk-forward model -> strategy -> backtest -> metrics.

Everything the strategy is judged on is out of sample: the backtest starts at the first
walk-forward test bar, and buy-and-hold is run over exactly the same bars with the same costs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mltrader.backtest.deflated import deflated_sharpe_ratio
from mltrader.backtest.engine import run_backtest
from mltrader.backtest.metrics import bar_returns, benchmark_metrics, compute_metrics
from mltrader.backtest.result import BacktestResult
from mltrader.backtest.significance import benchmark_verdict
from mltrader.config import ModelConfig, RunConfig
from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.data.calendars import (
    MarketCalendar,
    periods_per_year,
    resolve_calendar,
    session_ids,
    weekend_hint,
)
from mltrader.data.datasets import DATASETS, SYNTHETIC_WARNING, load_bundled
from mltrader.data.fetch import NETWORK_SOURCES
from mltrader.data.intervals import check_interval, detect_interval
from mltrader.errors import ConfigError
from mltrader.features.labels import (
    cross_sectional,
    forward_price,
    forward_return,
    price_to_return,
)
from mltrader.features.registry import compute_features
from mltrader.models.evaluation import prediction_stats
from mltrader.models.panel import WARMUP, panel_inputs, walk_forward_panel
from mltrader.models.registry import AGENTS, PANEL_MODELS, SEQUENCE_MODELS, make_model
from mltrader.models.walkforward import (
    Fold,
    FoldReport,
    stack,
    walk_forward_predict,
)
from mltrader.news_inputs import prepare_news
from mltrader.parallel import session
from mltrader.plan import (
    engine_settings,
    execution,
    judged_start,
    panel_market,
    panel_plan,
    resolve_fill,
    run_folds,
    sizing_rules,
    strategy_regimes,
    tuned_params,
)
from mltrader.risk.guards import Guards
from mltrader.risk.sizing import SizedTargets, size_targets
from mltrader.strategy.base import StrategyInputs
from mltrader.strategy.ensemble import ensemble_missing
from mltrader.strategy.registry import get_strategy, run_strategy, validate_params
from mltrader.trials import (
    RUN_ONLY_KEYS,
    Trial,
    TrialRegistry,
    TrialStats,
    config_hash,
    data_fingerprint,
    deflation_inputs,
    per_bar_sharpe,
    trials_of_run,
)

ProgressFactory = Callable[[int], AbstractContextManager[Callable[[str], None]]]

SURVIVORSHIP_WARNING = (
    "Survivorship bias: these 20 stocks are today's large caps, picked in hindsight. Any "
    "strategy (and buy-and-hold) on them looks better than it would have in real time."
)


@dataclass(frozen=True)
class Signals:
    """The causal research outputs: features, out-of-sample predictions, target weights."""

    features: dict[str, pd.DataFrame]
    labels: pd.DataFrame
    predictions: pd.DataFrame  # the main model's (all NaN for a rule that needs no model)
    weights: pd.DataFrame
    folds: list[FoldReport]
    fill: str
    last_model: object = None  # the model of the last fold: what a live bot would use next
    params: dict[str, object] | None = None  # the model's parameters (tuned, when asked)
    n_trials: int = 1  # configurations tried to choose them
    start: int = 0  # the first out-of-sample bar: where the backtest starts
    members: dict[str, pd.DataFrame] | None = None  # every prediction the strategy saw
    regimes: pd.DataFrame | None = None  # per-symbol regime codes the strategy saw
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunOutput:
    """Everything a run produced, ready to be written to a run folder."""

    config: RunConfig
    bars: Bars
    signals: Signals
    strategy: BacktestResult
    benchmark: BacktestResult
    metrics: dict[str, object]
    notes: list[str]
    warnings: list[str]
    sizing: pd.DataFrame | None = None  # every cap that resized a target (risk/sizing.py)
    stress: dict[str, pd.DataFrame] | None = None  # crisis and regime tables
    engines: pd.DataFrame | None = None  # --engine backtrader: both engines side by side


@dataclass(frozen=True)
class RunClock:
    """How a run counts time on its bars: the calendar, the bar interval, the bars a year that
    annualise returns, and each bar's trading session (for the daily risk guards)."""

    calendar: MarketCalendar
    interval: str
    periods_per_year: float
    sessions: np.ndarray


def run_clock(cfg: RunConfig, bars: Bars) -> RunClock:
    """The run's clock: `data.calendar` (else the symbols' default) and the detected interval;
    backtest, compare and sensitivity all count time through this one function."""
    cal = resolve_calendar(cfg.data.calendar, bars.symbols)
    interval = detect_interval(bars.index)
    return RunClock(cal, interval, periods_per_year(bars.index, cal, interval),
                    session_ids(cal, bars.index))


def load_data(cfg: RunConfig) -> tuple[Bars, list[str]]:
    """The configured data (fetched, cached, cleaned as configured) and notes on where it
    came from and what cleaning changed."""
    d = cfg.data
    notes: list[str] = []
    if cfg.market == "cn_a":
        return _load_cn(cfg)
    if d.source in NETWORK_SOURCES:
        from mltrader.data.fetch import fetch_bars

        cache = None
        if d.cache:
            from mltrader.data.cache import BarCache

            cache = BarCache()
        res = fetch_bars(list(d.symbols), d.start, d.end, d.bar_interval, d.adjusted,
                         [d.source, *d.fallback], cache=cache)
        bars = res.bars
        notes.append(f"Data ({d.bar_interval}, {'adjusted' if d.adjusted else 'raw'} prices) "
                     f"served by {res.describe()}.")
    else:
        bars, local_notes = _load_local(cfg)
        notes += local_notes
    if d.clean != "none":
        from mltrader.data.quality import clean

        # judged as the run counts time (and as `mltrader data check` reports it)
        cal, interval = resolve_calendar(d.calendar, bars.symbols), detect_interval(bars.index)
        bars, changed = clean(bars, d.clean, calendar=cal.name, interval=interval)
        total = sum(changed.values())
        detail = ", ".join(f"{k}: {v}" for k, v in changed.items() if v) or "nothing to fix"
        notes.append(f"Cleaning ({d.clean}, calendar {cal.name}, interval {interval}) changed "
                     f"{total} cell(s) ({detail}).")
    return bars, notes


def _load_cn(cfg: RunConfig) -> tuple[Bars, list[str]]:
    """A-share data as a panel (signal prices per `data.adjust`, the traded prices and the
    exchange's reference data behind them, found again by `plan.execution`)."""
    from mltrader.data.ashare import ashare_panel, load_ashare, register_panel

    d = cfg.data
    if d.source == "bundled":
        data = load_ashare(d.adjust)
        where = "bundled 44 CSI 300 stocks (baostock, MIT)"
    elif d.source == "akshare":
        from mltrader.data.cn_fetch import check_ashare, fetch_ashare

        frame = fetch_ashare([str(s) for s in d.symbols], d.start, d.end, cache=d.cache)
        quality = check_ashare(frame, "akshare")
        data = ashare_panel(frame, d.adjust, "akshare")
        where = "akshare (East Money daily history; " + "; ".join(quality) + ")"
    else:
        from mltrader.data.cn_fetch import read_ashare_file

        data = ashare_panel(read_ashare_file(d.path), d.adjust, str(d.path))
        where = str(d.path)
    if d.symbols != "all" or d.start is not None or d.end is not None:
        symbols = None
        if d.symbols != "all":
            from mltrader.data.cn_codes import normalize_code

            symbols = [normalize_code(s) for s in d.symbols]
        data = data.select(symbols, d.start, d.end)
    register_panel(data)
    from mltrader.features.alpha158 import adjusted_vwap
    from mltrader.features.registry import set_alpha158_vwap

    set_alpha158_vwap(data.bars, adjusted_vwap(data.bars, data.amount, data.exec_bars))
    from mltrader.core.market import price_limits

    up, dn = price_limits(data)
    with np.errstate(invalid="ignore"):
        outside = int(np.sum(data.exec_bars.high > up + 1e-6) + np.sum(data.exec_bars.low
                                                                        < dn - 1e-6))
    n_susp = int(data.suspended.sum())
    n_st = int(data.is_st.any(axis=0).sum())
    notes = [f"A-share data from {where}: signals see {_ADJUST_WORDS[data.adjust]}; orders "
             f"fill at the real traded price of the day; {n_susp} suspended stock-days (no "
             f"fills, marked at the last price); {n_st} stock(s) ST at some point (5% limits); "
             f"{outside} high(s) / low(s) beyond the exchange's price limits"
             + (" (check the reference closes: the limits are computed from them)."
                if outside else ".")]
    return data.bars, notes


_ADJUST_WORDS = {"qfq": "forward-adjusted (qfq) prices", "hfq": "backward-adjusted (hfq) prices",
                 "none": "unadjusted prices"}


def load_bars(cfg: RunConfig) -> Bars:
    """The configured file or bundled data, cut to the configured symbols and dates."""
    if cfg.market == "cn_a":
        return _load_cn(cfg)[0]
    if cfg.data.source in NETWORK_SOURCES:
        return load_data(cfg)[0]
    return _load_local(cfg)[0]


def _load_local(cfg: RunConfig) -> tuple[Bars, list[str]]:
    """Bundled data or the user's file (missing cells handled per `data.clean`, the bar
    interval detected and checked against a declared one), cut to symbols and dates."""
    d = cfg.data
    notes: list[str] = []
    if d.source == "bundled":
        bars = load_bundled(d.dataset)
    else:
        from mltrader.data.files import load_file_report

        bars, report = load_file_report(d.path, clean=d.clean)
        notes += list(report.notes)
        check_interval(d.path, d.interval, report.interval)
        if report.interval != "1d":
            notes.append(f"{d.path}: {report.interval} bars (detected from their spacing).")
    symbols = None if d.symbols == "all" else list(d.symbols)
    if symbols is None and d.start is None and d.end is None:
        return bars, notes
    return bars.select(symbols, d.start, d.end), notes


@dataclass(frozen=True)
class _Predicted:
    pred: pd.DataFrame
    reports: list[FoldReport]
    last_model: object
    params: dict[str, object]
    n_trials: int
    notes: tuple[str, ...] = ()


def _predict(bars: Bars, cfg: RunConfig, mc: ModelConfig, feats: dict[str, pd.DataFrame],
             labels: pd.DataFrame, folds: list[Fold], fill: str,
             progress: ProgressFactory | None) -> _Predicted:
    """One model's walk-forward out-of-sample predictions (an expected-return-like signal)."""
    if mc.name in PANEL_MODELS:
        return _predict_panel(bars, cfg, mc, feats, labels, folds, fill, progress)
    fitted: list[object] = []
    price = cfg.target.kind == "price"
    train_on = (forward_price(bars, fill, cfg.target.horizon) if price
                else cross_sectional(labels, cfg.target.cross_section))
    x = stack(feats)
    params, n_trials = tuned_params(mc, x, train_on.to_numpy(np.float64), folds[0], cfg)
    pred, reports = walk_forward_predict(
        x, train_on.to_numpy(np.float64), folds,
        functools.partial(make_model, mc.name, params, cfg.seed),  # picklable: folds may
        min_train_rows=cfg.walk_forward.min_train_rows, index=bars.index, progress=progress,
        direction=cfg.target.kind == "direction",
        window=mc.window if mc.name in SEQUENCE_MODELS else None,
        on_fit=lambda _fold, model: fitted.__setitem__(slice(None), [model]),  # keep the last
        clip_quantile=0.0 if price else 0.01,
    )
    if price:
        pred = price_to_return(pred, bars)
    pred_df = pd.DataFrame(pred, index=bars.index, columns=list(bars.symbols))
    return _Predicted(pred_df, reports, fitted[-1] if fitted else None, params, n_trials)


def _predict_panel(bars: Bars, cfg: RunConfig, mc: ModelConfig, feats: dict[str, pd.DataFrame],
                   labels: pd.DataFrame, folds: list[Fold], fill: str,
                   progress: ProgressFactory | None) -> _Predicted:
    """A panel model's walk-forward positions in [-1, 1] (`models.panel`), on the same folds.

    rl_sharpe learns from the one-bar return its position earns (the run's labels, target
    kind return, horizon 1), net of a one-way cost: ``model.params.cost_bps``, else the
    run's own commission + slippage + half-spread, so it trains on the costs it is judged on.
    An agent (`registry.AGENTS`) learns by trading the run's own market (`plan.panel_market`).
    """
    name = _label(mc)
    y = labels.to_numpy(np.float64)
    params, n_trials = tuned_params(mc, stack(feats), y, folds[0], cfg)
    pp = panel_plan(mc, cfg, params)
    est, lags, why = pp.est, pp.lags, pp.cost_why
    x = panel_inputs(stack(feats), bars.close, lags)
    market = None
    if mc.name in AGENTS:
        ppy = periods_per_year(bars.index, resolve_calendar(cfg.data.calendar, bars.symbols))
        market = panel_market(cfg, bars, x, fill, ppy)
    fitted: list[object] = []
    pred, reports = walk_forward_panel(
        x, y, folds, pp.factory(mc.name, cfg.seed),
        min_train_rows=cfg.walk_forward.min_train_rows, index=bars.index, progress=progress,
        on_fit=lambda _fold, model: fitted.__setitem__(slice(None), [model]),  # keep the last
        market=market,
    )
    online = bool(getattr(fitted[-1], "online", False)) if fitted else False
    inputs = f"{len(feats)} feature(s)" + (f" + the last {lags} returns" if lags else "")
    if mc.name in AGENTS:
        first = (f"Model {name}: a Stable-Baselines3 {mc.name.upper()} agent trained per fold "
                 f"for {est.get('total_timesteps', 20_000):,} steps by trading the training "
                 f"years in the run's own market ({why}, its risk guards too; stop-losses "
                 f"and take-profits act in the backtest only); inputs {inputs} over the last "
                 f"{est.get('window', 5)} bars, plus its weights.")
    else:
        first = (f"Model {name}: a recurrent policy (Moody & Saffell direct reinforcement) "
                 f"trained per fold on the net Sharpe of its positions; inputs {inputs}; "
                 f"one-way cost {est['cost_bps']:g} bps in training ({why}).")
    notes = (
        first,
        f"Model {name}: each fold's policy runs from {WARMUP} bars before its test period so "
        "it enters it in its own state, not flat; "
        + ("it keeps adapting out of sample (differential Sharpe; the position at bar t "
           "learns from returns realised by bar t's fill)." if online
           else "its weights stay fixed out of sample."),
    )
    pred_df = pd.DataFrame(pred, index=bars.index, columns=list(bars.symbols))
    return _Predicted(pred_df, reports, fitted[-1] if fitted else None,
                      {**est, "lags": lags}, n_trials, notes)


def _label(mc: ModelConfig) -> str:
    return mc.label or mc.name


def compute_signals(bars: Bars, cfg: RunConfig, progress: ProgressFactory | None = None
                    ) -> Signals:
    """Features, walk-forward predictions and the strategy's target weights; causal."""
    fill = resolve_fill(cfg, bars)
    spec = get_strategy(cfg.strategy.name)
    params = validate_params(cfg.strategy.name, cfg.strategy.params)
    prepare_news(cfg, bars)  # the news_* features' news, loaded and scored once
    feats = compute_features(bars, cfg.features)
    labels = forward_return(bars, fill, cfg.target.horizon)
    folds = run_folds(bars, cfg) if spec.needs_model else []
    members: dict[str, pd.DataFrame] = {}
    main: _Predicted | None = None
    notes: list[str] = []
    if spec.needs_model:
        main, members, notes = _predict_all(bars, cfg, feats, labels, folds, fill, progress)
    regimes = strategy_regimes(bars, cfg) if spec.needs_regimes else None
    inputs = StrategyInputs(bars=bars, predictions=members, regimes=regimes)
    if cfg.strategy.name == "ensemble":
        missing = ensemble_missing(params, inputs)
        if missing:
            notes.append(f"The ensemble ran without {', '.join(missing)} (no such model in "
                         "this run); it votes with the members it has.")
    if regimes is not None and "buy_above" in type(params).model_fields:
        start = judged_start(bars, cfg)
        sig_oos = inputs.signal(getattr(params, "member", "model"))[start:]
        with np.errstate(invalid="ignore"):
            want = sig_oos > params.buy_above  # type: ignore[attr-defined]
        bear = np.isin(regimes.to_numpy()[start:], (0, 1)) & want
        notes.append(f"Regime filter: the signal was above buy_above on {int(want.sum())} "
                     f"symbol-bars out of sample; {int(bear.sum())} of them "
                     f"({bear.sum() / max(want.sum(), 1):.0%}) fell in a bearish regime and "
                     "were not bought.")
    weights = run_strategy(cfg.strategy.name, inputs, cfg.strategy.params)
    start = folds[0].test_start if folds else judged_start(bars, cfg, weights)
    nan = pd.DataFrame(np.nan, index=bars.index, columns=list(bars.symbols))
    return Signals(
        feats, labels, main.pred if main else nan, weights, main.reports if main else [],
        fill, main.last_model if main else None, main.params if main else None,
        main.n_trials if main else 1, start, members, regimes, tuple(notes))


def _stacking(cfg: RunConfig) -> tuple[set[str], int]:
    """(labels of the models other models read as inputs, the most nested years asked);
    refuses an unknown, self or stacked input in one line."""
    models = [cfg.model, *cfg.strategy.models]
    labels = [_label(mc) for mc in models]
    stacked = {_label(mc) for mc in models if mc.inputs}
    bases: set[str] = set()
    years = 0
    for mc in models:
        for name in mc.inputs:
            if name == _label(mc):
                raise ConfigError(f"model {_label(mc)!r} lists itself in inputs; list the "
                                  "other models whose predictions it reads")
            if name not in labels:
                raise ConfigError(f"model {_label(mc)!r}: input {name!r} is not a model of "
                                  f"this run (models: {', '.join(labels)}); use their labels")
            if name in stacked:
                raise ConfigError(f"model {_label(mc)!r}: input {name!r} reads inputs itself; "
                                  "one level of stacking only")
            bases.add(name)
        if mc.inputs:
            years = max(years, mc.nested_years)
    return bases, years


def _predict_all(bars: Bars, cfg: RunConfig, feats: dict[str, pd.DataFrame],
                 labels: pd.DataFrame, folds: list[Fold], fill: str,
                 progress: ProgressFactory | None
                 ) -> tuple[_Predicted, dict[str, pd.DataFrame], list[str]]:
    """Every model of the run walked forward: (the main model's, predictions by label, notes).

    Nested walk-forward for stacking: a model with ``inputs`` also reads those models'
    predictions, which must be out of sample on its own training window. So the input models
    are walked forward from ``nested_years`` before the first test year (the same rule, more
    folds); the stacked model, on the run's folds, trains on rows where every input is an
    out-of-sample prediction (earlier rows have none and are skipped as incomplete); after
    it, the input models' extra years are dropped, so the run is judged from its own start.
    """
    models = [cfg.model, *cfg.strategy.models]
    bases, years = _stacking(cfg)
    inner = folds
    if bases:
        wf = cfg.walk_forward.model_copy(update={"first_test_year":
                                                 cfg.walk_forward.test_year - years})
        inner = run_folds(bars, cfg.model_copy(update={"walk_forward": wf}))
    done: dict[str, _Predicted] = {}
    notes: list[str] = []
    for mc in sorted(models, key=lambda m: bool(m.inputs)):  # inputs before their readers
        if mc.inputs:
            x = dict(feats)
            for name in mc.inputs:
                x[f"prediction:{name}"] = done[name].pred
            got = _predict(bars, cfg, mc, x, labels, folds, fill, progress)
            notes.append(
                f"Model {_label(mc)} reads the out-of-sample predictions of "
                f"{', '.join(mc.inputs)} as inputs (nested walk-forward: those models were "
                f"walked forward from {cfg.walk_forward.test_year - years}, so each of its "
                "folds trains only on their out-of-sample predictions).")
        else:
            got = _predict(bars, cfg, mc, feats, labels,
                           inner if _label(mc) in bases else folds, fill, progress)
        done[_label(mc)] = got
        notes += got.notes
    start = folds[0].test_start if folds else 0
    for name in bases:  # judged from the run's own first test bar, like every model
        p = done[name]
        pred = p.pred.copy()
        pred.iloc[:start] = np.nan
        kept = [r for r in p.reports if r.fold.test_start >= start]
        done[name] = dataclasses.replace(p, pred=pred, reports=kept)
    main = done[_label(cfg.model)]
    members = {"model": main.pred}
    for mc in models:
        members[_label(mc)] = done[_label(mc)].pred
    return main, members, notes


def trade_targets(sig: Signals, bars: Bars, cfg: RunConfig, ppy: float | None = None
                  ) -> SizedTargets:
    """The strategy's weights sized and capped by the risk rules: what the engine trades.
    ``ppy``: the run's bars a year (`run_clock`), computed here when not given."""
    if ppy is None:
        ppy = periods_per_year(bars.index, resolve_calendar(cfg.data.calendar, bars.symbols))
    return size_targets(sig.weights, bars, sizing_rules(cfg, ppy, bars))


def buy_and_hold_targets(bars: Bars, start: int) -> pd.DataFrame:
    """Equal weight in every symbol trading at bar `start`, decided once and never rebalanced."""
    targets = np.full(bars.shape, np.nan)
    live = ~np.isnan(bars.close[start])
    targets[start] = np.where(live, 1.0 / max(live.sum(), 1), 0.0)
    return pd.DataFrame(targets, index=bars.index, columns=list(bars.symbols))


def _deflated(res: BacktestResult, n_trials: int, ppy: float = 252.0,
              stats: TrialStats | None = None) -> dict[str, object]:
    """The strategy's deflated Sharpe: P(true Sharpe > the best expected from n_trials by luck).

    Without a trial registry (`stats` None) the run counts itself and its tuning trials, and
    the spread of trial Sharpes is the sampling variance of one Sharpe over these bars (1 / T,
    its floor: tuning trials are scored by IC, not Sharpe). With one, every trial recorded on
    the same data so far counts (`trials.deflation_inputs`).
    """
    r = res.equity.pct_change().dropna().to_numpy()
    if stats is None:
        n, var = n_trials, 1.0 / max(len(r), 1)
    else:
        n, var = deflation_inputs(stats, len(r))
    extra = {} if stats is None else {"dataset": stats.dataset, "by_kind": stats.by_kind}
    try:
        out = deflated_sharpe_ratio(r, n, sr_variance=var)
    except ValueError as e:
        return {"dsr": None, "n_trials": n, "why": str(e), **extra}
    return {"dsr": out["dsr"], "n_trials": n, "sharpe_variance": var,
            "expected_max_sharpe_annual": out["expected_max_sharpe"] * np.sqrt(ppy), **extra}


def significance(strat: BacktestResult, bench: BacktestResult, ppy: float,
                 deflated: dict[str, object]) -> dict[str, object]:
    """Did the strategy beat buy-and-hold, beyond luck? The Sharpe difference (Ledoit-Wolf
    HAC), the alpha's Newey-West t-stat, buy-and-hold levered to the strategy's volatility,
    and the deflated Sharpe of the active returns over the trials counted for this run."""
    r = bar_returns(strat.equity, strat.initial_cash)
    b = bar_returns(bench.equity, bench.initial_cash)
    n = int(deflated.get("n_trials") or 1)  # type: ignore[call-overload]
    var = deflated.get("sharpe_variance")
    try:
        return benchmark_verdict(r, b, ppy, n_trials=n,
                                 trial_sharpe_variance=None if var is None else float(var))  # type: ignore[arg-type]
    except ValueError as e:
        return {"beats_benchmark": None, "summary": None, "why": str(e)}


def run_trials(dataset: str, cfg: RunConfig, modelled: bool, returns: np.ndarray,
               n_trials: int, kind: str = "backtest") -> list[Trial]:
    """The trials one run counts on its data: itself (labelled strategy/model when a model
    was walked forward) and its tuning trials."""
    label = f"{cfg.strategy.name}/{cfg.model.name}" if modelled else cfg.strategy.name
    return trials_of_run(
        dataset, config_hash(cfg.model_dump(mode="json"), ignore=(*RUN_ONLY_KEYS, "compare")),
        kind, label, per_bar_sharpe(returns), len(returns), tuning_trials=n_trials)


def _record_trial(registry: TrialRegistry | None, cfg: RunConfig, bars: Bars, sig: Signals,
                  strat: BacktestResult, kind: str = "backtest") -> TrialStats | None:
    """Record this backtest (and its tuning trials) on its data; the data's trials so far."""
    if registry is None:
        return None
    ds = data_fingerprint(bars)  # the whole loaded panel: rules with other warm-ups count too
    r = strat.equity.pct_change().dropna().to_numpy()
    registry.record_many(run_trials(ds, cfg, bool(sig.folds), r, sig.n_trials, kind))
    return registry.stats(ds)


def dataset_warnings(cfg: RunConfig) -> list[str]:
    """What every report on the configured bundled data must say about it."""
    if cfg.data.source != "bundled":
        return []
    spec = DATASETS[cfg.data.dataset]
    return ([SURVIVORSHIP_WARNING] if spec.name == "sp500_20stocks" else []) + (
        [SYNTHETIC_WARNING] if spec.synthetic else [])


def _ic_summary(sig: Signals) -> dict[str, object]:
    stats = prediction_stats(sig.predictions.to_numpy(), sig.labels.to_numpy())
    return {"mean_daily_ic": stats["ic_mean"], "ic_t_stat": stats["ic_t"],
            "mean_daily_pearson_ic": stats["pearson_ic_mean"], "folds": len(sig.folds)}


def run(cfg: RunConfig, progress: ProgressFactory | None = None, bars: Bars | None = None,
        registry: TrialRegistry | None = None, trial_kind: str = "backtest",
        engine: str = "mltrader") -> RunOutput:
    """The whole job for one config; `bars` overrides the configured data (for tests).

    `registry`: the trials run on this data so far (`mltrader trials`); this run is recorded
    in it (as a `trial_kind` trial: "rl_seed" for one seed of `mltrader seeds`) and its
    deflated Sharpe counts them all. None: the run counts only itself.
    `engine` "backtrader": the same targets also run through backtrader, and the output
    carries both engines' results side by side (`RunOutput.engines`)."""
    if engine not in ("mltrader", "backtrader"):
        raise ConfigError(f"--engine must be mltrader or backtrader; got {engine!r}")
    data_notes: list[str] = []
    if bars is None:
        bars, data_notes = load_data(cfg)
    # the calendar decides annualisation and what a "day" is for the daily risk guards
    clock = run_clock(cfg, bars)
    cal, interval, ppy, sessions = (clock.calendar, clock.interval, clock.periods_per_year,
                                    clock.sessions)
    with session(cfg.executor):  # the walk-forward folds run where `executor:` says
        sig = compute_signals(bars, cfg, progress)
    start = sig.start
    settings = engine_settings(cfg, sig.fill, ppy)
    sized = trade_targets(sig, bars, cfg, ppy)
    fill_bars, rules = execution(cfg, bars)  # A-shares: real prices, the market's rules
    strat = run_backtest(fill_bars, sized.values, settings, start=start, unit=sized.unit,
                         sessions=sessions, rules=rules)
    # buy-and-hold holds: same costs and fills, but no stop, target or guard ever sells it
    hold = dataclasses.replace(settings, stop_loss=None, take_profit=None, trailing_stop=None,
                               guards=Guards(), allow_short=False)
    bench = run_backtest(fill_bars, buy_and_hold_targets(bars, start), hold, start=start,
                         sessions=sessions, rules=rules)
    engines = None
    if engine == "backtrader":
        try:
            from mltrader.backtest.bt_engine import compare_engines, run_backtrader
        except ModuleNotFoundError as e:
            raise ConfigError(f"--engine backtrader needs the {e.name} package: pip install "
                              "'mltrader[cn]' (or pip install backtrader)") from None

        theirs = run_backtrader(fill_bars, sized.values, settings, start=start,
                                rules=settings.market, arrays=rules, unit=sized.unit)
        engines = compare_engines(strat, theirs, ppy)
    adjustments = sized.adjustments[sized.adjustments["date"] >= bars.index[start]]
    stress = stress_tables(bars, strat, bench, ppy)
    idx = bars.index
    oos = {"start": str(idx[start].date()), "end": str(idx[-1].date()),
           "bars": int(len(idx) - start)}
    metrics: dict[str, object] = {
        "strategy": compute_metrics(strat, ppy),
        "buy_and_hold": compute_metrics(bench, ppy),
        "vs_buy_and_hold": benchmark_metrics(strat, bench, ppy),
        "deflated_sharpe": _deflated(
            strat, sig.n_trials, ppy, _record_trial(registry, cfg, bars, sig, strat, trial_kind)),
        "vs_buy_and_hold_significance": None,  # filled below, from the trials just counted
        "periods_per_year": ppy,
        "calendar": cal.name,
        "interval": interval,
        "annualised_from_under_a_year": oos["bars"] < ppy,
        "out_of_sample": oos,
        "model": ({"name": cfg.model.name, "params": sig.params, "n_trials": sig.n_trials,
                   **_ic_summary(sig)} if sig.folds else None),
        "strategy_rule": {"name": cfg.strategy.name, "params": validate_params(
            cfg.strategy.name, cfg.strategy.params).model_dump(mode="json")},
        "risk": risk_summary(strat, adjustments, cfg),
        "stress": {k: v.to_dict(orient="records") for k, v in stress.items()},
        "fill_timing": strat.fill_timing,
        "symbols": list(bars.symbols),
    }
    if engines is not None:
        metrics["engines"] = engines.reset_index().to_dict(orient="records")
    index_name = cfg.benchmark_index or ("000300.SH" if cfg.market == "cn_a" else None)
    if index_name:
        metrics["index"] = index_metrics(index_name, strat.equity, ppy)
    if cfg.market != "us":
        metrics["market"] = {"name": cfg.market, "currency": settings.market.currency,
                             "payouts": strat.payouts}
    metrics["vs_buy_and_hold_significance"] = significance(
        strat, bench, ppy, metrics["deflated_sharpe"])  # type: ignore[arg-type]
    retrain = (f"the model is retrained {cfg.walk_forward.retrain} on data before each period "
               "only." if sig.folds else "the rule needs no model; the same bars are judged "
               "as for a model run.")
    notes = [
        f"Out-of-sample period {oos['start']} to {oos['end']} ({oos['bars']} bars): {retrain}",
        *data_notes,
        *sig.notes,
        f"Orders decided on a bar's close fill at the {strat.fill_timing}"
        + (" (the data has closes only)." if bars.close_only else "."),
        f"Costs: commission {cfg.costs.commission_bps:g} bps + slippage "
        f"{cfg.costs.slippage_bps:g} bps of traded value, on strategy and buy-and-hold alike.",
        f"Annualised with {ppy:,.{0 if float(ppy).is_integer() else 1}f} bars a year "
        f"(calendar {cal.name}, interval {interval}).",
    ]
    dsr = metrics["deflated_sharpe"]["dsr"]  # type: ignore[index]
    n_dsr = metrics["deflated_sharpe"]["n_trials"]  # type: ignore[index]
    if dsr is not None:
        notes.append(f"Deflated Sharpe ratio {dsr:.2f}: the probability that the strategy's "
                     f"true Sharpe beats the best one {n_dsr} configuration(s) would "
                     "show by luck (Bailey & Lopez de Prado 2014); below 0.95 it is not "
                     "significant.")
    rk = cfg.risk
    if bars.close_only and (rk.stop_loss or rk.take_profit or rk.trailing_stop):
        notes.append(close_only_exits_note(rk.stop_loss, rk.take_profit, rk.trailing_stop))
    s_sharpe = metrics["strategy"]["sharpe"]  # type: ignore[index]
    b_sharpe = metrics["buy_and_hold"]["sharpe"]  # type: ignore[index]
    s_ret = metrics["strategy"]["total_return"]  # type: ignore[index]
    b_ret = metrics["buy_and_hold"]["total_return"]  # type: ignore[index]
    verdict = ("beat" if (s_ret or 0) > (b_ret or 0) else "did NOT beat")
    sig_test = metrics["vs_buy_and_hold_significance"]
    if sig_test.get("summary"):  # type: ignore[union-attr]
        notes.append(f"Verdict: {sig_test['summary']}")  # type: ignore[index]
    else:
        notes.append(f"Verdict: no significance test against buy-and-hold "
                     f"({sig_test.get('why')}).")  # type: ignore[union-attr]
    notes.append(f"On total return the strategy {verdict} equal-weight buy-and-hold "
                 f"({s_ret:+.1%} vs {b_ret:+.1%}); Sharpe {s_sharpe or 0:.2f} vs "
                 f"{b_sharpe or 0:.2f}. The deflated Sharpe above tests against zero; the "
                 "verdict tests against the benchmark.")
    warnings = []
    off_calendar = weekend_hint(cal, idx, interval)
    if off_calendar:
        warnings.append(off_calendar + ".")
    if metrics["annualised_from_under_a_year"]:
        warnings.append(f"The out-of-sample period is {oos['bars']} bars (< one year of "
                        f"{ppy:,.{0 if float(ppy).is_integer() else 1}f}): CAGR, volatility "
                        "and Sharpe below are annualised from less than a year; read them as "
                        "rough.")
    if not metrics["strategy"]["fills"]:  # type: ignore[index]
        warnings.append("The strategy never traded out of sample: its entry condition was "
                        "never met (see the notes); lower the thresholds or check the "
                        "predictions (predictions.parquet).")
    warnings += dataset_warnings(cfg)
    m = metrics["strategy"]
    notes.append(f"Turnover {m['turnover'] or 0:.1f}x equity per year; costs ate "  # type: ignore[index]
                 f"{m['cost_drag'] or 0:.2%} of equity per year (cost drag).")  # type: ignore[index]
    if cfg.market != "us":
        notes.append(_market_note(cfg, strat, settings))
    if "index" in metrics:
        ix = metrics["index"]
        notes.append(f"Against the index {ix['name']} over the same days: total return "  # type: ignore[index]
                     f"{s_ret:+.1%} vs {ix['total_return']:+.1%}, Sharpe {s_sharpe or 0:.2f} vs "  # type: ignore[index]
                     f"{ix['sharpe'] or 0:.2f} (the index pays no costs).")  # type: ignore[index]
    return RunOutput(cfg, bars, sig, strat, bench, metrics, notes, warnings, adjustments, stress,
                     engines)


def _market_note(cfg: RunConfig, strat: BacktestResult, settings: EngineSettings) -> str:
    """What the market's own rules did, in words (the counts are in the risk table)."""
    m = settings.market
    orders = strat.orders
    blocked = 0
    if orders is not None and len(orders):
        blocked = int(orders["reason"].astype(str).str.startswith("market:").sum())
    held = sum(n for _, n in strat.held_back)
    return (f"Market {cfg.market}: money in {m.currency}; {m.lot_size}-share lots (odd lots "
            f"sold whole), T+1, daily price limits, {m.min_commission:g} {m.currency} minimum "
            "commission, stamp duty on sells and the transfer fee at their rates on each day; "
            f"{blocked} order(s) refused by these rules and {held} exit(s) held back (see Risk "
            f"actions); {strat.payouts:,.0f} {m.currency} of dividends and other ex-rights "
            "value credited to holders.")


def index_curve(name: str, index: pd.DatetimeIndex, initial: float) -> pd.Series:
    """An index held from the close of `index[0]` (where the strategy's first decision is
    taken), as a value curve starting at `initial`, on `index`'s dates (bundled CN indices)."""
    from mltrader.data.ashare import load_cn_index

    close = load_cn_index(name).frame("close").iloc[:, 0]
    if close.index[0] > index[0] or close.index[-1] < index[-1]:
        raise ConfigError(f"benchmark_index {name}: the bundled index does not cover "
                          f"{index[0].date()}..{index[-1].date()}")
    on = close.reindex(index).ffill()
    curve = on / float(on.iloc[0]) * initial  # bought at the first judged close, like ours
    return curve.rename(name)


def index_metrics(name: str, equity: pd.Series, ppy: float) -> dict[str, object]:
    """The index's metrics over the strategy's out-of-sample bars (from the same cash)."""
    from mltrader.backtest.metrics import curve_metrics

    initial = float(equity.iloc[0]) if len(equity) else 1.0
    curve = index_curve(name, equity.index, initial)
    return {"name": name, **curve_metrics(curve, initial, ppy)}


def close_only_exits_note(stop_loss: float | None, take_profit: float | None,
                          trailing_stop: float | None) -> str:
    """What close-only data does to exits: levels are judged, and filled, at closes."""
    parts = []
    if stop_loss or trailing_stop:
        parts.append("a stop fills at the close that breaches it (pessimistic: a real stop "
                     "order could fill nearer its level)")
    if take_profit:
        parts.append("a take-profit fills at the close beyond its target (optimistic: a real "
                     "limit order fills at the target)")
    return ("Stops and targets are judged on closes only (no intrabar high/low in this data): "
            + "; ".join(parts) + ".")


def risk_summary(strat: BacktestResult, adjustments: pd.DataFrame, cfg: RunConfig
                 ) -> dict[str, object]:
    """What the risk layer did: caps that resized targets, guards that blocked orders, exits."""
    orders = strat.orders
    acted: dict[str, int] = {}
    if orders is not None and len(orders):
        reason = orders["reason"].astype(str)
        rules = reason.str.startswith("risk:") | reason.str.startswith("market:") | (
            reason == "resized to fit cash / leverage")
        if cfg.market != "us":  # suspensions: no fill on a halted day
            rules |= reason == "symbol did not trade on the fill bar"
        hit = orders[rules]
        for (why, status), n in hit.groupby([hit["reason"].astype(str),
                                             hit["status"].astype(str)]).size().items():
            if n:
                acted[f"{why} ({status})"] = int(n)
    if cfg.market != "us":  # every rule of the market is listed, 0 when it never acted
        from mltrader.backtest.engine import MARKET_REASONS

        for why in MARKET_REASONS:
            if not any(k.startswith(why) for k in acted):
                acted[f"{why} (rejected)"] = 0
    exits = strat.trades["exit_reason"].astype(str).value_counts()
    return {
        "sizing": cfg.risk.sizing,
        "targets_resized": {str(k): int(v) for k, v in
                            adjustments["rule"].value_counts().items()} if len(adjustments)
        else {},
        "orders": acted,
        "exits": {str(k): int(v) for k, v in exits.items() if v},
        "held_back": dict(strat.held_back),
    }


def stress_tables(bars: Bars, strat: BacktestResult, bench: BacktestResult,
                  ppy: float = 252.0) -> dict[str, pd.DataFrame]:
    """Metrics in named crises and per market regime (the regime known at the prior close)."""
    from mltrader.backtest.stress import crisis_table, regime_table
    from mltrader.features.regimes import REGIME_NAMES, market_regime

    out = {"crises": crisis_table(strat.equity, bench.equity,
                                  initial_cash=strat.initial_cash,
                                  benchmark_initial_cash=bench.initial_cash,
                                  periods_per_year=ppy)}
    regime = market_regime(bars.frame("close"))  # from the first bar: t-1's regime is known
    out["regimes"] = regime_table(strat.equity, regime, REGIME_NAMES, bench.equity,
                                  initial_cash=strat.initial_cash,
                                  benchmark_initial_cash=bench.initial_cash,
                                  periods_per_year=ppy)
    return out
