"""Sector (board) strength, leading stocks and rotation for A-share panels, all causal.

A board's measures at bar t use its members in a snapshot known at t (`mltrader.data.
cn_boards`: NaN on every bar before the snapshot's as-of date) and prices up to t only.
Members are the board's stocks among the panel's symbols, equal-weighted; a suspended stock
keeps its last traded price. With `window` = N bars:

- return: the mean of the members' N-bar returns (an equal-weighted buy-and-hold over N bars);
- breadth: the share of members trading at t whose close is above their own N-bar average;
- volume surge: the board's traded money (sum of close x volume, which qfq adjustment leaves
  unchanged) at t over its median of the previous N bars (t excluded); 1 = a usual day;
- score: the mean of the board's percentile ranks across boards at t on those three
  (those available); rank 1 = strongest, rank_pct 1.0 = strongest.

Per-stock features (registered as `sector_ret_N`, `sector_rel_N`, `sector_breadth_N`,
`sector_rank_N`) use each stock's industry board of the bundled snapshot.
See docs/sectors.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mltrader.data.bars import Bars
from mltrader.data.cn_boards import (
    BoardSnapshot,
    bundled_boards,
    canonical_symbol,
    known_mask,
    members,
    sector_map,
)
from mltrader.errors import ConfigError, DataError

__all__ = ["FEATURE_KINDS", "SectorPanel", "leaders", "rotation_ranks", "rotation_report",
           "sector_feature", "sector_panel", "sector_strength"]

FEATURE_KINDS: tuple[str, ...] = ("ret", "rel", "breadth", "rank")
CJK_FONTS = ["Noto Sans CJK SC", "Source Han Sans SC", "SimHei", "Microsoft YaHei",
             "PingFang SC", "WenQuanYi Zen Hei", "DejaVu Sans"]


@dataclass(frozen=True, eq=False)
class SectorPanel:
    """Every board's measures on a panel: T x B frames (B = boards with a member in the panel),
    NaN before the snapshot's as-of date; `stock_ret` is the members' N-bar return (T x N)."""

    boards: tuple[str, ...]
    weights: np.ndarray  # N x B, 1.0 where symbol n is in board b
    counts: pd.Series  # members in the panel, per board
    ret: pd.DataFrame
    breadth: pd.DataFrame
    surge: pd.DataFrame
    score: pd.DataFrame
    rank_pct: pd.DataFrame
    stock_ret: pd.DataFrame
    known: np.ndarray
    window: int


def _check_window(window: int, what: str = "window") -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise ConfigError(f"{what} must be a whole number of bars >= 2; got {window!r}")
    return int(window)


def _board_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """T x B mean over each board's members of the non-NaN values (NaN when none)."""
    ok = ~np.isnan(values)
    total = np.where(ok, values, 0.0) @ weights
    count = ok.astype(np.float64) @ weights
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _weights(bars: Bars, snapshot: BoardSnapshot, board_type: str
             ) -> tuple[tuple[str, ...], np.ndarray]:
    """Boards with a member among the bars' symbols, and the N x B 0/1 membership."""
    rows = snapshot.of_type(board_type)
    canon = np.array([canonical_symbol(s) for s in bars.symbols], dtype=object)
    boards, cols = [], []
    for board, grp in rows.groupby("board", sort=True):
        inside = np.isin(canon, grp["symbol"].to_numpy())
        if inside.any():
            boards.append(str(board))
            cols.append(inside.astype(np.float64))
    if not boards:
        raise DataError(f"none of the panel's symbols ({', '.join(bars.symbols[:5])}"
                        f"{', ...' if len(bars.symbols) > 5 else ''}) is in a {board_type} board "
                        f"of {snapshot.source}; sector measures need A-share stocks (600519.SH)")
    return tuple(boards), np.column_stack(cols)


