"""Command-line options shared by the run commands: config keys set on the command line
(--set, --first-test-year, --initial-cash, --strategy), validated like the YAML file and
named as the command line's in errors, and the --smoke budget."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mltrader.errors import MltraderError

if TYPE_CHECKING:  # the config model is imported when a command runs, not at start-up
    from mltrader.config import RunConfig

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Set any config key: KEY=VALUE with a dotted key and a YAML value, checked "
    "like the file; repeat for more. Example: --set costs.slippage_bps=10 --set "
    "risk.stop_loss=0.05")]
FirstTestYearOpt = Annotated[int | None, typer.Option(
    "--first-test-year", help="First out-of-sample year (walk_forward.first_test_year). "
    "Example: --first-test-year 2012")]
InitialCashOpt = Annotated[float | None, typer.Option(
    "--initial-cash", help="Starting cash (initial_cash). Example: --initial-cash 250000")]
StrategyOpt = Annotated[str | None, typer.Option(
    "--strategy", help="Strategy by name, with its default parameters (replaces the config's "
    "strategy section; `mltrader strategies` lists them). Example: --strategy crossover")]
DataOpt = Annotated[Path | None, typer.Option(
    "--data", help="Your own prices instead of the config's data: a CSV / TSV / Parquet file "
    "(long, wide or one symbol's OHLCV) or a folder of one file per symbol. `mltrader data "
    "check FILE` shows how it reads. Example: --data prices.csv")]
SmokeOpt = Annotated[bool, typer.Option(
    "--smoke", help="Check that the config runs, on a small budget: a few folds, 1 epoch, "
    "<= 20 trees; the same code path, figures that are not a result.")]
ExecutorOpt = Annotated[str | None, typer.Option(
    "--executor", help="Where the independent units (walk-forward folds, compared models, "
    "grid cells, tuning folds, seeds) run: local (this machine; with --workers N, on N "
    "processes) or ray (a Ray cluster: executor.address in the config, else a local Ray; "
    "pip install 'mltrader\\[ray]'). Same results either way. Example: --executor ray")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", min=1, help="local: worker processes (default 1: in this process). "
    "Example: --workers 2")]


class Overrides:
    """Config keys set on the command line, in order, with the option that set each (so a
    bad value is reported as the command line's, with the format it expects)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}

    def set(self, key: str, value: Any, flag: str) -> None:
        self.values.pop(key, None)  # re-insert: a later option wins and applies later
        self.values[key] = value
        self.origins[key] = flag

    def data(self, path: Path | None) -> Overrides:
        """--data: the user's file or folder instead of the config's data."""
        if path is not None:
            self.set("data.source", "file", f"--data {path}")
            self.set("data.path", str(path), f"--data {path}")
        return self

    def executor(self, kind: str | None, workers: int | None) -> Overrides:
        """--executor / --workers: where the units of work run (`executor:` in a config)."""
        if kind is not None:
            self.set("executor.kind", kind, f"--executor {kind}")
        if workers is not None:
            self.set("executor.workers", workers, f"--workers {workers}")
        return self

    def common(self, *, first_test_year: int | None = None, initial_cash: float | None = None,
               strategy: str | None = None, sets: list[str] | None = None) -> Overrides:
        """The overrides every run command takes; --set comes last, so it can refine them."""
        if first_test_year is not None:
            self.set("walk_forward.first_test_year", first_test_year,
                     f"--first-test-year {first_test_year}")
        if initial_cash is not None:
            self.set("initial_cash", initial_cash, f"--initial-cash {initial_cash:g}")
        if strategy is not None:
            self.set("strategy", {"name": strategy}, f"--strategy {strategy}")
            self.origins["strategy.name"] = f"--strategy {strategy}"
        for item in sets or []:
            key, value = parse_set(item)
            self.set(key, value, f"--set {item}")
        return self


def parse_set(item: str) -> tuple[str, Any]:
    """``--set a.b=VALUE`` as (``a.b``, the YAML value); a malformed one is a one-line error."""
    import yaml

    from mltrader.config import load_yaml

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise MltraderError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. "
                            "--set costs.slippage_bps=10 or --set data.symbols=[AAPL,MSFT]")
    try:
        value = load_yaml(text) if text.strip() else None
    except yaml.YAMLError as e:
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise MltraderError(f"--set {item!r}: the value is not valid YAML ({problem}); quote "
                            "text, write lists as [A,B] and mappings as {k: v}") from None
    return key, value


def load_run_config(config: Path, ov: Overrides, smoke: bool = False) -> RunConfig:
    """The run config from the file and the command line (and the smoke budget if asked)."""
    from mltrader.config import load_config

    cfg = load_config(config, ov.values, ov.origins)
    if smoke:
        from mltrader.smoke import smoke_config

        cfg = smoke_config(cfg)
    return cfg
