"""The `mltrader` command line end to end: help, data list, backtest runs and one-line errors.

Small synthetic data (1500 bars x 4 symbols, ridge, first test year 2003) keeps each backtest
well under a second; the bad-input cases fail before any training.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from mltrader import __version__
from mltrader.cli import app
from mltrader.config import load_config
from mltrader.data.files import save_file
from mltrader.testing import synthetic_bars

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
RUN_FILES = ("config.yaml", "metrics.json", "equity.parquet", "trades.parquet", "fills.parquet",
             "orders.parquet", "predictions.parquet", "report.html")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Wide terminal, no colour: help text and tables are not wrapped or styled in odd places.
runner = CliRunner(env={"COLUMNS": "200", "FORCE_COLOR": None, "NO_COLOR": "1"})


def plain(text: str) -> str:
    return ANSI.sub("", text)


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def small_yaml(path: Path, output_dir: Path, model: str = "{name: ridge}") -> Path:
    return write_yaml(path, (
        f"model: {model}\n"
        "walk_forward: {first_test_year: 2003, min_train_rows: 100}\n"
        f"output_dir: {output_dir}\n"
    ))


def assert_one_line_error(result: Result, *needles: str) -> str:
    """Non-zero exit, exactly one non-empty stderr line starting 'error:', no traceback."""
    assert result.exit_code != 0, result.output
    # in-process an uncaught exception would not print a traceback; it lands here instead
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    stderr = plain(result.stderr)
    assert "Traceback" not in result.output
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error:"), line
    assert "internal error" not in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def run_dirs(base: Path) -> list[Path]:
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.exists() else []


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Close-only and OHLC price files plus a small ridge config, shared by the module."""
    d = tmp_path_factory.mktemp("cli_data")
    return {
        "dir": d,
        "close": save_file(synthetic_bars(1500, 4, seed=11), d / "prices.csv"),
        "ohlc": save_file(synthetic_bars(1500, 4, seed=11, ohlc=True), d / "ohlc.csv"),
        "config": small_yaml(d / "small.yaml", d / "runs"),
    }


@pytest.fixture(scope="module")
def e2e(files: dict[str, Path]) -> tuple[Result, Path]:
    """One close-only backtest into the config's own output_dir."""
    result = invoke("backtest", "-c", files["config"], "--data", files["close"])
    assert result.exit_code == 0, result.output
    dirs = run_dirs(files["dir"] / "runs")
    assert len(dirs) == 1, dirs
    return result, dirs[0]


# ------------------------------------------------------------------------------ help / info
@pytest.mark.parametrize("args", [["--help"], ["backtest", "--help"], ["data", "--help"],
                                  ["data", "list", "--help"]])
