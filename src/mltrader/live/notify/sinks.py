"""The destinations: a webhook (JSON POST), Telegram (sendMessage) and e-mail (SMTP).

Each sends one message per call or raises `_Failed`; queueing and retries are the worker's.
"""

from __future__ import annotations

import collections
import json
import smtplib
import ssl
from email.message import EmailMessage

import httpx

from mltrader.live.notify.note import Note, _batch_text

_TELEGRAM_MAX = 4096  # the Bot API's limit on a message's text


class _Failed(Exception):
    """A delivery attempt failed; `retry` says whether another attempt may succeed."""

    def __init__(self, reason: str, retry: bool = True) -> None:
        super().__init__(reason)
        self.retry = retry


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
