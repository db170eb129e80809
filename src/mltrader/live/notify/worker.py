"""One sink's delivery: its bounded queue, daemon thread, rate limit, retries and counts.

So a slow or failing sink never holds up trading or the other sinks.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time as _time

from mltrader.config import NotifyConfig
from mltrader.live.notify.note import Note
from mltrader.live.notify.sinks import _Failed, _Sink

log = logging.getLogger("mltrader.live.notify")  # the package's one logger, as before the split

_MAX_BACKOFF_S = 60.0


class _Worker:
    """A sink's queue, its thread, its rate limit, retries and counts."""

    def __init__(self, sink: _Sink, cfg: NotifyConfig, redact) -> None:
        self.sink = sink
        self.cfg = cfg
        self.redact = redact
        self.queue: collections.deque[Note] = collections.deque()
        self.cond = threading.Condition()
        self.closing = False
        self.deadline = math.inf
        self.last_send = -math.inf
        self.counts = dict.fromkeys(
            ("sent", "failed", "dropped", "retried", "coalesced", "messages"), 0)
        self.thread = threading.Thread(target=self._run, name=f"notify-{sink.name}",
                                       daemon=True)
        self.thread.start()

    def put(self, note: Note) -> None:
        with self.cond:
            if self.closing:
                self.counts["dropped"] += 1
                return
            if len(self.queue) >= self.cfg.queue_size:
                self.queue.popleft()
                self.counts["dropped"] += 1
            self.queue.append(note)
            self.cond.notify()

    def close(self, deadline: float) -> None:
        with self.cond:
            self.closing = True
            self.deadline = deadline
            self.cond.notify_all()

    def _wait_until(self, until: float) -> bool:
        """Sleep (under the lock) until `until`, or until close; False when closing."""
        while not self.closing:
            left = until - _time.monotonic()
            if left <= 0:
                return True
            self.cond.wait(left)
        return False

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.closing:
                        self.cond.wait()
                    if not self.closing:  # rate limit: whatever comes meanwhile is combined
                        self._wait_until(self.last_send + self.cfg.min_interval_s)
                    if self.closing and (not self.queue or _time.monotonic() > self.deadline):
                        self.counts["dropped"] += len(self.queue)
                        self.queue.clear()
                        return
                    if self.cfg.min_interval_s > 0:
                        batch = list(self.queue)
                        self.queue.clear()
                    else:  # no rate limit: one message per note
                        batch = [self.queue.popleft()]
                self._send(batch)
        finally:
            self.sink.close()

    def _send(self, batch: list[Note]) -> None:
        name, attempts = self.sink.name, 1 + self.cfg.retries
        for attempt in range(1, attempts + 1):
            try:
                self.sink.deliver(batch)
            except _Failed as e:
                reason = self.redact(str(e))
                with self.cond:
                    out_of_time = self.closing and _time.monotonic() > self.deadline
                    if not e.retry or attempt == attempts or out_of_time:
                        self.counts["failed"] += len(batch)
                        self.last_send = _time.monotonic()
                        why = "not retryable" if not e.retry else (
                            "closing" if out_of_time else f"after {attempt} attempts")
                        log.error("notify %s: gave up on %d notification(s) (%s, %s)",
                                  name, len(batch), reason, why)
                        return
                    self.counts["retried"] += 1
                    delay = min(self.cfg.backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
                    log.warning("notify %s: attempt %d/%d failed (%s); retrying in %.2gs",
                                name, attempt, attempts, reason, delay)
                    self._wait_until(_time.monotonic() + delay)  # closing cuts it short
                continue
            except Exception as e:  # noqa: BLE001 (a bug in a sink must not kill its thread)
                with self.cond:
                    self.counts["failed"] += len(batch)
                    self.last_send = _time.monotonic()
                log.error("notify %s: gave up on %d notification(s) (unexpected %s)",
                          name, len(batch), type(e).__name__)
                return
            with self.cond:
                self.counts["sent"] += len(batch)
                self.counts["messages"] += 1
                if len(batch) > 1:
                    self.counts["coalesced"] += len(batch)
                self.last_send = _time.monotonic()
            if len(batch) > 1:
                log.info("notify %s: sent %d notifications as one message (rate limit)",
                         name, len(batch))
            return
