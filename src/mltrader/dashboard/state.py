"""The dashboard's state: the shared stream poller (`Broadcaster`) and the open source,
its read-only journal views, the token and the one writer of control commands (`Dashboard`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time as _time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from mltrader.dashboard import security as sec
from mltrader.dashboard.data import (
    JournalViews,
    ReadOnlyJournal,
    Source,
)
from mltrader.errors import MltraderError


class Broadcaster:
    """One poller for all stream clients: reads the journal's change marks every
    ``interval`` seconds (in a worker thread) and puts an event in each client's queue."""

    def __init__(self, marks: Any, interval: float) -> None:
        self._marks = marks
        self.interval = interval
        self.queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.seq = 0
        self.last: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self.polls = 0

    @property
    def clients(self) -> int:
        return len(self.queues)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=32)
        self.queues.add(q)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self.queues.discard(q)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _poll(self) -> None:
        while self.queues:
            try:
                marks = await asyncio.to_thread(self._marks)
            except Exception as exc:  # the journal went away: tell the pages, keep polling
                marks = {"error": str(exc)[:200]}
            self.polls += 1
            if self.last is None:  # the first look: nothing changed yet, pages are fresh
                self.last = marks
            elif marks != self.last:
                changed = sorted(k for k in set(marks) | set(self.last or {})
                                 if (self.last or {}).get(k) != marks.get(k))
                self.last = marks
                self.seq += 1
                self.publish({"seq": self.seq, "changed": changed, "marks": marks,
                              "time": _time.time()})
            await asyncio.sleep(self.interval)

    def publish(self, event: dict[str, Any]) -> None:
        for q in list(self.queues):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(event)


class Dashboard:
    """What the routes share: the read-only journal, the runs folder, the token, the
    stream and the (lazy) command writer."""

    def __init__(self, source: Source, token: str, host: str, poll_interval: float) -> None:
        self.source = source
        self.token = token
        self.host = host
        self.csrf = sec.csrf_token(token)
        self.journal: ReadOnlyJournal | None = None
        self.journal_error: str | None = None
        if source.journal_url:
            try:
                self.journal = ReadOnlyJournal(source.journal_url)
            except MltraderError as exc:
                self.journal_error = str(exc)
        self.views = JournalViews(self.journal) if self.journal is not None else None
        self.stream = Broadcaster(self._marks, poll_interval)
        self._writer: Any = None
        self._writer_lock = threading.Lock()

    def _marks(self) -> dict[str, Any]:
        return self.journal.marks() if self.journal is not None else {}

    def need_views(self) -> JournalViews:
        if self.views is None:
            raise HTTPException(404, self.journal_error or "this dashboard shows no journal: "
                                "start it with --session DIR or --journal URL")
        return self.views

    def need_runs(self) -> Path:
        if self.source.runs_dir is None:
            raise HTTPException(404, "this dashboard shows no runs folder: start it with "
                                "--runs DIR")
        return self.source.runs_dir

    # -- security
    def authed(self, request: Request) -> bool:
        return (sec.same(sec.bearer(request.headers.get("authorization")), self.token)
                or sec.same(request.cookies.get(sec.COOKIE), self.token))

    def may_read(self, request: Request) -> bool:
        client = request.client.host if request.client else None
        return self.authed(request) or (sec.is_loopback(self.host) and sec.is_loopback(client))

    def control_allowed(self, request: Request, csrf: str | None) -> bool:
        if sec.same(sec.bearer(request.headers.get("authorization")), self.token):
            return True
        if sec.same(request.cookies.get(sec.COOKIE), self.token):
            return sec.same(csrf or request.headers.get("x-csrf-token"), self.csrf)
        return False

    # -- the one write
    def add_command(self, kind: str, params: Mapping[str, Any] | None, actor: str) -> int:
        from mltrader.live.journal import Journal

        if not hasattr(Journal, "add_command"):
            raise HTTPException(501, "this mltrader's journal has no command table "
                                "(Journal.add_command); upgrade mltrader")
        assert self.source.journal_url is not None
        with self._writer_lock:
            if self._writer is None:
                self._writer = Journal(self.source.journal_url)
            run_id = self.views.run_id() if self.views is not None else None
            return int(self._writer.add_command(kind, params, actor=actor, run_id=run_id))

    def metric_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {"stream_clients": self.stream.clients}
        if self.views is None:
            values["journal_up"] = 0 if self.source.journal_url else None
            return values
        try:
            ov = self.views.overview()
            values.update({k: ov[k] for k in ("equity", "cash", "exposure")})
            values["last_bar_lag_seconds"] = ov["lag_seconds"]
            values.update(self.views.counts())
            values["journal_up"] = 1
        except Exception:
            values["journal_up"] = 0
        return values

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        if self._writer is not None:
            self._writer.close()


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


