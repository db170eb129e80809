"""The suite-wide guard (tests/conftest.py): no test can reach the network or a real key."""

import os
import socket

import pytest


def test_outside_addresses_and_dns_are_blocked():
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("203.0.113.7", 443), timeout=0.5)
    with pytest.raises(OSError, match="blocked"):
        socket.getaddrinfo("data.alpaca.markets", 443)


def test_localhost_still_works():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        socket.create_connection(srv.getsockname(), timeout=1).close()


def test_real_keys_are_not_visible():
    assert "MLTRADER_ALPACA_KEY" not in os.environ and "APCA_API_KEY_ID" not in os.environ
