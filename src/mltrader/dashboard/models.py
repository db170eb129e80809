"""The dashboard API's response and request models: what the OpenAPI schema documents."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    buy_and_hold: list[float | None] | None = Field(
        None, description="buy-and-hold equity on the same times (the run's first-bar "
        "equity spread equally over the universe, no costs), when the journal has it")
    roi_buy_and_hold: float | None = Field(None, description="buy-and-hold's total return "
                                           "over the same bars")


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


class BrokerStatus(BaseModel):
    name: str | None = Field(description="the newest run's broker")
    mode: str | None = Field(description="paper or live")
    status: str = Field(description="answering, failing (an error after the last bar "
                        "written), no bar yet, or no run yet")
    last_ok: str | None = Field(description="when the runner last got through a bar")
    last_error: AuditEvent | None = Field(description="the newest broker error (audit)")


class Health(BaseModel):
    journal: str | None = Field(description="the journal URL, password masked")
    journal_reachable: bool
    journal_error: str | None
    last_bar: str | None
    lag_seconds: float | None
    stream_clients: int
    errors: list[AuditEvent]
    broker: BrokerStatus | None
    log_file: str | None = Field(description="the session log the tail is from")
    log_tail: list[str] = Field(description="its last lines, oldest first")
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


