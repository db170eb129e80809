"""`mltrader placebo`: would the same rule, fed predictions that know nothing, do as well?

A strategy can beat buy-and-hold from risk rather than skill (a top-k rule whose predictions
lean to volatile stocks holds a levered bet on the market). `placebo` trains the model
walk-forward once and backtests the real run, then backtests the same rule, sizing, costs,
engine settings and out-of-sample bars many times with only the predictions replaced:

- ``random``: iid normal draws, mapped onto the distribution of the real predictions of
  the last `STATS_WINDOW` bars (a quantile map: ranks untouched, and a threshold rule is
  long about as often);
- ``shuffled``: each bar's real predictions permuted across symbols: the same cross-section
  of values (so any market timing in the model stays), no information about which stock;
- ``vol_matched``: normal draws z = r * zvol + sqrt(1 - r^2) * noise, zvol the normal scores
  of each bar's ranks of trailing 60-bar volatility, r set so the cross-sectional rank
  correlation with volatility matches the real predictions' average over the last
  `STATS_WINDOW` bars; then mapped like ``random``: the model's lean to risky stocks,
  without its skill.

Turnover: placebos that churn lose to costs and flatter the real run, so each placebo's
noise is smoothed over time (`smooth`: an EMA of an EMA with persistence ``a``, kept at unit
variance; a = 0 is iid), and the persistence of each kind is set by
bisection on `CALIBRATION_DRAWS` calibration draws so that the rule's turnover
(`compute_metrics`' ``turnover``) is within `TURNOVER_TOL` of the real run's. Each run's
achieved turnover is recorded.

A rule without a model (crossover) has no predictions to replace: its target weights are
replaced instead. The real rule's held weights (its decisions carried forward from the
first out-of-sample bar) play the part of the predictions, the placebo draws the held weight
of every symbol from them in the same three ways (so the same exposure, the fraction of
equity invested, on average), and a decision is emitted only where a held weight changes.

Causality: row t of a placebo uses the draws up to t, the real predictions (held weights)
and closes up to t, and distribution / correlation statistics of the real values of rows
before t only (the first row with a prediction uses its own). The one number fit on the
whole period is the persistence ``a``: a trading speed matched to the real run's turnover,
not a return. Every draw is reproducible from (seed, kind, i).

The placebo series live in `mltrader.placebo_series`, the result and its files in
`mltrader.placebo_report`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mltrader.backtest.engine import run_backtest
from mltrader.backtest.metrics import compute_metrics
from mltrader.config import RunConfig
from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.pipeline import (
    ProgressFactory,
    Signals,
    compute_signals,
    load_data,
    run_clock,
    trade_targets,
)
from mltrader.placebo_report import METRICS, PlaceboOutput, _ordinal
from mltrader.placebo_series import (
    KINDS,
    STATS_WINDOW,
    _decisions,
    _draw,
    _persistence,
    _placebo_values,
    _Real,
    _real,
    half_life,
    held_weights,
    rank_corr_rows,
    smooth,
    trailing_vol,
)
from mltrader.plan import engine_settings, resolve_fill, strategy_regimes
from mltrader.strategy.base import StrategyInputs
from mltrader.strategy.registry import get_strategy, run_strategy

MIN_RUNS = 10
TURNOVER_TOL = 0.10  # a kind's placebos count as turnover-matched within 10% of the real run
CALIBRATION_DRAWS = 3
_STOP_TOL = 0.03  # the bisection stops once the calibration draws are this close
_LOG2_HALF_LIFE = (-3.0, 11.0)  # bisection range: half-lives of 1/8 .. 2048 bars
_MAX_STEPS = 12
_RUN_STREAM, _CALIBRATION_STREAM = 0, 1
RUN_COLUMNS: tuple[str, ...] = ("kind", "i", "seed", "persistence", *METRICS, "vol_corr")

_LABELS = {
    "random": "Random predictions",
    "shuffled": "The real predictions shuffled across stocks each bar",
    "vol_matched": "Random predictions leaning to volatile stocks as much as the model's",
}
_RULE_LABELS = {
    "random": "Random positions at the rule's exposure",
    "shuffled": "The rule's positions shuffled across stocks each bar",
    "vol_matched": "Random positions leaning to volatile stocks as much as the rule's",
}


# --- arguments -------------------------------------------------------------------------

def check_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    """Placebo kinds from a list or "a,b"; an unknown or repeated kind is a one-line error."""
    items = [k.strip() for k in kinds.split(",")] if isinstance(kinds, str) else list(kinds)
    items = [k for k in items if k]
    valid = ", ".join(KINDS)
    if not items:
        raise ConfigError(f"--kinds is empty; give one or more of {valid}")
    for k in items:
        if k not in KINDS:
            raise ConfigError(f"--kinds: unknown placebo kind {k!r}; valid kinds: {valid}")
    if len(set(items)) != len(items):
        raise ConfigError(f"--kinds lists a kind twice; give each of {valid} at most once")
    return tuple(items)


def check_runs(n: int, seed: int = 0) -> None:
    """At least `MIN_RUNS` runs per kind and a seed >= 0, else a one-line error."""
    if n < MIN_RUNS:
        raise ConfigError(f"--n {n}: need at least {MIN_RUNS} placebo runs per kind "
                          "(a percentile among fewer means little); e.g. --n 100")
    if seed < 0:
        raise ConfigError(f"--seed {seed}: use a seed >= 0")


# --- placebo series (`placebo_series` makes them) --------------------------------------

def placebo_predictions(kind: str, predictions: pd.DataFrame, bars: Bars, *, seed: int = 0,
                        i: int = 0, persistence: float = 0.0) -> pd.DataFrame:
    """Run i's placebo of ``predictions`` (T x N, on the bars): NaN where they are NaN, row t
    from draws, predictions and closes up to t only. ``persistence`` smooths the draws
    (`smooth`); `placebo` picks it per kind to match the real run's turnover."""
    check_kinds([kind])
    aligned = predictions.reindex(index=bars.index, columns=list(bars.symbols))
    real = _real(aligned.to_numpy(np.float64), bars.close)
    latent = smooth(_draw(seed, kind, i, 0, _RUN_STREAM, real.values.shape), persistence)
    return pd.DataFrame(_placebo_values(real, kind, latent), index=aligned.index,
                        columns=aligned.columns)


