"""China A-share boards (板块): industry, concept, region and index-membership lists, and which
stocks sit in each, as a snapshot that is known only from its as-of date.

Two sources:
- the bundled snapshot `cn_blocks_2018.csv.gz` (hikyuu test data, Qianlong/TDX-style vendor
  boards: 71 industries, 163 concepts, 31 regions, 80 index lists; 3,631 stocks). It is a
  mid-2018 snapshot, so it is taken as known from ``BUNDLED_AS_OF`` = 2018-07-01 on;
- East Money's boards through akshare (`online_boards`), known from the day they were fetched.

Causality: a snapshot is not point-in-time history, so membership (and every sector measure
built on it) is *unknown* (NaN) on bars before the snapshot's `as_of` date; from then on the
snapshot's members are used, with their earlier prices (known at that bar).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from mltrader.data.cn_codes import is_cn_code, normalize_code
from mltrader.errors import DataError

__all__ = ["BOARD_TYPES", "BUNDLED_AS_OF", "ONLINE_TYPES", "UNCLASSIFIED", "BoardSnapshot",
           "bundled_boards", "canonical_symbol", "known_mask", "members", "membership_matrix",
           "online_board_list", "online_boards", "sector_map"]

BOARDS_FILE = "cn_blocks_2018.csv.gz"
BUNDLED_AS_OF = pd.Timestamp("2018-07-01")
BOARD_TYPES: tuple[str, ...] = ("industry", "concept", "region", "index")
ONLINE_TYPES: tuple[str, ...] = ("industry", "concept")
UNCLASSIFIED = "unclassified"
OFFLINE_HINT = "offline, the bundled 2018 board snapshot is used (drop --online)"

# East Money's Chinese headers (akshare passes them through) -> our names
NAME_COLUMNS = {"排名": "rank", "板块名称": "board", "板块代码": "code", "最新价": "last",
                "涨跌额": "change", "涨跌幅": "pct_change", "总市值": "market_cap",
                "换手率": "turnover", "上涨家数": "advancers", "下跌家数": "decliners",
                "领涨股票": "leader", "领涨股票-涨跌幅": "leader_pct_change"}
CONS_COLUMNS = {"序号": "rank", "代码": "code", "名称": "name", "最新价": "last",
                "涨跌幅": "pct_change", "涨跌额": "change", "成交量": "volume",
                "成交额": "amount", "振幅": "amplitude", "最高": "high", "最低": "low",
                "今开": "open", "昨收": "preclose", "换手率": "turnover",
                "市盈率-动态": "pe_ttm", "市净率": "pb"}


@dataclass(frozen=True, eq=False)
class BoardSnapshot:
    """Board membership as one vendor saw it on `as_of`: rows symbol, board_type, board.

    Known from `as_of` (a naive date) on and unknown before it; `source` names the vendor.
    """

    membership: pd.DataFrame
    as_of: pd.Timestamp
    source: str

    def __post_init__(self) -> None:
        cols = ("symbol", "board_type", "board")
        missing = [c for c in cols if c not in self.membership.columns]
        if missing:
            raise DataError(f"board snapshot {self.source}: no {', '.join(missing)} column; "
                            "it needs symbol, board_type, board")
        bad = sorted(set(self.membership["board_type"]) - set(BOARD_TYPES))
        if bad:
            raise DataError(f"board snapshot {self.source}: unknown board_type {bad[0]!r}; "
                            f"use one of {', '.join(BOARD_TYPES)}")
        frame = (self.membership[list(cols)].astype(str).drop_duplicates()
                 .sort_values(["board_type", "board", "symbol"]).reset_index(drop=True))
        object.__setattr__(self, "membership", frame)
        object.__setattr__(self, "as_of", pd.Timestamp(self.as_of).normalize())

    @property
    def board_types(self) -> tuple[str, ...]:
        """The board types this snapshot has, in BOARD_TYPES order."""
        have = set(self.membership["board_type"])
        return tuple(t for t in BOARD_TYPES if t in have)

    def boards(self, board_type: str | None = None) -> pd.DataFrame:
        """Board_type, board, members (count) per board, largest first."""
        m = self.membership if board_type is None else self.of_type(board_type)
        counts = m.groupby(["board_type", "board"]).size().rename("members").reset_index()
        return counts.sort_values(["board_type", "members", "board"],
                                  ascending=[True, False, True]).reset_index(drop=True)

    def of_type(self, board_type: str) -> pd.DataFrame:
        """The membership rows of one board type (an unknown type is a one-line DataError)."""
        if board_type not in self.board_types:
            raise DataError(f"board type {board_type!r} is not in {self.source}; use one of "
                            f"{', '.join(self.board_types)}")
        return self.membership[self.membership["board_type"] == board_type]

    def describe(self) -> str:
        """One line: source, as-of date, boards and stocks."""
        return (f"{self.source}, as of {self.as_of.date()} ({self.membership['board'].nunique()}"
                f" boards, {self.membership['symbol'].nunique()} stocks; membership unknown "
                "before that date)")


@lru_cache(maxsize=1)
def bundled_boards() -> BoardSnapshot:
    """The bundled mid-2018 board snapshot, known from 2018-07-01 (module docstring)."""
    with resources.files("mltrader.data.bundled").joinpath(BOARDS_FILE).open("rb") as fh:
        df = pd.read_csv(fh, compression="gzip", dtype=str)
    df = df.rename(columns={"block_type": "board_type", "block_name": "board"})
    return BoardSnapshot(df, BUNDLED_AS_OF, "bundled:hikyuu-2018")


def _day(value: object) -> pd.Timestamp:
    """A date or timestamp as a naive calendar day (a tz-aware one on its own clock)."""
    ts = pd.Timestamp(value)
    return (ts.tz_localize(None) if ts.tzinfo is not None else ts).normalize()


def canonical_symbol(symbol: str) -> str:
    """``600519.SH`` for any A-share spelling; any other symbol (AAPL) unchanged."""
    return normalize_code(symbol) if is_cn_code(symbol) else str(symbol)


# --------------------------------------------------------------------------- lookups
def _known_boards(snapshot: BoardSnapshot, board_type: str | None) -> list[str]:
    m = snapshot.membership if board_type is None else snapshot.of_type(board_type)
    return sorted(set(m["board"]))


def _unknown_board(snapshot: BoardSnapshot, board: str, board_type: str | None) -> DataError:
    names = _known_boards(snapshot, board_type)
    near = [n for n in names if board and (board in n or n in board)]
    near += [n for n in difflib.get_close_matches(board, names, n=6, cutoff=0.3)
             if n not in near]
    where = f"{board_type} boards" if board_type else "boards"
    hint = (f"close matches: {', '.join(near[:6])}" if near
            else "no close match")
    return DataError(f"unknown board {board!r} in the {where} of {snapshot.source}; {hint}; "
                     "list them with `mltrader sectors list`")


def members(snapshot: BoardSnapshot, board: str, board_type: str | None = None) -> list[str]:
    """The symbols of one board (sorted); an unknown name is a DataError with close matches."""
    m = snapshot.membership if board_type is None else snapshot.of_type(board_type)
    hit = m[m["board"] == board]
    if hit.empty:
        raise _unknown_board(snapshot, board, board_type)
    return sorted(set(hit["symbol"]))


def sector_map(symbols: Iterable[str], board_type: str = "industry",
               snapshot: BoardSnapshot | None = None, at: object = None,
               unknown: str | None = UNCLASSIFIED) -> dict[str, str]:
    """Symbol -> its board of `board_type` (default the bundled snapshot's industry).

    Symbols not in the snapshot, and every symbol when `at` (a date) lies before the
    snapshot's as-of date, map to `unknown` ("unclassified"; None leaves them out, so a risk
    cap treats each as its own sector). Where a stock sits in several boards of the type
    (concepts, index lists) the largest board wins (ties by name), so a cap groups the
    broadest theme. Keys are the symbols as given.
    """
    snap = snapshot if snapshot is not None else bundled_boards()
    syms = list(symbols)
    if at is not None and _day(at) < snap.as_of:
        return {} if unknown is None else dict.fromkeys(syms, unknown)
    rows = snap.of_type(board_type)
    size = rows.groupby("board").size()
    ranked = rows.assign(size=rows["board"].map(size)).sort_values(
        ["size", "board"], ascending=[False, True])
    first = ranked.drop_duplicates("symbol").set_index("symbol")["board"]
    lookup = first.to_dict()
    found = {s: lookup.get(canonical_symbol(s)) for s in syms}
    return {s: b if b is not None else unknown for s, b in found.items()
            if b is not None or unknown is not None}


def membership_matrix(snapshot: BoardSnapshot, index: pd.DatetimeIndex,
                      symbols: Sequence[str], board_type: str = "industry"
                      ) -> dict[str, pd.DataFrame]:
    """Per board with at least one member among `symbols`: a len(index) x len(symbols) frame,
    1.0 for members, 0.0 for the rest, NaN on bars before the snapshot's as-of date."""
    rows = snapshot.of_type(board_type)
    canon = [canonical_symbol(s) for s in symbols]
    known = known_mask(snapshot, index)
    out: dict[str, pd.DataFrame] = {}
    for board, grp in rows.groupby("board", sort=True):
        inside = np.isin(canon, grp["symbol"].to_numpy()).astype(np.float64)
        if not inside.any():
            continue
        mat = np.where(known[:, None], inside[None, :], np.nan)
        out[str(board)] = pd.DataFrame(mat, index=index, columns=list(symbols))
    return out


