"""The shared exit levels: stop, trailing stop (only when strictly tighter) and target."""

from __future__ import annotations

import math

import pytest

from mltrader.risk.exits import exit_levels


def test_long_levels():
    assert exit_levels(True, 100.0, 100.0, 0.05, 0.10, 0.0) == pytest.approx((95.0, False,
                                                                              110.0))
    stop, trailing, _ = exit_levels(True, 100.0, 120.0, 0.05, 0.0, 0.10)
    assert (stop, trailing) == (pytest.approx(108.0), True)  # best 120 x 0.9 beats 95
    stop, trailing, _ = exit_levels(True, 100.0, 100.0, 0.10, 0.0, 0.10)
    assert (stop, trailing) == (pytest.approx(90.0), False)  # equal: the stop, not the trail


def test_short_levels_mirror():
    stop, trailing, tgt = exit_levels(False, 100.0, 80.0, 0.05, 0.10, 0.10)
    assert (stop, trailing, tgt) == (pytest.approx(88.0), True, pytest.approx(90.0))


def test_rules_switched_off():
    stop, trailing, tgt = exit_levels(True, 100.0, 100.0, 0.0, 0.0, 0.0)
    assert stop == -math.inf and not trailing and math.isnan(tgt)
    stop, _, tgt = exit_levels(False, 100.0, 100.0, 0.0, 0.0, 0.0)
    assert stop == math.inf and math.isnan(tgt)
