"""Notifications of the live runner: fills, guard trips, errors and a daily summary.

`Notifier` sends them to the sinks of the run config's `notify` section: a webhook (a JSON
POST), Telegram (the Bot API's sendMessage) and e-mail (SMTP, optional STARTTLS and login).
Secrets come only from the environment: MLTRADER_TELEGRAM_TOKEN, MLTRADER_SMTP_USER /
MLTRADER_SMTP_PASSWORD and, optionally, MLTRADER_WEBHOOK_TOKEN (a bearer token); a configured
sink whose secret is missing is a `ConfigError` at start.

Trading never waits for a notification: each call (`fill`, `guard`, `error`,
`daily_summary`) only appends the message to one bounded queue per sink and returns; it never
raises. One daemon thread per sink delivers, with a timeout per attempt, bounded retries with
doubling backoff, and a rate limit (at most one message per `min_interval_s`: whatever
arrives in between goes out as one combined message). A full queue drops its oldest message.
Every failure is logged as one line that never holds a secret, and `stats()` counts, per
sink, the messages sent, failed, dropped and coalesced and the retries made.

The webhook receives one note, ``{"source", "event", "time", "text", "data"}``, or, for a
combined message, ``{"source", "event": "batch", "count", "text", "events": [note, ...]}``.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import math
import os
import re
import smtplib
import ssl
import threading
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx

from mltrader.config import NotifyConfig
from mltrader.errors import ConfigError

__all__ = ["ENV_SMTP_PASSWORD", "ENV_SMTP_USER", "ENV_TELEGRAM_TOKEN", "ENV_WEBHOOK_TOKEN",
           "Note", "Notifier", "check_notify_secrets"]

log = logging.getLogger(__name__)

ENV_TELEGRAM_TOKEN = "MLTRADER_TELEGRAM_TOKEN"
ENV_SMTP_USER = "MLTRADER_SMTP_USER"
ENV_SMTP_PASSWORD = "MLTRADER_SMTP_PASSWORD"  # noqa: S105 (the variable's name, not a secret)
ENV_WEBHOOK_TOKEN = "MLTRADER_WEBHOOK_TOKEN"  # noqa: S105

_TELEGRAM_MAX = 4096  # the Bot API's limit on a message's text
_BATCH_LINES = 50  # lines of a combined message's text; the rest is counted
_MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class Note:
    """One notification: its event, when it happened, a one-line text and its data."""

    event: str
    time: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.event, "time": self.time, "text": self.text, "data": self.data}


class _Failed(Exception):
    """A delivery attempt failed; `retry` says whether another attempt may succeed."""

    def __init__(self, reason: str, retry: bool = True) -> None:
        super().__init__(reason)
        self.retry = retry


# ---------------------------------------------------------------- secrets and redaction


def check_notify_secrets(cfg: NotifyConfig, env: Mapping[str, str] | None = None) -> dict:
    """The secrets the configured sinks need, read from `env` (default: os.environ).

    A missing one is a one-line `ConfigError` naming the variable to set."""
    env = os.environ if env is None else env
    secrets: dict[str, str] = {}
    if cfg.telegram is not None:
        token = env.get(ENV_TELEGRAM_TOKEN, "").strip()
        if not token:
            raise ConfigError(f"notify.telegram is configured but {ENV_TELEGRAM_TOKEN} is not "
                              "set; export the bot token (from @BotFather) in that variable")
        secrets["telegram_token"] = token
    if cfg.email is not None:
        user = env.get(ENV_SMTP_USER, "").strip()
        password = env.get(ENV_SMTP_PASSWORD, "")
        if user and not password:
            raise ConfigError(f"notify.email: {ENV_SMTP_USER} is set but {ENV_SMTP_PASSWORD} is "
                              "not; export the SMTP password (or unset the user for a relay "
                              "without login)")
        if password and not user:
            raise ConfigError(f"notify.email: {ENV_SMTP_PASSWORD} is set but {ENV_SMTP_USER} is "
                              "not; export the SMTP login name too")
        if user:
            secrets["smtp_user"], secrets["smtp_password"] = user, password
    if cfg.webhook is not None and env.get(ENV_WEBHOOK_TOKEN, "").strip():
        secrets["webhook_token"] = env[ENV_WEBHOOK_TOKEN].strip()
    return secrets


_BOT_PATH = re.compile(r"/bot[^/\s\"']+/")


class _RedactBotTokens(logging.Filter):
    """httpx logs each request's URL at INFO; a Telegram URL carries the bot token."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 (a broken record is not ours to fix)
            return True
        if "/bot" in msg:
            record.msg, record.args = _BOT_PATH.sub("/bot***/", msg), ()
        return True


def _install_httpx_redaction() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactBotTokens) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactBotTokens())


# ---------------------------------------------------------------- formatting


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


# ---------------------------------------------------------------- sinks


