"""A run config read as the objects of the layers below it, in one place.

The backtest (pipeline.py), the model comparison, the sweep and the live runner all ask
these functions what a config means (the fill, the engine settings, the risk guards and
sizing rules, the walk-forward folds, tuned model parameters, the strategy's regimes, the
first out-of-sample bar), so research and live trading cannot read one config two ways.
The machinery itself lives below: folds, fitting and tuning in models/, fills and costs in
core/, guards and sizing in risk/. (config.py validates model and strategy names against
their registries, so models/ cannot import the config; this module sits just above it.)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from mltrader.config import ModelConfig, RunConfig
from mltrader.core.market import RuleArrays, market_rules, rule_arrays
from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.features.labels import label_lookahead
from mltrader.models.panel import Market, split_params
from mltrader.models.registry import AGENTS, PANEL_MODELS, SEQUENCE_MODELS, make_model
from mltrader.models.tuning import PurgedKFold, tune
from mltrader.models.walkforward import Fold, make_folds
from mltrader.risk.guards import Guards
from mltrader.risk.sizing import SizingRules
from mltrader.strategy.base import StrategyInputs
from mltrader.strategy.registry import get_strategy, run_strategy, validate_params


def resolve_fill(cfg: RunConfig, bars: Bars) -> str:
    """`auto` means the next open when opens exist, else the next close."""
    if cfg.execution.fill == "auto":
        return "next_close" if bars.close_only else "next_open"
    return cfg.execution.fill


def engine_settings(cfg: RunConfig, fill: str, ppy: float = 252.0) -> EngineSettings:
    """The engine's settings from a run config (costs, execution, exits, guards)."""
    ex, co, rk = cfg.execution, cfg.costs, cfg.risk
    market = market_rules(cfg.market)
    return EngineSettings(
        market=market,
        allow_short=allows_short(cfg), guards=guards(cfg), periods_per_year=ppy,
        initial_cash=cfg.initial_cash, fill=fill,  # type: ignore[arg-type]
        whole_shares=ex.whole_shares or market.lot_size > 1, order_type=ex.order_type,
        limit_offset_bps=ex.limit_offset_bps, stop_offset_bps=ex.stop_offset_bps, tif=ex.tif,
        stop_loss=rk.stop_loss, take_profit=rk.take_profit, trailing_stop=rk.trailing_stop,
        commission_bps=co.commission_bps, commission_per_share=co.commission_per_share,
        commission_min=co.commission_min, commission_fixed=co.commission_fixed,
        slippage_bps=co.slippage_bps, slippage_range_frac=co.slippage_range_frac,
        half_spread_bps=co.half_spread_bps, borrow_bps_per_year=co.borrow_bps_per_year,
        max_volume_share=ex.max_volume_share, remainder=ex.remainder,
        max_gross_leverage=ex.max_gross_leverage, oversize=ex.oversize,
        rebalance_band=ex.rebalance_band, size_at=ex.size_at,
    )


def execution(cfg: RunConfig, bars: Bars) -> tuple[Bars, RuleArrays | None]:
    """What orders fill at and the market's per-bar rule arrays, for the signal `bars`.

    US: the bars themselves, no arrays. A-shares: the real traded prices of the panel the
    bars came from (signals may see adjusted prices) with its price limits, taxes and
    ex-rights payouts (`core.market.rule_arrays`)."""
    if cfg.market == "us":
        return bars, None
    from mltrader.data.ashare import panel_of

    data = panel_of(bars)
    rules = rule_arrays(market_rules(cfg.market), data, data.bars.index, len(data.symbols))
    return data.exec_bars, rules


def allows_short(cfg: RunConfig) -> bool:
    """Whether the strategy, with its parameters, may go short."""
    params = validate_params(cfg.strategy.name, cfg.strategy.params)
    return bool(getattr(params, "allow_short", False))