# --- evaluation ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Setup:
    """Everything held fixed across the real run and its placebos."""

    cfg: RunConfig
    bars: Bars
    base: Signals
    members: dict[str, pd.DataFrame]
    slots: dict[str, int]  # member name -> index into `reals` (aliases share one)
    reals: list[_Real]
    regimes: pd.DataFrame | None
    start: int
    ppy: float
    sessions: np.ndarray
    settings: EngineSettings
    rule_only: bool
    seed: int
    vol: np.ndarray  # trailing volatility, for the reported correlations


def _backtest(s: _Setup, weights: pd.DataFrame) -> dict[str, object]:
    """The rule's weights sized, capped and traded exactly as `pipeline.run` trades them."""
    sized = trade_targets(dataclasses.replace(s.base, weights=weights), s.bars, s.cfg, s.ppy)
    res = run_backtest(s.bars, sized.values, s.settings, start=s.start, unit=sized.unit,
                       sessions=s.sessions)
    return compute_metrics(res, s.ppy)


def _frame(s: _Setup, values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, index=s.bars.index, columns=list(s.bars.symbols))


def _vol_corr(s: _Setup, values: np.ndarray) -> float | None:
    """Mean per-bar rank correlation of a series with trailing volatility, out of sample."""
    c = rank_corr_rows(values[s.start:], s.vol[s.start:])
    return float(np.nanmean(c)) if np.isfinite(c).any() else None


def _placebo_weights(s: _Setup, kind: str, i: int, stream: int, persistence: float
                     ) -> tuple[pd.DataFrame, np.ndarray]:
    """The rule's target weights for one placebo draw, and the main placebo series."""
    series = []
    for m, real in enumerate(s.reals):
        latent = smooth(_draw(s.seed, kind, i, m, stream, real.values.shape), persistence)
        series.append(_placebo_values(real, kind, latent))
    if s.rule_only:
        return _frame(s, _decisions(series[0], s.reals[0].known, s.start)), series[0]
    members = {name: _frame(s, series[slot]) for name, slot in s.slots.items()}
    inputs = StrategyInputs(bars=s.bars, predictions=members, regimes=s.regimes)
    return run_strategy(s.cfg.strategy.name, inputs, s.cfg.strategy.params), series[0]


def _turnover(m: Mapping[str, object]) -> float:
    v = m.get("turnover")
    return float(v) if isinstance(v, int | float) else math.nan


@dataclass(frozen=True)
class _Calibration:
    persistence: float
    turnover: float  # the calibration draws' mean turnover at that persistence
    steps: int


