"""China A-share financial statements (balance sheet, income, cash flow), point in time.

The bundled statements (`data/bundled/cn_financials/`, see its README) carry East Money's
Chinese line-item names; `fields.csv` translates them (and 300 more CAS line items and
indicators) to English. A statement is usable only from the first trading bar strictly after
its announcement, never from its report period: see `available_from` and `point_in_time`.

Income and cash-flow values are cumulative year to date, as Chinese reports are (Q3 = nine
months); `quarterly` and `ttm` turn them into single quarters and trailing twelve months.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from mltrader.errors import DataError

PACKAGE = "mltrader.data.bundled"
FOLDER = "cn_financials"
KINDS = ("balance_sheet", "income_statement", "cash_flow_statement")
STATEMENTS = (*KINDS, "indicator")
UNITS = ("CNY", "CNY/share", "%", "ratio", "days", "times", "shares")
ID_COLUMNS = ("symbol", "report_period", "report_type", "announced")
# the Chinese key columns of the bundled statements -> the English ones
_KEYS_CN = {"symbol": "symbol", "报告期": "report_period", "报告类型": "report_type",
            "公告日期": "announced"}
# report type -> month-end of the period; the statutory latest disclosure (month, day, +years)
REPORT_TYPES = {"season1": 3, "half_year": 6, "season3": 9, "year": 12}
DEADLINES = {"season1": (4, 30, 0), "half_year": (8, 31, 0), "season3": (10, 31, 0),
             "year": (4, 30, 1)}
LOCAL_TZ = "Asia/Shanghai"
_PREFIX = re.compile(r"^(加|减|其中):")  # after _normalise's spaces/colon cleanup


# --------------------------------------------------------------------------- dictionary
def _open(name: str) -> pd.DataFrame:
    path = resources.files(PACKAGE).joinpath(FOLDER).joinpath(name)
    with path.open("rb") as fh:
        return pd.read_csv(fh, dtype={"symbol": str})


@lru_cache(maxsize=1)
def _fields() -> pd.DataFrame:
    return _open("fields.csv")


def field_dictionary() -> pd.DataFrame:
    """The Chinese -> English field dictionary: field_cn, field_en, statement, unit, source.

    One row per Chinese name and statement; several Chinese names (a vendor's alias, an old
    and a new CAS name) may share one English name, so their columns merge on load.
    """
    return _fields().copy()


def _normalise(name: str) -> str:
    """A Chinese label without spaces, with ASCII colons/brackets and no 加/减/其中 prefix."""
    s = re.sub(r"\s+", "", str(name)).replace("：", ":").replace("（", "(").replace("）", ")")
    return _PREFIX.sub("", s)


@lru_cache(maxsize=8)
def _lookup(statement: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """Exact and normalised Chinese -> English maps, one statement's rows first."""
    f = _fields()
    order = [statement] if statement else []
    order += [s for s in STATEMENTS if s not in order]
    exact: dict[str, str] = {}
    loose: dict[str, str] = {}
    for st in order:
        rows = f[f["statement"] == st]
        for cn, en in zip(rows["field_cn"], rows["field_en"], strict=True):
            exact.setdefault(cn, en)
            loose.setdefault(_normalise(cn), en)
    return exact, loose


def translate(columns: Iterable[str], statement: str | None = None) -> list[str]:
    """English names for Chinese column labels (English names and key columns pass through).

    A label found in several statements takes `statement`'s row first, then balance sheet,
    income, cash flow, indicator order. Labels match exactly, else ignoring spaces, full-width
    colons/brackets and 加:/减:/其中: prefixes. An unknown label raises DataError naming it.
    """
    if statement is not None and statement not in STATEMENTS:
        raise DataError(f"unknown statement {statement!r}; use one of {', '.join(STATEMENTS)}")
    exact, loose = _lookup(statement)
    english = set(_fields()["field_en"])
    out = []
    for col in columns:
        name = str(col)
        if name in _KEYS_CN:
            out.append(_KEYS_CN[name])
        elif name in exact:
            out.append(exact[name])
        elif name in ID_COLUMNS or name in english:
            out.append(name)
        elif _normalise(name) in loose:
            out.append(loose[_normalise(name)])
        else:
            raise DataError(f"unknown Chinese financial field {name!r}: it is not in "
                            "data/bundled/cn_financials/fields.csv; add a row (field_cn, "
                            "field_en, statement, unit, source) or drop the column")
    return out


# --------------------------------------------------------------------------- statements
def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DataError(f"unknown financial statement {kind!r}; use one of {', '.join(KINDS)}")


