"""Every shipped config runs through the `mltrader` command as a user runs it: a project made
by `mltrader init` in a fresh working directory, the default relative `runs/` folder, the
`--smoke` budget (same code path, fewer folds and epochs). A unit test under an absolute
temporary path once hid a crash in every PyTorch config (its model could not be saved under
the relative runs/ folder); this test is the gap that crash went through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mltrader.data.datasets import load_bundled
from mltrader.data.files import save_file
from mltrader.starter import shipped_configs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("mltrader")
RUN_FILES = ("config.yaml", "metrics.json", "equity.parquet", "trades.parquet",
             "fills.parquet", "predictions.parquet", "report.html")


def _mltrader(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLTRADER_")}
    env["MLTRADER_CACHE_DIR"] = str(cwd / ".cache")  # never the user's cache
    proc = subprocess.run([str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, f"mltrader {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A starter project written by `mltrader init`, nothing else in its folder."""
    root = tmp_path_factory.mktemp("user")
    _mltrader(root, "init", "proj")
    return root / "proj"


def test_init_writes_every_shipped_config(project: Path) -> None:
    shipped = shipped_configs()
    repo = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    assert sorted(shipped) == repo  # the package data is the repository's configs/
    for name, text in shipped.items():
        assert (project / "configs" / name).read_text() == text
    readme = (project / "README.md").read_text()
    for key in ("walk_forward.first_test_year", "risk.stop_loss", "data.clean", "--set"):
        assert key in readme
    assert "MLTRADER_ALPACA_KEY=" in (project / ".env.example").read_text()


def _new_folder(runs: Path, before: set[str]) -> Path:
    made = sorted(set(os.listdir(runs)) - before)
    assert len(made) == 1, made
    return runs / made[0]


def _command(name: str, project: Path) -> list[str]:
    """How a user runs this config (live configs: a backtest of the same rules on a file,
    since their data comes from the broker)."""
    if name.startswith("compare"):
        return ["compare", "-c", f"configs/{name}", "--smoke"]
    if name == "paper.yaml":
        return ["paper", "-c", f"configs/{name}", "--smoke"]
    if name.startswith("live-"):
        prices = project / "prices.csv"
        if not prices.exists():
            save_file(load_bundled("sp500_20stocks").select(start="2014-01-01"), prices)
        return ["backtest", "-c", f"configs/{name}", "--smoke", "--data", "prices.csv"]
    return ["backtest", "-c", f"configs/{name}", "--smoke"]


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_shipped_config_runs_from_a_fresh_directory(project: Path, name: str) -> None:
    runs = project / "runs"
    before = set(os.listdir(runs)) if runs.exists() else set()
    _mltrader(project, *_command(name, project))
    folder = _new_folder(runs, before)
    assert folder.name.endswith("-smoke") or folder.name.endswith("-smoke-paper")
    if name.startswith("compare"):
        for f in ("leaderboard.csv", "metrics.json", "report.html", "config.yaml"):
            assert (folder / f).stat().st_size > 0, f
        return
    if name == "paper.yaml":
        for f in ("journal.db", "broker.db", "config.yaml"):
            assert (folder / f).stat().st_size > 0, f
        return
    for f in RUN_FILES:
        assert (folder / f).stat().st_size > 0, f
    metrics = json.loads((folder / "metrics.json").read_text())
    if metrics["model"] is not None:  # a model run keeps the last fold's model, verified
        manifest = json.loads((folder / "artifacts" / "model" / "manifest.json").read_text())
        assert manifest["files"]
        from mltrader.models.artifacts import load_model

        load_model(folder / "artifacts" / "model")


def test_the_init_readme_names_only_commands_that_exist(tmp_path: Path) -> None:
    """The README of every key once sent users to `mltrader models`, which does not exist."""
    import re

    from mltrader.cli import app
    from mltrader.starter import init_project

    init_project(tmp_path / "p")
    text = (tmp_path / "p" / "README.md").read_text()
    commands = {c.name or c.callback.__name__.replace("_", "-")
                for c in app.registered_commands} | {g.name for g in app.registered_groups}
    named = set(re.findall(r"`mltrader ([a-z][a-z-]*)", text))
    assert named and named <= commands, named - commands