def test_help_exits_zero(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Usage" in plain(result.stdout)


def test_no_args_shows_help() -> None:
    result = invoke()
    assert "backtest" in plain(result.output)
    assert "Traceback" not in result.output


def test_backtest_help_has_example_and_every_option() -> None:
    text = plain(invoke("backtest", "--help").stdout)
    assert "Example" in text
    for opt in ("--config", "-c", "--data", "--symbols", "--start", "--end", "--model", "--seed",
                "--output-dir", "-o"):
        assert opt in text, opt


def _commands(group, prefix=()):  # noqa: ANN001, ANN202 (click objects)
    for name, cmd in getattr(group, "commands", {}).items():
        yield (*prefix, name), cmd
        yield from _commands(cmd, (*prefix, name))


def test_every_command_help_reflows_its_paragraphs() -> None:
    """Each command's description is one line per paragraph, so --help wraps it to the
    terminal instead of keeping the source's breaks (ragged at 80 columns)."""
    import typer.main

    group = typer.main.get_command(app)
    seen = 0
    for path, cmd in _commands(group):
        if getattr(cmd, "commands", None):
            continue
        seen += 1
        for para in (cmd.help or "").split("\n\n"):
            lines = para.splitlines()
            assert len(lines) <= 1 or lines[1].startswith(("-", " ")), (path, para)
    assert seen >= 12


def test_reflow_keeps_lists_and_joins_prose() -> None:
    from mltrader.cli_app import reflow

    doc = """First line.

        Prose wrapped
        over two lines.

        - a list item
        - another
        """
    assert reflow(doc) == "First line.\n\nProse wrapped over two lines.\n\n- a list item\n- another"
    assert reflow(None) is None


def test_data_list() -> None:
    result = invoke("data", "list")
    assert result.exit_code == 0, result.output
    text = plain(result.stdout)
    for needle in ("sp500_20stocks", "1990-01-02", "2022-12-28", "sp500_ohlcv", "OHLCV"):
        assert needle in text, needle
    row = next(ln for ln in text.splitlines() if "sp500_20stocks" in ln)
    assert "1990-01-02" in row and "2022-12-28" in row


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert plain(result.stdout).strip() == f"mltrader {__version__}"


# ------------------------------------------------------------------------------ end to end
def test_backtest_writes_one_complete_run_folder(e2e: tuple[Result, Path]) -> None:
    _, run_dir = e2e
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
        assert (run_dir / name).stat().st_size > 0, name


def test_backtest_metrics_are_out_of_sample(e2e: tuple[Result, Path]) -> None:
    _, run_dir = e2e
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("strategy", "buy_and_hold", "out_of_sample", "model"):
        assert key in metrics, key
    oos = metrics["out_of_sample"]
    assert oos["start"].startswith("2003-")
    assert metrics["model"]["name"] == "ridge"
    equity = pd.read_parquet(run_dir / "equity.parquet")
    first = equity.index[0]
    assert str(first.date()) >= "2003-01-01"
    assert str(first.date()) == oos["start"]
    assert len(equity) == oos["bars"]
    assert {"strategy", "buy_and_hold"} <= set(equity.columns)


def test_backtest_prints_table_and_paths(e2e: tuple[Result, Path]) -> None:
    result, run_dir = e2e
    text = plain(result.stdout)
    assert "buy & hold" in text
    assert "Sharpe" in text and "Total return" in text
    assert "Out of sample 2003-" in text
    assert "report.html" in text
    assert "Run folder:" in text
    assert "Traceback" not in result.output


def test_backtest_resolved_config_loads_back(e2e: tuple[Result, Path],
                                             files: dict[str, Path]) -> None:
    _, run_dir = e2e
    cfg = load_config(run_dir / "config.yaml")
    assert cfg.data.source == "file"
    assert cfg.data.path is not None
    assert Path(cfg.data.path) == files["close"]
    assert cfg.model.name == "ridge"
    assert cfg.walk_forward.first_test_year == 2003
    assert Path(cfg.output_dir) == files["dir"] / "runs"


@pytest.mark.parametrize("model", ["{name: ridge}",
                                   "{name: lightgbm, params: {n_estimators: 30, n_jobs: 1}}"])
def test_same_seed_same_metrics_bytes(tmp_path: Path, files: dict[str, Path], model: str
                                      ) -> None:
    cfg = small_yaml(tmp_path / "cfg.yaml", tmp_path / "unused", model)
    texts = []
    for out in ("a", "b"):
        result = invoke("backtest", "-c", cfg, "--data", files["close"], "--seed", "7",
                        "-o", tmp_path / out)
        assert result.exit_code == 0, result.output
        (run_dir,) = run_dirs(tmp_path / out)
        texts.append((run_dir / "metrics.json").read_bytes())
    assert texts[0] == texts[1]
    assert not (tmp_path / "unused").exists()  # --output-dir overrides the config's


def test_close_only_fills_at_next_close(e2e: tuple[Result, Path]) -> None:
    result, run_dir = e2e
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["fill_timing"] == "next bar's close"
    assert "closes only" in (run_dir / "report.html").read_text()
    assert "closes only" in plain(result.stdout)


def test_ohlc_fills_at_next_open(tmp_path: Path, files: dict[str, Path]) -> None:
    result = invoke("backtest", "-c", files["config"], "--data", files["ohlc"], "-o", tmp_path)
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["fill_timing"] == "next bar's open"
    assert "closes only" not in (run_dir / "report.html").read_text()


# ------------------------------------------------------------------------------ bad config
@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("modle: {name: ridge}\n", ["'modle'", "unknown key", "allowed here"]),
        ("model: {nam: ridge}\n", ["'model.nam'", "unknown key", "name, params"]),
        ("strategy: {threshold: abc}\n", ["strategy.threshold", "'abc'"]),
        ("model: [a\n  b: c\n", ["invalid YAML at line 2, column 4", "fix the syntax"]),
        ("strategy: {name: crossover, fast: 3\nslow: [",
         ["invalid YAML at line 2, column 5: expected ',' or '}', but got ':'"]),
        ("", ["is empty", "configs/default.yaml"]),
        ("# model: {name: ridge}\n", ["is empty", "configs/default.yaml"]),
    ],
    ids=["unknown-top-key", "unknown-nested-key", "wrong-type", "invalid-yaml",
         "invalid-yaml-flow", "empty", "only-comments"],
)
def test_bad_config_is_one_line(tmp_path: Path, files: dict[str, Path], text: str,
                                needles: list[str]) -> None:
    cfg = write_yaml(tmp_path / "bad.yaml", text)
    result = invoke("backtest", "-c", cfg, "--data", files["close"], "-o", tmp_path / "runs")
    assert_one_line_error(result, str(cfg), *needles)
    assert not (tmp_path / "runs").exists()