def known_mask(snapshot: BoardSnapshot, index: pd.DatetimeIndex) -> np.ndarray:
    """True on bars whose date is on or after the snapshot's as-of date (membership known)."""
    idx = pd.DatetimeIndex(index)
    days = idx.tz_localize(None) if idx.tz is None else idx.tz_convert(idx.tz).tz_localize(None)
    return np.asarray(days.normalize() >= snapshot.as_of)


# --------------------------------------------------------------------------- online
def _akshare() -> object:
    try:
        import akshare  # type: ignore[import-untyped]
    except ImportError:
        raise DataError(f"--online needs akshare, which is not installed: pip install akshare; "
                        f"{OFFLINE_HINT}") from None
    return akshare


def _call(fn_name: str, *args: object) -> pd.DataFrame:
    ak = _akshare()
    fn = getattr(ak, fn_name, None)
    if fn is None:
        raise DataError(f"this akshare has no {fn_name}: upgrade it (pip install -U akshare); "
                        f"{OFFLINE_HINT}")
    try:
        frame = fn(*args)
    except Exception as e:  # network, HTTP, JSON: East Money answers with anything
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise DataError(f"East Money board fetch failed ({fn_name}: {type(e).__name__}: "
                        f"{first}); check the network and retry; {OFFLINE_HINT}") from None
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise DataError(f"East Money returned no rows for {fn_name}{args or ''}; retry later; "
                        f"{OFFLINE_HINT}")
    return frame


