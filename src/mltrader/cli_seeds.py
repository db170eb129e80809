"""`mltrader seeds`: one config, several seeds, each seed's out-of-sample result and the
spread. Registers on `mltrader.cli_app.app` when imported; the work is `mltrader.seeds`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mltrader.cli_app import _fold_progress, _progress, app, guarded, out
from mltrader.cli_options import (
    DataOpt,
    ExecutorOpt,
    Overrides,
    SetOpt,
    WorkersOpt,
    load_run_config,
)


@app.command(epilog="Example:  mltrader seeds -c configs/rl_sharpe.yaml --n 5")
@guarded
def seeds(
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config (YAML); every key "
                                         "is checked. Example: -c configs/rl_ppo.yaml")] = Path(
        "configs/rl_sharpe.yaml"),
    n: Annotated[int, typer.Option(
        "--n", help="How many seeds (at least 2; report 5 or more). Example: --n 5")] = 5,
    first_seed: Annotated[int, typer.Option(
        "--first-seed", help="Seeds run are first-seed .. first-seed + n - 1. "
        "Example: --first-seed 0")] = 0,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder to write (default: runs/<timestamp>-seeds-<name>/ under the "
        "config's output_dir). Example: --out runs/ppo-seeds")] = None,
    data: DataOpt = None,
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    set_: SetOpt = None,
) -> None:
    """How much of a learned policy's result is its seed? Run the config once per seed.

    Each seed is a full walk-forward backtest on the same bars (a seed changes the initial
    weights and, for the RL agents, the episodes they train on). Prints and writes each seed's
    out-of-sample return, Sharpe, drawdown and test against buy-and-hold, then the mean and
    standard deviation of the Sharpe over the seeds. Every seed is recorded as an rl_seed trial
    in runs/trials.jsonl (see `mltrader trials`), and each seed's deflated Sharpe counts every
    trial on these data, so trying seeds until one looks good is paid for.

    Writes runs/<timestamp>-seeds-<name>/ with seeds.csv, summary.json and seeds.html.
    """
    from mltrader.runs import check_writable, new_run_dir
    from mltrader.seeds import TABLE_HEADS, check_seeds, run_seeds, table_rows, write_seeds
    from mltrader.trials import registry_for

    chosen = check_seeds(n, first_seed)
    ov = Overrides().data(data).executor(executor, workers)
    ov.common(sets=set_)
    cfg = load_run_config(config, ov)
    if out_dir is None:
        check_writable(Path(cfg.output_dir))  # fail now, not after training
    else:
        check_writable(out_dir, "--out")
    result = run_seeds(cfg, chosen, registry=registry_for(cfg.output_dir),
                       progress=functools.partial(_progress, "seeds"),
                       fold_progress=_fold_progress)
    folder = out_dir if out_dir is not None else new_run_dir(Path(cfg.output_dir),
                                                             f"seeds-{cfg.name}")
    paths = write_seeds(result, folder)
    oos = result.out_of_sample
    table = Table(title=f"{cfg.model.name} over {len(chosen)} seeds, out of sample "
                  f"{oos.get('start')} .. {oos.get('end')}", title_justify="left")
    for head in TABLE_HEADS:
        table.add_column(head, justify="right", no_wrap=True)
    for row in table_rows(result):
        table.add_row(*row)
    out.print(table)
    out.print("B&H: buy-and-hold's Sharpe on the same bars; p: of the Sharpe difference to it "
              "(Ledoit-Wolf HAC); DSR: deflated Sharpe over every trial on these data",
              highlight=False)
    for sentence in result.sentences():
        out.print(escape(sentence), highlight=False)
    out.print(f"Report: [bold]{escape(str(paths['report']))}[/]")
    out.print(f"Wrote {escape(str(folder))} (seeds.csv, summary.json, seeds.html)")
