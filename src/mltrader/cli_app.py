"""The `mltrader` command line's shell: the Typer app, its consoles and error handling.

Both command modules register on `app`: cli.py (backtest, compare, sensitivity, init, data)
and cli_live.py (paper, live, status, flatten, parity). Every command is `guarded`, so a
user error is one red line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mltrader import __version__
from mltrader.errors import MltraderError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help=(
        "mltrader: train ML models walk-forward on stock data and backtest them honestly, "
        "out of sample, against buy-and-hold.\n\n"
        "Start with:  mltrader backtest -c configs/default.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: F) -> F:
    """Turn user errors into one red line and a non-zero exit; MLTRADER_DEBUG=1 shows tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except MltraderError as e:
            _fail(_one_line(str(e), strip_sql=False))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as e:  # an unexpected failure is still one line, not a traceback
            if os.environ.get("MLTRADER_DEBUG"):
                raise
            db = _database_error(e)
            if db is not None:
                _fail(db, 1)
            _fail(_one_line(f"internal error: {type(e).__name__}: {e}") + " (rerun with "
                  "MLTRADER_DEBUG=1 for the traceback and report it)", 1)

    wrapper.__doc__ = reflow(fn.__doc__)
    return wrapper  # type: ignore[return-value]


def _one_line(message: str, *, strip_sql: bool = True) -> str:
    """``message`` on one line: line breaks (and the blanks around them) become one space.
    With ``strip_sql`` (unexpected errors) also SQLAlchemy's "(Background on this error at:
    ...)" link and any "[SQL: ...] [parameters: ...]" go, all whitespace is collapsed and the
    line is capped at 400 characters."""
    import re

    if not strip_sql:
        return re.sub(r"\s*[\r\n]+\s*", " ", message).strip()
    text = re.sub(r"\(Background on this error at:[^)]*\)", "", message)
    text = re.sub(r"\[(?:SQL|parameters|generated in)\b.*", "", text, flags=re.DOTALL)
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:399] + "…"


def _database_error(exc: BaseException) -> str | None:
    """A SQLAlchemy error that reached `guarded` (the journal turns the ones it expects into
    MltraderError) as one line: the first line of the driver's message (no SQL statement, no
    parameters) and a hint; None for any other error. SQLAlchemy is imported here, lazily,
    and only when already loaded (else ``exc`` cannot be one of its errors)."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import SQLAlchemyError

    if not isinstance(exc, SQLAlchemyError):
        return None
    from mltrader.live.journal import driver_message

    first = driver_message(exc)
    return _one_line(
        f"journal database error: {first}: check that the journal (--journal / --session) "
        "is a readable, writable mltrader journal and, for PostgreSQL, that the server is up; "
        "restore a damaged file from a backup (MLTRADER_DEBUG=1 shows the traceback)")


def reflow(doc: str | None) -> str | None:
    """A docstring with each paragraph on one line, so `--help` wraps it to the terminal
    (Typer keeps the source's line breaks after the first paragraph: ragged at 80 columns).
    Lines starting with "-" or spaces after dedent stay lists / blocks."""
    if not doc:
        return doc
    paragraphs = []
    for para in inspect.cleandoc(doc).split("\n\n"):
        lines = para.splitlines()
        if any(ln.startswith(("-", " ", "\b")) for ln in lines):
            paragraphs.append(para)
        else:
            paragraphs.append(" ".join(ln.strip() for ln in lines))
    return "\n\n".join(paragraphs)


def _version(value: bool) -> None:
    if value:
        out.print(f"mltrader {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """mltrader command line."""


@contextmanager
def _progress(label: str, total: int, prefix: str = "", transient: bool = False
              ) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr; yields `advance(message)`. Shown on a terminal (and in
    captured output outside CI unless transient); errors stay one line after a transient bar."""
    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
        transient=transient,
        disable=not err.is_terminal and (transient or "CI" in os.environ),
    ) as bar:
        task = bar.add_task("", total=total)

        def advance(msg: str = "") -> None:
            bar.update(task, advance=1, description=f"{prefix}{msg}")

        yield advance


def _fold_progress(total: int) -> AbstractContextManager[Callable[[str], None]]:
    return _progress("walk-forward folds", total, prefix="last fold: ")


def _unit_progress(total: int) -> AbstractContextManager[Callable[[str], None]]:
    """Units of work on workers or Ray (compare's models): one tick as each finishes."""
    return _progress("models (on the executor)", total, prefix="last done: ")
