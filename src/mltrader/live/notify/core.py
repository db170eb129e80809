"""`Notifier`: the live runner's one entry point for fills, guard trips, errors and summaries.

It words each event as a `Note`, hands it to every sink's worker without blocking, and closes.
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Mapping
from typing import Any

from mltrader.config import NotifyConfig
from mltrader.live.notify.credentials import _BOT_PATH, check_notify_secrets
from mltrader.live.notify.note import Note, _money, _num, _qty, _when
from mltrader.live.notify.wiring import _build_sinks, _describe
from mltrader.live.notify.worker import _Worker

__all__ = ["Notifier"]

log = logging.getLogger("mltrader.live.notify")  # the package's one logger, as before the split


class Notifier:
    """Sends the live runner's events to the configured sinks without ever blocking it.

    ``Notifier(cfg.notify, source=cfg.name)``; then `fill`, `guard`, `error` and
    `daily_summary` as things happen (each returns at once and never raises), `stats()` for
    the counts, and `close(timeout)` at shutdown to flush what is queued. With no sink
    configured every call is a no-op.
    """

    def __init__(self, cfg: NotifyConfig, env: Mapping[str, str] | None = None,
                 source: str = "mltrader") -> None:
        self.cfg = cfg
        secrets = check_notify_secrets(cfg, env)
        self._secrets = [s for s in secrets.values() if len(s) >= 4]
        self._events = frozenset(cfg.events)
        self._closed = False
        sinks = _build_sinks(cfg, secrets, source)
        self._workers = {s.name: _Worker(s, cfg, self._redact) for s in sinks}
        if sinks:
            log.info("notify: sending %s to %s", ", ".join(cfg.events) or "nothing",
                     ", ".join(_describe(s) for s in sinks))

    # -- the events

    def fill(self, symbol: str, side: str, qty: float, price: float, time: Any = None) -> None:
        """An order filled: `side` buy / sell, `qty` shares (unsigned), at `price`."""
        self._emit("fill", time, lambda: (
            f"fill {str(side).upper()} {_qty(qty)} {symbol} @ {_money(price)}",
            {"symbol": str(symbol), "side": str(side), "qty": _num(qty),
             "price": _num(price)}))

    def guard(self, name: str, detail: str = "", time: Any = None) -> None:
        """A risk guard tripped (daily loss limit, kill switch, ...): `detail` says what."""
        self._emit("guard", time, lambda: (
            f"guard {name}" + (f": {detail}" if detail else ""),
            {"name": str(name), "detail": str(detail)}))

    def error(self, message: str, time: Any = None) -> None:
        """An error the runner met (and logged)."""
        self._emit("error", time, lambda: (f"error: {message}", {"message": str(message)}))

    def daily_summary(self, date: Any, equity: float, pnl_day: float, pnl_total: float,
                      fills: int, drawdown: float, time: Any = None) -> None:
        """The day's end: equity, the day's and the total P&L, the day's fills, the drawdown
        from the peak (a fraction, 0.05 = 5%)."""
        def build() -> tuple[str, dict]:
            dd = _num(drawdown)
            dd_txt = f"{dd:.2%}" if isinstance(dd, float) else "n/a"
            day = _when(date)[:10] if not isinstance(date, str) else date
            return (f"daily summary {day}: equity {_money(equity)}, day P&L "
                    f"{_money(pnl_day, True)}, total P&L {_money(pnl_total, True)}, "
                    f"{fills} fill(s), drawdown {dd_txt}",
                    {"date": day, "equity": _num(equity), "pnl_day": _num(pnl_day),
                     "pnl_total": _num(pnl_total), "fills": _num(fills), "drawdown": dd})
        self._emit("daily_summary", time if time is not None else date, build)

    # -- the rest

    @property
    def enabled(self) -> bool:
        """Whether any sink is configured."""
        return bool(self._workers)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per sink: notes `sent`, `failed` (after the retries), `dropped` (queue full or
        closed), `coalesced` (sent inside a combined message), `retried` (extra attempts),
        `messages` (deliveries that succeeded), and `queued` (waiting now)."""
        out = {}
        for name, w in self._workers.items():
            with w.cond:
                out[name] = {**w.counts, "queued": len(w.queue)}
        return out

    def close(self, timeout: float = 5.0) -> bool:
        """Stop taking events, deliver what is queued (rate limit waived) for up to `timeout`
        seconds, and return whether every sink finished; never raises."""
        self._closed = True
        deadline = _time.monotonic() + max(timeout, 0.0)
        for w in self._workers.values():
            w.close(deadline)
        done = True
        for w in self._workers.values():
            w.thread.join(max(deadline - _time.monotonic(), 0.0))
            done = done and not w.thread.is_alive()
        return done

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _emit(self, event: str, time: Any, build) -> None:
        if not self._workers or event not in self._events:
            return
        try:
            text, data = build()
            note = Note(event, _when(time), str(text), data)
            for w in self._workers.values():
                w.put(note)
        except Exception as e:  # noqa: BLE001 (a notification must never stop trading)
            log.error("notify: could not queue a %s notification (%s)", event,
                      self._redact(f"{type(e).__name__}: {e}"))

    def _redact(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return _BOT_PATH.sub("/bot***/", text)