def guards(cfg: RunConfig) -> Guards:
    """The run's risk guards (the same object the live runner uses)."""
    rk = cfg.risk
    return Guards(
        daily_loss_limit=rk.daily_loss_limit, kill_switch_drawdown=rk.kill_switch_drawdown,
        max_trades_per_day=rk.max_trades_per_day,
        max_orders_per_symbol_per_day=rk.max_orders_per_symbol_per_day,
        price_sanity=rk.price_sanity, max_position=rk.max_position, time_stop=rk.time_stop)


def sizing_rules(cfg: RunConfig, ppy: float = 252.0, bars: Bars | None = None
                 ) -> SizingRules:
    """The risk config's sizing and caps; gross exposure never above the leverage limit.
    `bars`: the panel sized (for `risk.sectors: auto`, its symbols' industry boards)."""
    rk = cfg.risk
    gross = min(rk.max_gross or np.inf, cfg.execution.max_gross_leverage)
    return SizingRules(
        mode=rk.sizing, percent=rk.percent, shares=rk.shares, risk_per_trade=rk.risk_per_trade,
        stop_loss=rk.stop_loss, target_vol=rk.target_vol, vol_window=rk.vol_window,
        max_position=rk.max_position, max_sector=rk.max_sector, sectors=sector_caps(cfg, bars),
        max_net=rk.max_net, max_gross=None if rk.sizing == "fixed_shares" else gross,
        periods_per_year=ppy)


def sector_caps(cfg: RunConfig, bars: Bars | None) -> dict[str, str]:
    """The symbol -> sector map of the sector cap: as given, or (`auto`) each A-share's
    industry board from the bundled snapshot, which may only be used from its as-of date."""
    if cfg.risk.sectors != "auto":
        return dict(cfg.risk.sectors)
    from mltrader.data.cn_boards import bundled_boards, sector_map

    if bars is None:
        raise ConfigError("risk.sectors: auto needs the data's symbols; give the map instead, "
                          "e.g. sectors: {600519.SH: liquor}")
    snap = bundled_boards()
    first = pd.Timestamp(f"{cfg.walk_forward.test_year}-01-01")
    as_of = pd.Timestamp(snap.as_of)
    if first < as_of:
        raise ConfigError(f"risk.sectors: auto uses the board snapshot of {as_of.date()}, which "
                          f"did not exist in {first.year}; set walk_forward.first_test_year to "
                          f"{as_of.year + 1} or later, or give the map")
    return sector_map(bars.symbols, "industry", snap, unknown=None)


def run_folds(bars: Bars, cfg: RunConfig) -> list[Fold]:
    """The walk-forward folds of a run: the label horizon is embargoed from every training set."""
    wf = cfg.walk_forward
    return make_folds(
        bars.index, first_test_year=wf.test_year, retrain=wf.retrain,
        lookahead=label_lookahead(cfg.target.horizon), embargo=wf.embargo_bars,
        window=wf.window, train_years=wf.train_years,
    )


def tuned_params(mc: ModelConfig, x: np.ndarray, y: np.ndarray, first: Fold, cfg: RunConfig
                  ) -> tuple[dict[str, object], int]:
    """The model's parameters, tuned on the first training window when `tune` is set."""
    if mc.tune is None:
        return dict(mc.params), 1
    if cfg.target.kind == "price":
        raise ConfigError("compare: tuning with target.kind 'price' is not supported; tune "
                          "with kind 'return' or remove the `tune` section")
    if mc.name in SEQUENCE_MODELS or mc.name in PANEL_MODELS:
        raise ConfigError(f"compare: tuning {mc.name} is not supported yet; "
                          "remove its `tune` section")
    lookahead = label_lookahead(cfg.target.horizon)
    embargo = max(lookahead, cfg.walk_forward.embargo_bars)
    cv = PurgedKFold(n_splits=mc.tune.cv_splits, embargo=embargo, lookahead=lookahead)
    stop = first.train_stop  # the first training window only: no test bar is ever seen
    space = {k: tuple(v) for k, v in mc.tune.space.items()}
    best = tune(x[first.train_start:stop], y[first.train_start:stop], mc.name, space,
                mc.tune.n_trials, cfg.seed, cv, score=mc.tune.score,
                parallel_trials=mc.tune.parallel_trials)
    return {**mc.params, **best.best_params}, best.n_trials


