"""`mltrader financials`: a bundled A-share's latest statements with English line items, and
the Chinese -> English field dictionary. Registers on `mltrader.cli_app.app` when imported;
the work is `mltrader.data.cn_financials`.
"""

from __future__ import annotations

import math
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from mltrader.cli_app import app, guarded, out
from mltrader.errors import DataError

FIELDS_WORD = "fields"


def _fmt(value: float) -> str:
    """A statement value, short: 1.494e+11 -> 149.40B."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:,.2f}{suffix}"
    return f"{value:,.4g}"


def _date(ts: pd.Timestamp) -> str:
    return "-" if ts is None or pd.isna(ts) else str(pd.Timestamp(ts).date())


def _match_symbol(symbol: str, known: list[str]) -> str:
    """The bundled symbol meant: 601318.SH as given, or 601318 without its suffix."""
    s = symbol.strip().upper()
    hits = [k for k in known if k == s or k.split(".")[0] == s]
    if len(hits) != 1:
        raise DataError(f"no bundled financial statements for {symbol!r}; use one of "
                        f"{', '.join(known)}")
    return hits[0]


def print_fields(statement: str | None, chinese: bool) -> None:
    """The dictionary as a table (one statement's rows when given)."""
    from mltrader.data import cn_financials as cn

    f = cn.field_dictionary()
    if statement is not None:
        f = f[f["statement"] == statement]
    table = Table(title=f"{len(f)} Chinese financial fields, {f['field_en'].nunique()} "
                  "English names", title_justify="left")
    for head in ("English", "Chinese", "statement", "unit", "source"):
        table.add_column(head, no_wrap=head != "source")
    for r in f.itertuples(index=False):
        table.add_row(r.field_en, r.field_cn, r.statement, r.unit, escape(str(r.source)))
    out.print(table)


def print_statement(symbol: str, statement: str, n_fields: int, periods: int,
                    chinese: bool) -> None:
    """The latest `periods` report periods of one statement, `n_fields` line items each."""
    from mltrader.data import cn_financials as cn

    every = cn.load_statements(statement)
    sym = _match_symbol(symbol, sorted(every["symbol"].unique()))
    df = every[every["symbol"] == sym].sort_values("report_period").tail(periods)
    items = [c for c in df.columns if c not in cn.ID_COLUMNS and df[c].notna().any()]
    items = items[:n_fields]
    to_cn = (cn.field_dictionary().query("statement == @statement")
             .drop_duplicates("field_en").set_index("field_en")["field_cn"])
    flows = "" if statement == "balance_sheet" else ", year to date"
    table = Table(title=f"{sym} {statement.replace('_', ' ')} (CNY{flows})",
                  title_justify="left")
    table.add_column("field", no_wrap=True)
    for rp in df["report_period"]:
        table.add_column(str(pd.Timestamp(rp).date()), justify="right", no_wrap=True)
    table.add_row("report type", *df["report_type"].astype(str))
    table.add_row("announced", *[_date(a) if pd.notna(a) else "unknown"
                                 for a in df["announced"]])
    table.add_row("first usable", *[
        _date(cn.available_from(a, rp, t))
        for a, rp, t in zip(df["announced"], df["report_period"], df["report_type"],
                            strict=True)])
    for item in items:
        label = f"{item} {to_cn.get(item, '')}" if chinese else item
        table.add_row(escape(label), *[_fmt(v) for v in df[item]])
    out.print(table)
    out.print("first usable: the first trading day after the announcement; when the date is "
              "unknown, after the statutory deadline (Q1 Apr 30, half-year Aug 31, Q3 Oct 31, "
              "annual Apr 30 next year)", highlight=False)


@app.command(epilog="Examples:  mltrader financials 601318.SH --statement balance_sheet "
             "--fields 20   |   mltrader financials fields")
@guarded
def financials(
    symbol: Annotated[str | None, typer.Argument(
        help="A bundled A-share, e.g. 601318.SH (or 601318); `fields` prints the field "
        "dictionary")] = None,
    statement: Annotated[str | None, typer.Option(
        "--statement", "-s", help="balance_sheet, income_statement or cash_flow_statement "
        "(default income_statement; filters the dictionary with `fields`). "
        "Example: -s balance_sheet")] = None,
    fields: Annotated[int, typer.Option(
        "--fields", help="How many line items to show (at least 1). Example: --fields 20")] = 15,
    periods: Annotated[int, typer.Option(
        "--periods", help="How many latest report periods (at least 1). Example: "
        "--periods 8")] = 4,
    chinese: Annotated[bool, typer.Option(
        "--chinese", help="Show each field's Chinese name next to its English one")] = False,
    fields_list: Annotated[bool, typer.Option(
        "--fields-list", help="Print the Chinese -> English field dictionary")] = False,
) -> None:
    """A bundled A-share's latest financial statements, or the field dictionary.

    Prints the latest report periods of one statement (balance sheet, income or cash flow;
    CNY, income and cash flow year to date) with English line-item names, each period's
    announcement date and the first trading day it may be used (point in time: never before
    it was published). `mltrader financials fields` (or --fields-list) prints the 500+ row
    Chinese -> English dictionary: English name, Chinese name, statement, unit, source.
    """
    from mltrader.data import cn_financials as cn

    if statement is not None and statement not in (*cn.KINDS, "indicator"):
        raise DataError(f"--statement {statement!r} is not known; use one of "
                        f"{', '.join(cn.KINDS)} (or indicator with `fields`)")
    if fields_list or (symbol is not None and symbol.strip().lower() == FIELDS_WORD):
        print_fields(statement, chinese)
        return
    if symbol is None:
        raise DataError("give a SYMBOL (e.g. mltrader financials 601318.SH) or `fields` for "
                        "the field dictionary")
    if fields < 1 or periods < 1:
        raise DataError("--fields and --periods must be at least 1; e.g. --fields 15 "
                        "--periods 4")
    kind = statement or "income_statement"
    if kind not in cn.KINDS:
        raise DataError(f"--statement {kind!r} has no per-stock data; use one of "
                        f"{', '.join(cn.KINDS)}")
    print_statement(symbol, kind, fields, periods, chinese)
