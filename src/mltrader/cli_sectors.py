"""`mltrader sectors`: A-share boards (industry, concept, region, index lists), their members,
sector strength, leading stocks and rotation. Registers on `mltrader.cli_app.app` when
imported (cli.py imports it); the work is in `mltrader.data.cn_boards` and
`mltrader.features.sectors` (see docs/sectors.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mltrader.cli_app import app, guarded, out
from mltrader.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from mltrader.data.bars import Bars
    from mltrader.data.cn_boards import BoardSnapshot

sectors_app = typer.Typer(
    help="China A-share boards (板块): list industry / concept boards and their members, rank "
    "sector strength, find each board's leading stocks and report sector rotation. Offline "
    "it uses the bundled mid-2018 board snapshot (known from 2018-07-01; nothing before) and "
    "the bundled 44 CSI 300 stocks; --online asks East Money through akshare.",
    no_args_is_help=True,
    epilog="Examples:  mltrader sectors list --type concept  |  mltrader sectors members 白酒  "
    "|  mltrader sectors strength --date 2020-07-31  |  mltrader sectors leaders 白酒  |  "
    "mltrader sectors rotation --plot rotation.png",
)
app.add_typer(sectors_app, name="sectors")

TypeOpt = Annotated[str, typer.Option(
    "--type", "-t", help="Board type: industry, concept, region or index (online: industry or "
    "concept). Example: --type concept")]
DateOpt = Annotated[str | None, typer.Option(
    help="The bar to show (the last trading day on or before it; default: the last bar). "
    "Example: --date 2021-06-30")]
WindowOpt = Annotated[int, typer.Option(
    help="N: bars for the return, the breadth's moving average and the volume median. "
    "Example: --window 60")]


def _fmt(v: object, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _snapshot() -> BoardSnapshot:
    from mltrader.data.cn_boards import bundled_boards

    return bundled_boards()


def _check_type(board_type: str, snap: BoardSnapshot) -> None:
    if board_type not in snap.board_types:
        raise DataError(f"--type {board_type!r} is not a board type of {snap.source}; use one "
                        f"of {', '.join(snap.board_types)}")


def _panel() -> Bars:
    from mltrader.data.ashare import load_ashare

    return load_ashare().bars


def _names() -> dict[str, str]:
    from mltrader.data.ashare import bundled_symbols

    meta = bundled_symbols()
    return dict(zip(meta["symbol"], meta["name"], strict=True))


def _pick_row(bars: Bars, date: str | None, snap: BoardSnapshot) -> int:
    """The row of the last bar on or before `date` (default the last); it must be known."""
    import pandas as pd

    if date is None:
        row = len(bars.index) - 1
    else:
        try:
            day = pd.Timestamp(date)
        except (ValueError, TypeError):
            raise DataError(f"--date {date!r} is not a date; write YYYY-MM-DD") from None
        day = day.tz_localize(bars.index.tz) if day.tzinfo is None else day
        row = int(bars.index.searchsorted(day, side="right")) - 1
        if row < 0:
            raise DataError(f"--date {date} is before the data's first bar "
                            f"{bars.index[0].date()}; pick a later date")
    when = bars.index[row]
    if when.tz_localize(None).normalize() < snap.as_of:
        raise DataError(f"board membership is unknown before {snap.as_of.date()} (the as-of "
                        f"date of {snap.source}); pick --date on or after it")
    return row


# --------------------------------------------------------------------------- list
@sectors_app.command("list", epilog="Examples:  mltrader sectors list  |  mltrader sectors "
                     "list --type concept  |  mltrader sectors list --online --type industry")
@guarded
def sectors_list(
    board_type: TypeOpt = "industry",
    online: Annotated[bool, typer.Option(
        "--online", help="East Money's boards now, through akshare (needs the network and "
        "`pip install akshare`).")] = False,
) -> None:
    """List the boards of one type with their member counts.

    Offline: the bundled snapshot, with how many of the bundled 44 stocks each board holds.
    Online: East Money's board list of today (rank, change, advancers, leading stock).
    """
    if online:
        _list_online(board_type)
        return
    snap = _snapshot()
    _check_type(board_type, snap)
    from mltrader.data.cn_boards import canonical_symbol

    panel = {canonical_symbol(s) for s in _panel().symbols}
    rows = snap.of_type(board_type)
    held = rows[rows["symbol"].isin(panel)].groupby("board").size()
    out.print(f"Boards: {escape(snap.describe())}", highlight=False)
    table = Table(title=f"{board_type} boards", title_justify="left")
    for col in ("board", "members", "in the 44-stock panel"):
        table.add_column(col, no_wrap=True, justify="left" if col == "board" else "right")
    counts = snap.boards(board_type)
    for r in counts.itertuples():
        table.add_row(escape(str(r.board)), str(r.members), str(int(held.get(r.board, 0))))
    out.print(table)
    out.print(f"{len(counts)} {board_type} boards. Members: mltrader sectors members BOARD")


def _list_online(board_type: str) -> None:
    from mltrader.data.cn_boards import online_board_list

    frame = online_board_list(board_type)
    table = Table(title=f"East Money {board_type} boards (now, via akshare)",
                  title_justify="left")
    cols = [c for c in ("rank", "board", "code", "pct_change", "advancers", "decliners",
                        "leader") if c in frame.columns]
    for c in cols:
        table.add_column("change %" if c == "pct_change" else c, no_wrap=True)
    for r in frame[cols].itertuples(index=False):
        table.add_row(*[escape(_fmt(v, ".2f") if isinstance(v, float) else str(v)) for v in r])
    out.print(table)
    out.print(f"{len(frame)} boards. Members: mltrader sectors members BOARD --online "
              f"--type {board_type}")


# --------------------------------------------------------------------------- members
@sectors_app.command("members", epilog="Examples:  mltrader sectors members 白酒  |  "
                     "mltrader sectors members 锂电池 --type concept  |  mltrader sectors "
                     "members 酿酒行业 --online")
@guarded
def sectors_members(
    board: Annotated[str, typer.Argument(help="Board name as listed by `mltrader sectors "
                                         "list` (Chinese). Example: 白酒")],
    board_type: Annotated[str | None, typer.Option(
        "--type", "-t", help="Only look in this board type (default: any; online: "
        "industry).")] = None,
    online: Annotated[bool, typer.Option(
        "--online", help="East Money's current constituents, through akshare.")] = False,
) -> None:
    """Show a board's constituent stocks; those in the bundled 44-stock panel are marked.

    An unknown name is an error that lists the closest board names.
    """
    if online:
        from mltrader.data.cn_boards import online_boards

        snap = online_boards(board_type or "industry", boards=[board])
    else:
        snap = _snapshot()
    from mltrader.data.cn_boards import canonical_symbol, members

    syms = members(snap, board, board_type)
    panel = {canonical_symbol(s) for s in _panel().symbols}
    names = _names()
    out.print(f"Boards: {escape(snap.describe())}", highlight=False)
    table = Table(title=f"{escape(board)}: {len(syms)} stocks", title_justify="left")
    for col in ("symbol", "name", "in panel"):
        table.add_column(col, no_wrap=True)
    for s in sorted(syms, key=lambda x: (x not in panel, x)):
        table.add_row(s, escape(names.get(s, "")), "yes" if s in panel else "")
    out.print(table)


# --------------------------------------------------------------------------- strength
@sectors_app.command("strength", epilog="Examples:  mltrader sectors strength  |  mltrader "
                     "sectors strength --date 2020-07-31 --window 60  |  mltrader sectors "
                     "strength --type concept")
@guarded
def sectors_strength(
    board_type: TypeOpt = "industry",
    date: DateOpt = None,
    window: WindowOpt = 20,
) -> None:
    """Rank the boards by strength on one bar, over the bundled 44 stocks.

    Per board (its members in the panel, equal-weighted): the N-bar return, breadth (share of
    members closing above their own N-bar average), volume surge (traded money over its
    median of the previous N bars; 1 = usual) and the score (mean of the cross-board
    percentile ranks of the three); rank 1 = strongest. Boards with one member in the panel
    are that stock.
    """
    from mltrader.features.sectors import sector_panel

    snap = _snapshot()
    _check_type(board_type, snap)
    bars = _panel()
    row = _pick_row(bars, date, snap)
    p = sector_panel(bars, snap, board_type, window)
    at = {"ret": p.ret.iloc[row], "breadth": p.breadth.iloc[row], "surge": p.surge.iloc[row],
          "score": p.score.iloc[row], "pct": p.rank_pct.iloc[row]}
    order = at["score"].sort_values(ascending=False, na_position="last").index
    when = bars.index[row].date()
    out.print(f"Boards: {escape(snap.describe())}", highlight=False)
    table = Table(title=f"{board_type} board strength on {when} (window {p.window} bars)",
                  title_justify="left")
    for col in ("rank", "board", "members", f"return {p.window}b", "breadth", "vol surge",
                "score"):
        table.add_column(col, no_wrap=True, justify="left" if col == "board" else "right")
    for i, b in enumerate(order, start=1):
        table.add_row(str(i) if not math.isnan(at["score"][b]) else "-", escape(b),
                      str(int(p.counts[b])), _fmt(at["ret"][b], "+.1%"),
                      _fmt(at["breadth"][b], ".0%"), _fmt(at["surge"][b], ".2f"),
                      _fmt(at["score"][b], ".2f"))
    out.print(table)
    out.print("Leaders of a board: mltrader sectors leaders BOARD --date "
              f"{when}")


# --------------------------------------------------------------------------- leaders
@sectors_app.command("leaders", epilog="Examples:  mltrader sectors leaders 白酒  |  mltrader "
                     "sectors leaders 银行 --date 2021-02-10 --window 20 --top 2")
@guarded
def sectors_leaders(
    board: Annotated[str, typer.Argument(help="Board name (Chinese). Example: 白酒")],
    date: DateOpt = None,
    window: WindowOpt = 20,
    top: Annotated[int, typer.Option(help="Leaders by relative strength (plus the first "
                                     "mover). Example: --top 2")] = 3,
    board_type: Annotated[str | None, typer.Option(
        "--type", "-t", help="Board type, when the name exists in several.")] = None,
) -> None:
    """Show a board's leading stocks on one bar, among its members in the 44-stock panel.

    Relative strength = the stock's N-bar return minus the board's. First to move = the
    member whose close first broke above its own prior N-bar high in the board's current
    up-move (which starts at the board's lowest close of the last N bars). Leaders are the
    top members by relative strength plus the first mover.
    """
    from mltrader.features.sectors import leaders

    snap = _snapshot()
    bars = _panel()
    row = _pick_row(bars, date, snap)
    frame = leaders(bars, snap, board, window, top, board_type)
    when = bars.index[row]
    day = frame[frame["date"] == when].sort_values("rs_rank")
    names = _names()
    board_ret = day["board_ret"].iloc[0] if len(day) else float("nan")
    table = Table(title=f"{escape(board)} leaders on {when.date()} (board {window}-bar return "
                  f"{_fmt(board_ret, '+.1%')})", title_justify="left")
    for col in ("rs rank", "symbol", "name", f"return {window}b", "rel. strength",
                "breakout", "mover rank", "leader"):
        table.add_column(col, no_wrap=True)
    for r in day.itertuples():
        tags = [t for t, on in (("first mover", r.first_mover), ("leader", r.leader)) if on]
        table.add_row(_fmt(r.rs_rank, ".0f"), r.symbol, escape(names.get(r.symbol, "")),
                      _fmt(r.ret, "+.1%"), _fmt(r.rel_strength, "+.1%"),
                      "-" if _isna(r.breakout) else str(r.breakout.date()),
                      _fmt(r.mover_rank, ".0f"), ", ".join(tags))
    out.print(table)


def _isna(v: object) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


# --------------------------------------------------------------------------- rotation
@sectors_app.command("rotation", epilog="Examples:  mltrader sectors rotation  |  mltrader "
                     "sectors rotation --freq QE --last 8  |  mltrader sectors rotation "
                     "--plot rotation.png")
@guarded
def sectors_rotation(
    board_type: TypeOpt = "industry",
    freq: Annotated[str, typer.Option(help="Period: ME (month end), W (week), QE (quarter). "
                                      "Example: --freq QE")] = "ME",
    window: WindowOpt = 20,
    top: Annotated[int, typer.Option(help="Boards shown at each end. Example: --top 5")] = 3,
    last: Annotated[int, typer.Option(help="Show the last N periods (0: all). "
                                      "Example: --last 24")] = 12,
    plot: Annotated[Path | None, typer.Option(
        help="Also save a PNG heatmap of every board's rank per period. "
        "Example: --plot rotation.png")] = None,
) -> None:
    """Sector rotation per period: strongest and weakest boards at each period's last bar,
    the biggest rank moves since the previous period, and persistence (rank correlation with
    the previous period: near 1 the same boards keep leading, near 0 or below they rotate)."""
    from mltrader.features.sectors import rotation_report

    snap = _snapshot()
    _check_type(board_type, snap)
    bars = _panel()
    report = rotation_report(bars, snap, board_type, freq, window, top, plot)  # about 1 s
    _print_rotation(report, board_type, window, last)
    if plot is not None:
        out.print(f"Wrote {escape(str(plot))}")


def _print_rotation(report: pd.DataFrame, board_type: str, window: int, last: int) -> None:
    shown = report if last <= 0 else report.tail(last)
    table = Table(title=f"{board_type} rotation (strength over {window} bars; "
                  f"{len(shown)} of {len(report)} periods)", title_justify="left")
    for col in ("period end", "top", "bottom", "risers", "fallers", "persistence"):
        table.add_column(col)
    for r in shown.itertuples():
        table.add_row(str(r.period_end.date()), escape(r.top), escape(r.bottom),
                      escape(r.risers or "-"), escape(r.fallers or "-"),
                      _fmt(r.persistence, "+.2f"))
    out.print(table)
    mean = report["persistence"].mean()
    out.print(f"Mean persistence {_fmt(float(mean), '+.2f')} (1 = no rotation).")
