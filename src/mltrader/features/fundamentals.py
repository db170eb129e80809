"""Fundamental features of China A-shares from point-in-time financial statements.

Each `fund_*` feature maps `Bars` to a T x N frame: at each bar, the value from the latest
report period already published (first bar strictly after its announcement; the statutory
deadline when the date is unknown; see `mltrader.data.cn_financials`). A value combining
several statements (TTM, YoY, average equity) is usable only once ALL of them were, so nothing
ever reads a statement before it existed. NaN where no statement is available yet, and for
symbols without bundled statements.

Chinese income and cash-flow statements are year to date (Q3 = nine months): trailing twelve
months at period P = YTD(P) + annual(year - 1) - YTD(P one year earlier), which is the sum of
the last four single quarters (Q1 = YTD(Q1), Qn = YTD(Qn) - YTD(Qn-1)) when all exist.
The registry imports `FUNDAMENTAL_FEATURES` and registers them; this module never imports
the registry (no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from mltrader.data import cn_financials as cn
from mltrader.data.bars import Bars

BS, IS, CF = cn.KINDS
_KEYS = ["symbol", "report_period"]


# --------------------------------------------------------------------------- statement level
def _item(kind: str, field: str, symbols: Sequence[str]) -> pd.DataFrame:
    """One line item: index (symbol, report_period), columns v (value) and eff (effective
    announcement date: the date, or the disclosure deadline when unknown)."""
    df = cn.load_statements(kind, symbols)
    if field not in df.columns or df.empty:
        return pd.DataFrame({"v": pd.Series(dtype="float64"),
                             "eff": pd.Series(dtype="datetime64[ns]")},
                            index=pd.MultiIndex.from_arrays([[], []], names=_KEYS))
    out = pd.DataFrame({"v": df[field].to_numpy(dtype="float64"),
                        "eff": cn.effective_dates(df)},
                       index=pd.MultiIndex.from_frame(df[_KEYS]))
    out = out[out["v"].notna()]
    return out[~out.index.duplicated(keep="last")]


def _at(item: pd.DataFrame, keys: pd.MultiIndex,
        period: Callable[[pd.DatetimeIndex], pd.DatetimeIndex] | None = None) -> pd.DataFrame:
    """The item at each key (symbol, period), or at `period(period)` of the same symbol."""
    periods = pd.DatetimeIndex(keys.get_level_values("report_period"))
    target = pd.MultiIndex.from_arrays(
        [keys.get_level_values("symbol"), period(periods) if period else periods], names=_KEYS)
    got = item.reindex(target)
    got.index = keys
    return got


def _year_ago(p: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return p - pd.DateOffset(years=1)


def _last_annual(p: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime({"year": p.year - 1, "month": 12, "day": 31}))


def _combine(value: pd.Series, *parts: pd.DataFrame) -> pd.DataFrame:
    """A derived statement-level series: available when its LAST input was (max of eff)."""
    eff = pd.concat([p["eff"] for p in parts], axis=1).max(axis=1, skipna=False)
    out = pd.DataFrame({"value": value.replace([np.inf, -np.inf], np.nan), "announced": eff})
    out = out[out["value"].notna() & out["announced"].notna()]
    return out.reset_index()


def ttm(item: pd.DataFrame, keys: pd.MultiIndex) -> tuple[pd.Series, list[pd.DataFrame]]:
    """Trailing twelve months of a year-to-date item at each key, and the inputs it used."""
    cur = _at(item, keys)
    annual = pd.DatetimeIndex(keys.get_level_values("report_period")).month == 12
    prev_year = _at(item, keys, _last_annual)
    year_ago = _at(item, keys, _year_ago)
    value = cur["v"] + prev_year["v"] - year_ago["v"]
    value[annual] = cur["v"][annual]
    for part in (prev_year, year_ago):  # an annual figure needs no earlier statement
        part.loc[annual, "eff"] = cur["eff"][annual]
    return value, [cur, prev_year, year_ago]


def _average(item: pd.DataFrame, keys: pd.MultiIndex) -> tuple[pd.Series, list[pd.DataFrame]]:
    """The mean of a balance at the period end and one year earlier."""
    cur, ago = _at(item, keys), _at(item, keys, _year_ago)
    return (cur["v"] + ago["v"]) / 2.0, [cur, ago]


def _keys(*items: pd.DataFrame) -> pd.MultiIndex:
    keys = items[0].index
    for it in items[1:]:
        keys = keys.intersection(it.index)
    return keys.sort_values()


def _return_on(numerator: str, denominator: tuple[str, str],
               symbols: Sequence[str]) -> pd.DataFrame:
    """TTM income-statement item over the average of a balance-sheet item."""
    num, den = _item(IS, numerator, symbols), _item(*denominator, symbols)
    keys = _keys(num, den)
    top, a = ttm(num, keys)
    bottom, b = _average(den, keys)
    return _combine(top / bottom, *a, *b)


def roe_rows(symbols: Sequence[str]) -> pd.DataFrame:
    """TTM net profit attributable to the parent / average parent equity, per report."""
    return _return_on("net_profit_attributable_to_parent",
                      (BS, "equity_attributable_to_parent"), symbols)


def roa_rows(symbols: Sequence[str]) -> pd.DataFrame:
    """TTM net profit / average total assets, per report."""
    return _return_on("net_profit", (BS, "total_assets"), symbols)


def gross_margin_rows(symbols: Sequence[str]) -> pd.DataFrame:
    """TTM (operating revenue - cost of sales) / TTM operating revenue, per report."""
    rev, cost = _item(IS, "operating_revenue", symbols), _item(IS, "cost_of_sales", symbols)
    keys = _keys(rev, cost)
    r, a = ttm(rev, keys)
    c, b = ttm(cost, keys)
    return _combine((r - c) / r, *a, *b)


def _growth_rows(kind: str, field: str, symbols: Sequence[str]) -> pd.DataFrame:
    """Year-on-year growth of a year-to-date item, same report period a year earlier:
    (x - x_prev) / |x_prev|, so a loss shrinking counts as growth."""
    it = _item(kind, field, symbols)
    keys = _keys(it)
    cur, ago = _at(it, keys), _at(it, keys, _year_ago)
    return _combine((cur["v"] - ago["v"]) / ago["v"].abs(), cur, ago)


def revenue_growth_rows(symbols: Sequence[str]) -> pd.DataFrame:
    """YoY growth of year-to-date operating revenue, per report."""
    return _growth_rows(IS, "operating_revenue", symbols)


def profit_growth_rows(symbols: Sequence[str]) -> pd.DataFrame:
    """YoY growth of year-to-date net profit attributable to the parent, per report."""
    return _growth_rows(IS, "net_profit_attributable_to_parent", symbols)


def accruals_rows(symbols: Sequence[str]) -> pd.DataFrame:
    """(TTM net profit - TTM operating cash flow) / total assets at the period end."""
    np_, ocf = _item(IS, "net_profit", symbols), _item(CF, "net_operating_cash_flow", symbols)
    assets = _item(BS, "total_assets", symbols)
    keys = _keys(np_, ocf, assets)
    p, a = ttm(np_, keys)
    o, b = ttm(ocf, keys)
    ta = _at(assets, keys)
    return _combine((p - o) / ta["v"], *a, *b, ta)


def debt_to_assets_rows(symbols: Sequence[str]) -> pd.DataFrame:
    """Total liabilities / total assets at the period end."""
    debt, assets = _item(BS, "total_liabilities", symbols), _item(BS, "total_assets", symbols)
    keys = _keys(debt, assets)
    d, a = _at(debt, keys), _at(assets, keys)
    return _combine(d["v"] / a["v"], d, a)


def book_per_share_rows(symbols: Sequence[str]) -> pd.DataFrame:
    """Parent equity per share: A-share capital is 1 CNY par a share, so 股本 in CNY is the
    share count."""
    eq = _item(BS, "equity_attributable_to_parent", symbols)
    shares = _item(BS, "share_capital", symbols)
    keys = _keys(eq, shares)
    e, s = _at(eq, keys), _at(shares, keys)
    return _combine(e["v"] / s["v"].where(s["v"] > 0), e, s)


# --------------------------------------------------------------------------- bar level
RowsFn = Callable[[Sequence[str]], pd.DataFrame]


def _on_bars(rows: RowsFn) -> Callable[[Bars], pd.DataFrame]:
    def feature(bars: Bars) -> pd.DataFrame:
        return cn.point_in_time(rows(bars.symbols), bars.index, bars.symbols)

    feature.__doc__ = rows.__doc__
    return feature


def fund_book_to_price(bars: Bars) -> pd.DataFrame:
    """Book to price: point-in-time parent equity per share / the bar's close. On adjusted
    closes this is off by the adjustment factor; prefer unadjusted closes."""
    bvps = cn.point_in_time(book_per_share_rows(bars.symbols), bars.index, bars.symbols)
    close = bars.frame("close")
    return bvps / close.where(close > 0)


FUNDAMENTAL_FEATURES: dict[str, Callable[[Bars], pd.DataFrame]] = {
    "fund_roe": _on_bars(roe_rows),
    "fund_roa": _on_bars(roa_rows),
    "fund_gross_margin": _on_bars(gross_margin_rows),
    "fund_revenue_growth": _on_bars(revenue_growth_rows),
    "fund_profit_growth": _on_bars(profit_growth_rows),
    "fund_accruals": _on_bars(accruals_rows),
    "fund_debt_to_assets": _on_bars(debt_to_assets_rows),
    "fund_book_to_price": fund_book_to_price,
}

