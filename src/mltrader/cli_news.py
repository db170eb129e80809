"""`mltrader news`: check a news archive and convert it to the file a config's `news:` reads.

Registers on `mltrader.cli_app.app` when imported (cli.py imports it); the reading and
checks are `mltrader.data.news.read_news_file`, the alignment to bars `features/news.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mltrader.cli_app import app, guarded, out

news_app = typer.Typer(
    help="News for the news_* sentiment features: import (check and convert) your archive.",
    no_args_is_help=True,
    epilog="Example:  mltrader news import headlines.csv --tz America/New_York  (then "
    "news: {source: file, path: data/news.parquet} in the config, and news_score, "
    "news_count, news_surprise_20, news_decay_5 among its features)",
)
app.add_typer(news_app, name="news")


@news_app.command("import", epilog="Example:  mltrader news import headlines.csv --tz "
                  "America/New_York --symbols AAPL,MSFT")
@guarded
def import_(
    file: Annotated[Path, typer.Argument(
        help="CSV or Parquet: timestamp, symbols, headline[, summary, source, id]; one row "
        "per item, symbols separated by spaces, commas or |.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Where the checked archive goes (Parquet).")
    ] = Path("data/news.parquet"),
    tz: Annotated[str | None, typer.Option(
        help="Time zone of naive timestamps (e.g. America/New_York); without it every "
        "timestamp must carry an offset.")] = None,
    symbols: Annotated[str | None, typer.Option(
        help="Comma-separated universe: an item about another symbol is an error. Example: "
        "--symbols AAPL,MSFT")] = None,
) -> None:
    """Check a news file (timestamps with a time zone, a headline and symbols on every row)
    and write it as the Parquet archive a config's `news:` section reads."""
    from mltrader.data.news import read_news_file, write_news_file

    universe = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
    frame = read_news_file(file, tz=tz, symbols=universe)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_news_file(frame, output)
    syms = sorted({s for row in frame["symbols"] for s in row})
    span = (f"{frame['time'].min():%Y-%m-%d %H:%M} .. {frame['time'].max():%Y-%m-%d %H:%M} UTC"
            if len(frame) else "no items")
    shown = ", ".join(syms[:12]) + (f" and {len(syms) - 12} more" if len(syms) > 12 else "")
    out.print(f"{len(frame):,} news items about {len(syms)} symbols ({shown}), {span}, "
              f"written to [bold]{escape(str(output))}[/]. Use it with:\n"
              f"  news: {{source: file, path: {escape(str(output))}, scorer: vader}}\n"
              "and news_score, news_count, news_surprise_20, news_decay_5 in `features` "
              "(or a compare entry's add_features).", highlight=False)
