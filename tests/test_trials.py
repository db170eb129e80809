"""The trials registry: fingerprints, the append-only file, dedup, stats, reset, the deflated
Sharpe it feeds, and the `mltrader trials` command."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import mltrader.cli_trials  # noqa: F401  (registers `trials` on the app)
from mltrader.backtest.deflated import deflated_sharpe_ratio
from mltrader.cli_app import app
from mltrader.data.bars import Bars
from mltrader.testing import synthetic_bars
from mltrader.trials import (
    DEFAULT_PATH,
    RUN_ONLY_KEYS,
    Trial,
    TrialRegistry,
    TrialStats,
    config_hash,
    data_fingerprint,
    deflation_inputs,
    per_bar_sharpe,
    registry_for,
    trials_of_run,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
runner = CliRunner(env={"COLUMNS": "200", "FORCE_COLOR": None, "NO_COLOR": "1"})


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """No test writes to the repository's runs/."""
    monkeypatch.chdir(tmp_path)


def _bars(**kw) -> Bars:
    return synthetic_bars(300, 3, seed=kw.pop("seed", 1), **kw)


def _trial(ds="d" * 16, cfg="c1", kind="backtest", label="x", sharpe=0.05, n_obs=250):
    return Trial(ds, cfg, kind, label, sharpe, n_obs)


# ------------------------------------------------------------------ fingerprints
def test_fingerprint_is_stable_and_short():
    a, b = _bars(), _bars()
    fp = data_fingerprint(a)
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert data_fingerprint(b) == fp
    assert data_fingerprint(a, start=10) == data_fingerprint(b, start=10) != fp