def test_config_not_a_mapping(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "list.yaml", "- a\n- b\n")
    result = invoke("backtest", "-c", cfg)  # no option overrides
    assert_one_line_error(result, str(cfg), "expected a mapping", "got list")


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = invoke("backtest", "-c", missing)
    assert_one_line_error(result, str(missing), "not found")


def test_unknown_model(tmp_path: Path, files: dict[str, Path]) -> None:
    result = invoke("backtest", "-c", files["config"], "--data", files["close"],
                    "--model", "gpt", "-o", tmp_path / "runs")
    assert_one_line_error(result, "model.name", "'gpt'", "lightgbm", "ridge")
    assert not (tmp_path / "runs").exists()


def test_first_test_year_after_data_ends(tmp_path: Path, files: dict[str, Path]) -> None:
    cfg = write_yaml(tmp_path / "late.yaml", (
        "model: {name: ridge}\n"
        "walk_forward: {first_test_year: 2010, min_train_rows: 100}\n"
    ))
    result = invoke("backtest", "-c", cfg, "--data", files["close"], "-o", tmp_path / "runs")
    assert_one_line_error(result, "first_test_year", "2010", "2005-")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------ bundled data
def test_unknown_symbol_on_bundled_data(tmp_path: Path) -> None:
    result = invoke("backtest", "-c", DEFAULT_CONFIG, "--symbols", "AAPL,NOPE",
                    "-o", tmp_path / "runs")
    assert_one_line_error(result, "'NOPE'", "unknown symbol", "AAPL")
    assert not (tmp_path / "runs").exists()


def test_dates_outside_bundled_data(tmp_path: Path) -> None:
    result = invoke("backtest", "-c", DEFAULT_CONFIG, "--start", "1980-01-01",
                    "--end", "1985-01-01", "-o", tmp_path / "runs")
    assert_one_line_error(result, "no data between", "1980-01-01", "1985-01-01", "1990-01-02")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------ bad data files
WIDE_OK = "date,AAA,BBB\n2020-01-01,10,20\n2020-01-02,11,21\n2020-01-03,12,22\n"
BAD_DATA = {
    # id: (file content, substrings of the message besides the file name)
    "empty": ("", ["empty", "0 bytes"]),
    "header-only": ("date,symbol,close\n", ["header but no data rows"]),
    "no-close": ("date,symbol,open\n2020-01-01,AAA,10\n", ["no close column"]),
    "unsorted": ("date,AAA\n2020-01-02,10\n2020-01-01,11\n2020-01-03,12\n",
                 ["row 3", "'2020-01-01' comes after '2020-01-02'", "sort"]),
    "duplicate-date": ("date,AAA\n2020-01-01,10\n2020-01-02,11\n2020-01-02,12\n",
                       ["row 4", "duplicate date '2020-01-02'", "row 3"]),
    "nan-inside": ("date,AAA,BBB\n2020-01-01,10,20\n2020-01-02,NaN,21\n2020-01-03,12,22\n",
                   ["row 3", "column 'AAA'", "no price for AAA inside its history"]),
    "non-positive": ("date,AAA,BBB\n2020-01-01,10,20\n2020-01-02,11,0\n2020-01-03,12,22\n",
                     ["row 3", "column 'BBB'", "> 0"]),
    "negative": ("date,symbol,close\n2020-01-01,AAA,10\n2020-01-02,AAA,-5\n",
                 ["row 3", "'-5'", "> 0"]),
    "high-below-low": ("date,symbol,open,high,low,close,volume\n"
                       "2020-01-01,AAA,10,11,9,10.5,100\n"
                       "2020-01-02,AAA,10,9,11,10,100\n",
                       ["row 3", "high 9 is below low 11"]),
    "bad-number": ("date,AAA,BBB\n2020-01-01,10,20\n2020-01-02,11,\"1,234.5\"\n",
                   ["row 3", "column 'BBB'", "cannot read number '1,234.5'"]),
    "bad-number-text": ("date,symbol,close\n2020-01-01,AAA,10\n2020-01-02,AAA,abc\n",
                        ["row 3", "cannot read number 'abc'"]),
}


