"""Notifications (live.notify) against fake webhook, Telegram and SMTP servers on 127.0.0.1:
delivery and content, a hanging sink, a failing sink, the rate limit, secrets."""

from __future__ import annotations

import base64
import json
import logging
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from mltrader.config import NotifyConfig, RunConfig
from mltrader.errors import ConfigError
from mltrader.live.notify import Notifier

TOKEN = "123456:SECRET-bot-token-xyz"
SMTP_USER = "bot@example.org"
SMTP_PASSWORD = "s3cret-Passw0rd"
HOOK_TOKEN = "hook-bearer-token-abc"
ENV = {"MLTRADER_TELEGRAM_TOKEN": TOKEN, "MLTRADER_SMTP_USER": SMTP_USER,
       "MLTRADER_SMTP_PASSWORD": SMTP_PASSWORD, "MLTRADER_WEBHOOK_TOKEN": HOOK_TOKEN}
SECRETS = (TOKEN, SMTP_PASSWORD, HOOK_TOKEN)
TS = "2024-03-01T15:59:00+00:00"


def wait_for(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# ---------------------------------------------------------------- fake servers


class _HttpHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        srv = self.server
        srv.requests.append({"path": self.path, "headers": dict(self.headers),
                             "json": json.loads(body), "t": time.monotonic()})
        out = json.dumps({"ok": srv.status < 400, "result": {}}).encode()
        self.send_response(srv.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args) -> None:
        pass


class FakeHttp(ThreadingHTTPServer):
    """A webhook / Telegram Bot API that records each POST and answers `status`."""

    daemon_threads = True

    def __init__(self, status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), _HttpHandler)
        self.status = status
        self.requests: list[dict] = []
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Enough SMTP for smtplib: EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, QUIT."""

    def send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        srv = self.server
        mail: dict = {"from": None, "to": [], "auth": None}
        self.send("220 fake.local ESMTP")
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            cmd = line.split(" ", 1)[0].upper()
            if cmd == "EHLO":
                self.send("250-fake.local")
                self.send("250 AUTH PLAIN")
            elif cmd == "HELO":
                self.send("250 fake.local")
            elif cmd == "AUTH":
                _, user, password = base64.b64decode(line.split()[2]).split(b"\0")
                mail["auth"] = (user.decode(), password.decode())
                self.send("235 ok" if srv.auth_ok else "535 5.7.8 bad credentials")
            elif cmd == "MAIL":
                mail["from"] = line
                self.send("250 ok")
            elif cmd == "RCPT":
                mail["to"].append(line)
                self.send("250 ok")
            elif cmd == "DATA":
                self.send("354 end with <CRLF>.<CRLF>")
                lines = []
                while (chunk := self.rfile.readline()) not in (b"", b".\r\n"):
                    lines.append(chunk.decode())
                srv.messages.append({**mail, "data": "".join(lines)})
                self.send("250 queued")
            elif cmd in ("RSET", "NOOP"):
                self.send("250 ok")
            elif cmd == "QUIT":
                self.send("221 bye")
                return
            else:
                self.send("502 not implemented")


class FakeSmtp(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, auth_ok: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.auth_ok = auth_ok
        self.messages: list[dict] = []
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class HangServer:
    """Accepts connections and never says a word (a hung webhook, bot API or SMTP server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.sock.settimeout(0.05)
        self.conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop = True
        time.sleep(0.06)
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def servers():
    made: list = []

    def make(kind, **kw):
        srv = kind(**kw)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()


def notify_cfg(**kw) -> NotifyConfig:
    base = {"min_interval_s": 0, "timeout_s": 2, "retries": 0, "backoff_s": 0.01}
    return NotifyConfig.model_validate({**base, **kw})


def email_cfg(port: int) -> dict:
    return {"smtp_host": "127.0.0.1", "smtp_port": port, "from_addr": "bot@example.org",
            "to_addrs": ["me@example.org", "you@example.org"], "starttls": False}


def assert_no_secret_logged(caplog) -> None:
    for rec in caplog.records:
        text = rec.getMessage() + (rec.exc_text or "")
        for secret in SECRETS:
            assert secret not in text, rec.getMessage()


# ---------------------------------------------------------------- delivery


def test_a_fill_reaches_every_sink_with_its_content(servers, caplog):
    caplog.set_level(logging.DEBUG)
    hook, bot, smtp = servers(FakeHttp), servers(FakeHttp), servers(FakeSmtp)
    cfg = notify_cfg(webhook={"url": hook.url + "/hook"},
                     telegram={"chat_id": 4242, "api_base": bot.url},
                     email=email_cfg(smtp.port))
    n = Notifier(cfg, env=ENV, source="paper-bot")
    n.fill("AAPL", "buy", 10, 123.45, TS)
    assert wait_for(lambda: hook.requests and bot.requests and smtp.messages)
    assert n.close(timeout=2)

    [req] = hook.requests
    assert req["path"] == "/hook"
    assert req["headers"]["Authorization"] == f"Bearer {HOOK_TOKEN}"
    body = req["json"]
    assert body["source"] == "paper-bot" and body["event"] == "fill" and body["time"] == TS
    assert body["data"] == {"symbol": "AAPL", "side": "buy", "qty": 10.0, "price": 123.45}
    assert body["text"] == "fill BUY 10 AAPL @ 123.45"

    [req] = bot.requests
    assert req["path"] == f"/bot{TOKEN}/sendMessage"
    assert req["json"]["chat_id"] == "4242"
    assert req["json"]["text"] == "[paper-bot] fill BUY 10 AAPL @ 123.45"

    [mail] = smtp.messages
    assert mail["auth"] == (SMTP_USER, SMTP_PASSWORD)
    assert "bot@example.org" in mail["from"]
    assert len(mail["to"]) == 2 and "you@example.org" in mail["to"][1]
    assert "Subject: [paper-bot] fill BUY 10 AAPL @ 123.45" in mail["data"]
    assert "symbol: AAPL" in mail["data"]

    for counts in n.stats().values():
        assert counts["sent"] == 1 and counts["failed"] == 0 and counts["queued"] == 0
    assert_no_secret_logged(caplog)  # httpx logs the bot URL at INFO: redacted


def test_every_event_kind_and_the_events_filter(servers):
    hook = servers(FakeHttp)
    n = Notifier(notify_cfg(webhook={"url": hook.url},
                            events=["guard", "error", "daily_summary"]), env={})
    n.fill("AAPL", "buy", 1, 1.0, TS)  # not among the events: not sent
    n.guard("daily_loss_limit", "day loss 2.1% >= 2%; flattened", TS)
    n.error("broker rejected order 17", TS)
    n.daily_summary("2024-03-01", 101_234.5, -234.5, 1_234.5, 5, 0.0123)
    assert n.close(timeout=2)
    texts = [r["json"]["text"] for r in hook.requests]
    assert texts == [
        "guard daily_loss_limit: day loss 2.1% >= 2%; flattened",
        "error: broker rejected order 17",
        "daily summary 2024-03-01: equity 101,234.50, day P&L -234.50, total P&L +1,234.50, "
        "5 fill(s), drawdown 1.23%"]
    assert "Authorization" not in hook.requests[0]["headers"]  # no MLTRADER_WEBHOOK_TOKEN
    assert hook.requests[2]["json"]["data"]["drawdown"] == pytest.approx(0.0123)


def test_no_sink_is_a_noop_and_bad_input_never_raises(servers):
    n = Notifier(NotifyConfig(), env={})
    assert not n.enabled and n.stats() == {}
    n.fill("AAPL", "buy", 1, 1.0)
    assert n.close(timeout=0.1)

    class Evil:
        def __str__(self):
            raise RuntimeError("boom")

    hook = servers(FakeHttp)
    n = Notifier(notify_cfg(webhook={"url": hook.url}), env={})
    n.fill(Evil(), "buy", 1, 1.0)  # logged and skipped, never raised
    n.fill("MSFT", "sell", "n/a", None)  # odd numbers are shown as n/a
    assert n.close(timeout=2)
    assert [r["json"]["text"] for r in hook.requests] == ["fill SELL n/a MSFT @ n/a"]


# ---------------------------------------------------------------- failing sinks


def test_a_hanging_sink_never_blocks_the_caller_and_is_timed_out_and_retried(servers, caplog):
    caplog.set_level(logging.DEBUG)
    hook, bot, smtp = servers(HangServer), servers(HangServer), servers(HangServer)
    cfg = notify_cfg(webhook={"url": hook.url}, telegram={"chat_id": "1", "api_base": bot.url},
                     email=email_cfg(smtp.port), timeout_s=0.3, retries=1)
    n = Notifier(cfg, env=ENV)
    t0 = time.perf_counter()
    n.fill("AAPL", "buy", 10, 123.45, TS)
    assert time.perf_counter() - t0 < 0.05  # the runner goes on at once

    assert wait_for(lambda: all(c["failed"] == 1 for c in n.stats().values()), timeout=5)
    for name, counts in n.stats().items():
        assert counts["retried"] == 1 and counts["sent"] == 0, name
    for srv in (hook, bot, smtp):
        assert len(srv.conns) == 2  # the first attempt and one retry
    lines = [r.getMessage() for r in caplog.records if r.name == "mltrader.live.notify"]
    for name in ("webhook", "telegram", "email"):
        assert any(f"notify {name}: attempt 1/2 failed (timed out" in m for m in lines), lines
        assert any(f"notify {name}: gave up on 1 notification(s) (timed out" in m
                   for m in lines), lines
    assert all("\n" not in m for m in lines)
    assert_no_secret_logged(caplog)
    t0 = time.perf_counter()
    n.close(timeout=0.2)
    assert time.perf_counter() - t0 < 0.5


def test_a_burst_into_a_hung_sink_stays_fast_and_drops_the_oldest(servers):
    hook = servers(HangServer)
    n = Notifier(notify_cfg(webhook={"url": hook.url}, timeout_s=1, retries=0, queue_size=5),
                 env={})
    slowest = 0.0
    for i in range(200):
        t0 = time.perf_counter()
        n.fill("AAPL", "buy", i + 1, 100.0)
        slowest = max(slowest, time.perf_counter() - t0)
    assert slowest < 0.05
    counts = n.stats()["webhook"]
    assert counts["queued"] <= 5
    assert counts["dropped"] >= 200 - 5 - 1  # at most one is in flight, five wait
    t0 = time.perf_counter()
    assert not n.close(timeout=0.2)  # still stuck in the hung request: close does not wait
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("status, attempts", [(500, 3), (503, 3), (400, 1)])
def test_error_answers_are_retried_up_to_retries_then_counted_failed(servers, caplog, status,
                                                                     attempts):
    caplog.set_level(logging.DEBUG)
    hook, bot = servers(FakeHttp, status=status), servers(FakeHttp, status=status)
    cfg = notify_cfg(webhook={"url": hook.url}, telegram={"chat_id": "1", "api_base": bot.url},
                     retries=2)
    n = Notifier(cfg, env=ENV)
    n.error("something broke", TS)
    assert wait_for(lambda: all(c["failed"] == 1 for c in n.stats().values()))
    assert len(hook.requests) == attempts and len(bot.requests) == attempts  # 4xx: no retry
    for counts in n.stats().values():
        assert counts == {"sent": 0, "failed": 1, "dropped": 0, "retried": attempts - 1,
                          "coalesced": 0, "messages": 0, "queued": 0}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"notify telegram: gave up on 1 notification(s) (HTTP {status}" in m
               for m in errors), errors
    assert_no_secret_logged(caplog)
    assert n.close(timeout=1)


