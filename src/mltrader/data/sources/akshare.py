"""China A-share daily bars, indices and index members through akshare (East Money, CSIndex).

akshare is imported only when a call needs it (``pip install 'mltrader[cn]'``). Calls used:
- ``stock_zh_a_hist(symbol, period="daily", start_date, end_date, adjust, timeout)`` (East
  Money klines) for stocks: `fetch` (standard frame; adjusted=True -> the ``adjust`` given to
  the constructor, "qfq" by default, or "hfq"; adjusted=False -> raw) and `fetch_long` (the
  canonical A-share long frame, always unadjusted);
- ``stock_zh_index_daily_em(symbol="sh000300", start_date, end_date)`` for indices;
- ``index_stock_cons_csindex(symbol="000300")`` for an index's current members.

Units: akshare's 成交量 (stocks) and index ``volume`` are in lots (手, 100 shares); both are
returned in shares. 成交额 is CNY, 换手率 and 涨跌幅 percent; the exchange's reference previous
close is close - 涨跌额. Dates are Shanghai session dates, labelled 00:00 UTC (base.py); a bar
of today is returned only after the 15:00 Shanghai close. Days missing from akshare's answer
are suspensions: no rows are invented for them.

Failures are one-line SourceErrors: package missing; the source unreachable (after
``max_retries`` retries with backoff); an error raised inside akshare (TypeError /
AttributeError: some akshare functions still call ``fillna(method=...)`` or
``DataFrame.append``, removed in pandas 3); an answer whose Chinese headers changed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from mltrader.data.cn_codes import akshare_code, normalize_code, normalize_index
from mltrader.data.sources.base import (
    SourceError,
    as_utc,
    check_interval,
    empty_frame,
    now_utc,
    standardize,
)
from mltrader.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["AkshareSource", "HIST_COLUMNS", "LONG_COLUMNS", "add_adj_factor", "empty_long"]

INSTALL_HINT = "pip install 'mltrader[cn]' (or: pip install akshare)"
PANDAS3_HINT = ("akshare still calls pandas APIs removed in pandas 3 (fillna(method=...), "
                "DataFrame.append) in some functions; pin pandas<3 (pip install "
                "'pandas>=2.2,<3') or use a function that works (stock_zh_a_hist)")
SHANGHAI = "Asia/Shanghai"
CLOSE_HOUR = 15  # the A-share session ends 15:00 Shanghai time
LOT = 100  # shares per lot (手)
# akshare's stock_zh_a_hist headers -> our names (振幅, the day's range, is not kept)
HIST_COLUMNS = {"日期": "date", "开盘": "open", "收盘": "close", "最高": "high", "最低": "low",
                "成交量": "volume", "成交额": "amount", "涨跌幅": "pct_chg",
                "涨跌额": "change", "换手率": "turnover"}
INDEX_COLUMNS = ("date", "open", "close", "high", "low", "volume")
LONG_COLUMNS: tuple[str, ...] = ("date", "symbol", "open", "high", "low", "close", "volume",
                                 "amount", "turnover", "preclose", "pct_chg", "trade_status",
                                 "is_st", "adj_factor")
ADJUSTS = {"qfq": "qfq", "hfq": "hfq"}


def _one_line(text: Any, limit: int = 160) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _akshare() -> Any:
    """The akshare module, imported on first use."""
    try:
        import akshare
    except ImportError as e:
        raise SourceError(f"akshare: the akshare package is not installed ({_one_line(e)}); "
                          f"{INSTALL_HINT}") from None
    return akshare


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the server could not be reached (requests, curl_cffi, sockets)."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    try:
        import requests

        errors.append(requests.exceptions.RequestException)
    except ImportError:  # pragma: no cover - akshare depends on requests
        pass
    try:
        from curl_cffi.requests.exceptions import RequestException as CurlError

        errors.append(CurlError)
    except ImportError:  # pragma: no cover - optional
        pass
    return tuple(errors)


def _bad_answer_errors() -> tuple[type[BaseException], ...]:
    """A body that is not the JSON / table akshare expects (checked before network errors:
    requests' JSONDecodeError is also a RequestException)."""
    errors: list[type[BaseException]] = [json.JSONDecodeError]
    try:
        import requests

        errors.append(requests.exceptions.JSONDecodeError)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return tuple(errors)


def add_adj_factor(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``adj_factor`` = per symbol cumulative product of close[t-1]/preclose[t],
    1.0 on each symbol's first row (close * adj_factor is a backward-adjusted series).
    Rows must be sorted by symbol, date."""
    out = frame.copy()
    prev = out.groupby("symbol", sort=False)["close"].shift(1)
    step = (prev / out["preclose"]).where(prev.notna() & out["preclose"].gt(0), 1.0)
    out["adj_factor"] = step.groupby(out["symbol"], sort=False).cumprod().round(10)
    return out


def _ymd(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y%m%d")


def _dates(col: pd.Series, fn: str) -> pd.DatetimeIndex:
    """akshare's date column (datetime.date objects or strings) as naive dates."""
    idx = pd.DatetimeIndex(pd.to_datetime(col, errors="coerce"))
    if idx.isna().any():
        bad = col[np.asarray(idx.isna())].iloc[0]
        raise SourceError(f"akshare: {fn} returned a date {bad!r} that is not a date; "
                          "akshare's output format may have changed: update akshare")
    return idx.tz_localize(None).normalize() if idx.tz is not None else idx.normalize()


class AkshareSource:
    """akshare as a `Source` (daily A-share bars), plus the long frame, indices and members."""

    name = "akshare"

    def __init__(self, adjust: str = "qfq", max_retries: int = 2, backoff: float = 2.0,
                 timeout: float | None = 30.0, sleep: Callable[[float], Any] = time.sleep,
                 now: Callable[[], pd.Timestamp] = now_utc, module: Any = None):
        if adjust not in ADJUSTS:
            raise DataError(f"akshare: adjust must be 'qfq' or 'hfq' (what adjusted=True "
                            f"means), not {adjust!r}")
        self.adjust = adjust
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.timeout = timeout
        self._sleep = sleep
        self._now = now
        self._module = module  # tests may inject a stand-in for the akshare module

    def __repr__(self) -> str:
        return f"AkshareSource(adjust={self.adjust!r}, max_retries={self.max_retries})"

    # -- calling akshare -------------------------------------------------------------------

    def _call(self, fn: str, what: str, **kwargs: Any) -> pd.DataFrame:
        """``akshare.<fn>(**kwargs)`` with every failure as one SourceError line."""
        ak = self._module if self._module is not None else _akshare()
        func = getattr(ak, fn, None)
        if func is None:
            raise SourceError(f"akshare: this akshare has no {fn}(); {INSTALL_HINT} "
                              "(akshare>=1.19.5)")
        network, bad = _network_errors(), _bad_answer_errors()
        attempts = self.max_retries + 1
        last = "no answer"
        for attempt in range(attempts):
            try:
                out = func(**kwargs)
            except bad as e:
                raise SourceError(f"akshare: {fn}({what}): the server's answer is not what "
                                  f"akshare expects ({type(e).__name__}: {_one_line(e, 100)}); "
                                  "the provider may have changed its format: update akshare "
                                  "or try later") from None
            except network as e:
                last = f"{type(e).__name__}: {_one_line(e, 120) or 'no detail'}"
            except (TypeError, AttributeError) as e:
                detail = f"{type(e).__name__}: {_one_line(e, 120)}"
                raise SourceError(f"akshare: {fn}({what}) failed inside akshare ({detail}); "
                                  f"{PANDAS3_HINT}") from None
            except (KeyError, IndexError, ValueError) as e:
                raise SourceError(f"akshare: {fn}({what}): unexpected answer "
                                  f"({type(e).__name__}: {_one_line(e, 100)}); the provider "
                                  "may have changed its format or does not know the code: "
                                  "check the code, update akshare") from None
            else:
                if not isinstance(out, pd.DataFrame):
                    raise SourceError(f"akshare: {fn}({what}) returned a "
                                      f"{type(out).__name__}, not a table; update akshare")
                return out
            if attempt + 1 < attempts:
                delay = self.backoff * (2 ** attempt)
                log.warning("akshare: %s(%s): %s; retry %d/%d in %.0f s", fn, what, last,
                            attempt + 1, self.max_retries, delay)
                self._sleep(delay)
        raise SourceError(f"akshare: {fn}({what}): the source is unreachable after {attempts} "
                          f"tries (last: {last}); check the network (East Money must be "
                          "reachable) or try later")

    def _hist(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp,
              adjust: str) -> pd.DataFrame:
        """stock_zh_a_hist with English names: date index (naive), numeric columns, or an
        empty frame. Raises SourceError if a needed Chinese header is missing."""
        try:
            code = akshare_code(symbol)
        except DataError as e:
            raise SourceError(f"akshare: {e}") from None
        raw = self._call("stock_zh_a_hist", code, symbol=code, period="daily",
                         start_date=_ymd(start), end_date=_ymd(end), adjust=adjust,
                         timeout=self.timeout)
        if raw.empty:
            return pd.DataFrame(columns=list(HIST_COLUMNS.values()))
        missing = [c for c in HIST_COLUMNS if c not in raw.columns]
        if missing:
            raise SourceError(
                f"akshare: stock_zh_a_hist({code}) has no column(s) {', '.join(missing)} "
                f"(got {', '.join(map(str, raw.columns))}); akshare's output format changed: "
                "pin akshare==1.19.5 or update mltrader")
        df = raw[list(HIST_COLUMNS)].rename(columns=HIST_COLUMNS)
        out = pd.DataFrame(index=_dates(df["date"], "stock_zh_a_hist"))
        for c in HIST_COLUMNS.values():
            if c != "date":
                out[c] = pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64)
        out["volume"] = out["volume"] * LOT
        out = out[~out.index.duplicated(keep="last")].sort_index()
        return self._complete(out, start, end)

    def _complete(self, df: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
                  ) -> pd.DataFrame:
        """Rows with start <= date <= end whose 15:00 Shanghai close has passed."""
        now = as_utc(self._now(), now_utc())
        closes = (df.index + pd.Timedelta(hours=CLOSE_HOUR)).tz_localize(SHANGHAI)
        a, b = start.tz_localize(None).normalize(), end.tz_localize(None).normalize()
        keep = (df.index >= a) & (df.index <= b) & np.asarray(closes <= now)
        return df.loc[keep]

    # -- Source ----------------------------------------------------------------------------

    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp, interval: str,
              adjusted: bool = True) -> pd.DataFrame:
        """One stock's completed daily bars, start <= date <= end, in the standard frame
        (adjusted=True: the constructor's qfq/hfq; volume in shares)."""
        check_interval(interval)
        if interval != "1d":
            raise SourceError(f"akshare: {symbol}: only daily bars (1d) are served here, not "
                              f"{interval}; use interval 1d or another source")
        now = as_utc(self._now(), now_utc())
        start, end = as_utc(start, now), as_utc(end, now)
        if start > end:
            return empty_frame()
        df = self._hist(symbol, start, end, self.adjust if adjusted else "")
        if df.empty:
            return empty_frame()
        out = df[["open", "high", "low", "close", "volume"]]
        out.index = pd.DatetimeIndex(out.index).tz_localize("UTC")
        return standardize(out, self.name, symbol)

    # -- A-share extras --------------------------------------------------------------------

    def fetch_long(self, symbol: str, start: Any, end: Any) -> pd.DataFrame:
        """One stock's unadjusted daily rows in the canonical A-share long frame
        (`LONG_COLUMNS`; see shared/data/ashare/README.md), sorted by date."""
        try:
            code = normalize_code(symbol)
        except DataError as e:
            raise SourceError(f"akshare: {e}") from None
        now = as_utc(self._now(), now_utc())
        start, end = as_utc(start, now), as_utc(end, now)
        if start > end:
            return empty_long()
        df = self._hist(code, start, end, "")
        if df.empty:
            return empty_long()
        out = pd.DataFrame({
            "date": pd.DatetimeIndex(df.index).as_unit("ns"),
            "symbol": code,
            "open": df["open"].to_numpy(), "high": df["high"].to_numpy(),
            "low": df["low"].to_numpy(), "close": df["close"].to_numpy(),
            "volume": df["volume"].to_numpy(), "amount": df["amount"].to_numpy(),
            "turnover": df["turnover"].to_numpy(),
            "preclose": (df["close"] - df["change"]).round(4).to_numpy(),
            "pct_chg": df["pct_chg"].to_numpy(),
            "trade_status": np.ones(len(df), dtype=np.int64),
            "is_st": np.zeros(len(df), dtype=np.int64),
        })
        out["symbol"] = out["symbol"].astype("str")
        return add_adj_factor(out)[list(LONG_COLUMNS)]

    def fetch_index(self, code: str, start: Any, end: Any) -> pd.DataFrame:
        """An index's daily OHLCV in the standard frame (volume in shares): "000300" CSI
        300, "000001" or "000001.SH" SSE Composite, "399001" / "sz399001" SZSE Component."""
        try:
            norm = normalize_index(code)
        except DataError as e:
            raise SourceError(f"akshare: {e}") from None
        digits, exch = norm.split(".")
        now = as_utc(self._now(), now_utc())
        start, end = as_utc(start, now), as_utc(end, now)
        if start > end:
            return empty_frame()
        em = f"{exch.lower()}{digits}"
        raw = self._call("stock_zh_index_daily_em", em, symbol=em, start_date=_ymd(start),
                         end_date=_ymd(end))
        if raw.empty:
            return empty_frame()
        missing = [c for c in INDEX_COLUMNS if c not in raw.columns]
        if missing:
            raise SourceError(
                f"akshare: stock_zh_index_daily_em({em}) has no column(s) "
                f"{', '.join(missing)} (got {', '.join(map(str, raw.columns))}); akshare's "
                "output format changed: pin akshare==1.19.5 or update mltrader")
        df = pd.DataFrame(index=_dates(raw["date"], "stock_zh_index_daily_em"))
        for c in ("open", "high", "low", "close", "volume"):
            df[c] = pd.to_numeric(raw[c], errors="coerce").to_numpy(np.float64)
        df["volume"] = df["volume"] * LOT
        df = self._complete(df[~df.index.duplicated(keep="last")].sort_index(), start, end)
        df.index = pd.DatetimeIndex(df.index).tz_localize("UTC")
        return standardize(df, self.name, norm)

    def index_constituents(self, code: str = "000300") -> list[str]:
        """The index's current members (CSIndex's list), as sorted normal codes."""
        try:
            digits = normalize_index(code).split(".")[0]
        except DataError as e:
            raise SourceError(f"akshare: {e}") from None
        raw = self._call("index_stock_cons_csindex", digits, symbol=digits)
        col = "成分券代码"
        if col not in raw.columns:
            raise SourceError(
                f"akshare: index_stock_cons_csindex({digits}) has no column {col} (got "
                f"{', '.join(map(str, raw.columns))}); akshare's output format changed: pin "
                "akshare==1.19.5 or update mltrader")
        if raw.empty:
            raise SourceError(f"akshare: index_stock_cons_csindex({digits}) returned no "
                              "members; check the index code (CSI 300: 000300)")
        out = set()
        for v in raw[col].astype(str):
            try:
                out.add(normalize_code(v))
            except DataError as e:
                raise SourceError(f"akshare: index_stock_cons_csindex({digits}): member "
                                  f"{e}") from None
        return sorted(out)


def empty_long() -> pd.DataFrame:
    """The canonical long frame with no rows (typed columns)."""
    cols: dict[str, pd.Series] = {"date": pd.Series([], dtype="datetime64[ns]"),
                                  "symbol": pd.Series([], dtype="str")}
    for c in LONG_COLUMNS[2:]:
        cols[c] = pd.Series([], dtype="int64" if c in ("trade_status", "is_st") else "float64")
    return pd.DataFrame(cols)

