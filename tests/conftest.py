"""Shared fixtures: small configs and synthetic data that keep the suite fast."""

from __future__ import annotations

import os

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
