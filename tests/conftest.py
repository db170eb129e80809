"""Shared fixtures: small configs and synthetic data that keep the suite fast."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def small_cfg_dict() -> dict:
    """A config that trains ridge on ~6 years of synthetic data in a fraction of a second."""
    return {
        "name": "small",
        "model": {"name": "ridge"},
        "walk_forward": {"first_test_year": 2003, "retrain": "yearly", "min_train_rows": 100},
        "strategy": {"threshold": 0.0, "rebalance": "daily"},
        "costs": {"commission_bps": 1, "slippage_bps": 2},
    }


_LOCAL = {"127.0.0.1", "localhost", "::1", "", None}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """No test may touch the network: a connection or DNS lookup beyond localhost fails."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(addr):
        if isinstance(addr, tuple) and addr[0] not in _LOCAL:
            raise OSError(f"network access blocked in tests: {addr!r}")

    def connect(self, addr):
        check(addr)
        return real_connect(self, addr)

    def connect_ex(self, addr):
        check(addr)
        return real_connect_ex(self, addr)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in _LOCAL:
            raise socket.gaierror(f"DNS blocked in tests: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


_SECRET_VARS = ("MLTRADER_ALPACA_KEY", "MLTRADER_ALPACA_SECRET", "APCA_API_KEY_ID",
                "APCA_API_SECRET_KEY", "MLTRADER_ALPHAVANTAGE_KEY", "ALPHAVANTAGE_API_KEY")


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch):
    """Tests set the keys they need; a developer's real keys are never used."""
    for var in _SECRET_VARS:
        monkeypatch.delenv(var, raising=False)
