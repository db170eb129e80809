"""One notification (`Note`) and the text helpers that word it: times, numbers, batches.

Kept apart so the sinks, the worker and the notifier share one message type without cycles.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Note"]

_BATCH_LINES = 50  # lines of a combined message's text; the rest is counted


@dataclass(frozen=True)
class Note:
    """One notification: its event, when it happened, a one-line text and its data."""

    event: str
    time: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.event, "time": self.time, "text": self.text, "data": self.data}


def _when(t: Any) -> str:
    if t is None:
        return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    iso = getattr(t, "isoformat", None)
    return str(iso()) if callable(iso) else str(t)


def _num(x: Any) -> Any:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None if x is None else str(x)
    return f if math.isfinite(f) else None


def _money(x: Any, sign: bool = False) -> str:
    f = _num(x)
    if not isinstance(f, float):
        return "n/a"
    return f"{f:+,.2f}" if sign else f"{f:,.2f}"


def _qty(x: Any) -> str:
    f = _num(x)
    if not isinstance(f, float):
        return "n/a"
    return f"{f:,.0f}" if f == int(f) else f"{f:,.6g}"


def _batch_text(notes: list[Note]) -> str:
    lines = [f"{len(notes)} notifications:"]
    lines += [f"- {n.time} {n.text}" for n in notes[:_BATCH_LINES]]
    if len(notes) > _BATCH_LINES:
        lines.append(f"... and {len(notes) - _BATCH_LINES} more")
    return "\n".join(lines)
