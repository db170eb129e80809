"""`mltrader financials`: a bundled A-share's latest statements in English with announcement
and first-usable dates, the field dictionary, and one-line refusals."""

from __future__ import annotations

import re

from typer.testing import CliRunner, Result

import mltrader.cli  # noqa: F401  (the app's other commands, as the entry point loads them)
import mltrader.cli_financials  # noqa: F401  (registers `financials`)
from mltrader.cli_app import app

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
runner = CliRunner(env={"COLUMNS": "250", "FORCE_COLOR": None, "NO_COLOR": "1"})


def _ok(args: list[str]) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return ANSI.sub("", r.output)


def _refused(r: Result, needle: str) -> None:
    text = ANSI.sub("", r.output).strip()
    assert r.exit_code != 0 and needle in text, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text


def test_latest_income_statement_in_english_with_dates():
    text = _ok(["financials", "601318.SH", "--fields", "30"])
    assert "2020-03-31" in text and "2019-12-31" in text
    assert "net_profit_attributable_to_parent" in text and "营业收入" not in text
    assert "149.40B" in text  # 2019 net profit attributable, 1.494e11
    assert "announced" in text and "first usable" in text
    assert "2019-10-25" in text and "2019-10-28" in text  # Q3 2019: Fri -> Mon
    assert "unknown" in text and "2020-05-06" in text  # no date: after the Apr 30 deadline


def test_statement_fields_chinese_and_bare_code():
    text = _ok(["financials", "000001", "--statement", "balance_sheet", "--fields", "3",
                "--periods", "2", "--chinese"])
    assert "000001.SZ balance sheet" in text
    assert "2020-03-31" in text and "2019-09-30" not in text
    assert "investment_property 投资性房地产" in text  # English, then Chinese
    rows = [ln for ln in text.splitlines() if ln.startswith("│")]
    assert len(rows) == 3 + 3  # report type, announced, first usable + 3 items


def test_fields_dictionary_both_spellings():
    for args in (["financials", "fields"], ["financials", "--fields-list"]):
        text = _ok(args)
        assert "544 Chinese financial fields" in text and "494 English names" in text
        assert "cash_and_bank_balances" in text and "货币资金" in text
    text = _ok(["financials", "fields", "-s", "indicator"])
    assert "roe_weighted_pct" in text and "cash_and_bank_balances" not in text


def test_refusals_are_one_line():
    _refused(runner.invoke(app, ["financials", "999999.SH"]), "601318.SH")
    _refused(runner.invoke(app, ["financials", "601318.SH", "-s", "cashflow"]),
             "cash_flow_statement")
    _refused(runner.invoke(app, ["financials", "601318.SH", "-s", "indicator"]),
             "no per-stock data")
    _refused(runner.invoke(app, ["financials", "601318.SH", "--fields", "0"]), "at least 1")
    _refused(runner.invoke(app, ["financials"]), "SYMBOL")
