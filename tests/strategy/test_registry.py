"""The strategy registry: built-ins, user registration, params validation, output checks."""

import numpy as np
import pandas as pd
import pydantic
import pytest
from pydantic import Field

from mltrader.errors import ConfigError, MltraderError
from mltrader.strategy import registry
from mltrader.strategy.base import StrategyInputs, StrategyParams
from mltrader.strategy.registry import (
    STRATEGIES,
    get_strategy,
    register_strategy,
    run_strategy,
    validate_params,
)
from mltrader.testing import synthetic_bars

BUILTINS = {"threshold", "crossover", "regime_filter", "ensemble", "topk", "positions"}


@pytest.fixture(autouse=True)
def _restore_registry():
    saved = dict(STRATEGIES)
    yield
    STRATEGIES.clear()
    STRATEGIES.update(saved)


@pytest.fixture
def inputs():
    bars = synthetic_bars(120, 3, seed=1)
    pred = pd.DataFrame(np.random.default_rng(1).normal(0, 0.01, bars.shape),
                        index=bars.index, columns=list(bars.symbols))
    return StrategyInputs(bars=bars, predictions={"model": pred})


def test_builtins_are_registered_with_documented_params():
    assert BUILTINS <= set(STRATEGIES)
    assert not get_strategy("crossover").needs_model
    assert all(get_strategy(n).needs_model for n in BUILTINS - {"crossover"})
    for name in BUILTINS:
        spec = get_strategy(name)
        assert spec.name == name and spec.description
        for key, field in spec.params.model_fields.items():
            assert field.description, f"{name}.{key} has no description"
        with pytest.raises(pydantic.ValidationError):  # frozen
            spec.params().__setattr__(next(iter(spec.params.model_fields)), 1)


def test_a_user_strategy_in_ten_lines(inputs):
    class MomentumParams(StrategyParams):
        lookback: int = Field(20, ge=1, description="bars of past return")

    @register_strategy("momentum", params=MomentumParams, needs_model=False,
                       description="long the symbols that rose over the lookback")
    def momentum(inputs: StrategyInputs, lookback: int) -> pd.DataFrame:
        close = inputs.bars.frame("close")
        rose = close.pct_change(lookback) > 0
        return rose.astype(float) / close.shape[1]

    w = run_strategy("momentum", inputs, {"lookback": 10})
    close = inputs.bars.close
    expected = np.zeros(close.shape)
    expected[10:] = (close[10:] / close[:-10] > 1) / 3
    np.testing.assert_allclose(w.to_numpy(), expected)
    assert get_strategy("momentum").description.startswith("long the symbols")
    with pytest.raises(ConfigError, match="'momentum'.*'lookback'"):
        run_strategy("momentum", inputs, {"lookback": 0})


def test_params_default_and_description_from_docstring(inputs):
    @register_strategy("flat")
    def flat(inputs):
        """Always flat.

        More text."""
        return inputs.frame(np.zeros(inputs.bars.shape))

    assert get_strategy("flat").description == "Always flat."
    assert (run_strategy("flat", inputs, None) == 0).all().all()
    with pytest.raises(ConfigError, match="unknown parameter 'x'.*allowed: none"):
        run_strategy("flat", inputs, {"x": 1})


def test_duplicate_names():
    def fn(inputs):
        return inputs.frame(np.zeros(inputs.bars.shape))

    with pytest.raises(ConfigError, match="'threshold' is already registered.*replace=True"):
        register_strategy("threshold")(fn)
    assert get_strategy("threshold").fn is not fn
    register_strategy("threshold", replace=True)(fn)
    assert get_strategy("threshold").fn is fn


def test_bad_registrations():
    def fn(inputs):
        return None

    class Loose(pydantic.BaseModel):
        a: int = 1

    with pytest.raises(ConfigError, match="frozen and forbid unknown keys"):
        register_strategy("loose", params=Loose)(fn)
    with pytest.raises(ConfigError, match="not valid"):
        register_strategy("two words")(fn)
    assert "loose" not in STRATEGIES


def test_unknown_strategy_lists_the_registered_ones():
    with pytest.raises(ConfigError) as err:
        get_strategy("thresold")
    assert "unknown strategy 'thresold'" in str(err.value)
    assert all(name in str(err.value) for name in BUILTINS)


