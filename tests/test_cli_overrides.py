"""Command-line overrides (--set, --first-test-year, --initial-cash, --strategy), model-free
rules judged from their first possible decision, and the errors a new user meets first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mltrader.cli_options import Overrides, parse_set
from mltrader.config import load_config
from mltrader.errors import MltraderError
from mltrader.testing import synthetic_bars
from tests.test_cli import assert_one_line_error, invoke, write_yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    """Two years of daily closes for 3 symbols from 2015: nothing before a default 2005."""
    from mltrader.data.files import save_file

    return save_file(synthetic_bars(520, 3, seed=3, start="2015-01-02"), tmp_path / "p.csv")


def _run_folder(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


@pytest.mark.parametrize(("item", "key", "value"), [
    ("costs.slippage_bps=10", "costs.slippage_bps", 10),
    ("data.symbols=[AAPL, MSFT]", "data.symbols", ["AAPL", "MSFT"]),
    ("risk.stop_loss=0.05", "risk.stop_loss", 0.05),
    ("data.start=2015-01-01", "data.start", __import__("datetime").date(2015, 1, 1)),
    ("name=my run", "name", "my run"),
    ("risk.stop_loss=", "risk.stop_loss", None),
])
def test_parse_set_reads_yaml_values(item: str, key: str, value: object) -> None:
    assert parse_set(item) == (key, value)


@pytest.mark.parametrize("item", ["costs.slippage_bps", "=3", "a..b=1", "x=[1, 2"])
def test_parse_set_refuses_malformed_items(item: str) -> None:
    with pytest.raises(MltraderError, match=r"^--set "):
        parse_set(item)


def test_set_is_validated_like_yaml_and_named_as_command_line(tmp_path: Path) -> None:
    ov = Overrides().common(sets=["walk_forward.first_test_year=soon"])
    with pytest.raises(MltraderError) as e:
        load_config(ROOT / "configs" / "default.yaml", ov.values, ov.origins)
    msg = str(e.value)
    assert msg.startswith("--set walk_forward.first_test_year=soon (command line): ")
    assert "expected a whole number" in msg and "\n" not in msg


@pytest.mark.parametrize(("args", "needles"), [
    (["--set", "walk_forward.first_test_year=soon"],
     ["--set walk_forward.first_test_year=soon (command line)", "expected a whole number"]),
    (["--set", "costs.slipage_bps=3"], ["--set costs.slipage_bps=3 (command line)",
                                         "unknown key 'costs.slipage_bps'"]),
    (["--set", "bogus.key=1"], ["--set bogus.key=1 (command line)", "unknown key 'bogus'"]),
    (["--first-test-year", "1800"], ["--first-test-year 1800 (command line)",
                                      "greater than or equal to 1900"]),
    (["--initial-cash", "-5"], ["--initial-cash -5 (command line)", "greater than 0"]),
    (["--strategy", "nosuch"], ["--strategy nosuch (command line)", "unknown strategy"]),
    (["--set", "strategy.threshold=high"], ["--set strategy.threshold=high (command line)"]),
    (["--set", "oops"], ["--set 'oops': expected KEY=VALUE"]),
])
def test_bad_command_line_values_are_one_line(tmp_path: Path, args: list[str],
                                              needles: list[str]) -> None:
    res = invoke("backtest", "-c", ROOT / "configs" / "default.yaml", "-o", tmp_path, *args)
    assert_one_line_error(res, *needles)


def test_model_on_a_model_free_rule_is_an_error(tmp_path: Path) -> None:
    res = invoke("backtest", "-c", ROOT / "configs" / "crossover.yaml", "--model", "ridge",
                 "-o", tmp_path)
    assert_one_line_error(res, "--model ridge", "does not use a model")
    res = invoke("backtest", "-c", ROOT / "configs" / "default.yaml", "--strategy",
                 "crossover", "--model", "ridge", "-o", tmp_path)
    assert_one_line_error(res, "does not use a model")


def test_model_free_rule_runs_from_its_first_indicator_bar(tmp_path: Path, prices: Path
                                                           ) -> None:
    """A crossover on two years of data from 2015: no training data is asked for, and the
    judged period starts at the slow SMA's first value (bar slow - 1)."""
    out = tmp_path / "runs"
    res = invoke("backtest", "-c", ROOT / "configs" / "default.yaml", "--strategy",
                 "crossover", "--set", "strategy.fast=10", "--set", "strategy.slow=30",
                 "--data", prices, "-o", out)
    assert res.exit_code == 0, res.output
    folder = _run_folder(out)
    metrics = json.loads((folder / "metrics.json").read_text())
    from mltrader.data.files import load_file

    index = load_file(prices).index
    assert metrics["out_of_sample"]["start"] == str(index[29].date())
    assert metrics["model"] is None
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    assert cfg["strategy"] == {"name": "crossover", "models": [], "regimes": "rolling",
                               "fast": 10, "slow": 30}


