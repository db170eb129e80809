"""China A-share long frames: fetched (akshare, cached) or read from a user's file, and checked.

The canonical long frame (shared/data/ashare/README.md) has one row per symbol and traded
day: date, symbol (600519.SH), open, high, low, close (unadjusted CNY), volume (shares),
amount (CNY), turnover (%), preclose (the exchange's reference previous close), pct_chg (%),
trade_status (1 traded, 0 suspended), is_st (0/1), adj_factor (per symbol cumulative product
of close[t-1]/preclose[t], 1.0 on the first row). It is what `mltrader.data.ashare` consumes.

Cache: ``<cache root>/ashare/<source>/<SYMBOL>.parquet`` under the root `BarCache` uses
(``$MLTRADER_CACHE_DIR`` or ``~/.cache/mltrader``), one file per symbol holding a contiguous
range and the range asked for (so days without rows count as covered). A request inside the
covered range needs no network; otherwise the union of both ranges is fetched again (one
East Money request per symbol) and replaces the file. Only settled days are recorded as
covered (a day is settled at 16:00 Shanghai, an hour after the close).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mltrader.data.cache import default_cache_dir
from mltrader.data.cn_codes import FORMS, normalize_code
from mltrader.data.sources.akshare import (
    LONG_COLUMNS,
    AkshareSource,
    add_adj_factor,
    empty_long,
)
from mltrader.data.sources.base import SourceError, as_utc, now_utc
from mltrader.errors import DataError

__all__ = ["CACHE_FOLDER", "check_ashare", "fetch_ashare", "read_ashare_file"]

CACHE_FOLDER = "ashare"
META_KEY = b"mltrader.ashare"
SETTLE = pd.Timedelta(hours=16)  # a Shanghai session date is final at 16:00 local
PRICES = ("open", "high", "low", "close")
TOL = 1e-6  # price comparisons: the data have 2-4 decimals

# header (lower case, stripped) -> canonical name; Chinese headers as akshare / vendors write them
ALIASES: dict[str, str] = {
    "date": "date", "trade_date": "date", "datetime": "date", "日期": "date",
    "交易日期": "date", "交易日": "date",
    "symbol": "symbol", "code": "symbol", "ts_code": "symbol", "股票代码": "symbol",
    "代码": "symbol", "证券代码": "symbol",
    "open": "open", "开盘": "open", "开盘价": "open",
    "high": "high", "最高": "high", "最高价": "high",
    "low": "low", "最低": "low", "最低价": "low",
    "close": "close", "收盘": "close", "收盘价": "close",
    "volume": "volume", "成交量": "volume",
    "amount": "amount", "成交额": "amount",
    "turnover": "turnover", "turn": "turnover", "换手率": "turnover",
    "preclose": "preclose", "pre_close": "preclose", "前收盘": "preclose", "昨收": "preclose",
    "前收盘价": "preclose",
    "pct_chg": "pct_chg", "pctchg": "pct_chg", "涨跌幅": "pct_chg",
    "trade_status": "trade_status", "tradestatus": "trade_status",
    "is_st": "is_st", "isst": "is_st",
    "adj_factor": "adj_factor",
}
LOT_HEADERS = frozenset({"成交量"})  # akshare's Chinese volume header counts lots (手)
REQUIRED = ("date", "symbol", "open", "high", "low", "close", "volume")


# --------------------------------------------------------------------------- fetching
def _cache_root(cache: Any) -> Path | None:
    """The cache root from fetch_ashare's `cache` argument (None: no cache)."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return default_cache_dir()
    if isinstance(cache, (str, os.PathLike)):
        return Path(cache).expanduser()
    root = getattr(cache, "root", None)  # a BarCache: share its root
    if root is not None:
        return Path(root)
    raise DataError(f"cache must be True, False, a folder or a BarCache, not {cache!r}")


