"""`Bars`: a validated time x symbol panel of prices, the one data object every layer shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mltrader.errors import DataError

FIELDS = ("open", "high", "low", "close", "volume")


def _as_2d(name: str, arr: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if arr is None:
        return None
    out = np.ascontiguousarray(arr, dtype=np.float64)
    if out.shape != shape:
        raise DataError(f"Bars.{name} has shape {out.shape}, expected {shape} (time x symbols)")
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Bars:
    """Prices on a shared time index: arrays of shape (T, N), NaN where a symbol did not trade.

    ``open``/``high``/``low``/``volume`` are ``None`` for close-only data; then executions can
    only happen at closes, and `close_only` is True so reports can say so.
    Validation on construction: tz-aware, sorted, unique index; prices finite where present
    and > 0; high >= max(open, close) >= min(open, close) >= low.
    """

    index: pd.DatetimeIndex
    symbols: tuple[str, ...]
    close: np.ndarray
    open: np.ndarray | None = None
    high: np.ndarray | None = None
    low: np.ndarray | None = None
    volume: np.ndarray | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        idx = pd.DatetimeIndex(self.index)
        if idx.tz is None:
            idx = idx.tz_localize("UTC")
        object.__setattr__(self, "index", idx)
        object.__setattr__(self, "symbols", tuple(str(s) for s in self.symbols))
        shape = (len(idx), len(self.symbols))
        for name in FIELDS:
            object.__setattr__(self, name, _as_2d(name, getattr(self, name), shape))
        if len(set(self.symbols)) != len(self.symbols):
            dup = pd.Index(self.symbols)[pd.Index(self.symbols).duplicated()][0]
            raise DataError(f"{self._where()}symbol {dup!r} appears twice; give each symbol once")
        self._validate()

    # ----------------------------------------------------------------- validation
    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    def _row_label(self, i: int) -> str:
        """The bar's date, with the time when the bar is not at midnight (intraday)."""
        if not len(self.index):
            return "?"
        ts = self.index[i]
        return str(ts.date()) if ts == ts.normalize() else str(ts)

    def _validate_ohlc(self, high: np.ndarray, low: np.ndarray) -> None:
        """high >= open, close and low <= open, close: the message names the bound that failed."""
        tol = 1e-9 * np.abs(high)
        checks = [("high < low", "high", high, "below", "low", low, "the high must be >= the low")]
        refs = [(n, getattr(self, n)) for n in ("open", "close") if getattr(self, n) is not None]
        checks += [("high below open/close", "high", high, "below", n, a,
                    "the high must be >= open and close") for n, a in refs]
        checks += [("low above open/close", "low", low, "above", n, a,
                    "the low must be <= open and close") for n, a in refs]
        for what, x, xs, rel, y, ys, rule in checks:
            with np.errstate(invalid="ignore"):
                bad = (ys > xs + tol) if rel == "below" else (ys < xs - tol)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise DataError(
                    f"{self._where()}{what} for {self.symbols[c]} on {self._row_label(r)} "
                    f"(row {r + 1}): {x} {xs[r, c]:g} is {rel} {y} {ys[r, c]:g}; {rule}; fix "
                    "or drop that bar"
                )

    def _validate(self) -> None:
        idx = self.index
        if len(idx) == 0 or len(self.symbols) == 0:
            raise DataError(f"{self._where()}no bars: the data is empty; give at least one row")
        diffs = np.diff(idx.asi8)
        if (diffs < 0).any():
            i = int(np.argmax(diffs < 0)) + 1
            raise DataError(
                f"{self._where()}timestamps not sorted at row {i + 1} ({self._row_label(i)} comes "
                f"after {self._row_label(i - 1)}); sort the file by date"
            )
        if (diffs == 0).any():
            i = int(np.argmax(diffs == 0)) + 1
            raise DataError(
                f"{self._where()}duplicate timestamp {self._row_label(i)} at row {i + 1}; "
                "keep one bar per date"
            )
        for name in ("open", "high", "low", "close"):
            arr = getattr(self, name)
            if arr is None:
                continue
            bad = np.isinf(arr) | (arr <= 0)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise DataError(
                    f"{self._where()}{name} of {self.symbols[c]} on {self._row_label(r)} is "
                    f"{arr[r, c]!r}: prices must be finite and > 0; fix or drop that row"
                )
        if self.high is not None and self.low is not None:
            self._validate_ohlc(self.high, self.low)
        if self.volume is not None:
            with np.errstate(invalid="ignore"):
                bad = self.volume < 0
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise DataError(
                    f"{self._where()}negative volume for {self.symbols[c]} on "
                    f"{self._row_label(r)}; fix or drop that row"
                )

    # ----------------------------------------------------------------- properties
    @property
    def close_only(self) -> bool:
        """True when only closes are known: fills happen at closes, no intrabar high/low."""
        return self.open is None

    @property
    def shape(self) -> tuple[int, int]:
        return self.close.shape

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        kind = "close-only" if self.close_only else "OHLCV"
        span = f"{self.index[0].date()}..{self.index[-1].date()}"
        return f"Bars({len(self.index)} bars x {len(self.symbols)} symbols, {kind}, {span})"

    # ----------------------------------------------------------------- conversions
    def frame(self, name: str = "close") -> pd.DataFrame:
        """One field as a wide DataFrame (index x symbols)."""
        arr = getattr(self, name)
        if arr is None:
            raise DataError(f"{self._where()}field {name!r} is not available in close-only data")
        return pd.DataFrame(arr, index=self.index, columns=list(self.symbols))

    def to_long(self) -> pd.DataFrame:
        """Long format: one row per (date, symbol) with the available fields."""
        parts = {n: getattr(self, n) for n in FIELDS if getattr(self, n) is not None}
        t, n = self.shape
        out = pd.DataFrame(
            {
                "date": self.index.repeat(n),
                "symbol": np.tile(np.array(self.symbols, dtype=object), t),
                **{k: v.reshape(-1) for k, v in parts.items()},
            }
        )
        return out.dropna(subset=["close"]).reset_index(drop=True)

    @classmethod
    def from_frames(cls, frames: dict[str, pd.DataFrame], source: str = "") -> Bars:
        """Build from wide frames keyed by field name; ``close`` is required."""
        if "close" not in frames:
            raise DataError(f"{source + ': ' if source else ''}no close prices; add a close column")
        close = frames["close"]
        cols = list(close.columns)
        arrays = {
            k: frames[k].reindex(index=close.index, columns=cols).to_numpy(dtype=np.float64)
            for k in FIELDS
            if k in frames
        }
        return cls(
            index=pd.DatetimeIndex(close.index), symbols=tuple(cols), source=source, **arrays
        )

    def select(
        self,
        symbols: list[str] | tuple[str, ...] | None = None,
        start: pd.Timestamp | str | None = None,
        end: pd.Timestamp | str | None = None,
    ) -> Bars:
        """A sub-panel by symbols and inclusive date range, with clear errors for misses."""
        cols = list(range(len(self.symbols)))
        if symbols is not None:
            pos = {s: i for i, s in enumerate(self.symbols)}
            unknown = [s for s in symbols if s not in pos]
            if unknown:
                raise DataError(
                    f"{self._where()}unknown symbol {unknown[0]!r}; available: "
                    f"{', '.join(self.symbols)}"
                )
            cols = [pos[s] for s in symbols]
        mask = np.ones(len(self.index), dtype=bool)
        tz = self.index.tz
        if start is not None:
            mask &= self.index >= _ts(start, tz)
        if end is not None:
            mask &= self.index <= _ts(end, tz)
        if not mask.any():
            raise DataError(
                f"{self._where()}no data between {start or 'the start'} and {end or 'the end'}; "
                f"the data covers {self.index[0].date()} to {self.index[-1].date()}"
            )
        rows = np.flatnonzero(mask)

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[np.ix_(rows, cols)]

        return Bars(
            index=self.index[rows],
            symbols=tuple(self.symbols[c] for c in cols),
            close=cut(self.close),
            open=cut(self.open),
            high=cut(self.high),
            low=cut(self.low),
            volume=cut(self.volume),
            source=self.source,
        )

    def replace(self, **arrays: np.ndarray | None) -> Bars:
        """A copy with some field arrays replaced (used by tests and what-if analysis)."""
        kw = {n: getattr(self, n) for n in FIELDS}
        kw.update(arrays)
        return Bars(index=self.index, symbols=self.symbols, source=self.source, **kw)


def _ts(value: pd.Timestamp | str, tz: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize(tz) if ts.tzinfo is None else ts.tz_convert(tz)
