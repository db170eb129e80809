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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

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
from fastapi_offline import FastAPIOffline

from mltrader import __version__
from mltrader.dashboard import security as sec
from mltrader.dashboard.data import (
    COMMAND_KINDS,
    SETTABLE,
    Source,
    backtest_dir,
    backtest_equity,
    list_backtests,
)
from mltrader.dashboard.metrics import exposition, registry_for
from mltrader.dashboard.models import (
    AuditEvent,
    Backtest,
    BacktestEquity,
    Command,
    ControlIn,
    ControlOut,
    Decision,
    FillRow,
    Health,
    Order,
    Overview,
    Positions,
    Problem,
    Risk,
)
from mltrader.dashboard.render import (
    _ago,
    _health,
    _num,
    _overlay_chart,
    _overview_chart,
    _pct,
    _short,
    _when,
)
from mltrader.dashboard.state import Dashboard, _own_origin
from mltrader.errors import MltraderError

log = logging.getLogger("mltrader.dashboard")
TEMPLATES = Path(__file__).parent / "templates"

# topics each page section refreshes on (the stream's "changed" keys)
TOPICS = {"overview": "equity fills positions runs", "positions": "positions orders fills",
          "decisions": "decisions orders", "risk": "audit commands",
          "health": "equity audit", "commands": "commands"}


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

    # FastAPIOffline: /docs (Swagger UI 5) and /redoc served from the installed package, no CDN
    app = FastAPIOffline(title="mltrader dashboard", version=__version__, lifespan=lifespan,
                  description="A running session's journal and the backtest run folders. "
                  "Reads need the token (Authorization: Bearer) except from 127.0.0.1 to a "
                  "server bound to 127.0.0.1; controls always need it.")
    app.state.dashboard = dash
    # every open page re-fetches its sections on the same change event: each page is
    # rendered once per change (the stream's seq) and the copy served to the other pages
    partials: dict[tuple[str, bool], tuple[int, bytes, dict[str, str]]] = {}
    partial_locks: dict[tuple[str, bool], asyncio.Lock] = {}
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["num"] = _num
    templates.env.filters["pct"] = _pct
    templates.env.filters["ago"] = _ago
    templates.env.filters["when"] = _when
    templates.env.filters["short"] = _short

    @app.middleware("http")
    async def shared_partials(request: Request, call_next: Any) -> Response:
        # added before `guard`, so it runs inside it: only requests the guard let through
        if (request.method != "GET" or request.headers.get("x-partial") != "1"
                or not dash.stream.clients):
            return await call_next(request)
        key = (f"{request.url.path}?{request.url.query}", dash.authed(request))
        async with partial_locks.setdefault(key, asyncio.Lock()):
            seq = dash.stream.seq
            hit = partials.get(key)
            if hit is not None and hit[0] == seq:
                return Response(hit[1], headers=hit[2])
            resp = await call_next(request)
            chunks = resp.body_iterator  # type: ignore[attr-defined]
            body = b"".join([chunk async for chunk in chunks])
            headers = {k: v for k, v in resp.headers.items() if k != "content-length"}
            if resp.status_code == 200:
                partials[key] = (seq, body, headers)
            return Response(body, resp.status_code, headers=headers)

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
            if path.startswith(("/api", "/metrics", "/openapi", "/docs", "/redoc", "/static")):
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


