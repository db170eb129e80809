"""`mltrader compare`: several models on the same walk-forward folds, judged out of sample.

Every model sees the same features, labels, folds, strategy rule and costs; the leaderboard
shows prediction quality (IC, hit rate against coin flips and "always up", MSE against the
zero forecast) and what trading on the predictions earned after costs, next to
buy-and-hold over the same bars. A model that loses to the naive baselines shows as losing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mltrader.backtest.engine import run_backtest
from mltrader.backtest.metrics import compute_metrics
from mltrader.backtest.result import BacktestResult
from mltrader.config import ModelConfig, RunConfig
from mltrader.data.bars import Bars
from mltrader.features.labels import forward_return
from mltrader.features.registry import compute_features
from mltrader.models.evaluation import prediction_stats
from mltrader.models.registry import CLASSIFIERS, SEQUENCE_MODELS, make_model
from mltrader.models.walkforward import stack, walk_forward_predict
from mltrader.pipeline import (
    ProgressFactory,
    buy_and_hold_targets,
    engine_settings,
    load_bars,
    resolve_fill,
    run_folds,
)
from mltrader.strategy.threshold import threshold_weights

LEADERBOARD_COLUMNS = (
    "model", "ic_mean", "ic_t", "hit_rate", "hit_p_value", "always_up_rate", "mse_ratio",
    "sharpe", "cagr", "max_drawdown", "total_return", "turnover", "trades",
)


@dataclass(frozen=True)
class CompareOutput:
    """The leaderboard and each model's backtest, plus buy-and-hold on the same bars."""

    config: RunConfig
    leaderboard: pd.DataFrame
    results: dict[str, BacktestResult]
    benchmark: BacktestResult
    oos: dict[str, object]


def _label(mc: ModelConfig) -> str:
    return mc.label or mc.name


def compare(cfg: RunConfig, progress: ProgressFactory | None = None, bars: Bars | None = None
            ) -> CompareOutput:
    """Train every model of `cfg.compare` (or `cfg.model`) walk-forward and score it."""
    bars = load_bars(cfg) if bars is None else bars
    models = list(cfg.compare) or [cfg.model]
    labels = [_label(m) for m in models]
    if len(set(labels)) != len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        from mltrader.errors import ConfigError

        raise ConfigError(f"compare lists {dup!r} twice; give each entry a distinct `label`")
    fill = resolve_fill(cfg, bars)
    x = stack(compute_features(bars, cfg.features))
    realised = forward_return(bars, fill, cfg.target.horizon).to_numpy(np.float64)
    folds = run_folds(bars, cfg)
    start = folds[0].test_start
    settings = engine_settings(cfg, fill)
    rows, results = [], {}
    for mc in models:
        direction = cfg.target.kind == "direction" or mc.name in CLASSIFIERS
        pred, _ = walk_forward_predict(
            x, realised, folds, lambda mc=mc: make_model(mc.name, mc.params, cfg.seed),
            min_train_rows=cfg.walk_forward.min_train_rows, index=bars.index,
            progress=progress, direction=direction,
            window=mc.window if mc.name in SEQUENCE_MODELS else None,
        )
        pred_df = pd.DataFrame(pred, index=bars.index, columns=list(bars.symbols))
        weights = threshold_weights(pred_df, cfg.strategy.threshold, cfg.strategy.rebalance)
        res = run_backtest(bars, weights, settings, start=start)
        results[_label(mc)] = res
        stats = prediction_stats(pred[start:], realised[start:], regression=not direction)
        rows.append({"model": _label(mc), **stats, **compute_metrics(res)})
    hold = dataclasses.replace(settings, stop_loss=None, take_profit=None, trailing_stop=None)
    bench = run_backtest(bars, buy_and_hold_targets(bars, start), hold, start=start)
    always_up = prediction_stats(np.ones_like(realised[start:]), realised[start:],
                                 regression=False)
    rows.append({"model": "buy & hold (equal weight)", "hit_rate": always_up["hit_rate"],
                 "always_up_rate": always_up["always_up_rate"], **compute_metrics(bench)})
    board = pd.DataFrame(rows)
    board = board[[c for c in LEADERBOARD_COLUMNS if c in board.columns]
                  + [c for c in board.columns if c not in LEADERBOARD_COLUMNS]]
    oos = {"start": str(bars.index[start].date()), "end": str(bars.index[-1].date()),
           "bars": int(len(bars) - start), "folds": len(folds)}
    return CompareOutput(cfg, board, results, bench, oos)
