"""The sinks that the run config's `notify` section asks for, built with their secrets.

Also the one-line description of each sink that the notifier logs at start (no secrets).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mltrader.config import NotifyConfig
from mltrader.live.notify.credentials import _install_httpx_redaction
from mltrader.live.notify.sinks import _Email, _Sink, _Telegram, _Webhook


def _build_sinks(cfg: NotifyConfig, secrets: dict[str, str], source: str) -> list[_Sink]:
    """One sink per configured destination, in the order webhook, Telegram, e-mail."""
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
    return sinks


def _describe(sink: _Sink) -> str:
    if isinstance(sink, _Webhook | _Telegram):
        return f"{sink.name} ({urlsplit(sink.url).hostname})"
    if isinstance(sink, _Email):
        return f"email ({sink.host}:{sink.port}, {len(sink.to_addrs)} recipient(s))"
    return sink.name
