"""The `mltrader trials` command: the trials registry that every deflated Sharpe counts.

Shows (or resets) `mltrader.trials.TrialRegistry`: per dataset fingerprint, how many
configurations were tried on that data, of which kind, and the spread of their Sharpes.
Registers on the shared app (cli_app.py); cli.py imports this module to add the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mltrader.cli_app import app, err, guarded, out
from mltrader.errors import MltraderError

if TYPE_CHECKING:
    from mltrader.trials import TrialRegistry

PURPOSE = ("Every run's deflated Sharpe counts all the trials recorded on its data (same "
           "fingerprint): the more configurations tried, the more a lucky best is expected, "
           "so the higher the bar. Reset only when you start a genuinely new study.")


def _interactive() -> bool:
    """Whether a person can answer a prompt (stdin is a terminal)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _when(iso: str) -> str:
    """An ISO UTC time as "YYYY-MM-DD HH:MM UTC" (unchanged when it does not parse)."""
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(iso).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def _resolve_dataset(given: str, known: list[str], path: Path) -> str:
    """A fingerprint or a unique prefix of one (as the table shows it) -> the fingerprint."""
    want = given.strip().lower()
    if want in known:
        return want
    hits = [d for d in known if d.startswith(want)] if want else []
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise MltraderError(f"--dataset {given} matches {len(hits)} datasets "
                            f"({', '.join(hits[:4])}); give more of the fingerprint")
    raise MltraderError(f"--dataset {given}: no trials recorded on that dataset in {path}; "
                        "`mltrader trials` lists the fingerprints")


@app.command("trials", epilog="Examples:  mltrader trials    |    mltrader trials --reset "
             "--dataset 3f9c1e0b --yes    |    mltrader trials --file /tmp/runs")
@guarded
def trials_cmd(
    reset: Annotated[bool, typer.Option(
        "--reset", help="Forget the recorded trials (all, or --dataset's). Asks first "
        "unless --yes.")] = False,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Only this dataset: its fingerprint, or a unique prefix of "
        "it. Example: --dataset 3f9c1e0b")] = None,
    file: Annotated[Path, typer.Option(
        "--file", "-f", help="The registry: a trials.jsonl file, or the runs folder holding "
        "it (default: runs/trials.jsonl; a config's output_dir keeps its own). Example: "
        "--file /tmp/runs")] = Path("runs") / "trials.jsonl",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Reset without asking.")] = False,
) -> None:
    """Show the trials each dataset's deflated Sharpe counts: backtests, compare models,
    sensitivity cells, tuning trials, RL seeds.

    A dataset is the bars a run is judged on, by fingerprint (same symbols, dates and
    closes, same fingerprint). Re-running an identical config does not count twice. The
    Sharpe variance is of the trials' per-bar (not annualised) Sharpes; with fewer than 2
    Sharpes a run uses the sampling variance 1/bars instead. --reset forgets them, for a
    genuinely new study: deflated Sharpes computed afterwards count fewer trials.
    """
    from mltrader.trials import TRIALS_FILE, TrialRegistry

    path = file / TRIALS_FILE if file.is_dir() else file
    reg = TrialRegistry(path)
    rows = reg.summary()
    for w in reg.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if not rows:
        what = "reset" if reset else "show"
        out.print(f"No trials recorded in {escape(str(path))}: nothing to {what}. Each "
                  "backtest, compare and sensitivity run records its trials there.",
                  highlight=False)
        return
    known = [r["dataset"] for r in rows]
    fp = _resolve_dataset(dataset, known, path) if dataset is not None else None
    if fp is not None:
        rows = [r for r in rows if r["dataset"] == fp]
    if reset:
        _reset(reg, fp, sum(r["trials"] for r in rows), len(rows), yes)
        return
    table = Table(title=f"Trials in {path}", title_justify="left")
    for col in ("dataset", "trials", "by kind", "Sharpe var. (per bar)", "last run",
                "latest label"):
        table.add_column(col, justify="right" if col == "trials" else "left",
                         no_wrap=col in ("dataset", "trials"), overflow="fold")
    for r in rows:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(r["by_kind"].items()))
        var = r["sharpe_variance"]
        var_text = (f"{var:.3g} (of {r['sharpes']})" if var is not None
                    else f"n/a ({r['sharpes']} Sharpe(s))")
        table.add_row(r["dataset"], str(r["trials"]), kinds, var_text, _when(r["last"]),
                      escape(r["sample_label"]))
    out.print(table)
    out.print(escape(PURPOSE) + " `mltrader trials --reset` does that.", highlight=False)


def _reset(reg: TrialRegistry, fp: str | None, n: int, datasets: int, yes: bool) -> None:
    """Ask (unless --yes; no terminal and no --yes is a one-line error), then reset."""
    scope = f"dataset {fp}" if fp else f"all {datasets} dataset(s)"
    if not yes:
        if not _interactive():
            raise MltraderError(f"trials --reset would forget {n} trial(s) of {scope}: pass "
                                "--yes to confirm (no terminal on stdin to ask)")
        try:
            ok = bool(typer.confirm(f"Forget {n} trial(s) of {scope} in {reg.path}? Deflated "
                                    "Sharpes computed afterwards will count fewer trials",
                                    default=False, err=True))
        except (typer.Abort, EOFError):
            ok = False
        if not ok:
            out.print("Not confirmed: nothing was removed.")
            raise typer.Exit(1)
    removed = reg.reset(fp)
    out.print(f"Removed {removed} trial(s) of {escape(scope)} from {escape(str(reg.path))}.",
              highlight=False)
