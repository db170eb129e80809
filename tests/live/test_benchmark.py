"""The live run's buy-and-hold basket."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mltrader.live.benchmark import buy_and_hold_shares, marked_value

prices = st.floats(0.01, 1e5, allow_nan=False)


@given(st.floats(1.0, 1e9), st.dictionaries(st.sampled_from("ABCDEFG"), prices, min_size=1))
def test_the_basket_is_worth_the_equity_at_the_prices_it_was_bought(equity, closes):
    shares = buy_and_hold_shares(equity, closes)
    assert marked_value(shares, closes) == pytest.approx(equity, rel=1e-9)
    values = [q * closes[s] for s, q in shares.items()]
    assert max(values) == pytest.approx(min(values), rel=1e-9)  # equal weight


def test_symbols_without_a_price_are_left_out_and_a_later_gap_gives_no_value():
    shares = buy_and_hold_shares(1000.0, {"A": 10.0, "B": math.nan, "C": 0.0, "D": 20.0})
    assert set(shares) == {"A", "D"} and shares["A"] == pytest.approx(50.0)
    assert marked_value(shares, {"A": 11.0, "D": 20.0}) == pytest.approx(1050.0)
    assert marked_value(shares, {"A": 11.0}) is None
    assert buy_and_hold_shares(1000.0, {"A": math.nan}) == {}
    assert buy_and_hold_shares(-5.0, {"A": 1.0}) == {}
    assert marked_value({}, {"A": 1.0}) is None
