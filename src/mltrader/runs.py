"""Run folders: `runs/<timestamp>-<name>/` with config, metrics, equity, trades and the report."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

import pandas as pd

from mltrader.backtest.report import write_report
from mltrader.compare import CompareOutput
from mltrader.config import dump_config
from mltrader.errors import MltraderError
from mltrader.pipeline import RunOutput


def json_safe(obj: object) -> object:
    """JSON-safe: NaN / inf become null, numpy scalars Python numbers, dates ISO text, keys
    text. Every JSON file of a run folder (metrics, placebo and seeds summaries) goes through it."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, dt.date):  # dates and timestamps as ISO text
        return obj.isoformat()
    if hasattr(obj, "item"):
        obj = obj.item()  # type: ignore[union-attr]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def metrics_json(out: RunOutput) -> str:
    """The metrics file's exact text: no timestamps, so equal inputs give equal bytes."""
    return json.dumps(json_safe(out.metrics), indent=2) + "\n"


def check_writable(base: Path, option: str = "--output-dir") -> None:
    """Make sure run folders can be created under `base`, before any long work starts.

    Creates nothing: it finds the nearest existing folder and checks it is writable.
    `option` is the command-line option the user gives another folder with.
    """
    probe = base.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise MltraderError(f"cannot write run folders to {base} ({probe} is not a writable "
                            f"folder); choose another {option}")


def new_run_dir(base: Path, name: str, now: dt.datetime | None = None) -> Path:
    """A fresh folder named by UTC time and run name; a suffix avoids clobbering."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d-%H%M%S")
    path = base / f"{stamp}-{name}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{name}-{n}"
    try:
        path.mkdir(parents=True)
    except OSError as e:  # e.g. a read-only or special file system that os.access passed
        raise MltraderError(f"cannot create the run folder {path} ({e.strerror or e}); choose "
                            "another --output-dir (-o)") from None
    return path


def _sections(out: RunOutput) -> list[str]:
    """The report's risk and stress sections."""
    from mltrader.backtest.report import risk_html, significance_html
    from mltrader.backtest.stress import stress_html

    parts = [significance_html(out.metrics.get("vs_buy_and_hold_significance")  # type: ignore[arg-type]
                               or {}),
             risk_html(out.metrics.get("risk") or {})]  # type: ignore[arg-type]
    if out.stress:
        parts.append(stress_html(out.stress["crises"], out.stress.get("regimes")))
    if out.engines is not None:
        from mltrader.backtest.report import engines_html

        parts.append(engines_html(out.engines))
    return parts


def _index_column(out: RunOutput) -> dict[str, dict[str, object]]:
    """The benchmark index (cn_a: the CSI 300) as a column of the metrics table."""
    ix = out.metrics.get("index")
    if not isinstance(ix, dict):
        return {}
    return {f"index {ix['name']}": {k: v for k, v in ix.items() if k != "name"}}


def _levered_column(out: RunOutput) -> dict[str, dict[str, object]]:
    """Buy-and-hold levered to the strategy's volatility, as a column of the metrics table."""
    test = out.metrics.get("vs_buy_and_hold_significance") or {}
    lev = test.get("levered_benchmark") if isinstance(test, dict) else None
    if not lev:
        return {}
    keys = ("total_return", "cagr", "annual_volatility", "sharpe", "max_drawdown")
    return {f"buy & hold x{lev['leverage']:.2f} (strategy's volatility)":
            {k: lev.get(k) for k in keys}}


