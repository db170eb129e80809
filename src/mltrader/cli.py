"""The `mltrader` command line: a thin shell over the pipeline, with errors as one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mltrader.cli_app import (
    _fail,
    _fold_progress,
    _one_line,
    _progress,
    _unit_progress,
    app,
    err,
    guarded,
    out,
)
from mltrader.cli_options import (
    DataOpt,
    ExecutorOpt,
    FirstTestYearOpt,
    InitialCashOpt,
    Overrides,
    SetOpt,
    SmokeOpt,
    StrategyOpt,
    WorkersOpt,
    load_run_config,
)
from mltrader.errors import MltraderError

data_app = typer.Typer(help="Inspect the market data mltrader can use.", no_args_is_help=True)
app.add_typer(data_app, name="data")

def _pct(v: object) -> str:
    return "n/a" if v is None else f"{v:+.1%}" if isinstance(v, float) else str(v)


ROWS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("Total return", "total_return", _pct),
    ("CAGR", "cagr", _pct),
    ("Annual volatility", "annual_volatility", lambda v: "n/a" if v is None else f"{v:.1%}"),
    ("Sharpe", "sharpe", lambda v: "n/a" if v is None else f"{v:.2f}"),
    ("Max drawdown", "max_drawdown", _pct),
    ("Longest drawdown (days)", "longest_drawdown_days", lambda v: f"{v}"),
    ("Win rate (round trips)", "win_rate", lambda v: "n/a" if v is None else f"{v:.1%}"),
    ("Trades (round trips)", "trades", lambda v: f"{v}"),
    ("Turnover (x per year)", "turnover", lambda v: "n/a" if v is None else f"{v:.2f}"),
    ("Costs paid", "total_costs", lambda v: "n/a" if v is None else f"{v:,.0f}"),
    ("Cost drag (per year)", "cost_drag", lambda v: "n/a" if v is None else f"{v:.2%}"),
]


def _symbol_list(symbols: str) -> list[str]:
    """`--symbols AAPL, MSFT` as a list; an empty list is a user error, not "all symbols"."""
    listed = [s.strip() for s in symbols.split(",") if s.strip()]
    if not listed:
        raise MltraderError("--symbols is empty; give comma-separated symbols, "
                            "e.g. --symbols AAPL,MSFT")
    return listed


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """Strategy vs buy-and-hold, side by side."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("strategy", justify="right")
    table.add_column("buy & hold (equal weight)", justify="right")
    index = metrics.get("index")
    if isinstance(index, dict):
        table.add_column(f"index {index['name']}", justify="right")
    short = bool(metrics.get("annualised_from_under_a_year"))
    for label, key, fmt in ROWS:
        if short and key in ("cagr", "annual_volatility", "sharpe"):
            label += " (from < 1 year)"
        cells = [fmt(metrics["strategy"].get(key)), fmt(metrics["buy_and_hold"].get(key))]
        if isinstance(index, dict):
            cells.append(fmt(index[key]) if key in index else "")
        table.add_row(label, *cells)
    return table


def engines_table(frame: Any) -> Table:
    """mltrader and backtrader on the same targets, side by side."""
    from mltrader.backtest.report import engine_cell

    table = Table(title="Same targets, two engines", title_justify="left")
    table.add_column("metric")
    for c in frame.columns:
        table.add_column(str(c), justify="right")
    for idx, row in zip(frame.index, frame.to_numpy(), strict=True):
        table.add_row(str(idx), *(engine_cell(str(idx), v) for v in row))
    return table