def _calibrate(s: _Setup, kind: str, target: float) -> _Calibration:
    """The persistence whose calibration draws trade closest to ``target`` turnover: a = 0
    when even iid draws trade no more; else bisection on log2(half-life)."""
    cache: dict[float, float] = {}

    def turnover(a: float) -> float:
        if a not in cache:
            vals = [_turnover(_backtest(s, _placebo_weights(s, kind, c, _CALIBRATION_STREAM,
                                                            a)[0]))
                    for c in range(CALIBRATION_DRAWS)]
            cache[a] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        return cache[a]

    def gap(a: float) -> float:
        t = turnover(a)
        return abs(t / target - 1.0) if math.isfinite(t) else math.inf

    if not (math.isfinite(target) and target > 0):
        return _Calibration(0.0, turnover(0.0), 1)
    if not turnover(0.0) > target * (1.0 + _STOP_TOL):
        return _Calibration(0.0, turnover(0.0), len(cache))
    lo, hi = _LOG2_HALF_LIFE
    if turnover(_persistence(hi)) >= target:  # even the smoothest draws trade more
        return _Calibration(_persistence(hi), turnover(_persistence(hi)), len(cache))
    best = min(cache, key=gap)
    for _ in range(_MAX_STEPS):
        mid = (lo + hi) / 2.0
        a = _persistence(mid)
        t = turnover(a)
        if gap(a) < gap(best):
            best = a
        if gap(best) <= _STOP_TOL:
            break
        if t > target:
            lo = mid
        else:
            hi = mid
    return _Calibration(best, turnover(best), len(cache))


@contextmanager
def _no_progress(_total: int) -> Iterator[Callable[[str], None]]:
    yield lambda _msg="": None


def _members(predictions: pd.DataFrame | Mapping[str, pd.DataFrame] | None
             ) -> dict[str, pd.DataFrame]:
    if predictions is None:
        return {}
    if isinstance(predictions, pd.DataFrame):
        return {"model": predictions}
    return dict(predictions)


def placebo_from_predictions(
    bars: Bars,
    cfg: RunConfig,
    predictions: pd.DataFrame | Mapping[str, pd.DataFrame] | None,
    *,
    start: int,
    n: int = 100,
    seed: int = 0,
    kinds: Sequence[str] = KINDS,
    fill: str | None = None,
    regimes: pd.DataFrame | None = None,
    progress: ProgressFactory | None = None,
    notes: Sequence[str] = (),
) -> PlaceboOutput:
    """The placebo test on given out-of-sample predictions (no training): the real run is the
    config's rule on ``predictions`` (a frame is member "model"; a mapping names every member
    the rule may read), backtested from bar ``start``; see the module docstring. For a rule
    without a model ``predictions`` is ignored and its target weights are replaced."""
    kinds = check_kinds(kinds)
    check_runs(n, seed)
    spec = get_strategy(cfg.strategy.name)
    fill = fill or resolve_fill(cfg, bars)
    if spec.needs_regimes and regimes is None:
        regimes = strategy_regimes(bars, cfg)
    members = _members(predictions) if spec.needs_model else {}
    if spec.needs_model and not members:
        raise ConfigError(f"strategy {cfg.strategy.name!r} needs predictions; none given")
    clock = run_clock(cfg, bars)
    ppy = clock.periods_per_year
    real_weights = run_strategy(cfg.strategy.name, StrategyInputs(
        bars=bars, predictions=members, regimes=regimes), cfg.strategy.params)
    nan = pd.DataFrame(np.nan, index=bars.index, columns=list(bars.symbols))
    base = Signals({}, nan, members.get("model", nan), real_weights, [], fill, start=start,
                   members=members, regimes=regimes)
    slots: dict[str, int] = {}
    reals: list[_Real] = []
    if spec.needs_model:
        seen: dict[int, int] = {}
        for name in sorted(members, key=lambda k: k != "model"):  # "model" first: reported
            frame = members[name]
            if id(frame) not in seen:
                seen[id(frame)] = len(reals)
                aligned = frame.reindex(index=bars.index, columns=list(bars.symbols))
                reals.append(_real(aligned.to_numpy(np.float64), bars.close))
            slots[name] = seen[id(frame)]
    else:
        held = held_weights(real_weights, bars, start)
        reals.append(_real(held, bars.close))
    s = _Setup(cfg, bars, base, members, slots, reals, regimes, start, ppy, clock.sessions,
               engine_settings(cfg, fill, ppy), not spec.needs_model, seed,
               trailing_vol(bars.close))

    real = dict(_backtest(s, real_weights))
    real["vol_corr"] = _vol_corr(s, np.where(reals[0].known, reals[0].values, np.nan))
    target = _turnover(real)
    rows: list[dict[str, object]] = []
    calibrations: dict[str, _Calibration] = {}
    with (progress or _no_progress)(len(kinds) * (n + 1)) as advance:
        for kind in kinds:
            cal = _calibrate(s, kind, target)
            calibrations[kind] = cal
            advance(f"{kind}: persistence {cal.persistence:.3f} (turnover "
                    f"{cal.turnover:.2f}x vs {target:.2f}x)")
            for i in range(n):
                weights, series = _placebo_weights(s, kind, i, _RUN_STREAM, cal.persistence)
                m = _backtest(s, weights)
                rows.append({"kind": kind, "i": i, "seed": seed,
                             "persistence": cal.persistence,
                             **{k: m.get(k) for k in METRICS},
                             "vol_corr": _vol_corr(s, series)})
                advance(f"{kind} {i + 1}/{n}")
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for col in (*METRICS, "vol_corr"):
        runs[col] = pd.to_numeric(runs[col], errors="coerce").astype(float)
    idx = bars.index
    oos = {"start": str(idx[start].date()), "end": str(idx[-1].date()),
           "bars": int(len(idx) - start)}
    summary = {k: _summarise(k, runs[runs["kind"] == k], real, calibrations[k], s.rule_only)
               for k in kinds}
    return PlaceboOutput(cfg, real, runs, summary,
                         _notes(cfg, s, oos, summary, list(notes)), oos, s.rule_only, n, seed)


