"""What is safe to write to the journal: secret scrubbing and plain-JSON values.

Secrets never land in the journal: ``audit()`` details, ``record_decision()`` features and
``start_run(config=...)`` are scrubbed before they are written:

1. the value under any key that *looks* secret is replaced by ``"***"`` (key names split on
   ``_``/``-``/camelCase; a part equal to key, secret, token, password, passwd, pwd,
   passphrase, apikey, authorization, auth, credential(s), or a name ending in "key",
   "secret", "token" or "password"), in nested dicts and lists;
2. any string that contains the value of an environment variable whose NAME contains KEY,
   SECRET, TOKEN, PASSWORD or PASSWD (values of 6+ characters), the password of the
   database URL, or a value passed in ``secrets=``, has that value replaced by ``"***"``,
   whatever the field is called: an API key pasted under ``"note"`` is still masked.

The database URL's password is masked in ``repr``/``str`` and in log lines (``mask_url``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import make_url

MASK = "***"
MIN_SECRET_LEN = 6

_SECRET_PARTS = frozenset({
    "key", "secret", "token", "password", "passwd", "pwd", "passphrase", "apikey",
    "authorization", "auth", "credential", "credentials",
})
_SECRET_SUFFIXES = ("key", "keys", "secret", "secrets", "token", "tokens", "password")
_SECRET_ENV_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD", re.IGNORECASE)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")


def is_secret_key(name: object) -> bool:
    """Whether a field name looks like it holds a credential (see the module docstring)."""
    return _is_secret_name(str(name))


@functools.lru_cache(maxsize=4096)
def _is_secret_name(raw: str) -> bool:
    parts = [p for p in re.split(r"[^a-z0-9]+", _CAMEL.sub(r"\1_\2", raw).lower()) if p]
    if any(p in _SECRET_PARTS for p in parts):
        return True
    flat = "".join(parts)
    return bool(flat) and flat.endswith(_SECRET_SUFFIXES)


def env_secret_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values (6+ chars) of environment variables whose name contains KEY/SECRET/TOKEN/
    PASSWORD/PASSWD: masked wherever they appear in journaled text."""
    env = os.environ if environ is None else environ
    return {v for k, v in env.items() if _SECRET_ENV_NAME.search(k) and len(v) >= MIN_SECRET_LEN}


def scrub(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """A JSON-ready copy of ``obj`` with secret-looking keys' values and every occurrence of
    the given secret strings replaced by ``"***"`` (nested dicts/lists included)."""
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (MASK if is_secret_key(k) and v is not None else walk(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            for secret in ordered:
                if secret in value:
                    value = value.replace(secret, MASK)
            return value
        return value

    return walk(to_jsonable(obj))


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, NaN/inf -> None, times -> ISO."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if obj is pd.NaT:
        return None
    if isinstance(obj, datetime | date | pd.Timestamp):
        return obj.isoformat()
    if isinstance(obj, pd.Timedelta):
        return obj.isoformat()
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    return str(obj)


def hash_config(config: Mapping[str, Any]) -> str:
    """sha256 of a config's canonical JSON: how a restarted runner finds its run."""
    canonical = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def mask_url(url: str) -> str:
    """The database URL with its password (if any) replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparsable: show nothing that could be a credential
        return re.sub(r"//[^@/]*@", "//***@", str(url))
