"""`mltrader seeds`: each seed a full run recorded as an rl_seed trial, the spread reported,
every seed counted by the deflated Sharpe; the command's files and one-line refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

pytest.importorskip("torch")

from mltrader.cli import app  # noqa: E402
from mltrader.config import config_from_dict  # noqa: E402
from mltrader.data.files import save_file  # noqa: E402
from mltrader.errors import ConfigError  # noqa: E402
from mltrader.seeds import COLUMNS, check_seeds, run_seeds, write_seeds  # noqa: E402
from mltrader.testing import synthetic_bars  # noqa: E402
from mltrader.trials import Trial, TrialRegistry, data_fingerprint  # noqa: E402

BARS = synthetic_bars(900, 4, seed=5)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
runner = CliRunner(env={"COLUMNS": "200", "FORCE_COLOR": None, "NO_COLOR": "1"})
RAW = {"name": "tiny", "features": ["ret_5", "vol_20"],
       "model": {"name": "rl_sharpe", "params": {"lags": 2, "epochs": 5}},
       "walk_forward": {"first_test_year": 2002, "min_train_rows": 100},
       "strategy": {"name": "positions"}}
CFG = config_from_dict(RAW)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    reg = TrialRegistry(tmp_path_factory.mktemp("reg") / "trials.jsonl")
    return run_seeds(CFG, [0, 1, 2], registry=reg, bars=BARS), reg


def test_each_seed_is_a_run_and_the_spread_is_reported(three):
    out, _reg = three
    f = out.runs
    assert list(f.columns) == list(COLUMNS) and list(f["seed"]) == [0, 1, 2]
    assert f["sharpe"].nunique() == 3  # another seed, another policy
    s = out.summary
    assert s["sharpe_mean"] == pytest.approx(f["sharpe"].mean())
    assert s["sharpe_std"] == pytest.approx(f["sharpe"].std(ddof=1))
    assert s["sharpe_min"] <= s["sharpe_mean"] <= s["sharpe_max"]
    above = int((f["sharpe"] > f["buy_and_hold_sharpe"]).sum())
    assert s["seeds_above_buy_and_hold_sharpe"] == above
    assert "over 3 seeds" in out.sentences()[0]


def test_every_seed_is_a_counted_trial_and_a_rerun_adds_none(three):
    out, reg = three
    trials = reg.trials(data_fingerprint(BARS))
    assert [t.kind for t in trials] == ["rl_seed"] * 3
    assert out.summary["n_trials"] == 3
    again = run_seeds(CFG, [1, 2], registry=reg, bars=BARS)  # same seeds: nothing new
    assert len(reg.trials(data_fingerprint(BARS))) == 3
    np.testing.assert_array_equal(again.runs["sharpe"], out.runs["sharpe"].iloc[1:])


def test_more_trials_on_the_data_deflate_every_seed_more(three, tmp_path):
    out, _ = three
    reg = TrialRegistry(tmp_path / "trials.jsonl")
    ds = data_fingerprint(BARS)
    rng = np.random.default_rng(0)
    reg.record_many(Trial(ds, f"cfg{i}", "backtest", "x", float(s), 700)
                    for i, s in enumerate(rng.normal(0, 0.03, 40)))
    crowded = run_seeds(CFG, [0, 1, 2], registry=reg, bars=BARS)
    assert crowded.summary["n_trials"] == 43
    assert (crowded.runs["dsr"] < out.runs["dsr"]).all()


def test_without_a_registry_the_seeds_count_themselves():
    out = run_seeds(CFG, [0, 1], bars=BARS)
    assert out.summary["n_trials"] == 2
    assert out.runs["dsr"].notna().all()


def test_files(three, tmp_path):
    out, _ = three
    paths = write_seeds(out, tmp_path / "s")
    assert pd.read_csv(paths["runs"])["seed"].tolist() == [0, 1, 2]
    doc = json.loads(paths["summary"].read_text())
    assert doc["seeds"] == 3 and doc["seed_list"] == [0, 1, 2] and "out_of_sample" in doc
    html = paths["report"].read_text()
    assert "plotly" in html.lower() and "buy-and-hold" in html


@pytest.mark.parametrize(("n", "first", "needle"), [(1, 0, "at least 2"), (3, -1, "seed >= 0")])
def test_bad_counts_are_refused(n, first, needle):
    with pytest.raises(ConfigError, match=needle):
        check_seeds(n, first)


def _one_line_error(r: Result, *needles: str) -> None:
    assert r.exit_code != 0, r.output
    lines = [ln for ln in ANSI.sub("", r.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    save_file(BARS, tmp_path / "close.csv")
    import yaml

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(
        {**RAW, "data": {"source": "file", "path": "close.csv"}}))
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["seeds", "-c", "tiny.yaml", "--n", "2", "--first-seed", "4"])
    assert r.exit_code == 0, r.output
    text = ANSI.sub("", r.stdout)
    assert "rl_sharpe over 2 seeds" in text and "standard deviation" in text
    folder = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert folder.name.endswith("-seeds-tiny")
    assert {p.name for p in folder.iterdir()} == {"seeds.csv", "summary.json", "seeds.html"}
    trials = [json.loads(x) for x in (tmp_path / "runs" / "trials.jsonl").read_text().splitlines()]
    assert [t["kind"] for t in trials] == ["rl_seed", "rl_seed"]
    _one_line_error(runner.invoke(app, ["seeds", "-c", "tiny.yaml", "--n", "1"]), "at least 2")
