"""The positions rule: a policy's positions in [-1, 1] become 1/N slots of equity, as said."""

import numpy as np
import pandas as pd
import pytest

from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.strategy.base import StrategyInputs
from mltrader.strategy.positions import position_weights
from mltrader.strategy.registry import get_strategy, run_strategy, validate_params

N = np.nan


def make_inputs(positions):
    """``positions`` per symbol (one list per column), on flat closes."""
    pos = np.asarray(positions, dtype=float).T
    idx = pd.bdate_range("2021-01-04", periods=len(pos), tz="UTC")
    symbols = tuple("ABCD"[: pos.shape[1]])
    bars = Bars(index=idx, symbols=symbols, close=np.full(pos.shape, 10.0))
    pred = pd.DataFrame(pos, index=idx, columns=list(symbols))
    return StrategyInputs(bars=bars, predictions={"model": pred, "rl": -pred})


def check(weights, expected):
    np.testing.assert_allclose(weights.to_numpy(), np.asarray(expected, dtype=float).T,
                               atol=1e-12)


POS = [[1.0, 0.5, -0.25, N, -1.0],   # A
       [0.0, -0.8, 1.0, 0.2, N]]     # B


def test_each_symbol_is_a_one_over_n_slot_of_its_position():
    w = run_strategy("positions", make_inputs(POS), {})
    # N = 2: weight = position / 2; NaN stays NaN ("keep what you hold")
    check(w, [[0.5, 0.25, -0.125, N, -0.5], [0.0, -0.4, 0.5, 0.1, N]])


def test_allocation_scales_the_whole_book():
    w = run_strategy("positions", make_inputs(POS), {"allocation": 0.5})
    check(w, [[0.25, 0.125, -0.0625, N, -0.25], [0.0, -0.2, 0.25, 0.05, N]])
    gross = np.nansum(np.abs(w.to_numpy()), axis=1)
    assert gross.max() <= 0.5 + 1e-12  # never more than `allocation` of equity


def test_without_shorts_negative_positions_are_flat():
    w = run_strategy("positions", make_inputs(POS), {"allow_short": False})
    check(w, [[0.5, 0.25, 0.0, N, 0.0], [0.0, 0.0, 0.5, 0.1, N]])


def test_positions_outside_the_unit_range_are_clipped():
    w = position_weights(np.array([[3.0, -2.0, 0.5]]), allocation=0.9)
    np.testing.assert_allclose(w, [[0.3, -0.3, 0.15]])
    w = position_weights(np.array([[3.0, -2.0, N]]), allow_short=False)
    np.testing.assert_allclose(w, [[1 / 3, 0.0, N]])


def test_member_picks_the_predictions():
    w = run_strategy("positions", make_inputs(POS), {"member": "rl"})
    check(w, [[-0.5, -0.25, 0.125, N, 0.5], [0.0, 0.4, -0.5, -0.1, N]])
    with pytest.raises(ConfigError, match="no predictions named 'lstm'"):
        run_strategy("positions", make_inputs(POS), {"member": "lstm"})


def test_declared_as_a_model_strategy_with_documented_params():
    spec = get_strategy("positions")
    assert spec.needs_model and spec.description
    params = validate_params("positions", {})
    assert (params.allocation, params.allow_short, params.member) == (1.0, True, "model")


@pytest.mark.parametrize(("params", "needle"), [
    ({"allocation": 0}, "allocation"),
    ({"allocation": 1.5}, "allocation"),
    ({"allocation": "all"}, "allocation"),
    ({"alocation": 0.5}, "unknown parameter 'alocation'"),
])
def test_bad_params_are_one_line(params, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        validate_params("positions", params)
    assert "\n" not in str(e.value)
