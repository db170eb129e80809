"""What the journal says when the database fails: ``JournalError`` and the driver's
message turned into one line naming the journal (password masked) and the fix."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy.exc import OperationalError

from mltrader.errors import MltraderError
from mltrader.live.journal.redact import MASK


class JournalError(MltraderError):
    """The journal cannot be opened or written (closed, locked, newer schema, bad URL)."""


def is_locked(exc: OperationalError) -> bool:
    msg = str(getattr(exc, "orig", exc)).lower()
    return "locked" in msg or "busy" in msg


def driver_message(exc: BaseException) -> str:
    """The database driver's own message of a SQLAlchemy error, on one line: no SQL
    statement, no parameters, no "(Background on this error at: ...)" link."""
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc)
    text_ = re.sub(r"\s*\(Background on this error at:[^)]*\)", "", text_)
    text_ = re.split(r"\n\s*\[SQL:", text_, maxsplit=1)[0]
    lines = [ln.strip() for ln in text_.splitlines() if ln.strip()]
    return lines[0] if lines else type(orig if orig is not None else exc).__name__


# (substring of the driver's message, what it means, the fix): SQLite's wording
SQLITE_PROBLEMS = (
    (("file is not a database", "malformed", "not a database", "corrupt"),
     "is not a readable database",
     "restore it from a backup or point --journal / --session at another one"),
    (("readonly", "read-only"),
     "is read-only", "make the file and its folder writable"),
    (("unable to open",),
     "cannot be opened",
     "check that the path names a file (not a folder) and that the file and its folder "
     "exist and are readable and writable"),
    (("disk is full", "database or disk is full"),
     "cannot be written: the disk is full", "free some disk space"),
    (("disk i/o error",),
     "cannot be read or written (disk I/O error)",
     "check the disk and the file's permissions, or point --journal / --session at "
     "another journal"),
)


def db_error(exc: BaseException, backend: str, safe_url: str,
             secrets: Iterable[str] = ()) -> JournalError:
    """A driver / SQLAlchemy error as ONE line naming the journal (password masked),
    the driver's message (no SQL, no parameters) and the fix."""
    msg = driver_message(exc)
    for secret in sorted(secrets, key=len, reverse=True):
        msg = msg.replace(secret, MASK)
    low = msg.lower()
    where = f"journal {safe_url}"
    if backend == "sqlite":
        for needles, what, fix in SQLITE_PROBLEMS:
            if any(n in low for n in needles):
                return JournalError(f"{where} {what} ({msg}): {fix}")
        return JournalError(f"{where}: database error ({msg}): check the file, or point "
                            "--journal / --session at another journal")
    if "permission denied" in low or "must be owner" in low:
        return JournalError(f"{where}: permission denied ({msg}): grant the database user "
                            "rights to create and write tables, or use another user")
    if isinstance(exc, OperationalError) and (
            getattr(exc, "statement", None) is None or "connect" in low
            or "server closed" in low or getattr(exc, "connection_invalidated", False)):
        return JournalError(f"{where}: cannot connect ({msg}): start the server or fix "
                            "the URL")
    return JournalError(f"{where}: database error ({msg}): check the database and the "
                        "user's rights")