@app.command(epilog="Example:  mltrader backtest -c configs/default.yaml --model ridge")
@guarded
def backtest(
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config (YAML); every key is "
                                         "checked. Example: -c configs/default.yaml")] = Path(
        "configs/default.yaml"),
    data: DataOpt = None,
    symbols: Annotated[str | None, typer.Option(
        help="Comma-separated symbols to trade (default: the config's). "
        "Example: --symbols AAPL,MSFT,JPM")] = None,
    start: Annotated[str | None, typer.Option(
        help="First date to load. Example: --start 1995-01-01")] = None,
    end: Annotated[str | None, typer.Option(
        help="Last date to load. Example: --end 2019-12-31")] = None,
    model: Annotated[str | None, typer.Option(
        help="Model to train (any name of the model registry: lightgbm, ridge, "
        "random_forest, svm, lstm, ...). Example: --model ridge")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Random seed; the same config and seed give identical metrics. Example: --seed 7")
                    ] = None,
    interval: Annotated[str | None, typer.Option(
        help="The bars' interval (data.interval): 1m, 5m, 15m, 1h, 1d, 1wk, 1mo. A file's is "
        "detected from its timestamps; a given one is checked against that. Example: "
        "--interval 1mo")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o",
        help="Where run folders go (default: runs/). Example: -o /tmp/runs")] = None,
    first_test_year: FirstTestYearOpt = None,
    initial_cash: InitialCashOpt = None,
    strategy: StrategyOpt = None,
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    set_: SetOpt = None,
    smoke: SmokeOpt = False,
    engine: Annotated[str, typer.Option(
        help="Backtest engine: mltrader (ours), or backtrader to ALSO run the same targets "
        "through backtrader and show both results side by side (needs backtrader: the cn "
        "extra, `pip install 'mltrader\\[cn]'`). Example: --engine backtrader")] = "mltrader",
) -> None:
    """Train walk-forward, trade the out-of-sample predictions, compare with buy-and-hold.

    Writes runs/<timestamp>-<name>/ with config.yaml, metrics.json, equity.parquet,
    trades.parquet, fills.parquet, orders.parquet, predictions.parquet, report.html (and the
    last fold's model under artifacts/ for a model run), and prints the metrics table.
    """
    from mltrader.pipeline import run
    from mltrader.runs import check_writable, new_run_dir, write_run
    from mltrader.strategy.registry import get_strategy
    from mltrader.trials import registry_for

    ov = Overrides().data(data)
    if symbols is not None:
        ov.set("data.symbols", _symbol_list(symbols), f"--symbols {symbols}")
    if start:
        ov.set("data.start", start, f"--start {start}")
    if end:
        ov.set("data.end", end, f"--end {end}")
    if model:
        ov.set("model.name", model, f"--model {model}")
    if seed is not None:
        ov.set("seed", seed, f"--seed {seed}")
    if interval is not None:
        ov.set("data.interval", interval, f"--interval {interval}")
    if output_dir is not None:
        ov.set("output_dir", str(output_dir), f"--output-dir {output_dir}")
    ov.executor(executor, workers)
    ov.common(first_test_year=first_test_year, initial_cash=initial_cash, strategy=strategy,
              sets=set_)
    cfg = load_run_config(config, ov, smoke)
    if model and not get_strategy(cfg.strategy.name).needs_model:
        _fail(f"--model {model}: strategy {cfg.strategy.name!r} does not use a model (it is a "
              "rule on prices); drop --model, or pick a strategy that uses one, e.g. "
              "--strategy threshold")
    check_writable(Path(cfg.output_dir))  # fail now, not after training
    if engine not in ("mltrader", "backtrader"):
        _fail(f"--engine {engine}: choose mltrader or backtrader")
    result = run(cfg, progress=_fold_progress,
                 registry=None if smoke else registry_for(cfg.output_dir), engine=engine)
    if smoke:
        from mltrader.smoke import SMOKE_NOTE

        result.warnings.insert(0, SMOKE_NOTE)
    run_dir = new_run_dir(Path(cfg.output_dir), cfg.name)
    paths = write_run(result, run_dir)
    m = result.metrics
    oos = m["out_of_sample"]
    what = (f"{cfg.model.name}, {cfg.strategy.name} rule" if m.get("model")
            else f"{cfg.strategy.name} rule (no model)")
    out.print(metrics_table(m, f"Out of sample {oos['start']} .. {oos['end']}: {what}"))
    if result.engines is not None:
        out.print(engines_table(result.engines))
    for note in result.notes[1:]:
        out.print(f"- {escape(note)}", highlight=False)
    for w in result.warnings:
        out.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    out.print(f"Report: [bold]{escape(str(paths['report']))}[/]")
    out.print(f"Run folder: {escape(str(run_dir))}")