def strategy_regimes(bars: Bars, cfg: RunConfig) -> pd.DataFrame:
    """Per-symbol regime codes (0..5) for the strategy; thresholds learned up to t only.

    `hmm` gives the market's HMM state (bear / neutral / bull, 3 states) to every symbol,
    coded as the low-volatility code of that trend so the bearish test is the same.
    """
    close = bars.frame("close")
    if cfg.strategy.regimes == "hmm":
        from mltrader.features.regimes import hmm_regimes

        state = hmm_regimes(close, n_states=3, seed=cfg.seed)
        codes = 2.0 * state.to_numpy(np.float64)
        return pd.DataFrame(np.repeat(codes[:, None], close.shape[1], axis=1),
                            index=close.index, columns=close.columns)
    from mltrader.features.regimes import rolling_regimes

    return rolling_regimes(close)


def judged_start(bars: Bars, cfg: RunConfig, weights: pd.DataFrame | None = None) -> int:
    """The first out-of-sample bar: the first walk-forward test bar for a model; for a rule
    without a model the first bar its indicators exist (`StrategySpec.warmup`, else the
    first bar with a decision in ``weights``), or the config's first_test_year if later.
    A model-free rule needs no training data, so nothing before that bar is required."""
    spec = get_strategy(cfg.strategy.name)
    if spec.needs_model:
        return run_folds(bars, cfg)[0].test_start
    params = validate_params(cfg.strategy.name, cfg.strategy.params)
    if spec.warmup is not None:
        start = int(spec.warmup(params))
    else:
        if weights is None:  # a model-free rule is cheap to evaluate
            regimes = strategy_regimes(bars, cfg) if spec.needs_regimes else None
            weights = run_strategy(cfg.strategy.name, StrategyInputs(
                bars=bars, predictions={}, regimes=regimes), cfg.strategy.params)
        decided = np.flatnonzero(np.isfinite(weights.to_numpy(np.float64)).any(axis=1))
        start = int(decided[0]) if len(decided) else 0
    year = cfg.walk_forward.first_test_year
    if year is not None:
        first = pd.Timestamp(year=year, month=1, day=1, tz=bars.index.tz)
        start = max(start, int(bars.index.searchsorted(first)))
        if start >= len(bars) and bars.index[-1] < first:
            raise ConfigError(f"walk_forward.first_test_year {year} is after the data's last "
                              f"bar {bars.index[-1].date()}; choose an earlier year or unset it")
    if start >= len(bars) - 1:
        raise ConfigError(f"strategy {cfg.strategy.name!r} needs {start + 1} bars before its "
                          f"first decision, but the data has {len(bars)}; load more history "
                          "or shorten the rule's windows")
    return start


@dataclass(frozen=True)
class PanelPlan:
    """How a panel model (`registry.PANEL_MODELS`) is built and fed, shared by the backtest
    and the live runner so both serve the very same policy."""

    est: dict[str, Any]  # the estimator's params, cost_bps filled in
    lags: int  # the last `lags` returns appended to the features
    cost_why: str  # where the training cost came from, for the run's notes

    def factory(self, name: str, seed: int) -> Callable[[], BaseEstimator]:
        """A picklable factory (folds may be fitted on other processes)."""
        return functools.partial(make_model, name, self.est, seed)