def test_model_free_rule_keeps_an_explicit_first_test_year(tmp_path: Path, prices: Path
                                                           ) -> None:
    out = tmp_path / "runs"
    res = invoke("backtest", "-c", ROOT / "configs" / "crossover.yaml", "--set",
                 "strategy.slow=30", "--set", "strategy.fast=10", "--first-test-year", "2016",
                 "--initial-cash", "50000", "--data", prices, "-o", out)
    assert res.exit_code == 0, res.output
    metrics = json.loads((_run_folder(out) / "metrics.json").read_text())
    assert metrics["out_of_sample"]["start"].startswith("2016-01")
    equity = __import__("pandas").read_parquet(_run_folder(out) / "equity.parquet")
    assert equity.iloc[0].to_numpy().max() <= 50_000 * 1.01


def test_model_free_rule_with_too_little_data_says_so(tmp_path: Path) -> None:
    from mltrader.data.files import save_file

    short = save_file(synthetic_bars(120, 2, seed=1, start="2015-01-02"), tmp_path / "s.csv")
    res = invoke("backtest", "-c", ROOT / "configs" / "crossover.yaml", "--set",
                 "walk_forward.first_test_year=null", "--data", short, "-o", tmp_path / "r")
    assert_one_line_error(res, "needs 200 bars", "the data has 120")


def test_backtest_outside_a_project_says_run_init(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = invoke("backtest")
    assert_one_line_error(res, "configs/default.yaml not found", "mltrader init")


def test_init_keeps_existing_files_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "proj"
    assert invoke("init", target).exit_code == 0
    mine = write_yaml(target / "configs" / "default.yaml", "name: mine\n")
    res = invoke("init", target)
    assert res.exit_code == 0 and "kept" in res.output
    assert mine.read_text() == "name: mine\n"
    assert invoke("init", target, "--force").exit_code == 0
    assert mine.read_text() != "name: mine\n"
    assert load_config(mine).name == "default"


@pytest.mark.parametrize(("args", "needle"), [
    (["backtest", "--initial-cash", "abc"], "'--initial-cash'"),
    (["backtest", "--nosuch"], "No such option: --nosuch"),
    (["data", "check"], "Missing argument"),
    (["backtest", "--set"], "'--set' requires an argument"),
])
def test_usage_errors_are_one_line_from_the_command(args: list[str], needle: str) -> None:
    """Typer prints a bad option value as a multi-line box; the console script makes it one
    `error:` line that names the option and the command's --help."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name("mltrader")
    proc = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0] and "--help`" in lines[0], lines[0]


def test_compare_and_sensitivity_take_data_and_overrides(tmp_path: Path, prices: Path) -> None:
    out = tmp_path / "runs"
    res = invoke("compare", "-c", ROOT / "configs" / "compare.yaml", "--data", prices,
                 "--first-test-year", "2016", "--set", "compare=[{name: ridge}, {name: linear}]",
                 "--set", "walk_forward.min_train_rows=50", "-o", out)
    assert res.exit_code == 0, res.output
    board = (_run_folder(out) / "leaderboard.csv").read_text()
    assert "ridge" in board and "linear" in board
    out2 = tmp_path / "runs2"
    res = invoke("sensitivity", "-c", ROOT / "configs" / "crossover.yaml", "--data", prices,
                 "--set", "walk_forward.first_test_year=null", "--set", "strategy.fast=5",
                 "--grid", "slow=20,40", "-o", out2)
    assert res.exit_code == 0, res.output
    assert (_run_folder(out2) / "sensitivity.html").stat().st_size > 0
