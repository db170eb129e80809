"""The broker domain's shared rules: merging a protective exit's two legs into one order."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from mltrader.live.brokers.base import FINAL_STATUSES, Order, merge_exit_legs

STATUSES = ("new", "accepted", "partially_filled", "filled", "cancelled", "rejected",
            "expired", "pending")


def leg(status: str, filled: float = 0.0, price: float | None = None, qty: float = 10.0,
        reason: str = "", kind: str = "stop", commission: float = 0.0) -> Order:
    return Order(f"cid-{kind}", f"b-{kind}", "AAPL", "sell", qty, filled, status,
                 "stop" if kind == "stop" else "limit", avg_fill_price=price,
                 stop_price=95.0 if kind == "stop" else None,
                 limit_price=110.0 if kind == "take" else None, reason=reason,
                 commission=commission)


def test_a_fresh_exit_is_working_with_both_prices():
    o = merge_exit_legs("x", leg("accepted"), leg("new", kind="take"))
    assert (o.client_order_id, o.status, o.type, o.stop_price, o.limit_price) == (
        "x", "accepted", "stop", 95.0, 110.0)
    assert o.broker_id == "b-stop"
    take_led = merge_exit_legs("x", leg("pending"), leg("new", kind="take"), lead="take")
    assert take_led.status == "new" and take_led.broker_id == "b-take"


def test_one_leg_filling_fills_the_exit_and_the_other_legs_cancel_is_not_a_reason():
    o = merge_exit_legs("x", leg("cancelled"), leg("filled", 10, 110.0, kind="take",
                                                   commission=1.0))
    assert (o.status, o.filled_qty, o.avg_fill_price, o.commission) == ("filled", 10, 110.0,
                                                                         1.0)


def test_partial_fill_then_cancel_and_a_rejection_name_the_leg():
    o = merge_exit_legs("x", leg("cancelled", 4, 95.0), leg("cancelled", kind="take"))
    assert (o.status, o.filled_qty) == ("cancelled", 4)
    r = merge_exit_legs("x", leg("rejected", reason="IB error 201"),
                        leg("cancelled", kind="take"))
    assert r.status == "rejected" and r.reason == "stop leg: IB error 201"


@given(st.sampled_from(STATUSES), st.sampled_from(STATUSES),
       st.floats(0, 10), st.floats(0, 10), st.sampled_from(("stop", "take")))
def test_merged_fills_are_the_legs_sum_and_final_means_nothing_works(s1, s2, f1, f2, lead):
    stop = leg(s1, f1, 95.0 if f1 else None)
    take = leg(s2, f2, 110.0 if f2 else None, kind="take")
    o = merge_exit_legs("x", stop, take, lead=lead)
    assert math.isclose(o.filled_qty, f1 + f2)
    if o.filled_qty > 0:  # the average lies between the legs' prices
        assert 95.0 - 1e-6 <= o.avg_fill_price <= 110.0 + 1e-6
    both_final = s1 in FINAL_STATUSES and s2 in FINAL_STATUSES
    assert (o.status in FINAL_STATUSES) == (both_final or f1 + f2 >= 10 - 1e-9)