@pytest.mark.parametrize("name,params,pattern", [
    ("threshold", {"treshold": 0.1},
     "strategy 'threshold': unknown parameter 'treshold'; .*allowed: threshold, sell_threshold, "
     "rebalance, allow_short, member"),
    ("threshold", {"threshold": "abc"}, "parameter 'threshold': .*'abc'"),
    ("threshold", {"rebalance": "hourly"}, "parameter 'rebalance': .*'hourly'"),
    ("topk", {"k": 0}, "parameter 'k': .*greater than or equal to 1"),
    ("crossover", {"fast": 200, "slow": 50}, "fast \\(200\\) must be below slow \\(50\\)"),
    ("ensemble", {"members": []}, "parameter 'members'"),
])
def test_bad_params_give_a_one_line_config_error(name, params, pattern):
    with pytest.raises(ConfigError, match=pattern) as err:
        validate_params(name, params)
    assert "\n" not in str(err.value)


def test_validate_params_fills_defaults():
    p = validate_params("topk", {"k": 3})
    assert (p.k, p.n_drop, p.rebalance, p.member) == (3, 1, "weekly", "model")
    with pytest.raises(ConfigError, match="must be a mapping"):
        validate_params("topk", [("k", 3)])


def test_missing_predictions_error_names_the_strategy_and_member(inputs):
    with pytest.raises(ConfigError, match="strategy 'threshold': no predictions named 'lstm' "
                       "\\(available: model\\)"):
        run_strategy("threshold", inputs, {"member": "lstm"})


def test_misaligned_predictions_are_caught(inputs):
    pred = inputs.predictions["model"]
    naive = pred.set_axis(pred.index.tz_localize(None))
    with pytest.raises(ConfigError, match="date the bars lack"):
        run_strategy("threshold", StrategyInputs(inputs.bars, {"model": naive}), {})
    # a subset of dates / reordered columns is aligned, missing = NaN = hold
    part = pred.iloc[50:, ::-1]
    w = run_strategy("threshold", StrategyInputs(inputs.bars, {"model": part}),
                     {"threshold": 0.0})
    padded = pred.copy()
    padded.iloc[:50] = np.nan
    full = run_strategy("threshold", StrategyInputs(inputs.bars, {"model": padded}),
                        {"threshold": 0.0})
    pd.testing.assert_frame_equal(w, full)


@pytest.mark.parametrize("make,pattern", [
    (lambda inp: inp.frame(np.zeros(inp.bars.shape)).iloc[:-1], "shape \\(119, 3\\)"),
    (lambda inp: inp.frame(np.full(inp.bars.shape, 1.5)), "weight 1.5 for S00"),
    (lambda inp: inp.frame(np.full(inp.bars.shape, -np.inf)), "weight -inf"),
    (lambda inp: inp.frame(np.zeros(inp.bars.shape)).reset_index(drop=True), "index"),
    (lambda inp: inp.frame(np.zeros(inp.bars.shape)).iloc[:, ::-1], "columns"),
    (lambda inp: np.zeros(inp.bars.shape), "a ndarray, not a DataFrame"),
    (lambda inp: inp.frame(np.full(inp.bars.shape, "x")), "non-numeric"),
])
def test_output_validation(inputs, make, pattern):
    register_strategy("bad", needs_model=False)(make)
    with pytest.raises(MltraderError, match=f"strategy 'bad' returned.*{pattern}"):
        run_strategy("bad", inputs, {})


def test_output_in_range_passes_and_rounding_is_clipped(inputs):
    register_strategy("edge", needs_model=False)(
        lambda inp: inp.frame(np.where(np.arange(3) == 0, -1.0, 1.0 + 1e-12)
                              * np.ones(inp.bars.shape)).where(inp.bars.close > 55))
    w = run_strategy("edge", inputs, {})
    vals = w.to_numpy()
    assert np.isnan(vals).any() and np.nanmax(np.abs(vals)) == 1.0


def test_registry_module_docstring_example_is_short():
    example = registry.__doc__.split("::", 1)[1].strip().splitlines()
    assert len(example) < 20 and any("register_strategy(" in line for line in example)
