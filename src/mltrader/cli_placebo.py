"""`mltrader placebo`: the real run against the same rule fed placebo predictions.

Registers on `mltrader.cli_app.app` when imported; the work is `mltrader.placebo`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mltrader.cli_app import _fold_progress, _progress, app, guarded, out
from mltrader.cli_options import DataOpt, Overrides, SetOpt, load_run_config


@app.command(epilog="Example:  mltrader placebo -c configs/topk.yaml --n 100 "
             "--kinds random,vol_matched")
@guarded
def placebo(
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config (YAML); every key "
                                         "is checked. Example: -c configs/default.yaml")] = Path(
        "configs/default.yaml"),
    n: Annotated[int, typer.Option(
        "--n", help="Placebo runs per kind (at least 10). Example: --n 200")] = 100,
    seed: Annotated[int, typer.Option(
        "--seed", help="Seed of the placebo draws; the same seed gives the same runs. "
        "Example: --seed 7")] = 0,
    kinds: Annotated[str, typer.Option(
        "--kinds", help="Comma-separated placebo kinds: random, shuffled, vol_matched. "
        "Example: --kinds random,vol_matched")] = "random,shuffled,vol_matched",
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder to write (default: runs/<timestamp>-placebo-<name>/ under the "
        "config's output_dir). Example: --out runs/topk-placebo")] = None,
    data: DataOpt = None,
    set_: SetOpt = None,
) -> None:
    """Would the same rule, costs and bars, fed placebo predictions, do as well?

    Trains the model walk-forward once and backtests the real run, then --n placebo runs per
    kind with only the predictions replaced: random (noise with the predictions'
    distribution), shuffled (each bar's predictions permuted across stocks) and vol_matched
    (noise leaning to volatile stocks as much as the model's predictions do). Each kind's
    noise is smoothed over time so it trades about as much as the real run. A real run that
    does not beat nearly all placebos shows no skill beyond its rule, costs and risk. For a
    rule without a model (crossover) the placebos replace its positions, at its exposure.

    Writes runs/<timestamp>-placebo-<name>/ with placebo.csv (every run), summary.json and
    placebo.html (histograms with the real run marked), and prints the table.
    """
    from mltrader.placebo import check_kinds, check_runs
    from mltrader.placebo import placebo as run_placebo
    from mltrader.placebo_report import TABLE_HEADS, table_rows, write_placebo
    from mltrader.runs import check_writable, new_run_dir

    chosen = check_kinds(kinds)
    check_runs(n, seed)
    ov = Overrides().data(data)
    ov.common(sets=set_)
    cfg = load_run_config(config, ov)
    if out_dir is None:
        check_writable(Path(cfg.output_dir))  # fail now, not after training
    else:
        check_writable(out_dir, "--out")
    result = run_placebo(cfg, n=n, seed=seed, kinds=chosen,
                         progress=functools.partial(_progress, "placebo runs"),
                         fold_progress=_fold_progress)
    if out_dir is None:
        folder = new_run_dir(Path(cfg.output_dir), f"placebo-{cfg.name}")
    else:
        folder = out_dir
    paths = write_placebo(result, folder)
    r, oos = result.real, result.out_of_sample
    what = (f"{cfg.strategy.name} rule (no model)" if result.rule_only
            else f"{cfg.model.name}, {cfg.strategy.name} rule")
    table = Table(title=f"Placebo test, out of sample {oos['start']} .. {oos['end']}: {what}; "
                  f"real run: return {_pct(r.get('total_return'))}, Sharpe "
                  f"{_num(r.get('sharpe'))}, turnover {_num(r.get('turnover'))}x a year",
                  title_justify="left")
    for head in TABLE_HEADS:
        table.add_column(head, justify="left" if head == "kind" else "right",
                         no_wrap=head == "kind")
    for row in table_rows(result):
        table.add_row(*row)
    out.print(table)
    for sentence in result.sentences():
        out.print(escape(sentence), highlight=False)
    for note in result.notes:
        out.print(f"- {escape(note)}", highlight=False)
    out.print(f"Report: [bold]{escape(str(paths['report']))}[/]")
    out.print(f"Wrote {escape(str(folder))} (placebo.csv, summary.json, placebo.html)")


def _pct(v: object) -> str:
    return f"{v:+.1%}" if isinstance(v, int | float) else "n/a"


def _num(v: object) -> str:
    return f"{v:.2f}" if isinstance(v, int | float) else "n/a"
