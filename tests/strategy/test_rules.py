"""Each built-in rule on small hand-built frames, with the expected weights spelled out."""

import numpy as np
import pandas as pd
import pytest

from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.strategy.base import StrategyInputs
from mltrader.strategy.ensemble import EnsembleParams, ensemble_missing
from mltrader.strategy.registry import run_strategy
from mltrader.strategy.threshold import threshold_weights

N = np.nan


def make_inputs(close, predictions=None, regimes=None, symbols=None):
    close = np.asarray(close, dtype=float)
    symbols = symbols or tuple("ABCDE"[: close.shape[1]])
    idx = pd.bdate_range("2021-01-04", periods=len(close), tz="UTC")
    bars = Bars(index=idx, symbols=symbols, close=close)

    def frame(a):
        return pd.DataFrame(np.asarray(a, dtype=float).T, index=idx, columns=list(symbols))

    preds = {k: frame(v) for k, v in (predictions or {}).items()}
    return StrategyInputs(bars=bars, predictions=preds,
                          regimes=None if regimes is None else frame(regimes))


def flat_close(t, n):
    return np.full((t, n), 10.0)


def check(weights, expected):
    """``expected`` is given per symbol (one list per column), like the inputs."""
    np.testing.assert_allclose(weights.to_numpy(), np.asarray(expected, dtype=float).T,
                               atol=1e-12)


# ------------------------------------------------------------------ threshold
PRED = {"model": [[0.02, 0.0, -0.006, -0.02, 0.03],   # A
                  [0.0, 0.015, 0.0, N, -0.02]]}        # B


def test_threshold_hold_band_with_separate_sell_threshold():
    inp = make_inputs(flat_close(5, 2), PRED)
    w = run_strategy("threshold", inp, {"threshold": 0.01, "sell_threshold": 0.005})
    # A: long, hold (in band), flat (-0.006 < -0.005), flat, long
    # B: flat, long, hold, hold (NaN signal), flat; longs share equity equally
    check(w, [[1, 0.5, 0, 0, 1], [0, 0.5, 1, 1, 0]])


def test_threshold_sell_threshold_defaults_to_threshold():
    inp = make_inputs(flat_close(5, 2), PRED)
    w = run_strategy("threshold", inp, {"threshold": 0.01})
    # A at bar 2: -0.006 is inside the +-0.01 band -> still long; flat at bar 3 (-0.02)
    check(w, [[1, 0.5, 0.5, 0, 1], [0, 0.5, 0.5, 1, 0]])


def test_threshold_short_mode():
    inp = make_inputs(flat_close(5, 2), PRED)
    w = run_strategy("threshold", inp,
                     {"threshold": 0.01, "sell_threshold": 0.005, "allow_short": True})
    # states A: 1, 1, -1, -1, 1; B: 0, 1, 1, 1, -1; equal shares of gross equity
    check(w, [[1, 0.5, -0.5, -0.5, 0.5], [0, 0.5, 0.5, 0.5, -0.5]])


def test_threshold_default_is_two_percent_strictly_above():
    inp = make_inputs(flat_close(3, 2), {"model": [[0.02, 0.0201, 0.0], [0.0, 0.0, -0.0201]]})
    w = run_strategy("threshold", inp, {})
    check(w, [[0, 1, 1], [0, 0, 0]])


def test_threshold_uses_the_named_member_and_matches_the_old_function():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 0.01, (2, 3, 40))
    inp = make_inputs(flat_close(40, 3), {"model": a, "other": b})
    w = run_strategy("threshold", inp, {"member": "other", "threshold": 0.005,
                                        "rebalance": "weekly"})
    old = threshold_weights(pd.DataFrame(b.T, index=inp.bars.index, columns=list("ABC")),
                            0.005, "weekly")
    pd.testing.assert_frame_equal(w, old)
    assert w.isna().all(axis=1).sum() > 20  # NaN rows between weekly decisions


# ------------------------------------------------------------------ crossover
def test_crossover_enters_on_golden_and_exits_on_death_cross():
    a = [10, 10, 10, 9, 8, 9, 11, 12, 10.5, 8, 7]  # SMA2 crosses SMA3 up at 6, down at 9
    b = list(range(1, 12))  # fast above slow from the start: never a cross
    inp = make_inputs(np.array([a, b], dtype=float).T)
    w = run_strategy("crossover", inp, {"fast": 2, "slow": 3})
    exp_a = [N] * 11
    exp_a[6], exp_a[9] = 0.5, 0.0  # fixed 1/N slot, N = 2
    check(w, [exp_a, [N] * 11])
    ws = run_strategy("crossover", inp, {"fast": 2, "slow": 3, "allow_short": True})
    exp_a[9] = -0.5
    check(ws, [exp_a, [N] * 11])


# ------------------------------------------------------------------ regime filter
def test_regime_filter_blocks_entries_in_bear_codes_only():
    sig = [[0.002, 0.002, 0.001, -0.001, 0.002], [0.002, N, 0.003, 0.0, -0.0001]]
    reg = [[4, 0, 1, 0, N], [1, 5, 2, 3, 0]]
    inp = make_inputs(flat_close(5, 2), {"model": sig}, reg)
    w = run_strategy("regime_filter", inp, {})
    # A: enter (bull), hold (bear code 0 blocks the entry), hold (in band), exit, enter
    #    (NaN regime = unknown = not bearish)
    # B: blocked (code 1), hold (NaN signal), enter (code 2), hold (0.0 is not < 0), exit
    check(w, [[0.5, N, N, 0, 0.5], [N, N, 0.5, N, 0]])