def placebo(cfg: RunConfig, n: int = 100, seed: int = 0, kinds: Sequence[str] = KINDS,
            progress: ProgressFactory | None = None, bars: Bars | None = None, *,
            fold_progress: ProgressFactory | None = None) -> PlaceboOutput:
    """Train the config's model walk-forward once (`compute_signals`), backtest the real run,
    then ``n`` placebo runs per kind on the same bars, rule, sizing, costs, engine settings
    and out-of-sample start, only the predictions replaced. ``progress`` counts the placebo
    runs, ``fold_progress`` the walk-forward folds; ``bars`` overrides the configured data."""
    kinds = check_kinds(kinds)
    check_runs(n, seed)
    data_notes: list[str] = []
    if bars is None:
        bars, data_notes = load_data(cfg)
    sig = compute_signals(bars, cfg, fold_progress)
    return placebo_from_predictions(
        bars, cfg, sig.members or None, start=sig.start, n=n, seed=seed, kinds=kinds,
        fill=sig.fill, regimes=sig.regimes, progress=progress,
        notes=[*data_notes, *sig.notes])


# --- summary ---------------------------------------------------------------------------

def percentile_of(value: object, sample: Sequence[float] | np.ndarray) -> float | None:
    """Percent of the finite ``sample`` below ``value`` (ties count half); None if undefined."""
    x = np.asarray(sample, dtype=float)
    x = x[np.isfinite(x)]
    if not isinstance(value, int | float) or not math.isfinite(value) or not x.size:
        return None
    return float(100.0 * ((x < value).sum() + 0.5 * (x == value).sum()) / x.size)