def test_smtp_refusing_the_login_fails_without_retry_or_leaking_the_password(servers, caplog):
    caplog.set_level(logging.DEBUG)
    smtp = servers(FakeSmtp, auth_ok=False)
    n = Notifier(notify_cfg(email=email_cfg(smtp.port), retries=3), env=ENV)
    n.guard("kill_switch", "drawdown 20%")
    assert wait_for(lambda: n.stats()["email"]["failed"] == 1)
    assert n.stats()["email"]["retried"] == 0 and smtp.messages == []
    assert any("SMTP 535" in r.getMessage() for r in caplog.records)
    assert_no_secret_logged(caplog)
    n.close(timeout=1)


def test_a_sink_that_recovers_delivers_on_a_retry(servers):
    hook = servers(FakeHttp, status=500)
    n = Notifier(notify_cfg(webhook={"url": hook.url}, retries=5, backoff_s=0.1), env={})
    n.fill("AAPL", "buy", 1, 1.0)
    assert wait_for(lambda: len(hook.requests) >= 1)
    hook.status = 200
    assert wait_for(lambda: n.stats()["webhook"]["sent"] == 1)
    assert n.stats()["webhook"]["failed"] == 0 and n.stats()["webhook"]["retried"] >= 1
    assert n.close(timeout=1)