def panel_plan(mc: ModelConfig, cfg: RunConfig, params: dict[str, Any]) -> PanelPlan:
    """Check a panel model's config and resolve its params: it learns from the next bar's
    return its position earns, net of ``cost_bps``, by default the run's own one-way costs
    (commission + slippage + half spread), so it trains on the costs it is judged on."""
    if cfg.target.kind != "return" or cfg.target.horizon != 1:
        raise ConfigError(f"model {mc.name} learns from the next bar's return its position "
                          "earns: set target: {kind: return, horizon: 1} (got kind "
                          f"{cfg.target.kind!r}, horizon {cfg.target.horizon})")
    est, lags = split_params(mc.name, params)
    co = cfg.costs
    if mc.name in AGENTS:  # it learns in the run's own market: its costs are the run's
        why = "the run's own costs, charged by the market it trains in"
    elif "cost_bps" in est:
        cost = est["cost_bps"]
        if isinstance(cost, bool) or not isinstance(cost, int | float) or not cost >= 0:
            raise ConfigError(f"model.params.cost_bps for {mc.name}: a one-way cost in bps "
                              f">= 0, e.g. cost_bps: 6 (got {cost!r})")
        why = "model.params.cost_bps"
    else:
        est["cost_bps"] = co.commission_bps + co.slippage_bps + co.half_spread_bps
        why = (f"the run's costs.commission_bps {co.commission_bps:g} + slippage_bps "
               f"{co.slippage_bps:g} + half_spread_bps {co.half_spread_bps:g}; "
               "model.params.cost_bps overrides it")
    make_model(mc.name, est, cfg.seed)  # bad params or no torch: one line, before any work
    return PanelPlan(est, lags, why)


def panel_market(cfg: RunConfig, bars: Bars, x: np.ndarray, fill: str, ppy: float = 252.0
                 ) -> Market:
    """``market(start, stop, **env_kwargs)``: a `PortfolioEnv` over rows start .. stop - 1 of
    `bars` with inputs `x`, under the run's own fills and costs, its actions scaled as the
    positions rule scales them (allocation / N), so the equity an agent earns in training is
    the equity the backtest would give its actions. The risk guards (daily loss limit, kill
    switch, trade limits, price sanity, max position, time stop) act in it as in the
    backtest, on the run's sessions; the intrabar exits (stop-loss, take-profit, trailing
    stop) are left to the backtest (the environment does not simulate them). A market with
    its own rules (`cfg.market` not us: A-shares) fills as the backtest fills: at
    `execution`'s traded prices, under its lots, T+1, price limits, taxes, minimum commission
    and ex-rights payouts; the inputs `x` stay those of the signal `bars`."""
    settings = dataclasses.replace(engine_settings(cfg, fill, ppy),
                                   stop_loss=None, take_profit=None, trailing_stop=None)
    params = validate_params(cfg.strategy.name, cfg.strategy.params)
    scale = float(getattr(params, "allocation", 1.0)) / bars.shape[1]
    fill_bars, rules = execution(cfg, bars)
    if rules is not None and fill_bars.symbols != bars.symbols:  # a panel's own order
        cols = [fill_bars.symbols.index(s) for s in bars.symbols if s in fill_bars.symbols]
        if len(cols) == bars.shape[1]:
            fill_bars = fill_bars.select(list(bars.symbols))
            rules = dataclasses.replace(rules, **{
                k: getattr(rules, k)[:, cols] for k in ("limit_up", "limit_down", "payout")
                if getattr(rules, k).shape == (len(fill_bars), len(cols))})
    if rules is not None and (fill_bars.symbols != bars.symbols
                              or not fill_bars.index.equals(bars.index)):
        raise ConfigError(f"market {cfg.market}: the traded prices behind the bars "
                          "(plan.execution) are on other dates or symbols than the bars; the "
                          "agent's market needs both on one index")

    return _PanelMarket(fill_bars, x, settings, scale, rules)


@dataclass(frozen=True)
class _PanelMarket:
    """`panel_market`'s market: a picklable callable (an agent's folds may train on other
    processes), so the whole market ships once with the fold job."""

    fill_bars: Bars
    x: np.ndarray
    settings: EngineSettings
    scale: float
    rules: Any

    def __call__(self, start: int, stop: int, **env_kwargs: Any) -> Any:
        from mltrader.rl.env import PortfolioEnv  # gymnasium: only for the agents

        window = int(env_kwargs.get("window", 1))
        return PortfolioEnv(self.fill_bars, self.x, self.settings, action_scale=self.scale,
                            start=max(start, window - 1), end=stop - 1, rules=self.rules,
                            **env_kwargs)