def _check_kind(kind: str) -> None:
    if kind not in ONLINE_TYPES:
        raise DataError(f"East Money boards are {' or '.join(ONLINE_TYPES)}, not {kind!r}; "
                        "region and index lists are in the bundled snapshot only")


def _mapped(frame: pd.DataFrame, columns: dict[str, str], need: str, what: str) -> pd.DataFrame:
    if need not in frame.columns:
        raise DataError(f"East Money {what} has no {need} column (got "
                        f"{', '.join(map(str, frame.columns))}); akshare's output changed: "
                        "upgrade akshare")
    return frame.rename(columns={k: v for k, v in columns.items() if k in frame.columns})


def online_board_list(kind: str = "industry") -> pd.DataFrame:
    """East Money's industry or concept boards now (one request): board, code, rank, pct_change,
    advancers, decliners, leader, ... (the Chinese headers mapped to English names)."""
    _check_kind(kind)
    raw = _call(f"stock_board_{kind}_name_em")
    return _mapped(raw, NAME_COLUMNS, "板块名称", f"{kind} board list").reset_index(drop=True)


def online_boards(kind: str = "industry", boards: Sequence[str] | None = None,
                  progress: Callable[[str], None] | None = None,
                  as_of: object = None) -> BoardSnapshot:
    """East Money's `kind` boards and their constituents, via akshare, as a snapshot known from
    the day of the fetch (`as_of`, default today in Beijing).

    `boards` limits the fetch to those names (one request each; all boards take one request
    per board, minutes for ~460 concepts); `progress(board)` is called after each. Missing
    akshare or no network is a one-line DataError (offline, use `bundled_boards()`).
    """
    _check_kind(kind)
    listing = online_board_list(kind)
    names = [str(b) for b in listing["board"]]
    if boards is not None:
        unknown = [b for b in boards if b not in set(names)]
        if unknown:
            near = difflib.get_close_matches(unknown[0], names, n=5, cutoff=0.3)
            raise DataError(f"unknown East Money {kind} board {unknown[0]!r}; close matches: "
                            f"{', '.join(near) or 'none'}; list them with "
                            "`mltrader sectors list --online`")
        names = list(boards)
    parts = []
    for name in names:
        cons = _mapped(_call(f"stock_board_{kind}_cons_em", name), CONS_COLUMNS, "代码",
                       f"{kind} board constituents")
        codes = [normalize_code(c) for c in cons["code"].astype(str) if is_cn_code(c)]
        parts.append(pd.DataFrame({"symbol": codes, "board_type": kind, "board": name}))
        if progress is not None:
            progress(name)
    frame = (pd.concat(parts, ignore_index=True) if parts
             else pd.DataFrame(columns=["symbol", "board_type", "board"]))
    day = (pd.Timestamp.now(tz="Asia/Shanghai").tz_localize(None) if as_of is None
           else pd.Timestamp(as_of))
    return BoardSnapshot(frame, day.normalize(), f"eastmoney:{kind}")