def write_run(out: RunOutput, run_dir: Path) -> dict[str, Path]:
    """Write every artifact of a run; returns their paths by name."""
    paths = {
        "config": run_dir / "config.yaml",
        "metrics": run_dir / "metrics.json",
        "equity": run_dir / "equity.parquet",
        "trades": run_dir / "trades.parquet",
        "fills": run_dir / "fills.parquet",
        "orders": run_dir / "orders.parquet",
        "predictions": run_dir / "predictions.parquet",
        "report": run_dir / "report.html",
    }
    paths["config"].write_text(dump_config(out.config))
    paths["metrics"].write_text(metrics_json(out))
    if out.signals.last_model is not None:  # the last fold's model, without pickle, hashed
        from mltrader.models.artifacts import save_model

        last = out.signals.folds[-1].fold
        manifest = save_model(out.signals.last_model, run_dir / "artifacts", name="model",
                              extra={"model": out.config.model.name,
                                     "trained_through": str(out.bars.index[last.train_stop - 1]
                                                            .date())})
        paths["model"] = run_dir / "artifacts" / "model"
        (run_dir / "manifest.json").write_text(json.dumps(
            {"artifacts": {"model": manifest["files"]}, "format": manifest["format"]},
            indent=2) + "\n")
    equity = pd.DataFrame({
        "strategy": out.strategy.equity,
        "strategy_cash": out.strategy.cash,
        "buy_and_hold": out.benchmark.equity,
    })
    equity.index.name = "date"
    equity.to_parquet(paths["equity"])
    out.strategy.trades.to_parquet(paths["trades"], index=False)
    out.strategy.fills.to_parquet(paths["fills"], index=False)
    if out.strategy.orders is not None:
        out.strategy.orders.to_parquet(paths["orders"], index=False)
    if out.sizing is not None and len(out.sizing):
        paths["sizing"] = run_dir / "sizing.parquet"
        out.sizing.to_parquet(paths["sizing"], index=False)
    start = out.strategy.equity.index[0]
    preds = out.signals.predictions.loc[start:]
    preds.index.name = "date"
    preds.to_parquet(paths["predictions"])
    write_report(
        paths["report"],
        title=f"mltrader backtest: {out.config.name} ({out.config.strategy.name})",
        strategy=out.strategy,
        benchmark=out.benchmark,
        metrics={"strategy": {**out.metrics["strategy"],  # type: ignore[dict-item]
                              **out.metrics["vs_buy_and_hold"]},  # type: ignore[dict-item]
                 "buy & hold": out.metrics["buy_and_hold"],  # type: ignore[dict-item]
                 **_index_column(out), **_levered_column(out)},
        notes=out.notes,
        warnings=out.warnings,
        strategy_name=(f"Strategy ({out.config.model.name}, {out.config.strategy.name})"
                       if out.signals.folds else f"Strategy ({out.config.strategy.name})"),
        benchmark_name="Buy & hold (equal weight)",
        sections=_sections(out),
        short_period=bool(out.metrics.get("annualised_from_under_a_year")),
        currency=str((out.metrics.get("market") or {}).get("currency", "")),  # type: ignore[union-attr]
        extra_curves=_index_curves(out),
    )
    return paths


def _index_curves(out: RunOutput) -> dict[str, pd.Series]:
    ix = out.metrics.get("index")
    if not isinstance(ix, dict):
        return {}
    from mltrader.pipeline import index_curve

    eq = out.strategy.equity
    return {f"Index {ix['name']}": index_curve(str(ix["name"]), eq.index, float(eq.iloc[0]))}


def write_compare(out: CompareOutput, run_dir: Path) -> dict[str, Path]:
    """Write a comparison's leaderboard (CSV and JSON), its config and its report."""
    from mltrader.backtest.compare_report import write_compare_report
    from mltrader.pipeline import dataset_warnings

    paths = {
        "config": run_dir / "config.yaml",
        "leaderboard": run_dir / "leaderboard.csv",
        "metrics": run_dir / "metrics.json",
        "report": run_dir / "report.html",
    }
    paths["config"].write_text(dump_config(out.config))
    out.leaderboard.to_csv(paths["leaderboard"], index=False, float_format="%.6g")
    rows = out.leaderboard.to_dict(orient="records")
    paths["metrics"].write_text(json.dumps(json_safe({"out_of_sample": out.oos,
                                                   "leaderboard": rows}), indent=2) + "\n")
    cfg = out.config
    notes = [
        f"Out of sample {out.oos['start']} to {out.oos['end']} ({out.oos['bars']} bars, "
        f"{out.oos['folds']} walk-forward folds); every model on the same folds, features, "
        f"labels ({cfg.target.kind}, {cfg.target.horizon}-bar horizon), rule and costs.",
        "Hit rate: share of predictions with the right sign; p: one-sided binomial test "
        "against 50%; always-up rate: the hit rate of predicting 'up' every time.",
        "MSE / MSE(zero) >= 1 means the predicted returns are no better than predicting 0.",
        "Deflated Sharpe (Bailey & Lopez de Prado 2014): the probability that the true Sharpe "
        "beats the best one expected by luck among all configurations tried (every model and "
        "tuning trial counts); below 0.95 the result is not significant.",
    ]
    warnings = dataset_warnings(cfg)
    write_compare_report(paths["report"], title=f"mltrader compare: {cfg.name}",
                         leaderboard=out.leaderboard, results=out.results,
                         benchmark=out.benchmark, notes=notes, warnings=warnings)
    return paths