@lru_cache(maxsize=3)
def _statement(kind: str) -> pd.DataFrame:
    raw = _open(f"{kind}.csv")
    names = translate(raw.columns, kind)
    # several Chinese labels may share one English name (股本 / 实收资本（或股本）): coalesce
    merged: dict[str, pd.Series] = {}
    for name, col in zip(names, raw.columns, strict=True):
        values = raw[col]
        merged[name] = values if name not in merged else merged[name].combine_first(values)
    df = pd.DataFrame(merged)
    df["report_period"] = pd.to_datetime(df["report_period"])
    df["announced"] = pd.to_datetime(df["announced"])
    df["report_type"] = df["report_type"].astype(str)
    items = [c for c in df.columns if c not in ID_COLUMNS]
    df[items] = df[items].astype("float64")
    return df[[*ID_COLUMNS, *items]].sort_values(["symbol", "report_period"],
                                                 ignore_index=True)


def load_statements(kind: str, symbols: Sequence[str] | None = None) -> pd.DataFrame:
    """One statement kind for the bundled stocks, long: one row per symbol and report period.

    Columns: symbol (601318.SH), report_period, report_type (season1 / half_year / season3 /
    year), announced (NaT when unknown), then the line items under their English names, in
    CNY (per-share items in CNY/share). Income and cash-flow items are year to date.
    """
    _check_kind(kind)
    df = _statement(kind)
    if symbols is not None:
        df = df[df["symbol"].isin([str(s) for s in symbols])].reset_index(drop=True)
    return df.copy()


# --------------------------------------------------------------------------- point in time
def report_type_of(report_period: pd.Timestamp) -> str:
    """The report type of a period end: Mar -> season1, Jun -> half_year, Sep -> season3,
    Dec -> year."""
    for kind, month in REPORT_TYPES.items():
        if pd.Timestamp(report_period).month == month:
            return kind
    raise DataError(f"report period {pd.Timestamp(report_period).date()} is not a quarter "
                    "end; use Mar 31, Jun 30, Sep 30 or Dec 31")


def disclosure_deadline(report_period: pd.Timestamp, report_type: str | None = None
                        ) -> pd.Timestamp:
    """The statutory latest disclosure date (CSRC rules): Q1 by Apr 30, half-year by Aug 31,
    Q3 by Oct 31, annual by Apr 30 of the next year."""
    rp = pd.Timestamp(report_period)
    rtype = report_type if report_type in DEADLINES else report_type_of(rp)
    month, day, years = DEADLINES[rtype]
    return pd.Timestamp(year=rp.year + years, month=month, day=day)


def effective_announcement(announced: pd.Timestamp | None, report_period: pd.Timestamp,
                           report_type: str | None = None) -> pd.Timestamp:
    """The announcement date, or the disclosure deadline when it is unknown (NaT / None)."""
    if announced is None or pd.isna(announced):
        return disclosure_deadline(report_period, report_type)
    ts = pd.Timestamp(announced)
    if ts.tz is not None:
        ts = ts.tz_convert(LOCAL_TZ).tz_localize(None)
    return ts.normalize()


@lru_cache(maxsize=1)
def _xshg_sessions() -> pd.DatetimeIndex:
    import exchange_calendars as xcals

    with warnings.catch_warnings():  # exchange-calendars' own pandas 3 deprecation warning
        warnings.simplefilter("ignore", DeprecationWarning)
        cal = xcals.get_calendar("XSHG", start="1991-01-02")
    return pd.DatetimeIndex(cal.sessions).tz_localize(None)


def _bar_dates(index: pd.DatetimeIndex) -> np.ndarray:
    """Each bar's trading date in Shanghai, as naive datetime64 (for comparison to dates)."""
    idx = pd.DatetimeIndex(index)
    local = idx.tz_convert(LOCAL_TZ) if idx.tz is not None else idx
    return local.tz_localize(None).normalize().to_numpy()


def available_from(announced: pd.Timestamp | None, report_period: pd.Timestamp,
                   report_type: str | None = None,
                   index: pd.DatetimeIndex | None = None) -> pd.Timestamp:
    """The first bar at which a statement may be used: the first trading bar strictly AFTER
    its announcement date (announcements come out after the close or on non-trading days).

    When the announcement date is missing, the statutory latest disclosure deadline stands in
    (Q1 by Apr 30, half-year by Aug 31, Q3 by Oct 31, annual by Apr 30 of the next year), so a
    statement of unknown date is never used before it must have existed. With `index`, the
    answer is a bar of it (NaT when none is later); without, the next Shanghai (XSHG) session,
    a naive date.
    """
    day = effective_announcement(announced, report_period, report_type)
    if index is not None:
        dates = _bar_dates(index)
        pos = int(np.searchsorted(dates, np.datetime64(day, "ns"), side="right"))
        return pd.DatetimeIndex(index)[pos] if pos < len(dates) else pd.NaT
    sessions = _xshg_sessions()
    pos = int(sessions.searchsorted(day, side="right"))
    if pos < len(sessions):
        return sessions[pos]
    return day + pd.offsets.BDay(1)  # past the calendar's end: the next weekday