# ---------------------------------------------------------------- rate limit, close


def test_the_rate_limit_coalesces_a_burst_into_one_message(servers):
    hook, smtp = servers(FakeHttp), servers(FakeSmtp)
    n = Notifier(notify_cfg(webhook={"url": hook.url}, email=email_cfg(smtp.port),
                            min_interval_s=0.4), env={})
    n.fill("AAPL", "buy", 1, 100.0, TS)
    assert wait_for(lambda: len(hook.requests) == 1 and len(smtp.messages) == 1)
    for i in range(5):
        n.fill("MSFT", "sell", i + 1, 200.0, TS)
    assert wait_for(lambda: len(hook.requests) == 2 and len(smtp.messages) == 2)
    time.sleep(0.1)
    assert len(hook.requests) == 2  # the burst went out as one message
    assert hook.requests[1]["t"] - hook.requests[0]["t"] >= 0.35  # after min_interval_s
    batch = hook.requests[1]["json"]
    assert batch["event"] == "batch" and batch["count"] == 5
    assert [e["data"]["qty"] for e in batch["events"]] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert batch["text"].startswith("5 notifications:\n- ")
    assert "Subject: [mltrader] 5 notifications (fill 5)" in smtp.messages[1]["data"]
    for counts in n.stats().values():
        assert counts["sent"] == 6 and counts["messages"] == 2 and counts["coalesced"] == 5
    assert n.close(timeout=1)