@app.command(epilog="Example:  mltrader compare -c configs/compare.yaml")
@guarded
def compare(
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config whose `compare:` "
                                         "lists the models. Example: -c configs/compare.yaml")
                      ] = Path("configs/compare.yaml"),
    symbols: Annotated[str | None, typer.Option(
        help="Comma-separated symbols (default: the config's). Example: --symbols AAPL,MSFT")
                       ] = None,
    data: DataOpt = None,
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o",
        help="Where run folders go (default: runs/). Example: -o /tmp/runs")] = None,
    first_test_year: FirstTestYearOpt = None,
    initial_cash: InitialCashOpt = None,
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    set_: SetOpt = None,
    smoke: SmokeOpt = False,
) -> None:
    """Train several models on the same walk-forward folds and rank them out of sample.

    Writes runs/<timestamp>-<name>/ with leaderboard.csv, metrics.json and report.html:
    IC, hit rate (with a binomial p-value and the always-up rate), MSE against the zero
    forecast, and the strategy's Sharpe, CAGR and drawdown after costs, next to buy-and-hold.
    """
    from mltrader.compare import compare as run_compare
    from mltrader.runs import check_writable, new_run_dir, write_compare
    from mltrader.trials import registry_for

    ov = Overrides().data(data)
    if symbols is not None:
        ov.set("data.symbols", _symbol_list(symbols), f"--symbols {symbols}")
    if output_dir is not None:
        ov.set("output_dir", str(output_dir), f"--output-dir {output_dir}")
    ov.executor(executor, workers)
    ov.common(first_test_year=first_test_year, initial_cash=initial_cash, sets=set_)
    cfg = load_run_config(config, ov, smoke)
    check_writable(Path(cfg.output_dir))
    result = run_compare(cfg, progress=_fold_progress, unit_progress=_unit_progress,
                         registry=None if smoke else registry_for(cfg.output_dir))
    run_dir = new_run_dir(Path(cfg.output_dir), cfg.name)
    paths = write_compare(result, run_dir)
    table = Table(title=f"Out of sample {result.oos['start']} .. {result.oos['end']}, "
                        "after costs", title_justify="left")
    show = [("model", "model", str), ("IC", "ic_mean", "{:+.4f}".format),
            ("IC t", "ic_t", "{:+.2f}".format), ("hit", "hit_rate", "{:.1%}".format),
            ("p(hit>50%)", "hit_p_value", "{:.3f}".format), ("Sharpe", "sharpe", "{:.2f}".format),
            ("DSR", "deflated_sharpe", "{:.2f}".format),
            ("of trials", "dsr_trials", "{:.0f}".format),
            ("CAGR", "cagr", "{:+.1%}".format), ("max DD", "max_drawdown", "{:.1%}".format)]
    if result.leaderboard["rule"].nunique() > 1:  # policies traded by the positions rule
        show.insert(1, ("rule", "rule", str))
    for head, _, _ in show:
        table.add_column(head, justify="left" if head in ("model", "rule") else "right")
    for _, row in result.leaderboard.iterrows():
        cells = []
        for _, key, fmt in show:
            v = row.get(key)
            cells.append("n/a" if v is None or (isinstance(v, float) and v != v) else fmt(v))
        table.add_row(*cells)
    out.print(table)
    out.print(f"Report: [bold]{escape(str(paths['report']))}[/]")
    out.print(f"Leaderboard: {escape(str(paths['leaderboard']))}")


