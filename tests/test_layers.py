"""The import contract in pyproject.toml holds, and a wrong import or a cycle breaks it.

`make test` runs `lint-imports` on the real tree; these tests also plant violations in a
copy of the package, so a contract that silently checks nothing would fail here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def _lint(tmp_path: Path, plant: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """lint-imports with the repo's contract on a copy of src/ (files appended to as planted)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "mltrader", src / "mltrader",
                    ignore=shutil.ignore_patterns("__pycache__", "bundled", "configs"))
    for rel, line in (plant or {}).items():
        path = src / "mltrader" / rel
        path.write_text(path.read_text() + "\n" + line + "\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT), "--no-logo", "--no-cache"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_tree_keeps_the_contracts(tmp_path):
    res = _lint(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 kept, 0 broken" in res.stdout


@pytest.mark.parametrize("rel, line, why", [
    ("core/fills.py", "from mltrader.backtest import engine  # noqa", "core imports backtest"),
    ("backtest/engine.py", "from mltrader.live import runner  # noqa", "backtest imports live"),
    ("live/runner.py", "from mltrader.pipeline import run  # noqa", "live imports the app"),
    ("models/walkforward.py", "def _f():\n    from mltrader.config import RunConfig  # noqa",
     "models import config, lazily"),
])
def test_a_wrong_import_breaks_the_layers(tmp_path, rel, line, why):
    res = _lint(tmp_path, {rel: line})
    assert res.returncode != 0, why
    assert "Layers" in res.stdout and "BROKEN" in res.stdout


def test_a_cycle_breaks_the_acyclic_contract(tmp_path):
    # data.intervals is imported by data.calendars; importing back closes a cycle
    back = "def _f():\n    import mltrader.data.calendars  # noqa"
    res = _lint(tmp_path, {"data/intervals.py": back})
    assert res.returncode != 0
    assert "No import cycles" in res.stdout and "BROKEN" in res.stdout