def test_close_flushes_what_the_rate_limit_holds_back(servers):
    hook = servers(FakeHttp)
    n = Notifier(notify_cfg(webhook={"url": hook.url}, min_interval_s=60), env={})
    n.fill("AAPL", "buy", 1, 100.0)
    assert wait_for(lambda: len(hook.requests) == 1)
    n.error("one")
    n.error("two")
    time.sleep(0.05)
    assert len(hook.requests) == 1  # held back by the rate limit
    t0 = time.perf_counter()
    assert n.close(timeout=2)
    assert time.perf_counter() - t0 < 1
    assert hook.requests[1]["json"]["count"] == 2
    n.error("after close")  # ignored, counted
    assert n.stats()["webhook"]["dropped"] == 1


# ---------------------------------------------------------------- config and secrets


def test_a_missing_secret_is_a_one_line_config_error_naming_the_variable():
    cfg = notify_cfg(telegram={"chat_id": "1"})
    with pytest.raises(ConfigError, match="MLTRADER_TELEGRAM_TOKEN") as err:
        Notifier(cfg, env={})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="MLTRADER_SMTP_PASSWORD"):
        Notifier(notify_cfg(email=email_cfg(25)), env={"MLTRADER_SMTP_USER": "me"})
    n = Notifier(notify_cfg(email=email_cfg(25)), env={})  # a relay without login is fine
    n.close(timeout=0.1)


def test_the_notify_section_of_the_run_config():
    cfg = RunConfig.model_validate({"notify": {
        "webhook": {"url": "https://hooks.example.org/x"},
        "telegram": {"chat_id": -100123},
        "email": {"smtp_host": "smtp.example.org", "from_addr": "a@example.org",
                  "to_addrs": ["b@example.org"]},
        "events": ["fill", "guard"], "min_interval_s": 30, "retries": 2}})
    nc = cfg.notify
    assert nc.sinks == ["webhook", "telegram", "email"]
    assert nc.telegram.chat_id == "-100123" and nc.telegram.api_base == "https://api.telegram.org"
    assert nc.email.smtp_port == 587 and nc.email.starttls
    assert RunConfig().notify.sinks == [] and RunConfig().notify.events == [
        "fill", "guard", "error", "daily_summary"]
    with pytest.raises(ValidationError, match="token"):
        NotifyConfig.model_validate({"telegram": {"chat_id": "1", "token": "x"}})  # env only
    with pytest.raises(ValidationError, match="http"):
        NotifyConfig.model_validate({"webhook": {"url": "hooks.example.org"}})
    with pytest.raises(ValidationError):
        NotifyConfig.model_validate({"events": ["fills"]})