@app.command(epilog="Example:  mltrader sensitivity -c configs/default.yaml "
             "--grid threshold=0.0:0.002:5 --grid stop_loss=0.02:0.1:5")
@guarded
def sensitivity(
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config (YAML). "
                                         "Example: -c configs/default.yaml")] = Path(
        "configs/default.yaml"),
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", "-g", help="KEY=LO:HI:N (N values from LO to HI) or KEY=A,B,C; repeat for a "
        "second axis. KEY is a strategy parameter (threshold), a risk / costs / execution "
        "setting (stop_loss, slippage_bps) or a dotted path (model.params.learning_rate, "
        "which retrains per cell). Example: --grid threshold=0.005:0.03:6")] = None,
    split: Annotated[str | None, typer.Option(
        help="Date cutting the out-of-sample period into a selection part (the grid's choice "
        "is made there) and a hold-out (default: the middle). Example: --split 2014-01-01")
                     ] = None,
    symbols: Annotated[str | None, typer.Option(
        help="Comma-separated symbols (default: the config's). Example: --symbols AAPL,MSFT")
                       ] = None,
    data: DataOpt = None,
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o", help="Where run folders go (default: runs/).")] = None,
    first_test_year: FirstTestYearOpt = None,
    initial_cash: InitialCashOpt = None,
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    set_: SetOpt = None,
) -> None:
    """Backtest a grid of parameter values; heatmaps of Sharpe and CAGR in and out of sample.

    The best cell is picked on the selection period only; its hold-out Sharpe is the honest
    figure. A wide spread across cells means the parameters are fragile.
    """
    from mltrader.config import load_config
    from mltrader.runs import check_writable, new_run_dir
    from mltrader.sensitivity import parse_grid, write_sensitivity_report
    from mltrader.sweep import plan
    from mltrader.sweep import sensitivity as run_sweep
    from mltrader.trials import registry_for

    if not grid:
        _fail("give at least one --grid, e.g. --grid threshold=0.005:0.03:6")
    axes = [parse_grid(g) for g in grid or []]
    ov = Overrides().data(data)
    if symbols is not None:
        ov.set("data.symbols", _symbol_list(symbols), f"--symbols {symbols}")
    if output_dir is not None:
        ov.set("output_dir", str(output_dir), f"--output-dir {output_dir}")
    ov.executor(executor, workers)
    ov.common(first_test_year=first_test_year, initial_cash=initial_cash, sets=set_)
    cfg = load_config(config, ov.values, ov.origins)
    check_writable(Path(cfg.output_dir))
    checked = plan(config, axes, ov.values, split)  # every error before any training
    if checked.retrain:
        err.print("note: a grid key changes the model: every cell retrains (slow)")
    with _progress("grid cells", len(checked.configs)) as advance:
        result = run_sweep(checked, progress=_fold_progress, on_cell=advance,
                           registry=registry_for(checked.base.output_dir))
    run_dir = new_run_dir(Path(cfg.output_dir), f"{cfg.name}-sensitivity")
    report = run_dir / "sensitivity.html"
    write_sensitivity_report(report, result.table, result.axes, result.split,
                             title=f"mltrader sensitivity: {cfg.name} ({cfg.strategy.name})")
    chosen = result.table[result.table["chosen"]]
    if len(chosen):
        row = chosen.iloc[0]
        cell = ", ".join(f"{a.key}={row[a.key]}" for a in result.axes)
        out.print(f"Chosen on the selection period (before {result.split.date()}): {cell}: "
                  f"Sharpe {row['sharpe_is']:.2f} there, {row['sharpe_oos']:.2f} in the "
                  "hold-out (the honest figure).")
    oos = result.table["sharpe_oos"]
    out.print(f"Hold-out Sharpe across the {len(oos)} cells: {oos.min():.2f} .. {oos.max():.2f}")
    out.print(f"Report: [bold]{escape(str(report))}[/]")


