"""The TWS / IB Gateway session under the IB adapter: connect and reconnect, check that the
account is a paper account unless live trading was confirmed, and run ib_async calls.

Connection loss: every call checks the connection and reconnects, at most `max_reconnects`
attempts with exponential backoff, then raises TransientBrokerError. No ib_async exception
type ever leaves the adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mltrader.live.brokers.base import BrokerError, TransientBrokerError
from mltrader.live.brokers.ib_wire import _WAITING

log = logging.getLogger("mltrader.live.ib")


class TWSSession:
    """Connection and calls of `IBBroker`; its `__init__` sets the `IB` client, the
    connection settings and the state below."""

    _ib: Any
    host: str
    port: int
    client_id: int
    timeout: float
    max_reconnects: int
    backoff: float
    live_confirmed: bool
    _account: str | None
    _account_id: str
    _ever_connected: bool
    _exec_synced: bool
    _sleep: Callable[[float], Any]
    _clock: Callable[[], float]
    ack_timeout: float
    poll_interval: float

    def connect(self) -> None:
        """Connect (or reconnect) now; every call does this on its own when needed."""
        self._ensure()

    @property
    def client(self) -> Any:
        """The ib_async `IB` this adapter talks through (the IB data source shares it)."""
        return self._ib

    def _connected(self) -> bool:
        try:
            return bool(self._ib.isConnected())
        except Exception:  # noqa: BLE001 - a broken client counts as disconnected
            return False

    def _ensure(self) -> None:
        if self._connected():
            return
        if self._ever_connected:
            log.warning("ib: connection to %s:%d lost; reconnecting", self.host, self.port)
        self._reconnect()

    def _reconnect(self) -> None:
        last = ""
        for attempt in range(1, self.max_reconnects + 2):
            try:
                if self._ever_connected:
                    self._ib.disconnect()  # clear the dead session's state first
                self._ib.connect(self.host, self.port, clientId=self.client_id,
                                 timeout=self.timeout, account=self._account or "")
                ok = self._connected()
                last = "" if ok else "connected but the session is not ready"
            except BrokerError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below, never leaked
                ok = False
                last = f"{type(exc).__name__}: {str(exc)[:200]}"
            if ok:
                self._after_connect()
                return
            if attempt <= self.max_reconnects:
                delay = self.backoff * (2 ** (attempt - 1))
                log.warning("ib: connect to %s:%d failed (%s), attempt %d of %d; retrying in "
                            "%.1fs", self.host, self.port, last, attempt,
                            self.max_reconnects + 1, delay)
                self._sleep(delay)
        log.error("ib: giving up connecting to %s:%d after %d attempts (last: %s)", self.host,
                  self.port, self.max_reconnects + 1, last)
        raise TransientBrokerError(
            f"ib: cannot reach TWS/IB Gateway at {self.host}:{self.port} (client id "
            f"{self.client_id}) after {self.max_reconnects + 1} attempts (last: {last}); start "
            "TWS or IB Gateway and log in, enable the API (Configure > API > Settings: "
            "'Enable ActiveX and Socket Clients'), check the port, and use a client id no "
            "other program is using")

    def _after_connect(self) -> None:
        first = not self._ever_connected
        self._ever_connected = True
        self._exec_synced = False
        accounts: list[str] = []
        getter = getattr(self._ib, "managedAccounts", None)
        if getter is not None:
            try:
                accounts = [str(a) for a in getter() or []]
            except Exception:  # noqa: BLE001
                accounts = []
        if accounts:
            if self._account and self._account not in accounts:
                self._ib.disconnect()
                raise BrokerError(f"ib: account {self._account} is not managed by this login "
                                  f"(accounts: {', '.join(accounts)}); pass one of them")
            if not self._account:
                if len(accounts) > 1:
                    self._ib.disconnect()
                    raise BrokerError("ib: this login manages several accounts ("
                                      f"{', '.join(accounts)}); pass account=<one of them>")
                self._account_id = accounts[0]
            live = [a for a in ([self._account] if self._account else accounts)
                    if not a.upper().startswith("D")]
            if live and not self.live_confirmed:
                self._ib.disconnect()
                raise BrokerError(f"ib: port {self.port} leads to the LIVE account "
                                  f"{', '.join(live)} (paper accounts start with 'D'); live "
                                  "trading needs live_confirmed=True (the CLI asks for it)")
        log.info("ib: %s to %s:%d as client %d (account %s)",
                 "connected" if first else "reconnected", self.host, self.port,
                 self.client_id, self._account_id or "?")

    def _call(self, op: str, fn: Callable[[], Any], cid: str = "") -> Any:
        """An idempotent ib_async call: reconnect (bounded) and retry on a dropped connection;
        any other failure becomes a BrokerError."""
        who = f" {cid}" if cid else ""
        failures = 0
        while True:
            self._ensure()
            result, fault, transient = self._once(fn)
            if fault is None:
                return result
            if not transient:
                log.error("ib %s%s: %s", op, who, fault)
                raise BrokerError(f"ib {op}{who}: {fault}")
            failures += 1
            log.warning("ib %s%s: %s (attempt %d)", op, who, fault, failures)
            if failures > self.max_reconnects:
                raise TransientBrokerError(f"ib {op}{who}: connection to TWS/IB Gateway kept "
                                           f"failing ({fault}); try again later")

    @staticmethod
    def _once(fn: Callable[[], Any]) -> tuple[Any, str | None, bool]:
        """One call; a failure comes back as (None, text, transient)."""
        try:
            return fn(), None, False
        except (ConnectionError, TimeoutError, OSError, EOFError) as exc:
            return None, f"connection failed ({type(exc).__name__}: {str(exc)[:200]})", True
        except BrokerError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified, never leaked
            return None, f"{type(exc).__name__}: {str(exc)[:300]}", False

    def _pump(self) -> None:
        """Let ib_async process what TWS sent (the sync API only does so while it waits)."""
        sleeper = getattr(self._ib, "sleep", None)
        if sleeper is not None:
            self._call("sleep", lambda: sleeper(0))

    def _await_ack(self, trade: Any) -> None:
        """Give TWS a moment to acknowledge (or reject) a new order."""
        sleeper = getattr(self._ib, "sleep", None)
        if sleeper is None:
            return
        deadline = self._clock() + self.ack_timeout
        while trade.orderStatus.status in _WAITING and self._clock() < deadline:
            _, fault, _ = self._once(lambda: sleeper(self.poll_interval))
            if fault is not None or not self._connected():
                return
