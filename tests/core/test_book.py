"""core.book: what a fill does to the book, shared by the backtest kernel and the RL step."""

from __future__ import annotations

import numpy as np
import pytest

from mltrader.core.book import book_leg, split_fill
from mltrader.core.fills import commission
from mltrader.core.params import MODE_TARGETS, pack
from mltrader.core.settings import EngineSettings


def _fp(**costs) -> np.ndarray:
    return pack(EngineSettings(**costs), MODE_TARGETS, False)[1]


COSTS = _fp(commission_bps=3.0, commission_per_share=0.005, commission_min=1.0,
            commission_fixed=0.25)


def _reference(s0, delta, fpx, mark, fp):
    """The leg loop as the kernel and the environment each wrote it before it moved."""
    sh, cash, bvalue, bgross, out = s0, 0.0, 0.0, 0.0, []
    legs, q1 = 1, delta
    if s0 != 0.0 and (s0 + delta) != 0.0 and ((s0 + delta) > 0) != (s0 > 0):
        legs, q1 = 2, -s0
    for leg in range(legs):
        q = q1 if leg == 0 else delta + s0
        value = abs(q) * fpx
        comm = commission(q, value, fp)
        if legs == 2:
            whole_fee = commission(delta, abs(delta) * fpx, fp)
            comm = whole_fee * abs(q) / abs(delta)
        flow = -q * fpx - comm
        cash += flow
        bvalue += flow + q * mark
        bgross += (abs(sh + q) - abs(sh)) * mark
        sh += q
        if abs(sh) < 1e-10 * max(1.0, abs(q)):
            sh = 0.0
        out.append((q, sh, value, comm, flow))
    return out, cash, bvalue, bgross


def _booked(s0, delta, fpx, mark, fp):
    sh, cash, bvalue, bgross, out = s0, 0.0, 0.0, 0.0, []
    legs, fee = split_fill(s0, delta, fpx, fp)
    for leg in range(legs):
        q, sh, value, comm, flow, d_value, d_gross = book_leg(leg, legs, s0, delta, sh, fpx,
                                                              mark, fee)
        cash += flow
        bvalue += d_value
        bgross += d_gross
        out.append((q, sh, value, comm, flow))
    return out, cash, bvalue, bgross


@pytest.mark.parametrize(("s0", "delta", "legs"), [
    (0.0, 10.0, 1), (0.0, -10.0, 1), (10.0, 5.0, 1), (10.0, -4.0, 1), (10.0, -10.0, 1),
    (10.0, -25.0, 2), (-10.0, 25.0, 2), (-10.0, 10.0, 1), (-10.0, -1.0, 1)])
def test_split_fill_splits_only_a_sign_flip_and_charges_the_order(s0, delta, legs):
    assert split_fill(s0, delta, 20.0, COSTS) == (legs, commission(delta, abs(delta) * 20, COSTS))


def test_a_flip_closes_then_opens_and_shares_one_fee():
    legs, whole = split_fill(10.0, -25.0, 50.0, COSTS)
    assert legs == 2 and whole == commission(-25.0, 25 * 50.0, COSTS)
    (q0, s_a, v0, c0, f0, *_) = book_leg(0, 2, 10.0, -25.0, 10.0, 50.0, 49.0, whole)
    (q1, s_b, v1, c1, f1, *_) = book_leg(1, 2, 10.0, -25.0, s_a, 50.0, 49.0, whole)
    assert (q0, s_a, q1, s_b) == (-10.0, 0.0, -15.0, -15.0)
    assert (v0, v1) == (500.0, 750.0)
    assert c0 + c1 == pytest.approx(whole)
    assert c0 == pytest.approx(whole * 10 / 25) and c1 == pytest.approx(whole * 15 / 25)
    assert f0 == 500.0 - c0 and f1 == 750.0 - c1  # selling brings cash in, less the fee


def test_one_leg_cash_value_and_gross():
    legs, fee = split_fill(4.0, 6.0, 20.0, _fp(commission_bps=10.0))
    assert legs == 1 and fee == pytest.approx(0.12)
    q, after, value, comm, flow, d_value, d_gross = book_leg(0, 1, 4.0, 6.0, 4.0, 20.0, 19.0,
                                                             fee)
    assert (q, after, value, comm) == (6.0, 10.0, 120.0, fee)
    assert flow == -120.0 - fee
    assert d_value == flow + 6.0 * 19.0  # paid above the mark, plus the fee: value falls
    assert d_gross == 6.0 * 19.0


def test_a_position_left_within_rounding_of_zero_is_zero():
    s0 = 0.1 + 0.2  # 0.30000000000000004
    assert s0 - 0.3 != 0.0
    assert book_leg(0, 1, s0, -0.3, s0, 10.0, 10.0, 0.0)[1] == 0.0
    assert book_leg(0, 1, 1.0, -0.5, 1.0, 10.0, 10.0, 0.0)[1] == 0.5


def test_the_same_arithmetic_as_the_code_it_replaced():
    """Bit for bit, over random fills: the backtest's equity must not move by a rounding."""
    rng = np.random.default_rng(7)
    fps = [_fp(), COSTS, _fp(commission_bps=1.5, commission_min=2.0)]
    for _ in range(3000):
        s0 = float(rng.choice([0.0, rng.normal(0, 100), np.round(rng.normal(0, 100))]))
        delta = float(rng.choice([rng.normal(0, 150), -s0, -2 * s0, np.round(rng.normal(0, 50))]))
        if delta == 0.0:
            continue
        fpx, mark = float(rng.uniform(1, 500)), float(rng.uniform(1, 500))
        fp = fps[int(rng.integers(len(fps)))]
        assert _booked(s0, delta, fpx, mark, fp) == _reference(s0, delta, fpx, mark, fp)
