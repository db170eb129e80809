"""Alpaca's REST calls under the adapter's rules: a timeout on every request and no hidden
retries inside alpaca-py, each fault classified (transient, not found, duplicate, rejected,
auth), transient ones retried a bounded number of times with exponential backoff (at least
a 429's Retry-After), and the API keys scrubbed from every text that leaves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import pandas as pd

from mltrader.live.brokers.base import BrokerError, TransientBrokerError

log = logging.getLogger("mltrader.live.alpaca")

KEY_ENV = ("MLTRADER_ALPACA_KEY", "APCA_API_KEY_ID")
SECRET_ENV = ("MLTRADER_ALPACA_SECRET", "APCA_API_SECRET_KEY")


@dataclass(frozen=True)
class _Fault:
    kind: str  # transient | not_found | duplicate | rejected | auth | other
    text: str
    status: int | None = None
    retry_after: float | None = None  # seconds, from a Retry-After header


def _retry_after(response: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), else None."""
    headers = getattr(response, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, (pd.Timestamp(when) - pd.Timestamp.now(tz="UTC")).total_seconds())


class AlpacaRequests:
    """The request layer `AlpacaBroker` builds on: the adapter sets the client, its keys
    (to scrub), the timeout and the retry settings in its `__init__`."""

    _client: Any
    _secrets: tuple[str, ...]
    timeout: float
    max_retries: int
    backoff: float
    max_backoff: float
    _sleep: Callable[[float], Any]

    def _harden_client(self) -> None:
        """Per-request timeout and no hidden retries inside alpaca-py (both private API of
        alpaca-py's RESTClient; an injected test double may lack them)."""
        session = getattr(self._client, "_session", None)
        if session is not None and hasattr(session, "request"):
            original = session.request
            timeout = self.timeout

            def request_with_timeout(method: str, url: str, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", timeout)
                return original(method, url, **kwargs)

            session.request = request_with_timeout
        elif not isinstance(self._client, Mapping):
            log.warning("alpaca: client has no requests session; requests run without the "
                        "adapter's %.1fs timeout", self.timeout)
        if hasattr(self._client, "_retry"):
            self._client._retry = 0  # alpaca-py would sleep 3 s per 429/504 on its own

    def _scrub(self, text: Any) -> str:
        out = str(text)
        for secret in self._secrets:
            out = out.replace(secret, "***")
        return out

    def _delay(self, failures: int) -> float:
        return min(self.max_backoff, self.backoff * (2 ** (failures - 1)))

    def _classify(self, exc: BaseException) -> _Fault:
        import requests
        from alpaca.common.exceptions import APIError

        if isinstance(exc, APIError):
            status = exc.status_code
            body = self._scrub(getattr(exc, "_error", None) or str(exc))
            message = body.strip()
            try:
                parsed = json.loads(body)
                if isinstance(parsed, dict) and parsed.get("message"):
                    message = str(parsed["message"])
            except (TypeError, ValueError):
                pass
            message = message[:300]
            text = f"HTTP {status}: {message}" if status else message
            if status is None or status in (408, 429) or status >= 500:
                wait = _retry_after(getattr(exc, "response", None)) if status else None
                if wait is not None:
                    text += f" (Retry-After {wait:g}s)"
                return _Fault("transient", text, status, wait)
            if "client_order_id must be unique" in message.lower():
                return _Fault("duplicate", text, status)
            if status == 404:
                return _Fault("not_found", text, status)
            if status == 401:
                return _Fault("auth", text, status)
            if status in (400, 403, 422):
                return _Fault("rejected", message, status)
            return _Fault("other", text, status)
        if isinstance(exc, requests.exceptions.JSONDecodeError):
            return _Fault("transient", "unreadable response body (truncated or not JSON)")
        if isinstance(exc, requests.Timeout):
            return _Fault("transient", f"no response within {self.timeout:g}s (timeout)")
        if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
            return _Fault("transient", f"connection failed or dropped ({type(exc).__name__})")
        if isinstance(exc, requests.RequestException):
            return _Fault("other", f"request failed ({type(exc).__name__}: "
                                   f"{self._scrub(exc)[:200]})")
        return _Fault("other", f"unexpected reply ({type(exc).__name__}: "
                               f"{self._scrub(exc)[:200]})")

    def _once(self, fn: Callable[[], Any]) -> tuple[Any, _Fault | None]:
        """One request; a fault comes back as a value so errors are raised outside any
        `except` block (no library exception, and no text of it, rides along as context)."""
        try:
            return fn(), None
        except Exception as exc:  # noqa: BLE001 - classified, never swallowed
            return None, self._classify(exc)

    def _error(self, op: str, cid: str, fault: _Fault) -> BrokerError:
        who = f" {cid}" if cid else ""
        if fault.kind == "auth":
            return BrokerError(f"alpaca {op}{who}: not authorized ({fault.text}); check "
                               f"{KEY_ENV[0]}/{SECRET_ENV[0]} and that paper keys go with "
                               "paper=True and live keys with live")
        return BrokerError(f"alpaca {op}{who}: {fault.text}")

    def _give_up(self, op: str, cid: str, failures: int, fault: _Fault) -> TransientBrokerError:
        who = f" {cid}" if cid else ""
        extra = (" The order may or may not be at Alpaca; submitting the same client order id "
                 "again is safe (it is looked up first)." if op == "submit" else "")
        # the caller reports what is raised: INFO here keeps it to one line per fault
        log.info("alpaca %s%s: giving up after %d failed attempts (last: %s)", op, who,
                 failures, fault.text)
        return TransientBrokerError(f"alpaca {op}{who}: failed {failures} times in a row "
                                    f"(last: {fault.text}); Alpaca unreachable or overloaded, "
                                    f"try again later.{extra}")

    def _retry_wait(self, op: str, cid: str, failures: int, fault: _Fault) -> bool:
        """Log the fault; sleep before the next attempt. False when retries are used up."""
        who = f" {cid}" if cid else ""
        if failures > self.max_retries:
            return False
        delay = self._delay(failures)
        if fault.retry_after is not None:  # the server said how long: at least that
            delay = min(self.max_backoff, max(delay, fault.retry_after))
        log.warning("alpaca %s%s: %s (attempt %d of %d); retrying in %.2fs", op, who,
                    fault.text, failures, self.max_retries + 1, delay)
        self._sleep(delay)
        return True

    def _call(self, op: str, fn: Callable[[], Any], cid: str = "",
              none_if_missing: bool = False) -> Any:
        """An idempotent request with bounded retries of transient faults."""
        failures = 0
        while True:
            result, fault = self._once(fn)
            if fault is None:
                return result
            if fault.kind == "not_found" and none_if_missing:
                return None
            if fault.kind != "transient":
                log.info("alpaca %s%s: %s", op, f" {cid}" if cid else "", fault.text)
                raise self._error(op, cid, fault)
            failures += 1
            if not self._retry_wait(op, cid, failures, fault):
                raise self._give_up(op, cid, failures, fault)