@app.command(epilog="Example:  mltrader init my-project && cd my-project && mltrader backtest "
             "-c configs/default.yaml")
@guarded
def init(
    folder: Annotated[Path, typer.Argument(help="Project folder (created if missing; "
                                           "default: here).")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that exist "
                                        "already (default: keep them).")] = False,
) -> None:
    """Write a starter project: configs/ with every shipped strategy, a README of every
    config key, and an .env template for broker and data keys.

    Existing files are kept unless --force. Then: cd into the folder and run
    `mltrader backtest -c configs/default.yaml`.
    """
    from mltrader.starter import init_project

    res = init_project(folder, force=force)
    for p in res.written:
        out.print(f"wrote {escape(str(p))}", highlight=False)
    for p in res.kept:
        out.print(f"kept  {escape(str(p))} (exists; --force overwrites it)", highlight=False)
    go = "" if folder.resolve() == Path.cwd().resolve() else f"cd {folder} && "
    out.print(f"Next: {escape(go)}mltrader backtest -c configs/default.yaml   (or --smoke "
              "for a quick check; the README lists every key)", highlight=False)


@app.command()
@guarded
def strategies() -> None:
    """List the registered strategies and their parameters (set them under `strategy:`)."""
    from mltrader.strategy.registry import STRATEGIES

    table = Table(title="Strategies (in a config: strategy: {name: NAME, PARAM: VALUE})",
                  title_justify="left")
    for col in ("name", "needs a model", "parameters (default)", "what"):
        table.add_column(col)
    for spec in STRATEGIES.values():
        params = ", ".join(f"{k}={f.default!r}" for k, f in spec.params.model_fields.items())
        table.add_row(spec.name, "yes" if spec.needs_model else "no", params, spec.description)
    out.print(table)


@data_app.command("list")
@guarded
def data_list() -> None:
    """Show the bundled datasets with their symbols and date ranges."""
    from mltrader.data.datasets import DATASETS, load_bundled

    table = Table(title="Bundled datasets (in a config: data: {dataset: NAME})",
                  title_justify="left")
    for col in ("name", "fields", "from", "to", "bars"):
        table.add_column(col, no_wrap=True)
    table.add_column("what")
    for ds in DATASETS.values():
        b = load_bundled(ds.name)
        syms = ", ".join(b.symbols)
        table.add_row(ds.name, "close" if b.close_only else "OHLCV",
                      str(b.index[0].date()), str(b.index[-1].date()), str(len(b)),
                      f"{ds.description}. Symbols: {syms}")
    out.print(table)


@data_app.command("fetch", epilog="Example:  mltrader data fetch --source yahoo --symbols "
                  "AAPL,MSFT --start 2015-01-01 --interval 1d -o prices.parquet")
@guarded
def data_fetch(
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols. Example: "
                                         "--symbols AAPL,MSFT")],
    start: Annotated[str, typer.Option(help="First date. Example: --start 2015-01-01")],
    end: Annotated[str | None, typer.Option(help="Last date (default: now).")] = None,
    source: Annotated[list[str] | None, typer.Option(
        help="yahoo, alphavantage, alpaca or ib (a running TWS / IB Gateway); repeat to "
        "give fallbacks tried in order. "
        "Example: --source yahoo --source alphavantage")] = None,
    interval: Annotated[str, typer.Option(help="1m, 5m, 15m, 1h or 1d")] = "1d",
    raw: Annotated[bool, typer.Option("--raw", help="Raw traded prices instead of split- "
                                      "and dividend-adjusted ones.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Skip the local cache.")] = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the bars to this CSV or Parquet file (long format), "
        "ready for `--data` or `data: {source: file}`.")] = None,
) -> None:
    """Fetch bars from the network sources (through the local cache) and report who served
    each symbol and the data's quality."""
    from mltrader.data.cache import BarCache
    from mltrader.data.fetch import fetch_bars
    from mltrader.data.files import save_file
    from mltrader.data.quality import check_bars

    syms = _symbol_list(symbols)
    with _progress("fetching", len(syms), transient=True) as advance:
        res = fetch_bars(syms, start, end, interval, not raw, source or ["yahoo"],
                         cache=None if no_cache else BarCache(), progress=advance)
    b = res.bars
    out.print(f"{len(b)} bars x {len(b.symbols)} symbols, {b.index[0]} .. {b.index[-1]}")
    out.print(f"Served by: {escape(res.describe())}")
    for sym, reasons in res.failures.items():
        if sym in res.served_by:
            out.print(f"[yellow]fell back for {escape(sym)}:[/] {escape(' | '.join(reasons))}")
    report = check_bars(b, interval=interval)
    out.print(escape(report.text()))
    if output is not None:
        save_file(b, output)
        out.print(f"Wrote {escape(str(output))}")


