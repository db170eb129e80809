"""The dashboard's security: one token, loopback-only anonymous reads, same-origin writes.

* The token comes from MLTRADER_DASHBOARD_TOKEN, else one is generated (and printed by the
  command line). A request proves it with ``Authorization: Bearer <token>`` or with the
  ``mltrader_token`` cookie that ``/login`` sets (HttpOnly, SameSite=Strict).
* Read-only pages and API calls are open without the token only when the server is bound
  to a loopback address AND the client is on loopback; anything else needs the token.
* Binding to a non-loopback host is refused unless the token was set in the environment
  (a generated one printed to a terminal is not a secret worth exposing to a network).
* Host header: a loopback-bound server answers only to loopback host names (a DNS-rebinding
  page cannot read it).
* Control requests (state-changing, POST) ALWAYS need the token; a cookie-authenticated one
  also needs the CSRF token (an HMAC of the token, embedded in the pages for authenticated
  viewers), and every state-changing request whose Origin (or Referer) is not the server's
  own origin is refused before anything else is looked at.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from urllib.parse import urlsplit

from mltrader.errors import MltraderError

TOKEN_ENV = "MLTRADER_DASHBOARD_TOKEN"
COOKIE = "mltrader_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def resolve_token(environ: dict[str, str] | None = None) -> tuple[str, bool]:
    """(token, whether it came from the environment)."""
    env = os.environ if environ is None else environ
    token = (env.get(TOKEN_ENV) or "").strip()
    if token:
        return token, True
    return secrets.token_urlsafe(24), False


def check_bind(host: str, token_from_env: bool) -> None:
    """Refuse a non-loopback bind without a token set in the environment."""
    if not is_loopback(host) and not token_from_env:
        raise MltraderError(f"refusing to serve the dashboard on {host} without a token: set "
                            f"{TOKEN_ENV} (e.g. export {TOKEN_ENV}=$(openssl rand -hex 24)) or "
                            "bind --host 127.0.0.1")


def same(a: str | None, b: str) -> bool:
    """Constant-time comparison."""
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def csrf_token(token: str) -> str:
    """The CSRF token bound to the dashboard token (what the pages' forms send)."""
    return hmac.new(token.encode(), b"mltrader-dashboard-csrf", hashlib.sha256).hexdigest()


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def host_allowed(host_header: str | None, bind_host: str) -> bool:
    """A loopback-bound server answers only to loopback names (DNS rebinding)."""
    if not is_loopback(bind_host):
        return True
    if not host_header:
        return False
    name = urlsplit(f"//{host_header}").hostname or ""
    return is_loopback(name)


def origin_ok(origin: str | None, referer: str | None, own: str) -> bool:
    """Whether a state-changing request comes from the server's own origin: its Origin
    header (else its Referer's origin) must equal ``own`` (scheme://host[:port]); a
    request with neither (curl, scripts) passes this check and still needs the token."""
    source = origin if origin and origin != "null" else None
    if source is None and referer:
        parts = urlsplit(referer)
        source = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "x"
    if origin == "null":
        return False
    return source is None or source.rstrip("/").lower() == own.rstrip("/").lower()