class _Sink:
    """One destination; `deliver` sends one message carrying `notes` or raises `_Failed`."""

    name = "sink"

    def __init__(self, source: str, timeout_s: float) -> None:
        self.source = source
        self.timeout_s = timeout_s

    def deliver(self, notes: list[Note]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sink holds (its HTTP connections)."""

    def text(self, notes: list[Note]) -> str:
        body = notes[0].text if len(notes) == 1 else _batch_text(notes)
        return f"[{self.source}] {body}"


class _HttpSink(_Sink):
    def __init__(self, source: str, timeout_s: float) -> None:
        super().__init__(source, timeout_s)
        self._client: httpx.Client | None = None

    def _post(self, url: str, payload: dict, headers: dict[str, str] | None = None
              ) -> httpx.Response:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s))
        try:
            resp = self._client.post(
                url, content=json.dumps(payload, default=str).encode(),
                headers={"Content-Type": "application/json", **(headers or {})})
        except httpx.TimeoutException as e:
            raise _Failed(f"timed out after {self.timeout_s:g}s ({type(e).__name__})") from None
        except httpx.HTTPError as e:
            raise _Failed(f"{type(e).__name__}") from None
        if resp.status_code >= 400:
            retry = resp.status_code >= 500 or resp.status_code in (408, 425, 429)
            raise _Failed(f"HTTP {resp.status_code}", retry=retry)
        return resp

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class _Webhook(_HttpSink):
    name = "webhook"

    def __init__(self, source: str, timeout_s: float, url: str, token: str | None) -> None:
        super().__init__(source, timeout_s)
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def deliver(self, notes: list[Note]) -> None:
        if len(notes) == 1:
            payload = {"source": self.source, **notes[0].as_dict()}
        else:
            payload = {"source": self.source, "event": "batch", "count": len(notes),
                       "text": _batch_text(notes), "events": [n.as_dict() for n in notes]}
        self._post(self.url, payload, self.headers)


class _Telegram(_HttpSink):
    name = "telegram"

    def __init__(self, source: str, timeout_s: float, api_base: str, token: str,
                 chat_id: str) -> None:
        super().__init__(source, timeout_s)
        self.url = f"{api_base}/bot{token}/sendMessage"
        self.chat_id = chat_id

    def deliver(self, notes: list[Note]) -> None:
        text = self.text(notes)
        if len(text) > _TELEGRAM_MAX:
            text = text[:_TELEGRAM_MAX - 4] + "\n..."
        resp = self._post(self.url, {"chat_id": self.chat_id, "text": text,
                                     "disable_web_page_preview": True})
        try:
            ok = resp.json().get("ok", True)
        except (ValueError, AttributeError):
            ok = True  # a 2xx without the usual body: take the status's word
        if ok is False:
            raise _Failed("Telegram answered ok: false", retry=False)


class _Email(_Sink):
    name = "email"

    def __init__(self, source: str, timeout_s: float, host: str, port: int, from_addr: str,
                 to_addrs: list[str], starttls: bool, user: str | None,
                 password: str | None) -> None:
        super().__init__(source, timeout_s)
        self.host, self.port, self.starttls = host, port, starttls
        self.from_addr, self.to_addrs = from_addr, list(to_addrs)
        self.user, self.password = user, password

    def subject(self, notes: list[Note]) -> str:
        if len(notes) == 1:
            s = notes[0].text
        else:
            kinds = collections.Counter(n.event for n in notes)
            s = f"{len(notes)} notifications (" + ", ".join(
                f"{k} {v}" for k, v in kinds.items()) + ")"
        s = f"[{self.source}] {s}"
        return s if len(s) <= 150 else s[:147] + "..."

    def deliver(self, notes: list[Note]) -> None:
        msg = EmailMessage()
        msg["Subject"] = self.subject(notes)
        msg["From"] = self.from_addr
        msg["To"] = ", ".join(self.to_addrs)
        body = self.text(notes) + "\n"
        if len(notes) == 1 and notes[0].data:
            body += "\n" + "\n".join(f"{k}: {v}" for k, v in notes[0].data.items()) + "\n"
        msg.set_content(body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(msg, from_addr=self.from_addr, to_addrs=self.to_addrs)
        except smtplib.SMTPResponseException as e:
            raise _Failed(f"SMTP {e.smtp_code}", retry=e.smtp_code < 500) from None
        except (smtplib.SMTPNotSupportedError, smtplib.SMTPRecipientsRefused) as e:
            raise _Failed(type(e).__name__, retry=False) from None
        except (TimeoutError, smtplib.SMTPServerDisconnected) as e:
            if isinstance(e, TimeoutError) or "timed out" in str(e):  # smtplib wraps timeouts
                raise _Failed(f"timed out after {self.timeout_s:g}s") from None
            raise _Failed(type(e).__name__) from None
        except (OSError, smtplib.SMTPException) as e:  # refused, reset, disconnected, TLS
            raise _Failed(type(e).__name__) from None


# ---------------------------------------------------------------- the per-sink worker


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


# ---------------------------------------------------------------- the notifier


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
        sinks: list[_Sink] = []
        if cfg.webhook is not None:
            sinks.append(_Webhook(source, cfg.timeout_s, cfg.webhook.url,
                                  secrets.get("webhook_token")))
        if cfg.telegram is not None:
            _install_httpx_redaction()
            sinks.append(_Telegram(source, cfg.timeout_s, cfg.telegram.api_base,
                                   secrets["telegram_token"], cfg.telegram.chat_id))
        if cfg.email is not None:
            e = cfg.email
            sinks.append(_Email(source, cfg.timeout_s, e.smtp_host, e.smtp_port, e.from_addr,
                                e.to_addrs, e.starttls, secrets.get("smtp_user"),
                                secrets.get("smtp_password")))
        self._workers = {s.name: _Worker(s, cfg, self._redact) for s in sinks}
        if sinks:
            log.info("notify: sending %s to %s", ", ".join(cfg.events) or "nothing",
                     ", ".join(self._describe(s) for s in sinks))

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

    @staticmethod
    def _describe(sink: _Sink) -> str:
        if isinstance(sink, _Webhook | _Telegram):
            return f"{sink.name} ({urlsplit(sink.url).hostname})"
        if isinstance(sink, _Email):
            return f"email ({sink.host}:{sink.port}, {len(sink.to_addrs)} recipient(s))"
        return sink.name
