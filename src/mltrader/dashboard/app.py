"""The dashboard's FastAPI app: pages, the JSON API, the live stream, metrics and controls.

``create_app(source)`` serves:

* pages (server-rendered, templates/): ``/`` overview, ``/positions``, ``/decisions``,
  ``/risk``, ``/health``, ``/backtests`` (+ each run's ``report.html``, read-only), ``/login``;
* the JSON API under ``/api`` (pydantic response models: the OpenAPI schema at /docs
  describes every endpoint);
* ``/api/stream``: server-sent events, one small JSON event when the journal changes. ONE
  poller (an asyncio task, started with the first client, stopped after the last) reads the
  journal's change marks every ``poll_interval`` seconds in a worker thread and fans the
  event out to every client's queue; the pages' script then re-fetches only the sections
  whose topics changed;
* ``/metrics``: Prometheus;
* ``POST /api/control/{kind}``: pause, resume, flatten, kill, set: written to the journal's
  command table (``Journal.add_command``) with actor ``dashboard@<client ip>``; the runner
  applies them between bars and the page shows their status. This is the only write the
  dashboard ever makes, through a separate ``Journal`` opened on the first accepted control.

Security is in ``security`` (module doc there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time as _time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from mltrader import __version__
from mltrader.dashboard import security as sec
from mltrader.dashboard.data import (
    COMMAND_KINDS,
    SETTABLE,
    JournalViews,
    ReadOnlyJournal,
    Source,
    backtest_dir,
    backtest_equity,
    list_backtests,
)
from mltrader.dashboard.metrics import exposition, registry_for
from mltrader.errors import MltraderError

log = logging.getLogger("mltrader.dashboard")
TEMPLATES = Path(__file__).parent / "templates"

# topics each page section refreshes on (the stream's "changed" keys)
TOPICS = {"overview": "equity fills positions runs", "positions": "positions orders fills",
          "decisions": "decisions orders", "risk": "audit commands",
          "health": "equity audit", "commands": "commands"}


# ------------------------------------------------------------------------------ models


class Row(BaseModel):
    model_config = ConfigDict(extra="allow")


class RunInfo(Row):
    id: int
    strategy: str
    broker: str
    mode: str
    started_at: str | None = None
    config_hash: str | None = None


class CurvePoint(BaseModel):
    time: str
    equity: float
    drawdown: float


class Overview(BaseModel):
    run: RunInfo | None
    equity: float | None
    cash: float | None
    roi_total: float | None = Field(description="equity / first snapshot - 1")
    roi_today: float | None = Field(description="vs the last snapshot of the previous day")
    max_drawdown: float | None
    drawdown: float | None
    sharpe: float | None = Field(description="annualised, from daily equity returns so far")
    win_rate: float | None = Field(description="share of closing trades with a profit")
    closed_trades: int
    exposure: float | None = Field(description="(equity - cash) / equity")
    last_bar: str | None
    lag_seconds: float | None = Field(description="now - the last bar's time")
    bars: int
    fills: int
    curve: list[CurvePoint]
    buy_and_hold: list[float] | None = Field(
        None, description="buy-and-hold equity on the same times, when known")


class Position(Row):
    symbol: str
    qty: float
    avg_price: float | None = None
    time: str | None = None


class Order(Row):
    client_order_id: str
    symbol: str
    side: str
    qty: float
    type: str
    status: str
    limit_price: float | None = None
    stop_price: float | None = None
    protective: bool = Field(False, description="a protective stop / target / exit order")


class FillRow(Row):
    fill_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: float
    price: float
    commission: float
    time: str


class Positions(BaseModel):
    positions: list[Position]
    working_orders: list[Order]
    fills: list[FillRow]


class Decision(Row):
    bar_time: str
    symbol: str
    features: dict[str, Any] | None = None
    prediction: float | None = None
    target: float | None = None
    model_artifact_hash: str
    order: dict[str, Any] | None = None


class AuditEvent(Row):
    id: int
    time: str
    actor: str
    action: str
    detail: dict[str, Any] | None = None
    run_id: int | None = None


class Command(Row):
    id: int
    kind: str
    status: str
    actor: str | None = None
    params: Any = None
    time: str | None = None
    applied_at: str | None = None
    result: Any = None


class Risk(BaseModel):
    events: list[AuditEvent]
    commands: list[Command]


class Health(BaseModel):
    journal: str | None = Field(description="the journal URL, password masked")
    journal_reachable: bool
    journal_error: str | None
    last_bar: str | None
    lag_seconds: float | None
    stream_clients: int
    errors: list[AuditEvent]
    version: str


class Backtest(BaseModel):
    name: str
    total_return: float | None
    cagr: float | None
    sharpe: float | None
    max_drawdown: float | None
    bh_total_return: float | None
    bh_sharpe: float | None
    has_report: bool
    has_equity: bool


class BacktestEquity(BaseModel):
    name: str
    time: list[str]
    equity: list[float | None]
    buy_and_hold: list[float | None] | None


class ControlIn(BaseModel):
    params: dict[str, Any] | None = Field(
        None, description='for "set": {"param": "risk.max_position", "value": 0.2}; '
        'otherwise optional, e.g. {"reason": "..."}')
    csrf: str | None = Field(None, description="the page's CSRF token (cookie sessions)")


class ControlOut(BaseModel):
    id: int
    kind: str
    status: Literal["pending"]
    actor: str


class StreamEvent(BaseModel):
    seq: int
    changed: list[str]
    marks: dict[str, Any]
    time: float


class Problem(BaseModel):
    detail: str


# ------------------------------------------------------------------------------ state


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


# ------------------------------------------------------------------------------ the app


def create_app(source: Source, *, token: str | None = None, host: str = "127.0.0.1",
               token_from_env: bool | None = None, poll_interval: float = 0.5) -> FastAPI:
    """The dashboard over ``source``. ``token``: default MLTRADER_DASHBOARD_TOKEN, else a
    generated one (``app.state.dashboard.token``); ``host``: the address the server binds
    (decides whether anonymous loopback reads are allowed; a non-loopback host needs a
    token from the environment)."""
    if token is None:
        token, from_env = sec.resolve_token()
        token_from_env = from_env if token_from_env is None else token_from_env
    sec.check_bind(host, bool(token_from_env))
    dash = Dashboard(source, token, host, poll_interval)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await dash.stream.stop()
        dash.close()

    app = FastAPI(title="mltrader dashboard", version=__version__, lifespan=lifespan,
                  description="A running session's journal and the backtest run folders. "
                  "Reads need the token (Authorization: Bearer) except from 127.0.0.1 to a "
                  "server bound to 127.0.0.1; controls always need it.")
    app.state.dashboard = dash
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["num"] = _num
    templates.env.filters["pct"] = _pct
    templates.env.filters["when"] = _when
    templates.env.filters["short"] = _short

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if not sec.host_allowed(request.headers.get("host"), dash.host):
            return PlainTextResponse("host not allowed", 400)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not sec.origin_ok(
                request.headers.get("origin"), request.headers.get("referer"),
                _own_origin(request)):
            return JSONResponse({"detail": "cross-site request refused"}, 403)
        path = request.url.path
        if path != "/login" and not path.startswith("/api/control/") and not dash.may_read(
                request):
            if path.startswith(("/api", "/metrics", "/openapi", "/docs", "/static")):
                return JSONResponse({"detail": "token required: Authorization: Bearer "
                                               "<MLTRADER_DASHBOARD_TOKEN>"}, 401)
            return RedirectResponse("/login", 303)
        return await call_next(request)

    @app.exception_handler(MltraderError)
    async def _mltrader_error(_request: Request, exc: MltraderError) -> JSONResponse:
        return JSONResponse({"detail": " ".join(str(exc).split())}, 400)

    def page(request: Request, name: str, **ctx: Any) -> HTMLResponse:
        partial = request.headers.get("x-partial") == "1"
        return templates.TemplateResponse(request, name, {
            "page": name.removesuffix(".html"), "partial": partial,
            "csrf": dash.csrf if dash.authed(request) else "", "topics": TOPICS,
            "has_journal": dash.views is not None, "has_runs": dash.source.runs_dir is not None,
            "journal_error": dash.journal_error, "settable": SETTABLE,
            "version": __version__, **ctx})

    # ---------------------------------------------------------------- pages
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview_page(request: Request) -> HTMLResponse:
        if dash.views is None and dash.source.runs_dir is not None:
            return RedirectResponse("/backtests", 303)  # type: ignore[return-value]
        ov = dash.views.overview() if dash.views else None
        return page(request, "overview.html", ov=ov,
                    chart=_overview_chart(ov) if ov else None,
                    commands=dash.views.commands(20) if dash.views else [])

    @app.get("/positions", response_class=HTMLResponse, include_in_schema=False)
    def positions_page(request: Request) -> HTMLResponse:
        v = dash.need_views()
        return page(request, "positions.html", positions=v.positions(),
                    orders=v.orders(open_only=True), fills=v.fills(200))

    @app.get("/decisions", response_class=HTMLResponse, include_in_schema=False)
    def decisions_page(request: Request, symbol: str | None = None, start: str | None = None,
                       end: str | None = None, limit: int = Query(300, ge=1, le=5000)
                       ) -> HTMLResponse:
        v = dash.need_views()
        return page(request, "decisions.html", rows=v.decisions(symbol, start, end, limit),
                    symbol=symbol or "", start=start or "", end=end or "")

    @app.get("/risk", response_class=HTMLResponse, include_in_schema=False)
    def risk_page(request: Request) -> HTMLResponse:
        v = dash.need_views()
        return page(request, "risk.html", events=v.risk(300), commands=v.commands(100))

    @app.get("/health", response_class=HTMLResponse, include_in_schema=False)
    def health_page(request: Request) -> HTMLResponse:
        return page(request, "health.html", h=_health(dash))

    @app.get("/backtests", response_class=HTMLResponse, include_in_schema=False)
    def backtests_page(request: Request, sort: str = "name", desc: bool = False,
                       a: str | None = None, b: str | None = None) -> HTMLResponse:
        runs = dash.need_runs()
        rows = list_backtests(runs)
        if rows and sort in rows[0]:
            rows.sort(key=lambda r: (r[sort] is None, r[sort] if r[sort] is not None else 0),
                      reverse=desc)
        overlay = [backtest_equity(runs, n) for n in (a, b) if n]
        return page(request, "backtests.html", rows=rows, sort=sort, desc=desc, a=a or "",
                    b=b or "", chart=_overlay_chart(overlay) if overlay else None)

    @app.get("/backtests/{name}/report.html", response_class=HTMLResponse,
             include_in_schema=False)
    def backtest_report(name: str) -> FileResponse:
        path = backtest_dir(dash.need_runs(), name) / "report.html"
        if not path.is_file():
            raise HTTPException(404, f"run {name!r} has no report.html")
        return FileResponse(path, media_type="text/html",
                            headers={"Content-Security-Policy": "sandbox allow-scripts"})

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, token: str | None = None) -> Response:
        if token is not None:
            return _login(token)
        return page(request, "login.html", failed=False)

    @app.post("/login", include_in_schema=False)
    async def login_post(request: Request) -> Response:
        form = await request.form()
        return _login(str(form.get("token") or ""))

    def _login(token: str) -> Response:
        if not sec.same(token, dash.token):
            return HTMLResponse("<p>Wrong token. <a href='/login'>Try again</a></p>", 401)
        resp = RedirectResponse("/", 303)
        resp.set_cookie(sec.COOKIE, dash.token, httponly=True, samesite="strict")
        return resp

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        import plotly

        return FileResponse(Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
                            media_type="application/javascript",
                            headers={"Cache-Control": "max-age=86400"})

    # ---------------------------------------------------------------- API
    @app.get("/api/overview", response_model=Overview, tags=["journal"])
    def api_overview() -> Any:
        """Equity curve, drawdown, ROI today / total, Sharpe so far, win rate, exposure,
        cash and the last bar (time and lag) of the newest run."""
        return dash.need_views().overview()

    @app.get("/api/positions", response_model=Positions, tags=["journal"])
    def api_positions() -> Any:
        """Positions at the last snapshot, working (non-final) orders, the newest fills."""
        v = dash.need_views()
        return {"positions": v.positions(), "working_orders": v.orders(open_only=True),
                "fills": v.fills(500)}

    @app.get("/api/orders", response_model=list[Order], tags=["journal"])
    def api_orders(open_only: bool = False) -> Any:
        """The newest run's orders (``open_only``: every non-final order)."""
        return dash.need_views().orders(open_only)

    @app.get("/api/fills", response_model=list[FillRow], tags=["journal"])
    def api_fills(limit: int = Query(500, ge=1, le=100000)) -> Any:
        """The newest run's fills, newest first."""
        return dash.need_views().fills(limit)

    @app.get("/api/decisions", response_model=list[Decision], tags=["journal"])
    def api_decisions(symbol: str | None = None,
                      start: str | None = Query(None, description="YYYY-MM-DD"),
                      end: str | None = Query(None, description="YYYY-MM-DD"),
                      limit: int = Query(500, ge=1, le=100000)) -> Any:
        """Per bar and symbol: features, prediction, target, the order, the model hash."""
        return dash.need_views().decisions(symbol, start, end, limit)

    @app.get("/api/risk", response_model=Risk, tags=["journal"])
    def api_risk(limit: int = Query(500, ge=1, le=100000)) -> Any:
        """Audit events of guards, resizes and commands, and the command table."""
        v = dash.need_views()
        return {"events": v.risk(limit), "commands": v.commands(200)}

    @app.get("/api/audit", response_model=list[AuditEvent], tags=["journal"])
    def api_audit(limit: int = Query(500, ge=1, le=100000)) -> Any:
        """Every audit event, newest first."""
        return dash.need_views().audit(limit)

    @app.get("/api/commands", response_model=list[Command], tags=["control"])
    def api_commands(limit: int = Query(200, ge=1, le=10000)) -> Any:
        """The command table, newest first: pending, applied or refused by the runner."""
        return dash.need_views().commands(limit)

    @app.get("/api/health", response_model=Health, tags=["journal"])
    def api_health() -> Any:
        """Journal reachable, last bar lag, stream clients, recent errors (audit)."""
        return _health(dash)

    @app.get("/api/backtests", response_model=list[Backtest], tags=["backtests"])
    def api_backtests() -> Any:
        """The runs/ folders with a metrics.json."""
        return list_backtests(dash.need_runs())

    @app.get("/api/backtests/{name}/equity", response_model=BacktestEquity,
             responses={404: {"model": Problem}}, tags=["backtests"])
    def api_backtest_equity(name: str) -> Any:
        """One run's equity curve (and buy-and-hold's)."""
        runs = dash.need_runs()
        try:
            backtest_dir(runs, name)
        except MltraderError as exc:
            raise HTTPException(404, str(exc)) from None
        return backtest_equity(runs, name)

    @app.get("/api/stream", tags=["live"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "server-sent events; data: a StreamEvent"}})
    async def api_stream(request: Request) -> StreamingResponse:
        """Server-sent events: ``hello`` at once, then ``change`` (a StreamEvent: which
        journal tables changed) within ~0.5 s of a write; a comment every 15 s."""
        q = dash.stream.subscribe()

        async def events() -> AsyncIterator[str]:
            try:
                yield f"event: hello\ndata: {json.dumps({'seq': dash.stream.seq})}\n\n"
                idle = 0.0
                while True:
                    try:
                        ev = await asyncio.wait_for(q.get(), 1.0)
                    except TimeoutError:
                        if await request.is_disconnected():
                            break
                        idle += 1.0
                        if idle >= 15:
                            idle = 0.0
                            yield ": keep-alive\n\n"
                        continue
                    idle = 0.0
                    yield f"event: change\ndata: {json.dumps(ev, default=str)}\n\n"
            finally:
                dash.stream.unsubscribe(q)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    @app.get("/metrics", tags=["live"], response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus text format: mltrader_equity, _cash, _exposure, _open_orders,
        _rejections, _guard_trips, _last_bar_lag_seconds, _journal_up, _stream_clients."""
        return Response(exposition(registry_for(dash.metric_values)),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/api/control/{kind}", response_model=ControlOut, status_code=202,
              tags=["control"], responses={401: {"model": Problem}, 403: {"model": Problem},
                                           400: {"model": Problem}, 501: {"model": Problem}})
    def control(request: Request, kind: Literal["pause", "resume", "flatten", "kill", "set"],
                body: ControlIn | None = Body(None)) -> Any:
        """Queue a command for the runner (it applies it between bars). Needs the token:
        ``Authorization: Bearer``, or the login cookie plus the page's CSRF token. "set"
        changes one whitelisted parameter: params {"param": ..., "value": number or null}."""
        body = body or ControlIn()
        if not dash.control_allowed(request, body.csrf):
            raise HTTPException(401, "control needs the token (Authorization: Bearer) or the "
                                "page's CSRF token")
        if kind not in COMMAND_KINDS:  # pragma: no cover - the path type already says so
            raise HTTPException(400, f"unknown command {kind!r}")
        params = dict(body.params or {})
        if kind == "set":
            key, value = params.get("param"), params.get("value")
            if key not in SETTABLE:
                raise HTTPException(400, f"set: param must be one of {', '.join(SETTABLE)}")
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)):
                raise HTTPException(400, "set: value must be a number or null")
            params = {"param": key, "value": value}
        dash.need_views()
        actor = f"dashboard@{request.client.host if request.client else 'unknown'}"
        cid = dash.add_command(kind, params or None, actor)
        log.info("command %s queued by %s (id %d)", kind, actor, cid)
        return {"id": cid, "kind": kind, "status": "pending", "actor": actor}

    return app


# ------------------------------------------------------------------------------ helpers


def _health(dash: Dashboard) -> dict[str, Any]:
    out: dict[str, Any] = {"journal": dash.journal.safe_url if dash.journal else None,
                           "journal_reachable": False, "journal_error": dash.journal_error,
                           "last_bar": None, "lag_seconds": None,
                           "stream_clients": dash.stream.clients, "errors": [],
                           "version": __version__}
    if dash.views is not None:
        try:
            ov = dash.views.overview()
            out.update(journal_reachable=True, last_bar=ov["last_bar"],
                       lag_seconds=ov["lag_seconds"], errors=dash.views.errors(50))
        except Exception as exc:
            out["journal_error"] = " ".join(str(exc).split())[:300]
    return out


def _overview_chart(ov: Mapping[str, Any]) -> str:
    t = [p["time"] for p in ov["curve"]]
    data: list[dict[str, Any]] = [
        {"x": t, "y": [p["equity"] for p in ov["curve"]], "name": "equity", "type": "scatter",
         "mode": "lines"},
        {"x": t, "y": [p["drawdown"] for p in ov["curve"]], "name": "drawdown",
         "type": "scatter", "mode": "lines", "yaxis": "y2", "fill": "tozeroy"}]
    if ov.get("buy_and_hold"):
        data.insert(1, {"x": t, "y": ov["buy_and_hold"], "name": "buy & hold",
                        "type": "scatter", "mode": "lines"})
    layout = {"height": 420, "margin": {"t": 20, "l": 60, "r": 20, "b": 30},
              "yaxis": {"domain": [0.32, 1], "title": "equity"},
              "yaxis2": {"domain": [0, 0.25], "tickformat": ".0%", "title": "drawdown"},
              "legend": {"orientation": "h"}}
    return json.dumps({"data": data, "layout": layout})


def _overlay_chart(curves: list[dict[str, Any]]) -> str:
    data = []
    for c in curves:
        first = next((v for v in c["equity"] if v), None) or 1.0
        data.append({"x": c["time"], "y": [v / first if v is not None else None
                                           for v in c["equity"]],
                     "name": c["name"], "type": "scatter", "mode": "lines"})
    layout = {"height": 420, "margin": {"t": 20, "l": 60, "r": 20, "b": 30},
              "yaxis": {"title": "growth of 1"}, "legend": {"orientation": "h"}}
    return json.dumps({"data": data, "layout": layout})


def _num(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, int | float):
        return f"{v:,.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    return "–" if v is None else f"{float(v) * 100:.2f}%"


def _when(v: Any) -> str:
    if not v:
        return "–"
    try:
        return pd.Timestamp(v).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(v)


def _short(v: Any, n: int = 120) -> str:
    if isinstance(v, Mapping):
        v = ", ".join(f"{k}={_num(x, 4) if isinstance(x, float) else x}" for k, x in v.items())
    s = "" if v is None else str(v)
    return s if len(s) <= n else s[: n - 1] + "…"