def effective_dates(values: pd.DataFrame) -> np.ndarray:
    """Each row's effective announcement date (deadline when unknown), as datetime64[ns]."""
    rp = pd.to_datetime(values["report_period"])
    ann = pd.to_datetime(values["announced"])
    if ann.dt.tz is not None:
        ann = ann.dt.tz_convert(LOCAL_TZ).dt.tz_localize(None)
    ann = ann.dt.normalize()
    types = (values["report_type"].astype(str) if "report_type" in values
             else pd.Series([None] * len(values), index=values.index))
    missing = ann.isna().to_numpy()
    out = ann.to_numpy(dtype="datetime64[ns]").copy()
    for i in np.flatnonzero(missing):
        out[i] = np.datetime64(disclosure_deadline(rp.iloc[i], types.iloc[i]), "ns")
    return out


def available_positions(values: pd.DataFrame, index: pd.DatetimeIndex) -> np.ndarray:
    """Per row, the position in `index` of its first usable bar (len(index) when none)."""
    return np.searchsorted(_bar_dates(index), effective_dates(values), side="right")


def point_in_time(values: pd.DataFrame, index: pd.DatetimeIndex,
                  symbols: Sequence[str]) -> pd.DataFrame:
    """A T x N frame: at each bar, the value of the latest report period already available.

    `values` has columns symbol, report_period, announced, value (report_type optional; an
    unknown announcement date uses the disclosure deadline, see `available_from`). A
    statement becomes usable at the first bar after its announcement. A restatement of the
    period in use replaces it from its own date; a late statement of an OLDER period than the
    one in use is ignored (the newer period stays), so nothing ever goes back in time. NaN
    before a symbol's first available statement and for symbols without statements.
    """
    missing = [c for c in ("symbol", "report_period", "announced", "value") if c not in values]
    if missing:
        raise DataError(f"point_in_time needs columns symbol, report_period, announced, value; "
                        f"missing {', '.join(missing)}")
    idx = pd.DatetimeIndex(index)
    out = np.full((len(idx), len(symbols)), np.nan)
    if len(values) and len(idx):
        df = values.reset_index(drop=True).copy()
        df["report_period"] = pd.to_datetime(df["report_period"])
        df["_pos"] = available_positions(df, idx)
        df["_eff"] = effective_dates(df)
        df = df[df["_pos"] < len(idx)]
        col_of = {str(s): j for j, s in enumerate(symbols)}
        for sym, g in df.groupby("symbol", sort=False):
            j = col_of.get(str(sym))
            if j is None:
                continue
            g = g.sort_values(["_pos", "report_period", "_eff"], kind="stable")
            newest = g["report_period"].cummax()
            g = g[g["report_period"].to_numpy() >= newest.to_numpy()]  # never back in time
            last = g.groupby("_pos", sort=True).tail(1)
            col = np.full(len(idx), np.nan)
            filled = np.zeros(len(idx), dtype=bool)
            col[last["_pos"].to_numpy()] = last["value"].to_numpy(dtype="float64")
            filled[last["_pos"].to_numpy()] = True
            # forward fill from each event (NaN values included: a newer NaN replaces)
            which = np.maximum.accumulate(np.where(filled, np.arange(len(idx)), -1))
            ok = which >= 0
            out[ok, j] = col[which[ok]]
    return pd.DataFrame(out, index=idx, columns=[str(s) for s in symbols])


# --------------------------------------------------------------------------- YTD helpers
def quarterly(ytd: pd.DataFrame, column: str) -> pd.Series:
    """Single-quarter values from year-to-date ones: Q1 as is, later quarters minus the
    previous quarter of the same year (NaN when that quarter is missing)."""
    df = ytd[["symbol", "report_period", column]].copy()
    prev = df.rename(columns={column: "_prev"})
    prev["report_period"] = prev["report_period"] + pd.offsets.QuarterEnd(1)
    m = df.merge(prev, on=["symbol", "report_period"], how="left")
    first = m["report_period"].dt.month == 3
    return pd.Series(np.where(first, m[column], m[column] - m["_prev"]), index=ytd.index,
                     name=column)
