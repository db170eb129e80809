"""A local Parquet cache of fetched bars, updated incrementally.

Layout: ``root/SOURCE/INTERVAL/{adj|raw}/SYMBOL.parquet``, one file per symbol in the standard
frame of `mltrader.data.sources.base` (symbols and source names are percent-encoded where
they are not filename-safe, e.g. ``BRK/B`` -> ``BRK%2FB``). The root is ``$MLTRADER_CACHE_DIR``
or ``~/.cache/mltrader``.

Each file also records, in its Parquet metadata, the time range that was *asked for*
(``fetched_start``/``fetched_end``), not just the bars received: a range with no bars (a
holiday week, a delisting) then counts as covered and is not fetched again and again.

Incremental update (`missing_ranges`): the covered range is one interval; a request fetches
only what lies before its start (head) and after its end (tail). A request entirely outside
the covered range fetches up to it, so the covered range stays one interval. Inner gaps (bars
a source did not return inside a covered range) are NOT refetched: they are what the source
had; `mltrader.data.quality` reports them. For daily bars the comparison uses the exchange's
sessions, so a request ending on a weekend or holiday is covered by data up to the last session.

Only settled data counts as covered: the part of a range later than ``settle`` (default one
hour) after the bar's end (daily: the session close; intraday: bar start + interval) is
fetched again next time, so a bar still forming, or one a vendor publishes late, is not lost.

Writes are atomic (a temporary file in the same folder, fsync, ``os.replace``): a crash leaves
the old file intact. A write merges with what is there (new rows win on overlap) under an
advisory lock of the symbol's folder (``flock``, POSIX), so processes writing the same or
different symbols do not lose each other's bars. Do not run `clear` while others write.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd

from mltrader.data.calendars import CONTINUOUS
from mltrader.data.schedules import calendar_schedule
from mltrader.data.sources.base import (
    COLUMNS,
    INTERVAL_MINUTES,
    INTERVALS,
    as_utc,
    check_interval,
    empty_frame,
    standardize,
)
from mltrader.errors import DataError

__all__ = ["BarCache", "ENV_VAR", "default_cache_dir"]

ENV_VAR = "MLTRADER_CACHE_DIR"
META_KEY = b"mltrader.cache"
FORMAT_VERSION = 1
TMP_SUFFIX = ".tmp"
SUFFIX = ".parquet"
CLEAR_HINT = "delete it or run `mltrader data cache --clear`"

Fetch = Callable[[pd.Timestamp, pd.Timestamp], pd.DataFrame]
Range = tuple[pd.Timestamp, pd.Timestamp]


def default_cache_dir() -> Path:
    """``$MLTRADER_CACHE_DIR`` when set, else ``~/.cache/mltrader``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mltrader"


def _safe(name: str, what: str) -> str:
    """A filename-safe, reversible form of a symbol or source name (percent-encoding)."""
    if not name or name != name.strip():
        raise DataError(f"cache: {what} {name!r} is empty or has surrounding spaces")
    out = quote(name, safe="")
    if out.startswith("."):  # no hidden files, no "." / ".."
        out = "%2E" + out[1:]
    return out


def _iso(t: pd.Timestamp | None) -> str | None:
    return None if t is None else pd.Timestamp(t).isoformat()


def _ts(s: str | None) -> pd.Timestamp | None:
    return None if s is None else as_utc(s, pd.NaT)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on a folder (flock on its descriptor; no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no inter-process lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); best effort elsewhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - e.g. not supported on this file system
        pass
    finally:
        os.close(fd)