def test_regime_filter_without_regimes_is_a_config_error():
    inp = make_inputs(flat_close(5, 2), {"model": [[0.01] * 5, [0.01] * 5]})
    with pytest.raises(ConfigError, match="regime_filter.*needs regimes"):
        run_strategy("regime_filter", inp, {})


def test_regime_filter_rejects_sell_above_buy():
    inp = make_inputs(flat_close(5, 1), {"model": [[0.0] * 5]}, [[2] * 5])
    with pytest.raises(ConfigError, match="sell_below"):
        run_strategy("regime_filter", inp, {"buy_above": 0.0, "sell_below": 0.01})


# ------------------------------------------------------------------ ensemble
ENS = {"lstm": [[0.1, 0.1, -0.1, 0.1, N], [-0.1] * 5],
       "cnn": [[0.2, -0.1, -0.2, 0.0, 0.1], [-0.1] * 5]}


def test_ensemble_unanimous_vote_skipping_the_missing_member():
    inp = make_inputs(flat_close(5, 2), ENS)
    assert ensemble_missing({}, inp) == ["rl"]
    assert ensemble_missing(EnsembleParams(members=["cnn"]), inp) == []
    w = run_strategy("ensemble", inp, {})  # members lstm, cnn, rl; rl is skipped
    # A: agree up, disagree, agree down, a zero vote, NaN member -> no decision
    check(w, [[0.5, 0, -0.5, 0, N], [-0.5] * 5])
    w_long = run_strategy("ensemble", inp, {"allow_short": False})
    check(w_long, [[0.5, 0, 0, 0, N], [0] * 5])


def test_ensemble_single_member_and_no_member():
    inp = make_inputs(flat_close(5, 2), ENS)
    w = run_strategy("ensemble", inp, {"members": ["cnn"]})
    check(w, [[0.5, -0.5, -0.5, 0, 0.5], [-0.5] * 5])
    with pytest.raises(ConfigError, match="none of the ensemble members.*available: lstm, cnn"):
        run_strategy("ensemble", inp, {"members": ["rl", "xgb"]})


# ------------------------------------------------------------------ topk
TOPK_SIG = [  # rows = symbols A..E, columns = bars 0..4
    [0.5, 0.2, 0.2, 0.2, 0.9],
    [0.4, 0.1, 0.1, 0.1, 0.8],
    [0.3, 0.7, 0.7, 0.7, 0.7],
    [0.2, 0.8, 0.8, 0.8, 0.95],
    [0.1, 0.9, 0.9, N, 0.1],
]


def topk_inputs():
    close = flat_close(5, 5)
    close[4, 3] = np.nan  # D does not trade on bar 4
    return make_inputs(close, {"model": TOPK_SIG})


def test_topk_replaces_at_most_n_drop_and_sells_unknowns():
    w = run_strategy("topk", topk_inputs(), {"k": 2, "n_drop": 1, "rebalance": "daily"})
    # 0: initial fill A, B. 1: B (worst) -> E, only one swap. 2: A -> D.
    # 3: E has no signal: forced exit, slot refilled with C (not counted in n_drop).
    # 4: D has no close: forced exit, refilled with A; then one swap: C (3rd) -> B (2nd)
    expected_rows = [[.5, .5, 0, 0, 0], [.5, 0, 0, 0, .5], [0, 0, 0, .5, .5],
                     [0, 0, .5, .5, 0], [.5, .5, 0, 0, 0]]
    np.testing.assert_allclose(w.to_numpy(), expected_rows)


def test_topk_n_drop_two_and_zero():
    w2 = run_strategy("topk", topk_inputs(), {"k": 2, "n_drop": 2, "rebalance": "daily"})
    assert w2.iloc[1].tolist() == [0, 0, 0, 0.5, 0.5]  # both swapped at once
    w0 = run_strategy("topk", topk_inputs(), {"k": 2, "n_drop": 0, "rebalance": "daily"})
    assert w0.iloc[2].tolist() == [0.5, 0.5, 0, 0, 0]  # never swaps by choice


def test_topk_holds_exactly_k_and_never_replaces_more_than_n_drop():
    rng = np.random.default_rng(7)
    sig = rng.normal(size=(12, 300))
    inp = make_inputs(flat_close(300, 12), {"model": sig},
                      symbols=tuple(f"S{i}" for i in range(12)))
    w = run_strategy("topk", inp, {"k": 4, "n_drop": 1, "rebalance": "weekly"})
    rows = w.dropna(how="all").to_numpy()
    assert len(rows) == 60  # one decision per week
    held = rows > 0
    assert (held.sum(axis=1) == 4).all() and np.allclose(rows[held], 0.25)
    left = (held[:-1] & ~held[1:]).sum(axis=1)
    assert left.max() == 1 and (left == 1).mean() > 0.5


def test_topk_with_n_drop_k_is_the_plain_top_k():
    rng = np.random.default_rng(8)
    sig = rng.normal(size=(9, 50))
    inp = make_inputs(flat_close(50, 9), {"model": sig},
                      symbols=tuple(f"S{i}" for i in range(9)))
    w = run_strategy("topk", inp, {"k": 3, "n_drop": 3, "rebalance": "daily"}).to_numpy()
    top = np.argsort(-sig.T, axis=1)[:, :3]
    expected = np.zeros((50, 9))
    np.put_along_axis(expected, top, 1 / 3, axis=1)
    np.testing.assert_allclose(w, expected)
