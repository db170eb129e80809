"""Fault-injection points for the crash-safety test: SIGKILL the process at the N-th point.

The runner calls `checkpoint(name)` at every place where a crash would leave the journal and
the broker out of step (after an intent is journaled, after a send, after order events are
drained, ...). With ``MLTRADER_CRASH_AT=N`` in the environment the N-th call kills the
process with SIGKILL (no cleanup, no flush: as a power cut would); without it a call is one
comparison. `MLTRADER_CRASH_LOG` names a file that gets the point's name first, so a test can
say where each kill landed.
"""

from __future__ import annotations

import os
import signal

_AT = int(os.environ.get("MLTRADER_CRASH_AT", "0") or 0)
_count = 0


def checkpoint(name: str) -> None:
    """Count one crash point; SIGKILL this process when it is the configured one."""
    global _count
    if not _AT:
        return
    _count += 1
    if _count == _AT:
        path = os.environ.get("MLTRADER_CRASH_LOG")
        if path:
            with open(path, "a") as fh:
                fh.write(name + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