def _median(x: pd.Series) -> float | None:
    v = x.to_numpy(float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def _summarise(kind: str, runs: pd.DataFrame, real: Mapping[str, object], cal: _Calibration,
               rule_only: bool) -> dict[str, object]:
    target = _turnover(real)
    med_turn = _median(runs["turnover"])
    matched = bool(med_turn is not None and math.isfinite(target) and target > 0
                   and abs(med_turn / target - 1.0) <= TURNOVER_TOL)
    out: dict[str, object] = {
        "runs": len(runs),
        "persistence": cal.persistence,
        "half_life_bars": half_life(cal.persistence),
        "calibration_steps": cal.steps,
        "turnover_real": target if math.isfinite(target) else None,
        "turnover_median": med_turn,
        "turnover_matched": matched,
        "median_total_return": _median(runs["total_return"]),
        "median_sharpe": _median(runs["sharpe"]),
        "median_max_drawdown": _median(runs["max_drawdown"]),
        "vol_corr_real": real.get("vol_corr"),
        "vol_corr_median": _median(runs["vol_corr"]),
    }
    for metric, key in (("total_return", "total_return"), ("sharpe", "sharpe")):
        x = runs[metric].to_numpy(float)
        x = x[np.isfinite(x)]
        v = real.get(metric)
        ok = isinstance(v, int | float) and math.isfinite(v)
        out[f"percentile_{key}"] = percentile_of(v, x)
        out[f"beat_{key}"] = int((x > v).sum()) if ok else None  # type: ignore[operator]
        out[f"p_value_{key}"] = (float((1 + (x >= v).sum()) / (x.size + 1))  # type: ignore[operator]
                                 if ok else None)
    out["sentence"] = _sentence(kind, out, rule_only)
    return out


def _sentence(kind: str, s: Mapping[str, object], rule_only: bool) -> str:
    label = (_RULE_LABELS if rule_only else _LABELS)[kind]
    if kind == "vol_matched" and isinstance(s["vol_corr_real"], float):
        label += f" (rank correlation {s['vol_corr_real']:+.2f})"
    if s["turnover_matched"]:
        turn = "at the same turnover"
    elif s["turnover_median"] is not None and s["turnover_real"] is not None:
        turn = (f"at turnover {s['turnover_median']:.2f}x a year (the real run: "
                f"{s['turnover_real']:.2f}x; not matched)")
    else:
        turn = "(turnover not matched)"
    pct, ret = s["percentile_sharpe"], s["percentile_total_return"]
    ret_txt = f"; total return: {_ordinal(ret)}" if isinstance(ret, float) else ""
    if not isinstance(pct, float):
        return (f"{label} {turn}: the real run has no Sharpe ratio to rank (flat or "
                f"constant equity){ret_txt}.")
    return (f"{label} {turn} beat the real run's Sharpe in {s['beat_sharpe']} of {s['runs']} "
            f"runs (real at the {_ordinal(pct)} percentile{ret_txt}).")


def _notes(cfg: RunConfig, s: _Setup, oos: Mapping[str, object],
           summary: Mapping[str, Mapping[str, object]], extra: list[str]) -> list[str]:
    what = ("its target weights" if s.rule_only else "its predictions")
    notes = [
        f"Out of sample {oos['start']} to {oos['end']} ({oos['bars']} bars). "
        + ("The rule needs no model. " if s.rule_only else "The model was trained "
           "walk-forward once; ")
        + f"every placebo run reuses the bars, the {cfg.strategy.name} rule, sizing, costs, "
        f"engine settings and out-of-sample start, and replaces only {what}.",
    ]
    if s.rule_only:
        notes.append("No model to replace: the placebos replace the rule's target weights. "
                     "The rule's held weights so far are drawn for random symbols (random), "
                     "reassigned across symbols each bar (shuffled) or drawn leaning to "
                     "volatile symbols (vol_matched), so the same exposure (fraction of "
                     "equity invested) on average; a decision is taken where a held weight "
                     "changes, and the same smoothing matches the turnover.")
    else:
        notes.append("Random and vol-matched placebos are normal draws mapped onto the "
                     f"distribution of the real predictions of the {STATS_WINDOW} bars "
                     "before (so a threshold rule is long about as often); shuffled ones "
                     "keep each bar's real values, so the model's market timing stays and "
                     "only the choice of stocks is random.")
    parts = []
    for kind, k in summary.items():
        med = k["turnover_median"]
        parts.append(f"{kind} persistence {k['persistence']:.3f} (half-life "
                     f"{k['half_life_bars']:.1f} bars), median turnover "
                     + (f"{med:.2f}x" if isinstance(med, float) else "n/a")
                     + ("" if k["turnover_matched"] else " (NOT matched)"))
    real_t = summary[next(iter(summary))]["turnover_real"]
    notes.append(
        "Turnover: each placebo's draws are smoothed over time (an EMA of an EMA, "
        f"persistence chosen per kind by bisection on {CALIBRATION_DRAWS} calibration "
        "draws) so the rule trades about as much as the real run ("
        + (f"{real_t:.2f}x a year" if isinstance(real_t, float) else "n/a")
        + "): " + "; ".join(parts) + ". Placebos that churned more would lose to costs and "
        "flatter the real run.")
    notes.append("Placebo series are causal (row t uses nothing after bar t); the one number "
                 "fit on the whole period is each kind's smoothing persistence, a trading "
                 "speed. Each run is reproducible from (seed, kind, i).")
    notes.append("Percentile: the share of placebo runs below the real run (ties count half); "
                 "p-value: (1 + placebos at least as good) / (runs + 1).")
    return notes + extra
