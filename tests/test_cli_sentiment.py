"""`mltrader sentiment`: eval prints the table and confusion matrices and writes JSON; score
prints each scorer's score; bad input is one line, never a traceback."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import mltrader.cli  # noqa: F401  (registers the commands)
from mltrader.cli_app import app

RUN = CliRunner()


def run(*args: str) -> tuple[int, str]:
    res = RUN.invoke(app, ["sentiment", *args], env={"COLUMNS": "200"})
    return res.exit_code, res.output


def test_help_teaches_with_examples():
    code, text = run("--help")
    assert code == 0 and "eval" in text and "score" in text and "Examples" in text
    code, text = run("eval", "--help")
    assert code == 0 and "--scorer" in text and "--json" in text and "Examples" in text


def test_eval_prints_the_table_and_writes_json(tmp_path):
    path = tmp_path / "out.json"
    code, text = run("eval", "--scorer", "vader", "--scorer", "lm", "--limit", "200",
                     "--json", str(path))
    assert code == 0, text
    for word in ("Validation split", "200 items", "accuracy", "macro-F1", "band", "seconds",
                 "vader", "lm", "majority", "±0.05 (authors)", "rows true, columns predicted"):
        assert word in text
    doc = json.loads(path.read_text())
    assert doc["split"] == "validation" and doc["n"] == 200
    assert [r["name"] for r in doc["results"]] == ["vader", "lm", "majority"]
    assert all(sum(map(sum, r["confusion"])) == 200 for r in doc["results"])


def test_unknown_scorer_is_one_line():
    code, text = run("eval", "--scorer", "nope")
    assert code != 0 and "Traceback" not in text
    assert "unknown sentiment scorer 'nope'" in text and "tfidf_lr" in text
    assert len(text.strip().splitlines()) == 1


def test_score_prints_each_scorer():
    code, text = run("score", "Shares surge on record profit", "--scorer", "vader",
                     "--scorer", "tfidf_lr")
    assert code == 0, text
    assert "vader" in text and "tfidf_lr" in text and "bullish" in text