def test_good_wide_csv_parses(tmp_path: Path) -> None:
    """Control for the bad-data cases: the same shape of file, valid, gets past loading."""
    path = tmp_path / "wide.csv"
    path.write_text(WIDE_OK)
    cfg = write_yaml(tmp_path / "c.yaml", "model: {name: ridge}\n")
    result = invoke("backtest", "-c", cfg, "--data", path, "-o", tmp_path / "runs")
    # 3 bars cannot be walk-forward tested from 2005, but the error is about that, not the file
    line = assert_one_line_error(result, "first_test_year")
    assert str(path) not in line


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_file_is_one_line(tmp_path: Path, files: dict[str, Path], case: str) -> None:
    content, needles = BAD_DATA[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(content)
    result = invoke("backtest", "-c", files["config"], "--data", path, "-o", tmp_path / "runs")
    assert_one_line_error(result, str(path), *needles)
    assert not (tmp_path / "runs").exists()


def test_missing_data_file(tmp_path: Path, files: dict[str, Path]) -> None:
    path = tmp_path / "nope.csv"
    result = invoke("backtest", "-c", files["config"], "--data", path, "-o", tmp_path / "runs")
    assert_one_line_error(result, str(path), "file not found")


# ------------------------------------------------- regressions: bugs found by these tests, fixed
def test_error_text_with_square_brackets_is_printed_verbatim(tmp_path: Path,
                                                             files: dict[str, Path]) -> None:
    path = tmp_path / "brackets.csv"
    path.write_text("date,AAA\n2020-01-01,10\n2020-01-02,[/x]\n")
    result = invoke("backtest", "-c", files["config"], "--data", path)
    assert_one_line_error(result, str(path), "cannot read number '[/x]'")


def test_missing_file_with_brackets_in_name_is_named_verbatim(tmp_path: Path,
                                                              files: dict[str, Path]) -> None:
    path = tmp_path / "prices[red].csv"
    result = invoke("backtest", "-c", files["config"], "--data", path)
    assert_one_line_error(result, str(path), "file not found")


def test_override_into_emptied_section_works(tmp_path: Path, files: dict[str, Path]) -> None:
    """`data:` with every child commented out is YAML null; --data should simply fill it in."""
    cfg = write_yaml(tmp_path / "c.yaml", (
        "data:\n  # source: bundled\n"
        "model: {name: ridge}\n"
        "walk_forward: {first_test_year: 2003, min_train_rows: 100}\n"
    ))
    result = invoke("backtest", "-c", cfg, "--data", files["close"], "-o", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert len(run_dirs(tmp_path / "runs")) == 1


@pytest.mark.parametrize(
    ("text", "args", "needle"),
    [
        ("data: 5\nmodel: {name: ridge}\n", ["--data", "DATA"], "`data` must be a mapping"),
        ("- a\n- b\n", ["--seed", "3"], "expected a mapping"),
    ],
    ids=["scalar-section+--data", "list+--seed"],
)
def test_override_into_non_mapping_is_a_user_error(tmp_path: Path, files: dict[str, Path],
                                                   text: str, args: list[str], needle: str
                                                   ) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", text)
    args = [str(files["close"]) if a == "DATA" else a for a in args]
    result = invoke("backtest", "-c", cfg, *args, "-o", tmp_path / "runs")
    assert_one_line_error(result, str(cfg), needle)


# ------------------------------------------------------------------------------ real process
def test_subprocess_bad_input_is_one_clean_stderr_line(tmp_path: Path,
                                                       files: dict[str, Path]) -> None:
    path = tmp_path / "missing.csv"
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "MLTRADER_DEBUG", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env.update({"COLUMNS": "400", "NO_COLOR": "1"})
    proc = subprocess.run(
        [sys.executable, "-m", "mltrader.cli", "backtest", "-c", str(files["config"]),
         "--data", str(path), "-o", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in plain(proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    assert str(path) in lines[0] and "file not found" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_run_folder_keeps_the_last_model_hashed_and_loadable(e2e: tuple[Result, Path]) -> None:
    import json

    import numpy as np

    from mltrader.models.artifacts import ArtifactError, load_model

    _, run = e2e
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["format"] == "skops"  # ridge: a scikit-learn pipeline, saved without pickle
    model = load_model(run / "artifacts" / "model")
    assert model.predict(np.zeros((2, 9))).shape == (2,)
    target = run / "artifacts" / "model" / next(iter(manifest["artifacts"]["model"]))
    original = target.read_bytes()
    try:
        target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(ArtifactError, match="modified or is corrupt"):
            load_model(run / "artifacts" / "model")
    finally:
        target.write_bytes(original)


# ------------------------------------------------------------------ bad journals, guarded()
PAPER_CONFIG = (
    "name: clijournal\n"
    "strategy: {name: crossover, fast: 3, slow: 12}\n"
    "walk_forward: {first_test_year: 2001}\n"
)


@pytest.fixture(scope="module")
def paper_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished paper session folder (config.yaml, broker.db, journal.db)."""
    d = tmp_path_factory.mktemp("cli_journal")
    data = save_file(synthetic_bars(330, 3, seed=5, ohlc=True, start="2000-01-03"),
                     d / "bars.csv")
    cfg = write_yaml(d / "cross.yaml", PAPER_CONFIG + (
        f"data: {{source: file, path: {data}}}\noutput_dir: {d / 'runs'}\n"))
    folder = d / "sess"
    result = invoke("paper", "-c", cfg, "--session", folder)
    assert result.exit_code == 0, result.output
    return folder


def _damaged_copy(session: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    folder = tmp_path / "sess"
    shutil.copytree(session, folder)
    journal = folder / "journal.db"
    for leftover in folder.glob("journal.db-*"):  # WAL / shm of the intact journal
        leftover.unlink()
    if how == "garbage":
        journal.write_text("garbage" * 100)
    else:
        journal.write_bytes(journal.read_bytes()[:100])
    return folder


@pytest.mark.parametrize("how", ["garbage", "truncated"])
@pytest.mark.parametrize("command", ["status-journal", "status-session", "parity", "flatten",
                                     "paper"])
def test_damaged_journal_is_one_line_for_every_command(paper_session: Path, tmp_path: Path,
                                                       command: str, how: str) -> None:
    """Regression: "internal error: DatabaseError: (sqlite3.DatabaseError) database disk
    image is malformed" plus a second "(Background on this error at: ...)" line."""
    folder = _damaged_copy(paper_session, tmp_path, how)
    url = f"sqlite:///{folder / 'journal.db'}"
    args = {"status-journal": ["status", "--journal", url],
            "status-session": ["status", "--session", folder],
            "parity": ["parity", folder],
            "flatten": ["flatten", "--broker", "paper", "--session", folder, "--yes"],
            "paper": ["paper", "--session", folder]}[command]
    reason = "file is not a database" if how == "garbage" else "database disk image is malformed"
    line = assert_one_line_error(invoke(*args), f"journal {url} is not a readable database "
                                 f"({reason})", "restore it from a backup")
    assert "Background" not in line and "sqlalche.me" not in line


def test_status_of_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    csv = tmp_path / "some.csv"
    csv.write_text("date,AAA\n" + "2024-01-02,10.5\n" * 50)
    assert_one_line_error(invoke("status", "--journal", f"sqlite:///{csv}"),
                          f"journal sqlite:///{csv} is not a readable database "
                          "(file is not a database)")


def test_status_of_an_unreachable_postgresql_server(tmp_path: Path) -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "pw-never-shown-4e1d"
    line = assert_one_line_error(
        invoke("status", "--journal", f"postgresql+psycopg://u:{secret}@127.0.0.1:{port}/x"),
        f"journal postgresql+psycopg://u:***@127.0.0.1:{port}/x: cannot connect (",
        "start the server or fix the URL")
    assert secret not in line


def test_read_only_journal_in_paper_and_flatten(paper_session: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only journal (here SQLite's mode=ro, which root cannot bypass the way it
    bypasses chmod 444): one line, no SQL statement, no parameters."""
    import shutil

    from mltrader.live import session as session_mod

    folder = tmp_path / "sess"
    shutil.copytree(paper_session, folder)
    monkeypatch.setattr(session_mod, "journal_url",
                        lambda d: f"sqlite:///file:{Path(d) / 'journal.db'}?mode=ro&uri=true")
    for args in (["paper", "--session", folder],
                 ["flatten", "--broker", "paper", "--session", folder, "--yes"]):
        line = assert_one_line_error(invoke(*args), "is read-only (attempt to write a "
                                     "readonly database)", "make the file and its folder "
                                     "writable")
        for junk in ("[SQL", "INSERT", "parameters", "Background"):
            assert junk not in line, line


def _guarded_app(exc: BaseException):  # noqa: ANN202 - a typer app
    import typer

    from mltrader.cli_app import guarded

    tiny = typer.Typer()

    @tiny.command()
    @guarded
    def boom() -> None:
        """Fail."""
        raise exc

    @tiny.command()
    def other() -> None:  # two commands: `boom` stays a sub-command
        """Nothing."""

    return tiny


def _sqlalchemy_write_error() -> Exception:
    import sqlite3

    import sqlalchemy as sa

    return sa.exc.OperationalError(
        "INSERT INTO audit (time, actor, detail) VALUES (?, ?, ?)",
        ("2024-01-02", "runner", '{"api": "param-value-7c1"}'),
        sqlite3.OperationalError("attempt to write a readonly database\nsecond driver line"))


def test_guarded_reports_a_stray_sqlalchemy_error_as_a_journal_database_error() -> None:
    """Regression: an unexpected SQLAlchemy error printed "internal error: ..." with the SQL
    statement, its parameters and the "(Background on this error at: ...)" line."""
    result = runner.invoke(_guarded_app(_sqlalchemy_write_error()), ["boom"])
    line = assert_one_line_error(result, "journal database error: attempt to write a "
                                 "readonly database", "--journal / --session")
    for junk in ("INSERT", "param-value-7c1", "[SQL", "Background", "second driver line"):
        assert junk not in line, line


def test_guarded_internal_error_is_one_line() -> None:
    exc = RuntimeError("first line\n  second line\n(Background on this error at: "
                       "https://sqlalche.me/e/21/4xp6)")
    result = runner.invoke(_guarded_app(exc), ["boom"])
    assert result.exit_code == 1
    lines = [ln for ln in plain(result.stderr).splitlines() if ln.strip()]
    assert lines == ["error: internal error: RuntimeError: first line second line (rerun "
                     "with MLTRADER_DEBUG=1 for the traceback and report it)"], lines


def test_guarded_user_error_with_a_line_break_is_one_line() -> None:
    from mltrader.errors import MltraderError

    result = runner.invoke(_guarded_app(MltraderError("bad value\n  in file x: fix it")),
                           ["boom"])
    line = assert_one_line_error(result)
    assert line == "error: bad value in file x: fix it"


def test_cli_does_not_import_sqlalchemy_at_load() -> None:
    code = "import sys, mltrader.cli; print('sqlalchemy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("delay", [0.05, 0.5, 1.0])
def test_ctrl_c_while_starting_is_one_line(delay: float, tmp_path: Path) -> None:
    """An interrupt that lands while the libraries load (before any command runs) or while
    the command works: exit 130 and one line, never a traceback."""
    import signal
    import time

    script = Path(sys.executable).with_name("mltrader")
    proc = subprocess.Popen([str(script), "paper", "-c", "configs/paper.yaml", "-o",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.strip()]) == 1