@data_app.command("check", epilog="Example:  mltrader data check prices.csv")
@guarded
def data_check(
    path: Annotated[Path, typer.Argument(help="CSV or Parquet file (long, wide or single).")],
    calendar: Annotated[str | None, typer.Option(
        help="Calendar for gaps: an exchange code (XNYS, XLON, XSHG, ...), \"24/7\" (crypto) "
        "or \"24/5\" (FX). Default: from the symbols' suffix, as a backtest resolves it "
        "(data.calendar).")] = None,
    interval: Annotated[str | None, typer.Option(
        help="Bar interval of the file (1m, 5m, 15m, 30m, 1h, 1d, 1wk, 1mo). Default: "
        "detected from the timestamps, as a backtest does.")] = None,
    clean: Annotated[str, typer.Option(
        help="Missing prices ('.', NA, null, empty): none = report them as an error, drop "
        "the rows or ffill them, as data.clean does in a run.")] = "none",
) -> None:
    """The data quality report: calendar gaps, duplicates, zero volume, outliers, suspected
    unadjusted splits, with where each kind of warning is. Exits 1 when a problem would make
    a backtest wrong."""
    from mltrader.data.calendars import resolve_calendar, weekend_hint
    from mltrader.data.files import load_file_report
    from mltrader.data.intervals import INTERVALS, check_interval, detect_interval
    from mltrader.data.quality import check_bars
    from mltrader.errors import DataError

    if interval is not None and interval not in INTERVALS:
        _fail(f"--interval {interval}: not a bar interval; use one of {', '.join(INTERVALS)}")
    if clean not in ("none", "drop", "ffill"):
        _fail(f"--clean {clean}: use none, drop or ffill")
    try:
        bars, loaded = load_file_report(path, clean=clean)
    except DataError as e:
        if "data.clean" not in str(e):
            raise
        raise DataError(f"{e} (here: data check --clean drop or --clean ffill)") from None
    out.print(escape(_describe_load(bars, loaded)), highlight=False)
    for note in loaded.notes:
        out.print(f"- {escape(note)}", highlight=False)
    cal = resolve_calendar(calendar, bars.symbols)  # the same rules as `backtest`
    ivl = check_interval(path, interval, detect_interval(bars.index), "--interval")
    detected = [k for k, v in (("calendar", calendar), ("interval", interval)) if v is None]
    report = check_bars(bars, calendar=cal, interval=ivl)
    out.print(escape(report.text(detected=detected)), highlight=False)
    hint = weekend_hint(cal, bars.index, ivl, "--calendar {cal}")
    if hint:
        out.print(f"[yellow]warning:[/] {escape(hint)}", highlight=False)
    if report.fatal:
        _fail(f"{path}: {sum(1 for i in report.issues if i.fatal)} fatal problem(s) (listed "
              "above); fix the data or set data.clean (drop / ffill) in the config", 1)


