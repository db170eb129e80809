"""Direct reinforcement (Moody & Saffell): learns a planted edge, not noise; costs, timing,
determinism, pickle-free persistence, sklearn API."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from sklearn.base import clone  # noqa: E402

from mltrader.models.rl_sharpe import (  # noqa: E402
    DirectReinforcement,
    lagged_returns,
    per_bar_sharpe,
    policy_returns,
)

SPLIT = 800
FAST = dict(epochs=100, cost_bps=1.0)


def _data(t_len=1200, n_sym=8, n_feat=4, seed=0, strength=1.0, flip_at=None):
    """Labels ~ N(0, 1%); feature 0 = strength * sign(y[t]) + noise (sd 2), the rest noise.

    y[t] is the return the position decided at row t earns, so feature 0 at row t is a
    (planted, noisy) forecast of exactly that return. From `flip_at` on the sign flips.
    """
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((t_len, n_sym)) * 0.01
    x = rng.standard_normal((t_len, n_sym, n_feat)) * 2.0
    signal = strength * np.sign(y)
    if flip_at is not None:
        signal[flip_at:] *= -1.0
    x[..., 0] += signal
    return x, y


def _oos_sharpe(model, x, y, cost_bps=1.0):
    pos = model.predict(x[SPLIT:], y[SPLIT:] if model.online else None)
    return per_bar_sharpe(policy_returns(pos, y[SPLIT:], cost_bps))


@pytest.fixture(scope="module")
def planted():
    x, y = _data()
    return x, y, DirectReinforcement(**FAST).fit(x[:SPLIT], y[:SPLIT])


# --- learning -------------------------------------------------------------------------------


def test_learns_a_planted_signal_and_keeps_it_out_of_sample(planted):
    x, y, model = planted
    assert model.train_sharpe_ > model.history_[0] + 0.3  # training raised in-sample Sharpe
    assert len(model.history_) == FAST["epochs"]
    assert model.w_[0] > 5 * np.abs(model.w_[1:]).max()  # it leans on the planted feature
    trained = _oos_sharpe(model, x, y)
    untrained = _oos_sharpe(DirectReinforcement(**{**FAST, "epochs": 0}).fit(x[:SPLIT],
                                                                          y[:SPLIT]), x, y)
    assert trained > 0.5  # per bar, net of 1 bp: a clear edge on the held-out later rows
    assert trained > untrained + 0.2
    assert model.score(x[SPLIT:], y[SPLIT:]) == pytest.approx(trained)


def test_finds_no_edge_in_pure_noise_out_of_sample():
    oos, ins = [], []
    for seed in range(4):
        x, y = _data(seed=seed, strength=0.0)
        model = DirectReinforcement(**FAST, seed=seed).fit(x[:SPLIT], y[:SPLIT])
        ins.append(model.train_sharpe_)
        oos.append(_oos_sharpe(model, x, y))
    assert abs(np.mean(oos)) < 0.05, oos  # SE of one 400-bar Sharpe is ~0.05
    assert max(oos) < 0.15, oos
    assert np.mean(ins) > np.mean(oos)  # what it found in sample was overfitting


def test_costs_make_it_trade_less():
    x, y = _data()
    turnover = {}
    for cost in (0.0, 100.0):
        model = DirectReinforcement(**{**FAST, "cost_bps": cost}).fit(x[:SPLIT], y[:SPLIT])
        pos = model.predict(x)
        turnover[cost] = np.abs(np.diff(pos, axis=0, prepend=0.0)).mean()
    assert turnover[0.0] > 0.3
    assert turnover[100.0] < 0.1 * turnover[0.0]


def test_online_mode_adapts_when_the_relationship_flips():
    x, y = _data(seed=3, flip_at=SPLIT)  # out of sample the planted feature means the opposite
    kw = {**FAST, "online_lr": 0.05}
    batch = DirectReinforcement(**kw).fit(x[:SPLIT], y[:SPLIT])
    online = clone(batch).set_params(online=True).fit(x[:SPLIT], y[:SPLIT])
    r_batch = policy_returns(batch.predict(x[SPLIT:]), y[SPLIT:], 1.0)
    r_online = policy_returns(online.predict(x[SPLIT:], y[SPLIT:]), y[SPLIT:], 1.0)
    # after 200 bars of adaptation (rows SPLIT+200..): batch keeps losing, online has turned
    assert per_bar_sharpe(r_batch[200:]) < -0.5
    assert per_bar_sharpe(r_online[200:]) > 0.3
    assert np.array_equal(online.w_, batch.w_)  # predict does not change the fitted weights


def test_online_with_zero_step_is_the_batch_policy(planted):
    x, y, model = planted
    still = copy.deepcopy(model).set_params(online=True, online_lr=0.0)
    np.testing.assert_allclose(still.predict(x, y), model.predict(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="online=True"):
        still.predict(x)


def test_online_sensitivities_are_the_exact_gradients_of_the_positions(planted):
    """With a zero step the weights stay fixed, so the RTRL sensitivities dF[t]/d(w, u, b)
    must equal finite differences of the batch policy (missing cells included)."""
    x, y, model = planted
    x = x[:200].copy()
    x[:7, 1] = np.nan
    x[50, 2, 0] = np.nan
    still = copy.deepcopy(model).set_params(online_lr=0.0)
    xs, active = still._inputs(x)
    _, sens = still._predict_online(xs, active, y[:200])
    eps = 1e-6
    for k in range(model.n_features_in_ + 2):
        up, down = copy.deepcopy(still), copy.deepcopy(still)
        for m, sign in ((up, 1.0), (down, -1.0)):
            theta = np.concatenate([m.w_, [m.u_, m.b_]])
            theta[k] += sign * eps
            m.w_, m.u_, m.b_ = theta[:-2], theta[-2], theta[-1]
        numeric = (up.predict(x) - down.predict(x)) / (2 * eps)
        np.testing.assert_allclose(sens[:, :, k], numeric, atol=1e-7)


# --- timing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("online", [False, True])
def test_positions_are_causal(planted, online):
    """Batch: F[t] uses X rows <= t. Online: F[t] uses X rows <= t and y rows <= t-2."""
    x, y, fitted = planted
    model = copy.deepcopy(fitted).set_params(online=online)
    t = 500
    base = model.predict(x, y)
    rng = np.random.default_rng(9)
    x2, y2 = x.copy(), y.copy()
    x2[t + 1:] = rng.standard_normal(x2[t + 1:].shape) * 5
    y2[t - 1:] = rng.standard_normal(y2[t - 1:].shape) * 0.05  # labels not yet realised at t
    changed = model.predict(x2, y2)
    assert np.array_equal(changed[: t + 1], base[: t + 1])
    assert not np.array_equal(changed[t + 1:], base[t + 1:])
    # and the online convention is tight: y[t-2] (realised at bar t's fill) does move F[t]
    y3 = y.copy()
    y3[t - 2] *= -3.0
    moved = model.predict(x, y3)
    assert np.array_equal(moved[:t], base[:t])
    assert np.array_equal(moved[t], base[t]) is (not online)


def test_missing_cells_hold_their_position_and_earn_nothing(planted):
    x, y, model = planted
    x = x.copy()
    x[:5, 0] = np.nan  # warm-up: symbol 0 has no features yet
    x[300, 1, 2] = np.nan  # one missing feature: the whole cell holds
    pos = model.predict(x)
    assert np.array_equal(pos[:5, 0], np.zeros(5))
    assert pos[300, 1] == pos[299, 1]
    assert np.all(np.abs(pos) <= 1.0)
    y = y.copy()
    y[:, 0] = np.nan
    fitted = clone(model).fit(x[:SPLIT], y[:SPLIT])  # NaN features and labels are fine
    assert np.isfinite(fitted.train_sharpe_)
    r = policy_returns(pos, y, 0.0)
    expect = np.nansum(pos * y, axis=1) / y.shape[1]
    np.testing.assert_allclose(r, expect, atol=1e-15)


def test_standardisation_uses_the_training_rows_only():
    x, y = _data()
    a = DirectReinforcement(epochs=2).fit(x[:SPLIT], y[:SPLIT])
    x2 = x.copy()
    x2[SPLIT:] += 100.0
    b = DirectReinforcement(epochs=2).fit(x2[:SPLIT], y[:SPLIT])
    assert np.array_equal(a.x_mean_, b.x_mean_) and np.array_equal(a.x_std_, b.x_std_)
    np.testing.assert_allclose(a.x_mean_, x[:SPLIT].reshape(-1, 4).mean(axis=0))


# --- determinism, persistence, sklearn ------------------------------------------------------


def test_same_seed_same_bytes_and_global_state_untouched():
    x, y = _data(t_len=500)
    kw = dict(epochs=20, online=True)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    a = DirectReinforcement(**kw).fit(x[:300], y[:300])
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's RNG stream is untouched
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (
        threads, det)
    b = DirectReinforcement(**kw).fit(x[:300], y[:300])
    assert np.array_equal(a.predict(x, y), b.predict(x, y))  # online
    a.online = b.online = False
    assert np.array_equal(a.predict(x), b.predict(x))  # batch
    other = DirectReinforcement(**{**kw, "seed": 1, "online": False}).fit(x[:300], y[:300])
    assert not np.array_equal(other.predict(x), a.predict(x))


def test_save_load_round_trip_without_pickle(planted, tmp_path):
    x, y, model = planted
    model = copy.deepcopy(model).set_params(online=True)
    written = model.save(tmp_path / "rl")
    files = sorted(p.name for p in (tmp_path / "rl").iterdir())
    assert files == ["params.json", "weights.safetensors"]
    assert sorted(p.name for p in written) == files
    doc = json.loads((tmp_path / "rl" / "params.json").read_text())
    assert doc["class"] == "DirectReinforcement" and doc["params"]["online"] is True
    loaded = DirectReinforcement.load(tmp_path / "rl")
    assert loaded.get_params() == model.get_params()
    assert loaded.history_ == model.history_
    assert np.array_equal(loaded.predict(x, y), model.predict(x, y))
    loaded.online = model.online = False
    assert np.array_equal(loaded.predict(x), model.predict(x))
    doc["class"] = "LSTMRegressor"
    (tmp_path / "rl" / "params.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not a DirectReinforcement"):
        DirectReinforcement.load(tmp_path / "rl")


def test_sklearn_clone_and_params():
    model = DirectReinforcement(epochs=7, lr=0.1, cost_bps=3.0, online=True, eta=0.02, seed=5)
    params = model.get_params()
    assert params["epochs"] == 7 and params["eta"] == 0.02 and params["seed"] == 5
    copy = clone(model)
    assert copy.get_params() == params and copy is not model
    copy.set_params(cost_bps=20.0, threads=2)
    assert copy.cost_bps == 20.0 and model.cost_bps == 3.0
    assert DirectReinforcement(**copy.get_params()).get_params() == copy.get_params()


def test_input_checks(planted):
    x, y, model = planted
    with pytest.raises(ValueError, match="3-D"):
        DirectReinforcement().fit(x[:, :, 0], y)
    with pytest.raises(ValueError, match="y must be"):
        DirectReinforcement().fit(x, y[:, :3])
    with pytest.raises(ValueError, match="features"):
        model.predict(x[:, :, :3])


# --- lagged returns -------------------------------------------------------------------------


def test_lagged_returns_are_the_last_m_known_returns():
    close = np.array([[100.0, 10.0], [110.0, 11.0], [99.0, 12.1], [99.0, np.nan]])
    out = lagged_returns(close, 2)
    assert out.shape == (4, 2, 2)
    np.testing.assert_allclose(out[2, 0], [99 / 110 - 1, 0.1])
    np.testing.assert_allclose(out[2, 1], [0.1, 0.1])
    assert np.isnan(out[0]).all() and np.isnan(out[1, :, 1]).all()
    assert out[3, 0, 0] == 0.0 and np.isnan(out[3, 1, 0])
    changed = close.copy()
    changed[3] = 1.0  # row t reads closes up to bar t only
    assert np.array_equal(lagged_returns(changed, 2)[:3], out[:3], equal_nan=True)
