"""N simulated dashboard browsers, for bench/live_latency.py --dashboard-clients N.

    python bench/dashboard_clients.py http://127.0.0.1:PORT N

Each client does what a page's script does (src/mltrader/dashboard/templates/base.html):
it holds the server-sent-event stream GET /api/stream open and, on every `change` event
that touches one of its page's live sections, re-fetches its page with `X-Partial: 1`, at
most one fetch in flight (an event that arrives while a fetch runs is dropped, as the page's
`busy` flag drops it). The clients are spread over the pages /, /positions, /decisions,
/risk and /health.

Protocol with the parent (stdin / stdout, one line each): prints "ready" once every client
got the stream's `hello`; runs until stdin is closed; then prints one JSON line of counts
(clients, change events received, page fetches done, failed fetches, fetch times).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx

from mltrader.dashboard.app import TOPICS

#: page -> the journal tables its live sections follow (the sections' data-live topics)
PAGES = {
    "/": set(TOPICS["overview"].split()) | set(TOPICS["commands"].split()),
    "/positions": set(TOPICS["positions"].split()),
    "/decisions": set(TOPICS["decisions"].split()),
    "/risk": set(TOPICS["risk"].split()),
    "/health": set(TOPICS["health"].split()),
}


class Counts:
    def __init__(self) -> None:
        self.in_flight: set[asyncio.Task[None]] = set()
        self.events = self.fetches = self.failed = self.dropped = 0
        self.fetch_ms: list[float] = []
        self.errors: dict[str, int] = {}


async def fetch_page(http: httpx.AsyncClient, page: str, counts: Counts) -> None:
    t = time.perf_counter()
    try:
        r = await http.get(page, headers={"X-Partial": "1"})
        r.raise_for_status()
        counts.fetches += 1
        counts.fetch_ms.append((time.perf_counter() - t) * 1e3)
    except httpx.HTTPError as exc:
        counts.failed += 1
        why = (f"HTTP {exc.response.status_code}: {exc.response.text[:120]}"
               if isinstance(exc, httpx.HTTPStatusError) else type(exc).__name__)
        counts.errors[why] = counts.errors.get(why, 0) + 1


async def client(http: httpx.AsyncClient, page: str, counts: Counts,
                 hello: asyncio.Event) -> None:
    busy: asyncio.Task[None] | None = None
    async with http.stream("GET", "/api/stream") as r:
        r.raise_for_status()
        event, data = None, ""
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "":  # the end of one event
                if event == "hello":
                    hello.set()
                elif event == "change":
                    counts.events += 1
                    changed = set(json.loads(data).get("changed", []))
                    if not changed & PAGES[page]:
                        pass  # no section of this page follows these tables
                    elif busy is None or busy.done():
                        busy = asyncio.create_task(fetch_page(http, page, counts))
                        counts.in_flight.add(busy)
                        busy.add_done_callback(counts.in_flight.discard)
                    else:
                        counts.dropped += 1
                event, data = None, ""


async def main(url: str, n: int) -> None:
    counts = Counts()
    pages = list(PAGES)
    limits = httpx.Limits(max_connections=2 * n + 4, max_keepalive_connections=2 * n + 4)
    async with httpx.AsyncClient(base_url=url, limits=limits,
                                 timeout=httpx.Timeout(30.0, read=None)) as http:
        hellos = [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.create_task(client(http, pages[i % len(pages)], counts, hellos[i]))
                 for i in range(n)]
        await asyncio.wait_for(asyncio.gather(*(h.wait() for h in hellos)), 60)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
        for t in tasks:  # close the streams; a fetch still running is let finish
            t.cancel()
        await asyncio.gather(*tasks, *counts.in_flight, return_exceptions=True)
    ms = sorted(counts.fetch_ms)
    print(json.dumps({"clients": n, "events": counts.events, "fetches": counts.fetches,
                      "failed": counts.failed, "dropped_busy": counts.dropped,
                      "fetch_median_ms": ms[len(ms) // 2] if ms else None,
                      "fetch_max_ms": ms[-1] if ms else None, "errors": counts.errors}),
          flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
