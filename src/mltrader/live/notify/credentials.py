"""The sinks' secrets, read only from the environment, and their redaction from log lines.

A configured sink whose secret is missing fails at start; a Telegram bot token never reaches a log.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

from mltrader.config import NotifyConfig
from mltrader.errors import ConfigError

__all__ = ["ENV_SMTP_PASSWORD", "ENV_SMTP_USER", "ENV_TELEGRAM_TOKEN", "ENV_WEBHOOK_TOKEN",
           "check_notify_secrets"]

ENV_TELEGRAM_TOKEN = "MLTRADER_TELEGRAM_TOKEN"
ENV_SMTP_USER = "MLTRADER_SMTP_USER"
ENV_SMTP_PASSWORD = "MLTRADER_SMTP_PASSWORD"  # noqa: S105 (the variable's name, not a secret)
ENV_WEBHOOK_TOKEN = "MLTRADER_WEBHOOK_TOKEN"  # noqa: S105


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