def _safe(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name.startswith("."):
        raise DataError(f"cache: {name!r} is not a safe file name; use letters, digits, . _ -")
    return name


def _settled(end: pd.Timestamp, now: pd.Timestamp) -> pd.Timestamp:
    """The last date <= end whose bar is final by `now` (16:00 Shanghai of that date)."""
    local = now.tz_convert("Asia/Shanghai").tz_localize(None)
    last = (local - SETTLE).normalize()
    return min(end.tz_localize(None).normalize(), last)


def _read_cached(path: Path) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The cached long frame and its metadata, or None when there is no file."""
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
        df = table.to_pandas()
        missing = [c for c in LONG_COLUMNS if c not in df.columns]
        if missing or not meta.get("fetched_start") or not meta.get("fetched_end"):
            raise ValueError(f"missing {', '.join(missing) or 'the covered range'}")
    except Exception as e:  # pyarrow raises many kinds
        raise DataError(f"cache file {path} is unreadable ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:150]}); delete it") from e
    df["symbol"] = df["symbol"].astype("str")
    df["date"] = pd.to_datetime(df["date"]).astype("datetime64[ns]")
    return df[list(LONG_COLUMNS)], meta


def _write_cached(path: Path, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write atomically (temp file in the same folder, then os.replace)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    md = dict(table.schema.metadata or {})
    md[META_KEY] = json.dumps(meta).encode()
    table = table.replace_schema_metadata(md)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(table, fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _one_symbol(src: Any, code: str, start: pd.Timestamp, end: pd.Timestamp,
                root: Path | None, now: pd.Timestamp) -> pd.DataFrame:
    a, b = start.tz_localize(None).normalize(), end.tz_localize(None).normalize()
    if root is None:
        return src.fetch_long(code, start, end)
    path = root / CACHE_FOLDER / _safe(str(getattr(src, "name", "akshare"))) / (
        _safe(code) + ".parquet")
    cached = _read_cached(path)
    if cached is not None:
        df, meta = cached
        c0, c1 = pd.Timestamp(meta["fetched_start"]), pd.Timestamp(meta["fetched_end"])
        if c0 <= a and b <= c1:
            return df.loc[(df["date"] >= a) & (df["date"] <= b)]
        a2, b2 = min(a, c0), max(b, c1)
    else:
        a2, b2 = a, b
    fresh = src.fetch_long(code, pd.Timestamp(a2, tz="UTC"), pd.Timestamp(b2, tz="UTC"))
    settled = _settled(pd.Timestamp(b2, tz="UTC"), now)
    if settled >= a2:
        _write_cached(path, fresh, {"symbol": code, "source": getattr(src, "name", ""),
                                    "fetched_start": a2.isoformat(),
                                    "fetched_end": settled.isoformat(),
                                    "rows": len(fresh), "updated": now.isoformat()})
    return fresh.loc[(fresh["date"] >= a) & (fresh["date"] <= b)]


def fetch_ashare(symbols: str | Iterable[Any], start: Any, end: Any = None, *,
                 cache: Any = True, source: Any = None,
                 now: Callable[[], pd.Timestamp] = now_utc) -> pd.DataFrame:
    """The canonical long frame of many A-shares, unadjusted, sorted by symbol and date.

    `source`: anything with ``fetch_long(symbol, start, end)`` (default `AkshareSource`).
    `cache`: True (the default cache root), False, a folder, or a BarCache (its root).
    A symbol with no rows in the range is an error naming it.
    """
    items = [symbols] if isinstance(symbols, (str, int)) else list(symbols)
    if not items:
        raise DataError("no A-share symbols to fetch; pass e.g. ['600519.SH', '000001.SZ']")
    codes = list(dict.fromkeys(normalize_code(s) for s in items))
    t_now = as_utc(now(), now_utc())
    t0 = as_utc(start, t_now - pd.Timedelta(days=365))
    t1 = as_utc(end, t_now)
    if t0 > t1:
        raise DataError(f"start {t0.date()} is after end {t1.date()}; swap them")
    src = source if source is not None else AkshareSource()
    root = _cache_root(cache)
    frames, empty = [], []
    for code in codes:
        df = _one_symbol(src, code, t0, t1, root, t_now)
        if df.empty:
            empty.append(code)
        frames.append(df)
    if empty:
        raise SourceError(f"{getattr(src, 'name', 'source')}: no rows for "
                          f"{', '.join(empty)} between {t0.date()} and {t1.date()}; check "
                          "the codes (listed then? delisted?) and the dates")
    out = pd.concat(frames, ignore_index=True) if frames else empty_long()
    out["date"] = pd.to_datetime(out["date"]).astype("datetime64[ns]")
    out["symbol"] = out["symbol"].astype("str")
    out = out.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
    return add_adj_factor(out)[list(LONG_COLUMNS)]  # 1.0 on each symbol's first row asked


# --------------------------------------------------------------------------- user files
def _read_table(path: Path) -> pd.DataFrame:
    """A CSV (.csv, .csv.gz; UTF-8 or GBK) or Parquet file, every CSV cell as text."""
    name = path.name.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file; give the path of a CSV or Parquet file")
    if name.endswith((".parquet", ".pq")):
        try:
            df = pd.read_parquet(path)
        except Exception as e:
            raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}); "
                            "check the file") from e
        named = [n for n in df.index.names if n is not None]
        return df.reset_index() if named else df.reset_index(drop=True)  # date as index
    if not name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
        raise DataError(f"{path}: unknown file type; use .csv, .csv.gz or .parquet")
    last: Exception | None = None
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding=enc)
        except UnicodeDecodeError as e:
            last = e
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
            raise DataError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:120]}); "
                            "check the file") from e
    raise DataError(f"{path}: neither UTF-8 nor GBK text ({last}); save it as UTF-8")


def _numbers(df: pd.DataFrame, col: str, where: str) -> pd.Series:
    """A column as float64; a non-empty cell that is no number is an error naming it."""
    s = df[col]
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.astype("float64")
    text = s.astype("str").str.strip().str.replace(",", "", regex=False)
    text = text.where(~text.isin(["", "nan", "NaN", "None", "NA", "null", "--"]))
    out = pd.to_numeric(text, errors="coerce")
    bad = out.isna() & text.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{where}: row {i + 2}, column {col}: {s.iloc[i]!r} is not a number; "
                        "fix or empty that cell")
    return out.astype("float64")


def _parse_dates(s: pd.Series, where: str) -> pd.Series:
    text = s.astype("str").str.strip()
    if text.str.fullmatch(r"\d{8}").all():
        out = pd.to_datetime(text, format="%Y%m%d", errors="coerce")
    else:
        out = pd.to_datetime(text, errors="coerce", format="mixed")
    if out.isna().any():
        i = int(np.flatnonzero(out.isna().to_numpy())[0])
        raise DataError(f"{where}: row {i + 2}: date {s.iloc[i]!r} is not a date; use "
                        "YYYY-MM-DD")
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_localize(None)
    return out.dt.normalize().astype("datetime64[ns]")


def read_ashare_file(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A user's A-share long file (CSV, .csv.gz or Parquet) as the canonical long frame.

    Needs a date, a code (symbol / code / ts_code / 股票代码, in any spelling of
    `normalize_code`, leading zeros or not) and open/high/low/close/volume (English or
    akshare's Chinese headers; 成交量 is read as lots of 100 shares). Missing optional
    columns are derived: preclose = the symbol's previous close, pct_chg from it, trade_status
    1 (0 where volume is 0), is_st 0, amount/turnover NaN, adj_factor from preclose.
    Checked with `check_ashare` (errors raise DataError).
    """
    p = Path(path).expanduser()
    where = str(p)
    raw = _read_table(p)
    names: dict[str, str] = {}
    lots = False
    for col in raw.columns:
        key = ALIASES.get(str(col).strip().lower())
        if key is None:
            continue
        if key in names.values():
            first = next(k for k, v in names.items() if v == key)
            raise DataError(f"{where}: columns {first!r} and {col!r} both mean {key}; "
                            "keep one")
        names[col] = key
        lots = lots or (key == "volume" and str(col).strip() in LOT_HEADERS)
    missing = [c for c in REQUIRED if c not in names.values()]
    if missing:
        raise DataError(f"{where}: no {', '.join(missing)} column (have "
                        f"{', '.join(map(str, raw.columns))}); name them date, symbol (or "
                        "code / ts_code / 股票代码), open, high, low, close, volume (shares)")
    df = raw[list(names)].rename(columns=names)
    if df.empty:
        raise DataError(f"{where}: the file has no rows")
    out = pd.DataFrame({"date": _parse_dates(df["date"], where)})
    codes = df["symbol"].astype("str").str.strip()
    uniq: dict[str, str] = {}
    for c in codes.unique():
        try:
            uniq[c] = normalize_code(c)
        except DataError as e:
            raise DataError(f"{where}: column symbol: {e} (accepted: {FORMS})") from None
    out["symbol"] = codes.map(uniq).astype("str")
    for c in ("open", "high", "low", "close", "volume", "amount", "turnover", "preclose",
              "pct_chg", "trade_status", "is_st", "adj_factor"):
        out[c] = _numbers(df, c, where) if c in df else np.nan
    if lots:
        out["volume"] = out["volume"] * 100
    out = out.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
    prev = out.groupby("symbol")["close"].shift(1)
    out["preclose"] = out["preclose"].fillna(prev)
    pct = (out["close"] / out["preclose"] - 1.0) * 100.0
    out["pct_chg"] = out["pct_chg"].fillna(pct)
    traded = np.where(out["volume"].eq(0), 0, 1)
    out["trade_status"] = out["trade_status"].fillna(pd.Series(traded, index=out.index))
    out["is_st"] = out["is_st"].fillna(0)
    for c in ("trade_status", "is_st"):
        vals = out[c]
        if not vals.isin([0, 1]).all():
            i = int(np.flatnonzero(~vals.isin([0, 1]).to_numpy())[0])
            raise DataError(f"{where}: {out['symbol'].iat[i]} {out['date'].iat[i].date()}: "
                            f"{c} is {_show(vals.iat[i])}; use 0 or 1")
        out[c] = vals.astype("int64")
    if out["adj_factor"].isna().all():
        out = add_adj_factor(out)
    elif out["adj_factor"].isna().any():
        i = int(np.flatnonzero(out["adj_factor"].isna().to_numpy())[0])
        raise DataError(f"{where}: {out['symbol'].iat[i]} {out['date'].iat[i].date()}: "
                        "adj_factor is empty; fill it on every row or drop the column")
    out = out[list(LONG_COLUMNS)]
    check_ashare(out, where)
    return out


# --------------------------------------------------------------------------- checks
def _show(value: Any) -> str:
    """A cell for a message: numbers plainly (1.5, not np.float64(1.5)), text quoted."""
    return repr(value) if isinstance(value, str) else str(value)


def _row(df: pd.DataFrame, mask: Any) -> str:
    i = int(np.flatnonzero(np.asarray(mask))[0])
    return f"{df['symbol'].iat[i]} {pd.Timestamp(df['date'].iat[i]).date()}"


def check_ashare(frame: pd.DataFrame, where: str = "A-share data") -> list[str]:
    """Quality checks of a canonical long frame: raises DataError (naming the first bad row)
    on missing columns, duplicate (symbol, date), non-positive or missing prices, high below
    max(open, close) or low above min(open, close), negative volume; returns notes on what
    is legal but worth knowing (suspensions, ex-rights days, empty optional columns).
    Price-limit violations are counted by the market-rules code, not here."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: no {', '.join(missing)} column; the canonical A-share "
                        f"columns are {', '.join(LONG_COLUMNS)}")
    df = frame.reset_index(drop=True)
    if df.empty:
        return [f"{where}: no rows"]
    dup = df.duplicated(["symbol", "date"]).to_numpy()
    if dup.any():
        raise DataError(f"{where}: {_row(df, dup)} appears {int(dup.sum()) + 1}+ times "
                        "(duplicate symbol and date); keep one row per symbol and day")
    px = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64) for c in PRICES}
    for c in PRICES:
        bad = ~(px[c] > 0)
        if bad.any():
            raise DataError(f"{where}: {_row(df, bad)}: {c} is "
                            f"{_show(df[c].iat[int(np.flatnonzero(bad)[0])])}; prices must be "
                            "positive numbers (drop the row if the day did not trade)")
    hi_bad = px["high"] < np.maximum(px["open"], px["close"]) - TOL
    if hi_bad.any():
        i = int(np.flatnonzero(hi_bad)[0])
        raise DataError(f"{where}: {_row(df, hi_bad)}: high {px['high'][i]} is below "
                        f"max(open {px['open'][i]}, close {px['close'][i]}); fix the row "
                        "(columns swapped?)")
    lo_bad = px["low"] > np.minimum(px["open"], px["close"]) + TOL
    if lo_bad.any():
        i = int(np.flatnonzero(lo_bad)[0])
        raise DataError(f"{where}: {_row(df, lo_bad)}: low {px['low'][i]} is above "
                        f"min(open {px['open'][i]}, close {px['close'][i]}); fix the row "
                        "(columns swapped?)")
    vol = pd.to_numeric(df["volume"], errors="coerce").to_numpy(np.float64)
    neg = vol < 0
    if neg.any():
        raise DataError(f"{where}: {_row(df, neg)}: volume {vol[neg][0]} is negative; "
                        "volume is shares traded (>= 0)")
    notes: list[str] = []
    n_sym = df["symbol"].nunique()
    notes.append(f"{where}: {len(df)} rows, {n_sym} symbols, "
                 f"{pd.Timestamp(df['date'].min()).date()} .. "
                 f"{pd.Timestamp(df['date'].max()).date()}")
    if "trade_status" in df:
        susp = int((pd.to_numeric(df["trade_status"], errors="coerce") == 0).sum())
        if susp:
            notes.append(f"{susp} suspended rows (trade_status 0)")
    if np.isnan(vol).any():
        notes.append(f"{int(np.isnan(vol).sum())} rows without volume")
    if "preclose" in df:
        d = df.sort_values(["symbol", "date"], kind="stable")
        prev = d.groupby("symbol")["close"].shift(1)
        pre = pd.to_numeric(d["preclose"], errors="coerce")
        ex = (prev.notna() & pre.notna() & ((prev - pre).abs() > 0.005)).sum()
        if ex:
            notes.append(f"{int(ex)} ex-rights days (preclose differs from the previous "
                         "close; adj_factor covers them)")
    for c in ("amount", "turnover"):
        if c in df and pd.to_numeric(df[c], errors="coerce").isna().all():
            notes.append(f"no {c} data (column empty)")
    return notes