def test_fingerprint_is_the_same_in_another_process():
    code = ("from mltrader.testing import synthetic_bars; from mltrader.trials import "
            "data_fingerprint; print(data_fingerprint(synthetic_bars(300, 3, seed=1), 5))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert res.stdout.strip() == data_fingerprint(_bars(), 5)


def test_fingerprint_changes_with_symbols_dates_and_values():
    base = _bars()
    fp = data_fingerprint(base)
    renamed = Bars(base.index, ("A", "B", "C"), base.close)
    later = Bars(base.index + np.timedelta64(1, "D"), base.symbols, base.close)
    bumped = base.close.copy()
    bumped[150, 1] *= 1.0001
    changed = Bars(base.index, base.symbols, bumped)
    fewer = Bars(base.index[:-1], base.symbols, base.close[:-1])
    other = {data_fingerprint(b) for b in (renamed, later, changed, fewer)}
    assert fp not in other and len(other) == 4


def test_fingerprint_is_nan_safe():
    base = _bars()
    c1, c2 = base.close.copy(), base.close.copy()
    c1[3, 0] = np.nan
    c2[3, 0] = np.float64(np.nan) * -1  # another NaN bit pattern
    b1, b2 = Bars(base.index, base.symbols, c1), Bars(base.index, base.symbols, c2)
    assert data_fingerprint(b1) == data_fingerprint(b2) != data_fingerprint(base)
    with pytest.raises(ValueError, match="outside"):
        data_fingerprint(base, start=len(base))


def test_config_hash_is_order_free_and_ignores_run_only_keys():
    a = {"name": "x", "model": {"name": "ridge", "alpha": 1.0}, "seed": 1, "output_dir": "r"}
    b = {"seed": 1, "model": {"alpha": 1.0, "name": "ridge"}, "name": "x", "output_dir": "r"}
    assert config_hash(a) == config_hash(b)
    assert config_hash({**a, "seed": 2}) != config_hash(a)
    assert config_hash({**a, "name": "y"}) != config_hash(a)
    assert config_hash({**a, "name": "y", "output_dir": "s"}, ignore=RUN_ONLY_KEYS) == \
        config_hash(a, ignore=RUN_ONLY_KEYS)


def test_per_bar_sharpe_matches_the_deflated_module():
    r = np.random.default_rng(0).normal(0.001, 0.01, 500)
    r[:3] = np.nan
    assert per_bar_sharpe(r) == deflated_sharpe_ratio(r, 1)["sharpe"]
    assert per_bar_sharpe([0.0, 0.0, 0.0]) is None
    assert per_bar_sharpe([0.01]) is None


# ------------------------------------------------------------------ the file
def test_round_trip_across_instances_and_default_place(tmp_path):
    t1 = _trial(label="ridge", sharpe=0.0412345678901234)
    t2 = _trial(cfg="c2", kind="tuning", label="ridge tuning trial 1", sharpe=None, n_obs=0)
    TrialRegistry().record(t1)
    TrialRegistry().record_many([t2])
    assert (tmp_path / DEFAULT_PATH).is_file()
    assert TrialRegistry().trials() == [t1, t2]  # a "new process" reads what was written
    lines = (tmp_path / DEFAULT_PATH).read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["sharpe"] == 0.0412345678901234
    assert registry_for(tmp_path / "runs").trials() == [t1, t2]


def test_missing_registry_is_empty_and_writes_nothing(tmp_path):
    reg = TrialRegistry(tmp_path / "nowhere" / "trials.jsonl")
    assert reg.trials() == [] and reg.summary() == [] and reg.reset() == 0
    assert reg.stats("abc") == TrialStats("abc", 0, None, {})
    assert not (tmp_path / "nowhere").exists()


def test_torn_last_line_is_skipped_with_a_warning_then_cut_off(tmp_path, caplog):
    reg = TrialRegistry()
    reg.record_many([_trial(label="a"), _trial(label="b")])
    with open(reg.path, "ab") as f:
        f.write(_trial(label="torn").to_json().encode()[:40])  # a crash mid-write
    fresh = TrialRegistry()
    assert [t.label for t in fresh.trials()] == ["a", "b"]
    assert any("torn last line" in w for w in fresh.warnings)
    assert "torn last line" in caplog.text
    fresh.record(_trial(label="c"))  # the next write cuts the fragment off
    again = TrialRegistry()
    assert [t.label for t in again.trials()] == ["a", "b", "c"] and again.warnings == []
    assert all(json.loads(line) for line in reg.path.read_text().splitlines())


def test_a_complete_last_line_without_newline_is_kept(tmp_path):
    reg = TrialRegistry()
    reg.path.parent.mkdir()
    reg.path.write_text(_trial(label="a").to_json())  # written by hand, no newline
    assert [t.label for t in reg.trials()] == ["a"] and reg.warnings == []
    reg.record(_trial(label="b"))
    assert [t.label for t in TrialRegistry().trials()] == ["a", "b"]


def test_garbage_lines_never_crash(tmp_path):
    reg = TrialRegistry()
    reg.record(_trial(label="a"))
    with open(reg.path, "ab") as f:
        f.write(b"not json\n\xff\xfe\n[1, 2]\n{\"kind\": \"placebo\"}\n")
    reg.record(_trial(label="b"))
    assert [t.label for t in reg.trials()] == ["a", "b"]
    assert any("4 unreadable line(s)" in w for w in reg.warnings)
    assert reg.reset("nothing-here") == 0  # the rewrite drops the damaged lines
    assert [t.label for t in reg.trials()] == ["a", "b"] and reg.warnings == []


def test_identical_rerun_does_not_inflate_the_count():
    reg = TrialRegistry()
    reg.record(_trial(label="ridge", sharpe=0.01))
    reg.record(_trial(label="ridge", sharpe=0.02))  # the same config re-run
    reg.record(_trial(label="ridge", kind="compare", sharpe=0.03))  # another kind: new trial
    reg.record(_trial(label="ridge", cfg="c2", sharpe=0.04))  # another config: new trial
    found = reg.trials()
    assert len(found) == 3
    assert [t.sharpe for t in found if t.kind == "backtest" and t.config == "c1"] == [0.02]
    assert reg.stats("d" * 16).n_trials == 3


def test_trials_of_run_dedups_its_tuning_trials_on_rerun():
    reg = TrialRegistry()
    for _ in range(2):
        reg.record_many(trials_of_run("d" * 16, "c1", "backtest", "ridge", 0.05, 250,
                                      tuning_trials=20))
    st = reg.stats("d" * 16)
    assert st.n_trials == 20 and st.by_kind == {"backtest": 1, "tuning": 19}
    assert st.sharpe_variance is None


def test_trial_validates_kind_and_stores_nonfinite_sharpe_as_none():
    with pytest.raises(ValueError, match="placebo"):
        _trial(kind="placebo")
    assert _trial(sharpe=float("nan")).sharpe is None


# ------------------------------------------------------------------ stats and reset
def test_stats_count_all_but_take_the_variance_of_sharpes_only():
    reg = TrialRegistry()
    sharpes = [0.01, 0.03, -0.02]
    reg.record_many([_trial(cfg=f"c{i}", kind="sensitivity", label=f"cell {i}", sharpe=s)
                     for i, s in enumerate(sharpes)])
    reg.record_many([_trial(cfg=f"t{i}", kind="tuning", label=f"t{i}", sharpe=None)
                     for i in range(4)])
    reg.record(_trial(ds="e" * 16, label="elsewhere", sharpe=9.0))
    st = reg.stats("d" * 16)
    assert st.n_trials == 7
    assert st.sharpe_variance == pytest.approx(np.var(sharpes, ddof=1))
    assert st.by_kind == {"sensitivity": 3, "tuning": 4}
    one = TrialRegistry()
    assert one.stats("e" * 16).sharpe_variance is None  # a single Sharpe: no variance
    assert deflation_inputs(one.stats("e" * 16), 400) == (1, 1 / 400)
    assert deflation_inputs(TrialStats("z", 0, None, {}), 50) == (1, 1 / 50)
    with pytest.raises(ValueError):
        deflation_inputs(st, 0)


def test_reset_one_dataset_or_all():
    reg = TrialRegistry()
    reg.record_many([_trial(label="a"), _trial(label="b"), _trial(ds="e" * 16, label="c")])
    reg.record(_trial(label="a"))  # a duplicate line: removed once
    assert reg.reset("d" * 16) == 2
    assert [t.label for t in TrialRegistry().trials()] == ["c"]
    assert reg.reset() == 1
    assert TrialRegistry().trials() == [] and reg.path.read_text() == ""


def test_summary_per_dataset():
    reg = TrialRegistry()
    reg.record_many([_trial(label="a", sharpe=0.01), _trial(label="b", sharpe=0.02),
                     _trial(ds="e" * 16, label="c", kind="rl_seed", sharpe=None)])
    rows = reg.summary()
    assert [r["dataset"] for r in rows] == ["d" * 16, "e" * 16]
    assert rows[0]["trials"] == 2 and rows[0]["sharpe_variance"] == pytest.approx(5e-5)
    assert rows[0]["sample_label"] == "b" and rows[0]["first"] <= rows[0]["last"]
    assert rows[1]["by_kind"] == {"rl_seed": 1} and rows[1]["sharpe_variance"] is None


# ------------------------------------------------------------------ the point of it all
def test_more_trials_on_the_same_data_lower_the_deflated_sharpe_and_reset_restores_it():
    rng = np.random.default_rng(7)
    r = rng.normal(0.0008, 0.01, 1000)  # the strategy's per-bar returns, fixed
    ds = data_fingerprint(_bars())
    reg = TrialRegistry()
    own = per_bar_sharpe(r)
    reg.record(Trial(ds, config_hash({"model": "ridge"}), "backtest", "mine", own, r.size))

    n, var = deflation_inputs(reg.stats(ds), r.size)
    alone = deflated_sharpe_ratio(r, n, sr_variance=var)
    assert (n, var) == (1, 1 / r.size)
    assert alone == deflated_sharpe_ratio(r, 1)

    others = rng.normal(0.0, 0.03, 50)  # 50 random configurations' per-bar Sharpes
    reg.record_many(Trial(ds, config_hash({"model": "ridge", "alpha": float(i)}),
                          "sensitivity", f"alpha={i}", float(s), r.size)
                    for i, s in enumerate(others))
    n, var = deflation_inputs(TrialRegistry().stats(ds), r.size)
    expected_var = float(np.var(np.append(own, others), ddof=1))
    assert n == 51 and var == pytest.approx(expected_var, rel=1e-12)
    searched = deflated_sharpe_ratio(r, n, sr_variance=var)
    assert searched == deflated_sharpe_ratio(r, 51, sr_variance=var)
    assert searched["dsr"] == pytest.approx(deflated_sharpe_ratio(
        r, 51, trial_sharpes=np.append(own, others))["dsr"], rel=1e-12)
    assert searched["dsr"] < alone["dsr"]
    assert searched["expected_max_sharpe"] > 0 == alone["expected_max_sharpe"]

    assert reg.reset(ds) == 51
    reg.record(Trial(ds, config_hash({"model": "ridge"}), "backtest", "mine", own, r.size))
    n, var = deflation_inputs(reg.stats(ds), r.size)
    assert deflated_sharpe_ratio(r, n, sr_variance=var) == alone


# ------------------------------------------------------------------ the command
def _cli(*args: str, input: str | None = None):
    res = runner.invoke(app, ["trials", *args], input=input)
    return res, ANSI.sub("", res.stdout), ANSI.sub("", res.stderr)


def test_cli_empty_registry_is_friendly():
    res, stdout, _ = _cli()
    assert res.exit_code == 0, res.output
    assert "No trials recorded" in stdout
    res, stdout, _ = _cli("--reset", "--yes")
    assert res.exit_code == 0 and "nothing to reset" in stdout


def test_cli_table_and_help():
    TrialRegistry().record_many([_trial(label="ridge"), _trial(label="lgbm", sharpe=0.07),
                                 _trial(ds="e" * 16, kind="tuning", sharpe=None)])
    res, stdout, _ = _cli()
    assert res.exit_code == 0, res.output
    assert "d" * 16 in stdout and "e" * 16 in stdout
    assert "backtest 2" in stdout and "tuning 1" in stdout and "deflated Sharpe" in stdout
    assert "0.0002 (of 2)" in stdout
    res, stdout, _ = _cli("--dataset", "eeee")
    assert res.exit_code == 0 and "e" * 16 in stdout and "d" * 16 not in stdout
    res, stdout, _ = _cli("--help")
    assert res.exit_code == 0 and "Example" in stdout and "--reset" in stdout


def test_cli_reset_needs_yes_without_a_terminal():
    TrialRegistry().record_many([_trial(label="a"), _trial(ds="e" * 16, label="b")])
    res, _, stderr = _cli("--reset")
    assert res.exit_code == 2 and "--yes" in stderr and len(stderr.strip().splitlines()) == 1
    assert len(TrialRegistry().trials()) == 2
    res, stdout, _ = _cli("--reset", "--dataset", "d" * 16, "--yes")
    assert res.exit_code == 0 and "Removed 1 trial(s)" in stdout
    assert [t.label for t in TrialRegistry().trials()] == ["b"]


def test_cli_reset_asks_at_a_terminal(monkeypatch):
    monkeypatch.setattr(mltrader.cli_trials, "_interactive", lambda: True)
    TrialRegistry().record(_trial(label="a"))
    res, stdout, _ = _cli("--reset", input="n\n")
    assert res.exit_code == 1 and "nothing was removed" in stdout
    assert len(TrialRegistry().trials()) == 1
    res, stdout, _ = _cli("--reset", input="y\n")
    assert res.exit_code == 0 and "Removed 1 trial(s)" in stdout
    assert TrialRegistry().trials() == []


def test_cli_unknown_dataset_and_other_file(tmp_path):
    reg = TrialRegistry(tmp_path / "elsewhere" / "trials.jsonl")
    reg.record(_trial(label="a"))
    res, _, stderr = _cli("--file", str(tmp_path / "elsewhere"), "--dataset", "ffff")
    assert res.exit_code == 2 and "ffff" in stderr and "mltrader trials" in stderr
    res, stdout, _ = _cli("--file", str(reg.path))
    assert res.exit_code == 0 and "d" * 16 in stdout