def sector_panel(bars: Bars, snapshot: BoardSnapshot | None = None,
                 board_type: str = "industry", window: int = 20) -> SectorPanel:
    """All boards' return, breadth, volume surge, score and rank (module docstring), causal."""
    n = _check_window(window)
    snap = snapshot if snapshot is not None else bundled_boards()
    boards, w = _weights(bars, snap, board_type)
    known = known_mask(snap, bars.index)
    close = bars.close
    px = pd.DataFrame(close).ffill().to_numpy()  # last traded price, known at t
    with np.errstate(invalid="ignore", divide="ignore"):
        past = np.full_like(px, np.nan)
        past[n:] = px[:-n]
        stock_ret = px / past - 1.0
        ret = _board_mean(stock_ret, w)
        sma = pd.DataFrame(px).rolling(n, min_periods=n).mean().to_numpy()
        eligible = ~np.isnan(close) & ~np.isnan(sma)
        above = np.where(eligible, (np.nan_to_num(close) > np.nan_to_num(sma)) * 1.0, np.nan)
        breadth = _board_mean(above, w)
        if bars.volume is None:
            surge = np.full_like(ret, np.nan)
        else:
            money = np.where(np.isnan(close), 0.0, np.nan_to_num(close * bars.volume))
            total = money @ w
            traded = (~np.isnan(close)).astype(np.float64) @ w
            total = np.where(traded > 0, total, np.nan)
            base = pd.DataFrame(total).rolling(n, min_periods=n).median().shift(1).to_numpy()
            surge = np.where(base > 0, total / base, np.nan)
    idx, cols = bars.index, list(boards)

    def frame(a: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(np.where(known[:, None], a, np.nan), index=idx, columns=cols)

    ret_f, breadth_f, surge_f = frame(ret), frame(breadth), frame(surge)
    parts = [f.rank(axis=1, pct=True).to_numpy() for f in (ret_f, breadth_f, surge_f)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: mean is NaN
        score = np.nanmean(np.stack(parts), axis=0)
    score_f = frame(score)
    return SectorPanel(
        boards=boards, weights=w, counts=pd.Series(w.sum(axis=0).astype(int), index=cols),
        ret=ret_f, breadth=breadth_f, surge=surge_f, score=score_f,
        rank_pct=score_f.rank(axis=1, pct=True),
        stock_ret=pd.DataFrame(stock_ret, index=idx, columns=list(bars.symbols)),
        known=known, window=n)


def sector_strength(bars: Bars, snapshot: BoardSnapshot | None = None,
                    board_type: str = "industry", window: int = 20) -> pd.DataFrame:
    """Per bar and board (long): date, board, members (in the panel), ret, breadth,
    volume_surge, score, rank (1 = strongest), rank_pct; NaN before the snapshot's as-of."""
    p = sector_panel(bars, snapshot, board_type, window)
    rank = p.score.rank(axis=1, ascending=False, method="min")
    long = {name: f.stack(future_stack=True) for name, f in (
        ("ret", p.ret), ("breadth", p.breadth), ("volume_surge", p.surge), ("score", p.score),
        ("rank", rank), ("rank_pct", p.rank_pct))}
    out = pd.DataFrame(long)
    out.index = out.index.set_names(["date", "board"])
    out = out.reset_index()
    out.insert(2, "members", out["board"].map(p.counts).astype(int))
    return out


# --------------------------------------------------------------------------- features
def sector_feature(bars: Bars, kind: str, window: int,
                   snapshot: BoardSnapshot | None = None,
                   board_type: str = "industry") -> pd.DataFrame:
    """A T x N feature from each stock's board: ret (board's N-bar return), rel (the stock's
    N-bar return minus its board's), breadth, rank (board's rank_pct); NaN where the stock's
    board is unknown (not in the snapshot, or a bar before the as-of date)."""
    if kind not in FEATURE_KINDS:
        raise ConfigError(f"unknown sector feature kind {kind!r}; use one of "
                          f"{', '.join(f'sector_{k}_N' for k in FEATURE_KINDS)}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise ConfigError(f"feature sector_{kind}_{window}: N must be a whole number of bars "
                          f">= 2; e.g. sector_{kind}_20")
    snap = snapshot if snapshot is not None else bundled_boards()
    try:
        p = sector_panel(bars, snap, board_type, window)
    except DataError as e:
        raise ConfigError(f"feature sector_{kind}_{window}: {e}; drop the sector_* features "
                          "for this data") from None
    src = {"ret": p.ret, "rel": p.ret, "breadth": p.breadth, "rank": p.rank_pct}[kind]
    where = sector_map(bars.symbols, board_type, snap)
    pos = {b: i for i, b in enumerate(p.boards)}
    cols = np.array([pos.get(where[s], -1) for s in bars.symbols])
    vals = src.to_numpy()[:, np.maximum(cols, 0)]
    vals[:, cols < 0] = np.nan
    if kind == "rel":
        vals = p.stock_ret.to_numpy() - vals
    vals = np.where(p.known[:, None], vals, np.nan)
    return pd.DataFrame(vals, index=bars.index, columns=list(bars.symbols))


# --------------------------------------------------------------------------- leaders
def leaders(bars: Bars, snapshot: BoardSnapshot | None, board: str, window: int = 20,
            top: int = 3, board_type: str | None = None) -> pd.DataFrame:
    """The leading stocks of one board, per bar (long; only bars on or after the as-of date).

    Relative strength = a member's N-bar return minus the board's (equal-weighted) N-bar
    return; rs_rank 1 = strongest. First to move: the board's current up-move starts at the
    lowest close of its equal-weighted index over the last N bars (when the index is above
    it now); a member's `breakout` is its first close in that move above its own highest
    close of the N bars before; mover_rank orders members by that date (ties: stronger
    relative strength first), first_mover = mover_rank 1. A leader is a top-`top` member by
    relative strength or the first mover. Columns: date, symbol, ret, board_ret,
    rel_strength, rs_rank, breakout, mover_rank, first_mover, leader.
    """
    n = _check_window(window)
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ConfigError(f"top must be a whole number >= 1; got {top!r}")
    snap = snapshot if snapshot is not None else bundled_boards()
    names = set(members(snap, board, board_type))
    cols = [i for i, s in enumerate(bars.symbols) if canonical_symbol(s) in names]
    if not cols:
        raise DataError(f"board {board!r} has no member among the panel's symbols; its members "
                        f"in {snap.source}: {', '.join(sorted(names)[:8])}"
                        f"{', ...' if len(names) > 8 else ''}")
    syms = [bars.symbols[i] for i in cols]
    close = bars.close[:, cols]
    px = pd.DataFrame(close).ffill().to_numpy()
    t_len, m = px.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        past = np.full_like(px, np.nan)
        past[n:] = px[:-n]
        ret = px / past - 1.0
        board_ret = _board_mean(ret, np.ones((m, 1)))[:, 0]
        rel = ret - board_ret[:, None]
        prev = np.vstack([np.full((1, m), np.nan), px[:-1]])
        day = _board_mean(px / prev - 1.0, np.ones((m, 1)))[:, 0]
        level = np.cumprod(1.0 + np.nan_to_num(day))
        high = pd.DataFrame(px).rolling(n, min_periods=n).max().shift(1).to_numpy()
        broke = ~np.isnan(close) & ~np.isnan(high) & (np.nan_to_num(close) > high)
    rs_rank = pd.DataFrame(rel).rank(axis=1, ascending=False, method="min").to_numpy()
    first = np.full((t_len, m), -1, dtype=np.int64)
    mover_rank = np.full((t_len, m), np.nan)
    strength = np.nan_to_num(rel, nan=-np.inf)
    for t in range(t_len):
        lo = max(0, t - n)
        s = lo + int(np.argmin(level[lo:t + 1]))
        if s >= t or not level[t] > level[s]:
            continue  # no up-move: the board is at its N-bar low
        seg = broke[s + 1:t + 1]
        hit = np.flatnonzero(seg.any(axis=0))
        if hit.size == 0:
            continue
        first[t, hit] = s + 1 + seg.argmax(axis=0)[hit]
        order = hit[np.lexsort((-strength[t, hit], first[t, hit]))]
        mover_rank[t, order] = np.arange(1, order.size + 1)
    known = known_mask(snap, bars.index)
    rows = np.flatnonzero(known)
    idx = bars.index
    breakout = np.where(first >= 0, first, 0)
    out = pd.DataFrame({
        "date": np.repeat(idx[rows], m),
        "symbol": np.tile(np.array(syms, dtype=object), len(rows)),
        "ret": ret[rows].ravel(),
        "board_ret": np.repeat(board_ret[rows], m),
        "rel_strength": rel[rows].ravel(),
        "rs_rank": rs_rank[rows].ravel(),
        "breakout": pd.DatetimeIndex(idx[breakout[rows].ravel()]).where(
            first[rows].ravel() >= 0),
        "mover_rank": mover_rank[rows].ravel(),
    })
    out["first_mover"] = out["mover_rank"] == 1
    out["leader"] = (out["rs_rank"] <= top) | out["first_mover"]
    return out


# --------------------------------------------------------------------------- rotation
def _period_ends(index: pd.DatetimeIndex, freq: str) -> np.ndarray:
    pos = pd.Series(np.arange(len(index)), index=index)
    try:
        ends = pos.resample(freq).max()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"freq {freq!r} is not a pandas period (use ME, W, QE): {e}") from None
    return ends.dropna().astype(int).to_numpy()


def rotation_ranks(bars: Bars, snapshot: BoardSnapshot | None = None,
                   board_type: str = "industry", freq: str = "ME",
                   window: int = 20) -> pd.DataFrame:
    """Each board's strength rank (1 = strongest) at the last bar of each period: periods
    (that bar's date) x boards; periods before the snapshot's as-of date are left out."""
    return _ranks(sector_panel(bars, snapshot, board_type, window), bars.index, freq)


def _ranks(p: SectorPanel, index: pd.DatetimeIndex, freq: str) -> pd.DataFrame:
    ends = _period_ends(index, freq)
    score = p.score.iloc[ends]
    score = score[score.notna().any(axis=1)]
    return score.rank(axis=1, ascending=False, method="min")


def _moves(now: pd.Series, before: pd.Series, top: int, up: bool) -> str:
    delta = (before - now).dropna()  # rank 5 -> 2 is a rise of +3
    delta = delta[delta > 0] if up else delta[delta < 0]
    picked = delta.sort_values(ascending=not up).head(top)
    return ", ".join(f"{b} ({int(d):+d})" for b, d in picked.items())


def rotation_report(bars: Bars, snapshot: BoardSnapshot | None = None,
                    board_type: str = "industry", freq: str = "ME", window: int = 20,
                    top: int = 3, plot: str | Path | None = None) -> pd.DataFrame:
    """Sector rotation per period: the `top` strongest and weakest boards at the period's last
    bar, the biggest rank risers / fallers since the previous period, and `persistence`, the
    rank correlation with the previous period (near 1: the same boards lead; low or negative:
    rotation). With `plot`, also a PNG heatmap of every board's rank per period."""
    panel = sector_panel(bars, snapshot, board_type, window)
    ranks = _ranks(panel, bars.index, freq)
    rows = []
    prev: pd.Series | None = None
    for date, now in ranks.iterrows():
        cur = now.dropna().sort_values()
        row = {"period_end": date, "boards": len(cur),
               "top": ", ".join(cur.index[:top]), "bottom": ", ".join(cur.index[::-1][:top]),
               "risers": "", "fallers": "", "persistence": np.nan}
        if prev is not None:
            row["risers"] = _moves(cur, prev, top, up=True)
            row["fallers"] = _moves(cur, prev, top, up=False)
            both = pd.concat([cur, prev], axis=1, join="inner")
            if len(both) > 2:
                row["persistence"] = float(both.corr(method="spearman").iloc[0, 1])
        rows.append(row)
        prev = cur
    report = pd.DataFrame(rows, columns=["period_end", "boards", "top", "bottom", "risers",
                                         "fallers", "persistence"])
    if plot is not None:
        syms = np.array(bars.symbols, dtype=object)
        labels = {}
        for j, b in enumerate(panel.boards):
            inside = list(syms[panel.weights[:, j] > 0])
            more = f" +{len(inside) - 2}" if len(inside) > 2 else ""
            labels[b] = ", ".join(inside[:2]) + more
        _plot_rotation(ranks, Path(plot), board_type, labels)
    return report


def _has_cjk_font() -> bool:
    from matplotlib import font_manager

    return any(f.name in CJK_FONTS[:-1] for f in font_manager.fontManager.ttflist)


def _plot_rotation(ranks: pd.DataFrame, path: Path, board_type: str,
                   members_of: dict[str, str]) -> None:
    """Heatmap: boards (strongest last period on top) x periods, colour = rank. Without a CJK
    font the Chinese board names would be boxes, so the rows then name the boards' members."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DataError("--plot needs matplotlib: pip install matplotlib") from None
    if ranks.empty:
        raise DataError("no period after the snapshot's as-of date to plot; use a longer panel")
    order = ranks.iloc[-1].sort_values().index
    data = ranks[order].T
    with warnings.catch_warnings(), matplotlib.rc_context({"font.family": CJK_FONTS}):
        warnings.simplefilter("ignore", UserWarning)  # missing CJK glyphs on bare systems
        import logging

        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
        fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * data.shape[1] + 3),
                                        max(3.0, 0.28 * data.shape[0] + 1.5)))
        img = ax.imshow(data.to_numpy(), aspect="auto", cmap="RdYlGn_r", interpolation="nearest")
        names = ([str(b) for b in order] if _has_cjk_font()
                 else [members_of.get(str(b), "?") for b in order])
        ax.set_yticks(range(len(order)), names, fontsize=7)
        step = max(1, data.shape[1] // 12)
        ax.set_xticks(range(0, data.shape[1], step),
                      [d.strftime("%Y-%m") for d in data.columns[::step]], rotation=45,
                      fontsize=7)
        ax.set_title(f"{board_type} board strength rank per period (1 = strongest)")
        fig.colorbar(img, ax=ax, label="rank")
        fig.tight_layout()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110)
        except OSError as e:
            raise DataError(f"cannot write the plot {path}: {e.strerror}; pick a writable "
                            "path") from None
        finally:
            plt.close(fig)
