"""Run folders: where they go, and a folder that cannot be made is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from mltrader.errors import MltraderError
from mltrader.runs import new_run_dir


def test_a_run_folder_that_cannot_be_created_is_a_user_error(tmp_path: Path) -> None:
    """os.access can pass (root, /proc, read-only mounts) where mkdir then fails: after a
    whole run, that must still be one line naming the folder, not an internal error."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(MltraderError, match=r"cannot create the run folder .*file/runs/"
                       r"\d{8}-\d{6}-x .*choose another --output-dir"):
        new_run_dir(blocker / "runs", "x")
    assert new_run_dir(tmp_path / "runs", "x").is_dir()
