"""The `mltrader` command line: a thin shell over the pipeline, with errors as one clear line."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mltrader import __version__
from mltrader.errors import MltraderError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help=(
        "mltrader: train ML models walk-forward on stock data and backtest them honestly, "
        "out of sample, against buy-and-hold.\n\n"
        "Start with:  mltrader backtest -c configs/default.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Inspect the market data mltrader can use.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: F) -> F:
    """Turn user errors into one red line and a non-zero exit; MLTRADER_DEBUG=1 shows tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except MltraderError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as e:  # an unexpected failure is still one line, not a traceback
            if os.environ.get("MLTRADER_DEBUG"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e} (rerun with MLTRADER_DEBUG=1 for "
                  "the traceback and report it)", 1)

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"mltrader {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """mltrader command line."""


@contextmanager
def _fold_progress(total: int) -> Iterator[Callable[[str], None]]:
    with Progress(
        TextColumn("[bold]walk-forward folds"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.description}"), TimeElapsedColumn(),
        console=err, transient=False, disable=not err.is_terminal and "CI" in os.environ,
    ) as bar:
        task = bar.add_task("", total=total)

        def advance(msg: str) -> None:
            bar.update(task, advance=1, description=f"last fold: {msg}")

        yield advance


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
    for label, key, fmt in ROWS:
        table.add_row(label, fmt(metrics["strategy"].get(key)),
                      fmt(metrics["buy_and_hold"].get(key)))
    return table


@app.command(epilog="Example:  mltrader backtest -c configs/default.yaml --model ridge")
@guarded
def backtest(
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config (YAML); every key is "
                                         "checked. Example: -c configs/default.yaml")] = Path(
        "configs/default.yaml"),
    data: Annotated[Path | None, typer.Option(
        "--data", help="Your own OHLCV or close-only file (CSV or Parquet, long or wide "
        "format) instead of the config's data. Example: --data prices.csv")] = None,
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
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o",
        help="Where run folders go (default: runs/). Example: -o /tmp/runs")] = None,
) -> None:
    """Train walk-forward, trade the out-of-sample predictions, compare with buy-and-hold.

    Writes runs/<timestamp>-<name>/ with config.yaml, metrics.json, equity.parquet,
    trades.parquet and report.html, and prints the metrics table.
    """
    from mltrader.config import load_config
    from mltrader.pipeline import run
    from mltrader.runs import check_writable, new_run_dir, write_run

    overrides: dict[str, Any] = {}
    if data is not None:
        overrides.update({"data.source": "file", "data.path": str(data)})
    if symbols is not None:
        overrides["data.symbols"] = _symbol_list(symbols)
    if start:
        overrides["data.start"] = start
    if end:
        overrides["data.end"] = end
    if model:
        overrides["model.name"] = model
    if seed is not None:
        overrides["seed"] = seed
    if output_dir is not None:
        overrides["output_dir"] = str(output_dir)
    cfg = load_config(config, overrides)
    check_writable(Path(cfg.output_dir))  # fail now, not after training
    result = run(cfg, progress=_fold_progress)
    run_dir = new_run_dir(Path(cfg.output_dir), cfg.name)
    paths = write_run(result, run_dir)
    m = result.metrics
    oos = m["out_of_sample"]
    out.print(metrics_table(m, f"Out of sample {oos['start']} .. {oos['end']}: "
                               f"{cfg.model.name}, {cfg.strategy.name} rule"))
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
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o",
        help="Where run folders go (default: runs/). Example: -o /tmp/runs")] = None,
) -> None:
    """Train several models on the same walk-forward folds and rank them out of sample.

    Writes runs/<timestamp>-<name>/ with leaderboard.csv, metrics.json and report.html:
    IC, hit rate (with a binomial p-value and the always-up rate), MSE against the zero
    forecast, and the strategy's Sharpe, CAGR and drawdown after costs, next to buy-and-hold.
    """
    from mltrader.compare import compare as run_compare
    from mltrader.config import load_config
    from mltrader.runs import check_writable, new_run_dir, write_compare

    overrides: dict[str, Any] = {}
    if symbols is not None:
        overrides["data.symbols"] = _symbol_list(symbols)
    if output_dir is not None:
        overrides["output_dir"] = str(output_dir)
    cfg = load_config(config, overrides)
    check_writable(Path(cfg.output_dir))
    result = run_compare(cfg, progress=_fold_progress)
    run_dir = new_run_dir(Path(cfg.output_dir), cfg.name)
    paths = write_compare(result, run_dir)
    table = Table(title=f"Out of sample {result.oos['start']} .. {result.oos['end']}, "
                        "after costs", title_justify="left")
    show = [("model", "model", str), ("IC", "ic_mean", "{:+.4f}".format),
            ("IC t", "ic_t", "{:+.2f}".format), ("hit", "hit_rate", "{:.1%}".format),
            ("p(hit>50%)", "hit_p_value", "{:.3f}".format), ("Sharpe", "sharpe", "{:.2f}".format),
            ("CAGR", "cagr", "{:+.1%}".format), ("max DD", "max_drawdown", "{:.1%}".format)]
    for head, _, _ in show:
        table.add_column(head, justify="left" if head == "model" else "right")
    for _, row in result.leaderboard.iterrows():
        cells = []
        for _, key, fmt in show:
            v = row.get(key)
            cells.append("n/a" if v is None or (isinstance(v, float) and v != v) else fmt(v))
        table.add_row(*cells)
    out.print(table)
    out.print(f"Report: [bold]{escape(str(paths['report']))}[/]")
    out.print(f"Leaderboard: {escape(str(paths['leaderboard']))}")


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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mltrader")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
