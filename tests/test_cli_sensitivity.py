"""`mltrader sensitivity` and `mltrader strategies` from the command line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mltrader.data.files import save_file
from mltrader.testing import synthetic_bars
from tests.test_cli import assert_one_line_error, invoke, plain, run_dirs, write_yaml


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("sens")
    data = d / "close.csv"
    save_file(synthetic_bars(1500, 4, seed=2), data)
    out = d / "runs"
    path = write_yaml(d / "s.yaml", (
        "model: {name: ridge}\n"
        f"data: {{source: file, path: {data}}}\n"
        "walk_forward: {first_test_year: 2003, min_train_rows: 100}\n"
        "strategy: {name: threshold, threshold: 0.0}\n"
        f"output_dir: {out}\n"))
    return path, out


def test_a_two_axis_grid_writes_heatmaps_and_a_table(cfg):
    path, out = cfg
    r = invoke("sensitivity", "-c", path, "--grid", "threshold=0.0:0.002:3",
               "--grid", "stop_loss=0.02,0.05")
    assert r.exit_code == 0, r.output
    text = plain(r.stdout)
    assert "Chosen on the selection period" in text and "hold-out" in text
    run = run_dirs(out)[-1]
    table = pd.read_csv(run / "sensitivity.csv")
    assert len(table) == 6 and table["chosen"].sum() == 1
    assert {"strategy.threshold", "risk.stop_loss", "sharpe_is", "sharpe_oos"} <= set(table)
    html = (run / "sensitivity.html").read_text()
    assert "selection period" in html and "hold-out" in html


def test_the_chosen_cell_is_the_in_sample_best(cfg):
    path, out = cfg
    r = invoke("sensitivity", "-c", path, "--grid", "threshold=0.0,0.001,0.003",
               "--split", "2004-06-01")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(run_dirs(out)[-1] / "sensitivity.csv")
    assert table.loc[table["chosen"], "sharpe_is"].iloc[0] == table["sharpe_is"].max()


@pytest.mark.parametrize(("args", "needle"), [
    (["--grid", "threshold=1:0:3"], "threshold"),
    (["--grid", "nosuchkey=1,2"], "nosuchkey"),
    (["--grid", "threshold=0.0,0.1", "--split", "1990-01-01"], "outside"),
    ([], "--grid"),
])
def test_bad_grids_are_one_line_errors(cfg, args, needle):
    assert_one_line_error(invoke("sensitivity", "-c", cfg[0], *args), needle)


def test_strategies_lists_the_registry():
    r = invoke("strategies")
    assert r.exit_code == 0
    text = plain(r.stdout)
    for name in ("threshold", "crossover", "regime_filter", "ensemble", "topk"):
        assert name in text


def test_paper_replays_a_config_into_a_journal(tmp_path):
    from mltrader.live.journal import Journal

    data = tmp_path / "ohlc.csv"
    save_file(synthetic_bars(900, 3, seed=5, ohlc=True), data)
    out = tmp_path / "runs"
    cfg = write_yaml(tmp_path / "p.yaml", (
        f"data: {{source: file, path: {data}}}\n"
        "strategy: {name: crossover, fast: 10, slow: 40}\n"
        "walk_forward: {first_test_year: 2002}\n"
        f"output_dir: {out}\n"))
    r = invoke("paper", "-c", cfg)
    assert r.exit_code == 0, r.output
    assert "replayed 379 bar(s)" in plain(r.stdout)
    db = run_dirs(out)[-1] / "journal.db"
    j = Journal(f"sqlite:///{db}")
    assert len(j.fills_for()) > 0 and len(j.audit_frame()) > 0
    j.close()
