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

The modules: ``core`` the `Notifier`; ``note`` the `Note` and its wording; ``credentials``
the secrets from the environment and their redaction; ``sinks`` the webhook, Telegram and
e-mail senders; ``worker`` one sink's queue, thread, rate limit and retries; ``wiring`` the
sinks the config asks for.
"""

from mltrader.live.notify.core import Notifier
from mltrader.live.notify.credentials import (
    ENV_SMTP_PASSWORD,
    ENV_SMTP_USER,
    ENV_TELEGRAM_TOKEN,
    ENV_WEBHOOK_TOKEN,
    check_notify_secrets,
)
from mltrader.live.notify.note import Note

__all__ = ["ENV_SMTP_PASSWORD", "ENV_SMTP_USER", "ENV_TELEGRAM_TOKEN", "ENV_WEBHOOK_TOKEN",
           "Note", "Notifier", "check_notify_secrets"]
