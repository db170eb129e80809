"""One process per trading account: an exclusive lock on a session folder or journal file.

Two processes trading one paper session (or one journal) would both fill orders and journal
them: double trades, and a `flatten` whose closing orders the other process's account file
overwrites. `hold(path)` takes a non-blocking `flock` on `path` (created if missing) for the
life of the `with` block and writes the holder's pid into it; a second process gets a
one-line error naming that pid. The lock is advisory and dies with its process (a SIGKILL
releases it), so a crashed session never stays locked. No-op where `fcntl` is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mltrader.errors import MltraderError

LOCK_FILE = ".lock"


@contextmanager
def hold(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a lock file) while the block runs; `what` names
    the locked thing in the error ("session runs/paper-session")."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no inter-process lock
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise MltraderError(f"{what} is in use by another mltrader process (pid "
                                f"{holder}); wait for it to finish or stop it (Ctrl-C), "
                                "then run this again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
