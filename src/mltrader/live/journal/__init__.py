"""The trading journal: every run, decision, order, fill, snapshot and audit event, durably.

``Journal`` (store: connection, transactions and writes; reads: its queries and frames)
records to one SQL database; ``schema`` holds the tables and the append-only audit
triggers, ``redact`` what is scrubbed before it is written, ``errors`` ``JournalError`` and
the one-line driver messages. The contract is in ``mltrader.live.journal.store``.
"""

from mltrader.live.journal.errors import JournalError, driver_message
from mltrader.live.journal.redact import (
    MASK,
    env_secret_values,
    hash_config,
    is_secret_key,
    mask_url,
    scrub,
    to_jsonable,
)
from mltrader.live.journal.schema import (
    SCHEMA_VERSION,
    UTCDateTime,
    metadata,
    t_audit,
    t_benchmark,
    t_decisions,
    t_equity,
    t_fills,
    t_orders,
    t_positions,
    t_runner_state,
    t_runs,
    t_schema_version,
)
from mltrader.live.journal.store import Journal

__all__ = [
    "MASK",
    "SCHEMA_VERSION",
    "Journal",
    "JournalError",
    "UTCDateTime",
    "driver_message",
    "env_secret_values",
    "hash_config",
    "is_secret_key",
    "mask_url",
    "metadata",
    "scrub",
    "t_audit",
    "t_decisions",
    "t_benchmark",
    "t_equity",
    "t_fills",
    "t_orders",
    "t_positions",
    "t_runner_state",
    "t_runs",
    "t_schema_version",
    "to_jsonable",
]