class BarCache:
    """Per-symbol Parquet files of standard frames, with the covered range recorded.

    ``settle``: how long after a bar ends its data counts as final (see module doc).
    ``clock``: returns "now" as a UTC Timestamp (tests pass a fixed one).
    """

    def __init__(self, root: Path | str | None = None, settle: pd.Timedelta | str = "1h",
                 clock: Callable[[], pd.Timestamp] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.settle = pd.Timedelta(settle)
        self._clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))

    def __repr__(self) -> str:
        return f"BarCache({str(self.root)!r})"

    # ------------------------------------------------------------------ files
    def path(self, source: str, symbol: str, interval: str, adjusted: bool) -> Path:
        """``root/source/interval/{adj|raw}/SYMBOL.parquet`` (names made filename-safe)."""
        check_interval(interval)
        return (self.root / _safe(source, "source") / interval / ("adj" if adjusted else "raw")
                / (_safe(symbol, "symbol") + SUFFIX))

    def _read(self, path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The frame and metadata of one file; any damage -> DataError naming the file."""
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(META_KEY)
            meta = json.loads(raw) if raw else {}
            df = table.to_pandas()
            if not isinstance(df.index, pd.DatetimeIndex) or df.index.tz is None:
                raise ValueError("the index is not a tz-aware time index")
            missing = [c for c in COLUMNS if c not in df.columns]
            if missing:
                raise ValueError(f"columns {', '.join(missing)} are missing")
            if not isinstance(meta, dict):
                raise ValueError("the cache metadata is not a mapping")
        except Exception as e:  # pyarrow raises many kinds (ArrowInvalid, OSError, ...)
            raise DataError(f"cache file {path} is unreadable ({_one_line(e)}); "
                            f"{CLEAR_HINT}") from e
        out = df[list(COLUMNS)].astype("float64")
        out.index = pd.DatetimeIndex(out.index).tz_convert("UTC").as_unit("ns")
        return out, meta

    def _write(self, path: Path, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
        """Write atomically: a temp file in the same folder, fsync, then os.replace."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=True)
        md = dict(table.schema.metadata or {})
        md[META_KEY] = json.dumps(meta).encode()
        table = table.replace_schema_metadata(md)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                pq.write_table(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)

    # ------------------------------------------------------------------ read / write
    def load(self, source: str, symbol: str, interval: str, adjusted: bool) -> pd.DataFrame:
        """The cached standard frame (empty when nothing is cached)."""
        path = self.path(source, symbol, interval, adjusted)
        if not path.exists():
            return empty_frame()
        return self._read(path)[0]

    def coverage(self, source: str, symbol: str, interval: str,
                 adjusted: bool) -> Range | None:
        """The covered [start, end] (recorded, else the cached bars' span); None if nothing."""
        path = self.path(source, symbol, interval, adjusted)
        if not path.exists():
            return None
        meta = self._read_meta(path)  # the footer only: cheap for big files
        if meta.get("fetched_start") and meta.get("fetched_end"):
            return self._coverage(empty_frame(), meta)
        frame, meta = self._read(path)
        return self._coverage(frame, meta)

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any]:
        import pyarrow.parquet as pq

        try:
            raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
            meta = json.loads(raw) if raw else {}
            if not isinstance(meta, dict):
                raise ValueError("the cache metadata is not a mapping")
        except Exception as e:
            raise DataError(f"cache file {path} is unreadable ({_one_line(e)}); "
                            f"{CLEAR_HINT}") from e
        return meta

    @staticmethod
    def _coverage(frame: pd.DataFrame, meta: dict[str, Any]) -> Range | None:
        """The recorded range; for a file without one, the span of its bars."""
        a, b = _ts(meta.get("fetched_start")), _ts(meta.get("fetched_end"))
        if a is not None and b is not None:
            return a, b
        if frame.empty:
            return None
        return frame.index[0], frame.index[-1]

    def store(self, source: str, symbol: str, interval: str, adjusted: bool,
              frame: pd.DataFrame, covered: Range | None = None) -> None:
        """Merge ``frame`` into the file (new rows win on overlap) and write it atomically.

        ``covered``: the range this frame answers (what was asked for); default: its bars'
        span. It is joined with the recorded range into one interval (see module doc).
        """
        self._store(source, symbol, interval, adjusted, frame, covered)

    def _store(self, source: str, symbol: str, interval: str, adjusted: bool,
               frame: pd.DataFrame, covered: Range | None,
               default_cover: bool = True) -> pd.DataFrame:
        path = self.path(source, symbol, interval, adjusted)
        new = standardize(frame, f"cache:{source}", symbol)
        new.index = new.index.as_unit("ns")
        if covered is None and default_cover and not new.empty:
            covered = (new.index[0], new.index[-1])
        path.parent.mkdir(parents=True, exist_ok=True)
        with _folder_lock(path.parent):
            if path.exists():
                old, meta = self._read(path)
            else:
                old, meta = empty_frame(), {}
            old.index = old.index.as_unit("ns")
            span = self._coverage(old, meta)
            if covered is not None:
                c0, c1 = as_utc(covered[0], pd.NaT), as_utc(covered[1], pd.NaT)
                span = (c0, c1) if span is None else (min(span[0], c0), max(span[1], c1))
            if old.empty:
                merged = new
            elif new.empty:
                merged = old
            else:
                merged = pd.concat([old[~old.index.isin(new.index)], new]).sort_index()
            merged = merged[list(COLUMNS)].astype("float64")
            merged.index.name = "time"
            self._write(path, merged, {
                "version": FORMAT_VERSION, "source": source, "symbol": symbol,
                "interval": interval, "adjusted": bool(adjusted),
                "fetched_start": _iso(span[0]) if span else None,
                "fetched_end": _iso(span[1]) if span else None,
                "first": _iso(merged.index[0]) if len(merged) else None,
                "last": _iso(merged.index[-1]) if len(merged) else None,
                "rows": len(merged),
                "updated": _iso(self._clock()),
            })
        return merged

    # ------------------------------------------------------------------ what to fetch
    def missing_ranges(self, source: str, symbol: str, interval: str, adjusted: bool,
                       start: Any, end: Any, calendar: str | None = "XNYS") -> list[Range]:
        """The ranges to fetch so that the cache covers [start, end]: at most a head (before
        the covered range) and a tail (after it); [] when it is covered.

        Daily bars with a calendar: a range is needed only if it holds a session of that
        exchange whose close has passed, and it is narrowed to those sessions' labels.
        Intraday: the tail is needed only if a bar in it can have completed by now.
        """
        check_interval(interval)
        start, end = as_utc(start, pd.NaT), as_utc(end, pd.NaT)
        if start > end:
            raise DataError(f"cache: start {start} is after end {end}")
        cov = self.coverage(source, symbol, interval, adjusted)
        now = self._clock()
        if cov is None:
            gaps = [(start, end, True, True)]  # (from, to, from inclusive, to inclusive)
        else:
            a, b = cov
            gaps = []
            if start < a:
                gaps.append((start, a, True, False))
            if end > b:
                gaps.append((b, end, False, True))
        out: list[Range] = []
        for g0, g1, inc0, inc1 in gaps:
            if interval == "1d":
                labels = self._fetchable_sessions(g0, g1, calendar, now)
                keep = ((labels >= g0) if inc0 else (labels > g0)) & (
                    (labels <= g1) if inc1 else (labels < g1))
                labels = labels[keep]
                if len(labels):
                    out.append((labels[0], labels[-1]))
            else:
                period = pd.Timedelta(minutes=INTERVAL_MINUTES[interval])
                hi = min(g1, now - period) if inc1 else g1  # the tail ends where bars finish
                if hi > g0 or (hi == g0 and inc0):
                    out.append((g0, g1))
        return out

    @staticmethod
    def _fetchable_sessions(g0: pd.Timestamp, g1: pd.Timestamp, calendar: str | None,
                            now: pd.Timestamp) -> pd.DatetimeIndex:
        """Daily labels in [g0's date, g1] whose session has closed by ``now``."""
        if calendar is None or calendar in CONTINUOUS:  # by UTC day, not an exchange's hours
            days = pd.date_range(g0.normalize(), g1, freq="D", unit="ns")
            keep = days < now
            if calendar != "24/7":  # crypto trades every day; FX (and no calendar) weekdays
                keep &= days.day_of_week < 5
            return days[keep]
        sched = calendar_schedule(calendar, g0, g1)
        return sched.index[(sched["close"] <= now).to_numpy()]

    def _settled_end(self, end: pd.Timestamp, interval: str, calendar: str | None,
                     now: pd.Timestamp) -> pd.Timestamp:
        """The latest time t <= end such that every bar labelled <= t is final by ``now``."""
        if interval != "1d":
            return min(end, now - pd.Timedelta(minutes=INTERVAL_MINUTES[interval]) - self.settle)
        if calendar is None or calendar in CONTINUOUS:
            return min(end, now - pd.Timedelta(days=1) - self.settle)
        if end < now - pd.Timedelta(days=3) - self.settle:
            return end  # every session up to `end` closed long ago
        sched = calendar_schedule(calendar, min(end, now) - pd.Timedelta(days=10),
                                  now + pd.Timedelta(days=10))
        late = sched.index[(sched["close"] + self.settle > now).to_numpy()]
        if len(late) == 0:
            return min(end, now)
        return min(end, late[0] - pd.Timedelta(1, "ns"))

    def get(self, source: str, symbol: str, interval: str, adjusted: bool, start: Any,
            end: Any, fetch: Fetch, calendar: str | None = "XNYS") -> pd.DataFrame:
        """Bars with start <= time <= end: fetches only the missing ranges, stores them,
        and returns the cached frame cut to [start, end]."""
        start, end = as_utc(start, pd.NaT), as_utc(end, pd.NaT)
        cov = self.coverage(source, symbol, interval, adjusted)
        gaps = self.missing_ranges(source, symbol, interval, adjusted, start, end, calendar)
        merged = None
        for g0, g1 in gaps:
            frame = fetch(g0, g1)
            if cov is not None and g0 < cov[0]:  # head: joins the covered range at its start
                covered: Range | None = (min(start, g0), cov[0])
            else:  # tail (or first fetch): covered up to where the data is final
                c0 = min(start, g0) if cov is None else g0
                c1 = self._settled_end(end, interval, calendar, self._clock())
                covered = (c0, c1) if c1 >= c0 else None
            # covered None: nothing in it is final yet; keep the bars, record no coverage
            merged = self._store(source, symbol, interval, adjusted, frame, covered,
                                 default_cover=False)
        if merged is None:
            merged = self.load(source, symbol, interval, adjusted)
        return merged.loc[(merged.index >= start) & (merged.index <= end)]

    # ------------------------------------------------------------------ housekeeping
    def _files(self, source: str | None = None, pattern: str = "*" + SUFFIX) -> list[Path]:
        base = [self.root / _safe(source, "source")] if source else (
            sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else [])
        out: list[Path] = []
        for src in base:
            for interval in INTERVALS:
                for kind in ("adj", "raw"):
                    folder = src / interval / kind
                    if folder.is_dir():
                        out += sorted(p for p in folder.glob(pattern) if p.is_file())
        return out

    def clear(self, source: str | None = None) -> int:
        """Remove cached files (all, or one source's); returns how many files were removed.
        Leftover temporary files of interrupted writes are removed (and counted) too."""
        n = 0
        files = self._files(source) + self._files(source, f".*{SUFFIX}.*{TMP_SUFFIX}")
        for p in files:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        for p in {f.parent for f in files}:
            for folder in (p, p.parent, p.parent.parent):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
        return n

    def info(self) -> list[dict[str, Any]]:
        """One row per cached file: source, symbol, interval, adjusted, first, last, rows,
        bytes, fetched_start, fetched_end, and error (None, or why the file is unreadable)."""
        rows = []
        for p in self._files():
            row: dict[str, Any] = {
                "source": unquote(p.parent.parent.parent.name), "symbol": unquote(p.stem),
                "interval": p.parent.parent.name, "adjusted": p.parent.name == "adj",
                "first": None, "last": None, "rows": None, "bytes": p.stat().st_size,
                "fetched_start": None, "fetched_end": None, "error": None,
            }
            try:
                meta = self._read_meta(p)
                if "rows" not in meta:  # written by something else: count from the data
                    frame, meta = self._read(p)
                    meta = {"first": _iso(frame.index[0]) if len(frame) else None,
                            "last": _iso(frame.index[-1]) if len(frame) else None,
                            "rows": len(frame)}
            except Exception as e:
                row["error"] = f"unreadable ({_one_line(e)}); {CLEAR_HINT}"
            else:
                row.update(symbol=meta.get("symbol", row["symbol"]), rows=meta.get("rows"),
                           first=_ts(meta.get("first")), last=_ts(meta.get("last")),
                           fetched_start=_ts(meta.get("fetched_start")),
                           fetched_end=_ts(meta.get("fetched_end")))
            rows.append(row)
        return rows
