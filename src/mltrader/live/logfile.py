"""The session's log file (``session.log`` beside a SQLite journal): what the live loop logs
(market closed, a failed bar, a broker that did not answer) kept on disk, so the dashboard's
Health page can show its tail from another process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import RotatingFileHandler
from pathlib import Path

from sqlalchemy.engine import make_url

LOG_NAME = "session.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def session_log(path: Path | None, logger: str = "mltrader") -> Iterator[Path | None]:
    """Append ``logger``'s INFO and above to ``path`` (normally ``<session>/session.log``;
    rotated at 5 MB, 3 kept) while the block runs; nothing when ``path`` is None."""
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    log = logging.getLogger(logger)
    old = log.level
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield path
    finally:
        log.removeHandler(handler)
        log.setLevel(old)
        handler.close()


def log_beside(journal_url: str | None) -> Path | None:
    """Where a SQLite journal's session log is (None for another database or no URL)."""
    if not journal_url:
        return None
    try:
        url = make_url(journal_url)
    except Exception:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser().parent / LOG_NAME


def tail(path: Path, lines: int = 100, max_bytes: int = 256_000) -> list[str]:
    """The last ``lines`` lines of a text file (reads at most ``max_bytes`` from its end);
    [] when it does not exist."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - max_bytes, 0))
            data = f.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]  # the first line read is probably cut
    return text[-lines:]
