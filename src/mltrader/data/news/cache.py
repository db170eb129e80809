"""A local Parquet cache of fetched news, so a covered range is never asked for twice.

Layout: ``root/news/PROVIDER/SYMBOL.parquet``: the items of one symbol (an item about several
symbols is kept in each of their files) plus, in the Parquet metadata, the range that was
*asked for* (``fetched_start``/``fetched_end``): a quiet week counts as covered. A request
fetches only what lies before (head) and after (tail) the covered range, so that range stays
one interval. Items published less than ``settle`` (default 15 minutes) before now may still
arrive late, so a range is recorded as covered only up to ``now - settle``.
Yahoo serves only its latest items: a covered range there means "what Yahoo had when asked".
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from mltrader.data.news.base import NewsError, NewsSource, check_range, utc
from mltrader.data.news.frame import NEWS_COLUMNS, empty_news, validate_news

META_KEY = b"mltrader.news"
Range = tuple[pd.Timestamp, pd.Timestamp]


def _safe(name: str) -> str:
    out = quote(name, safe="")
    return "%2E" + out[1:] if out.startswith(".") else out


class NewsCache:
    """Per-provider, per-symbol Parquet files of canonical news with the covered range."""

    def __init__(self, root: str | Path | None = None, settle: str | pd.Timedelta = "15min",
                 clock: Callable[[], pd.Timestamp] | None = None) -> None:
        if root is None:
            from mltrader.data.cache import default_cache_dir

            root = default_cache_dir()
        self.root = Path(root).expanduser()
        self.settle = pd.Timedelta(settle)
        self._clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))

    def __repr__(self) -> str:
        return f"NewsCache({str(self.root)!r})"

    def path(self, provider: str, symbol: str) -> Path:
        return self.root / "news" / _safe(provider) / (_safe(symbol.upper()) + ".parquet")

    # ------------------------------------------------------------------ files
    def _read(self, path: Path) -> tuple[pd.DataFrame, Range | None]:
        import pyarrow.parquet as pq

        if not path.exists():
            return empty_news(), None
        try:
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
            df = validate_news(table.to_pandas())
            cov = (utc(meta["fetched_start"]), utc(meta["fetched_end"])) if meta.get(
                "fetched_start") else None
        except Exception as e:
            text = " ".join(str(e).split())[:200]
            raise NewsError(f"news cache file {path} is unreadable ({type(e).__name__}: "
                            f"{text}); delete it and fetch again") from None
        return df, cov

    def _write(self, path: Path, df: pd.DataFrame, cov: Range | None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = df[NEWS_COLUMNS].copy()
        out["symbols"] = out["symbols"].map(list)
        table = pa.Table.from_pandas(out, preserve_index=False)
        meta = {"fetched_start": cov[0].isoformat() if cov else None,
                "fetched_end": cov[1].isoformat() if cov else None, "rows": len(out)}
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                pq.write_table(table, fh)
            os.replace(tmp, path)  # atomic: a crash leaves the old file
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # ------------------------------------------------------------------ api
    def coverage(self, provider: str, symbol: str) -> Range | None:
        """The range already fetched for this symbol, or None."""
        return self._read(self.path(provider, symbol))[1]

    def missing(self, provider: str, symbol: str, start: Any, end: Any) -> list[Range]:
        """The ranges to fetch so that [start, end] is covered: a head and/or a tail."""
        a, b = check_range(start, end)
        cov = self.coverage(provider, symbol)
        if cov is None:
            return [(a, b)]
        out = []
        if a < cov[0]:
            out.append((a, cov[0]))
        if b > cov[1]:
            out.append((cov[1], b))
        return out

    def store(self, provider: str, symbol: str, items: pd.DataFrame, covered: Range) -> None:
        """Merge `items` (those about `symbol`) into its file; extend the covered range."""
        sym = symbol.upper()
        path = self.path(provider, sym)
        old, cov = self._read(path)
        new = items[items["symbols"].map(lambda s: sym in s)] if len(items) else items
        c0, c1 = covered
        if c1 > self._clock() - self.settle:  # recent items may still come
            c1 = max(c0, self._clock() - self.settle)
        span = (c0, c1) if cov is None else (min(cov[0], c0), max(cov[1], c1))
        frames = [f for f in (new, old) if len(f)]  # new first: a re-fetched item wins
        merged = validate_news(pd.concat(frames)) if frames else empty_news()
        self._write(path, merged, span)

    def load(self, provider: str, symbols: Sequence[str], start: Any, end: Any) -> pd.DataFrame:
        """The cached items of `symbols` in [start, end] (each item once)."""
        a, b = check_range(start, end)
        frames = [self._read(self.path(provider, s))[0] for s in symbols]
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty_news()
        df = validate_news(pd.concat(frames))
        return df[(df["time"] >= a) & (df["time"] <= b)].reset_index(drop=True)

    def fetch(self, source: NewsSource, symbols: Sequence[str], start: Any,
              end: Any) -> pd.DataFrame:
        """`source.fetch` through the cache: only the missing ranges are fetched (symbols
        with the same gap in one call), stored, and the cached items returned."""
        a, b = check_range(start, end)
        syms = list(dict.fromkeys(s.upper() for s in symbols))
        gaps: dict[Range, list[str]] = {}
        for s in syms:
            for g in self.missing(source.name, s, a, b):
                gaps.setdefault(g, []).append(s)
        for (g0, g1), group in gaps.items():
            items = source.fetch(group, g0, g1)
            for s in group:
                self.store(source.name, s, items, (g0, g1))
        return self.load(source.name, syms, a, b)


class CachedNews:
    """A `NewsSource` that answers from a `NewsCache`, asking `source` only for gaps."""

    def __init__(self, source: NewsSource, cache: NewsCache) -> None:
        self.source, self.cache, self.name = source, cache, source.name

    def fetch(self, symbols: Sequence[str], start: pd.Timestamp,
              end: pd.Timestamp) -> pd.DataFrame:
        return self.cache.fetch(self.source, symbols, start, end)