def _describe_load(bars: Any, loaded: Any) -> str:
    """How a file read: layout, symbols, bars and span, fields, separator and decimal mark."""
    from mltrader.data._sniff import SEP_NAMES

    syms = list(bars.symbols)
    shown = ", ".join(syms[:8]) + (f" ... and {len(syms) - 8} more" if len(syms) > 8 else "")
    fields = "close only" if bars.close_only else "OHLC" + ("V" if bars.volume is not None
                                                            else "")
    how = ""
    if loaded.separator is not None:
        sep = SEP_NAMES.get(loaded.separator, loaded.separator)
        how = f", {sep}-separated, decimal {loaded.decimal!r}"
    idx = bars.index
    daily = bool((idx == idx.normalize()).all())
    first, last = (str(idx[0].date()), str(idx[-1].date())) if daily else (
        idx[0].strftime("%Y-%m-%d %H:%M %Z"), idx[-1].strftime("%Y-%m-%d %H:%M %Z"))
    return (f"{loaded.path}: {loaded.layout} layout, {len(syms)} symbol(s) ({shown}), "
            f"{len(bars)} bars {first} .. {last}, {fields}{how}")


@data_app.command("cache", epilog="Example:  mltrader data cache --clear")
@guarded
def data_cache(
    clear: Annotated[bool, typer.Option("--clear", help="Delete the cached bars.")] = False,
    source: Annotated[str | None, typer.Option(help="Only this source's files.")] = None,
) -> None:
    """Show (or --clear) the local Parquet cache of fetched bars ($MLTRADER_CACHE_DIR or
    ~/.cache/mltrader)."""
    from mltrader.data.cache import BarCache

    cache = BarCache()
    if clear:
        n = cache.clear(source)
        out.print(f"Removed {n} cached file(s) from {escape(str(cache.root))}")
        return
    rows = cache.info()
    table = Table(title=f"Cache: {cache.root}", title_justify="left")
    for col in ("source", "symbol", "interval", "adjusted", "first", "last", "rows"):
        table.add_column(col)
    for r in rows:
        if source is None or r["source"] == source:
            table.add_row(*(str(r[c]) for c in ("source", "symbol", "interval", "adjusted",
                                                 "first", "last", "rows")))
    out.print(table)


def main() -> None:
    """Console-script entry point: runs the command itself (Typer's public get_command, then
    click's make_context / invoke) so that every way out is one `error:` line: a usage error
    (a bad option value, an unknown option, a missing argument) names the command's --help
    instead of Typer's multi-line box, and a Ctrl-C that lands while the options are parsed
    says "interrupted" instead of exiting silently."""
    command = typer.main.get_command(app)
    try:
        with command.make_context("mltrader", sys.argv[1:]) as ctx:
            command.invoke(ctx)
    except typer.Exit as e:  # --help, --version, a command's own exit code
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("[bold red]error:[/] interrupted", highlight=False)
        sys.exit(130)
    except (typer.Abort, EOFError):
        err.print("[bold red]error:[/] aborted", highlight=False)
        sys.exit(1)
    except typer.TyperException as e:  # Typer's (vendored click's) ClickException family
        if type(e).__name__ == "NoArgsIsHelpError":  # `mltrader`, `mltrader data`: the help
            err.print(e.format_message())  # type: ignore[attr-defined]
            sys.exit(2)
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "mltrader"
        message = _one_line(e.format_message())  # type: ignore[attr-defined]
        err.print(f"[bold red]error:[/] {escape(message)} (see `{escape(where)} --help`)",
                  highlight=False, soft_wrap=True)
        sys.exit(getattr(e, "exit_code", 2))
    sys.exit(0)


# the trading commands (paper, live) and the account commands (status, flatten, parity)
# register themselves on `app`, in this order
from mltrader import cli_account, cli_dashboard, cli_financials, cli_live, cli_news, cli_placebo, cli_sectors, cli_seeds, cli_sentiment, cli_trials  # noqa: E402,F401,I001,E501

if __name__ == "__main__":  # pragma: no cover
    main()
