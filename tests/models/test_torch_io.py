"""models.torch_io: safetensors weights + a JSON of params, written and read without pickle."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors import safe_open  # noqa: E402
from torch import nn  # noqa: E402

from mltrader.models.torch_io import (  # noqa: E402
    PARAMS_FILE,
    WEIGHTS_FILE,
    json_scalar,
    load_state,
    load_torch,
    save_torch,
)

FMT = "mltrader-test/1"


def _net(hidden: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 1))


def test_round_trip_without_pickle(tmp_path, monkeypatch):
    net = _net()

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, no_pickle)
    written = save_torch(tmp_path / "m", FMT, "Net", net.state_dict(),
                         {"hidden": 3, "lr": np.float64(0.5)}, {"classes_": [0, 1]})
    params, fitted, state = load_torch(tmp_path / "m", FMT, "Net")
    other = _net()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    load_state(other, state, tmp_path / "m", "Net")
    monkeypatch.undo()

    assert written == [tmp_path / "m" / WEIGHTS_FILE, tmp_path / "m" / PARAMS_FILE]
    assert params == {"hidden": 3, "lr": 0.5} and type(params["lr"]) is float
    assert fitted == {"classes_": [0, 1]}
    for k, v in net.state_dict().items():
        assert torch.equal(other.state_dict()[k], v)


def test_the_files_format(tmp_path):
    """The layout every saved model has had: changing it would orphan saved models."""
    save_torch(tmp_path, FMT, "Net", {"w": torch.arange(3.0)}, {"b": 2, "a": 1})
    text = (tmp_path / PARAMS_FILE).read_text()
    doc = {"class": "Net", "fitted": {}, "format": FMT, "params": {"a": 1, "b": 2}}
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    with safe_open(str(tmp_path / WEIGHTS_FILE), "pt") as f:
        assert f.metadata() == {"format": FMT, "class": "Net"}
        assert torch.equal(f.get_tensor("w"), torch.arange(3.0))


def test_state_is_detached_contiguous_and_may_share_storage(tmp_path):
    base = torch.arange(12.0, requires_grad=True).reshape(3, 4)
    tied = nn.Linear(4, 4)
    state = {"t": base.t(), "a": tied.weight, "b": tied.weight}  # transposed; tied weights
    save_torch(tmp_path, FMT, "Net", state, {})
    _, _, back = load_torch(tmp_path, FMT, "Net")
    assert torch.equal(back["t"], base.detach().t())
    assert torch.equal(back["a"], back["b"])


def test_refuses_another_format_or_class_and_names_the_file(tmp_path):
    save_torch(tmp_path, FMT, "Net", {"w": torch.zeros(1)}, {})
    with pytest.raises(ValueError, match="unknown format 'mltrader-test/1'"):
        load_torch(tmp_path, "mltrader-test/2", "Net")
    with pytest.raises(ValueError, match="holds a Net, not a Other"):
        load_torch(tmp_path, FMT, "Other")


def test_load_state_refuses_a_misfit(tmp_path):
    save_torch(tmp_path, FMT, "Net", _net(hidden=5).state_dict(), {})
    _, _, state = load_torch(tmp_path, FMT, "Net")
    with pytest.raises(ValueError, match=f"{WEIGHTS_FILE} does not fit Net: "):
        load_state(_net(hidden=3), state, tmp_path, "Net")
    del state["0.bias"]
    with pytest.raises(ValueError, match="does not fit Net"):
        load_state(_net(hidden=5), state, tmp_path, "Net")


def test_another_weights_file_name(tmp_path):
    written = save_torch(tmp_path, FMT, "Agent", {"policy.w": torch.ones(2)}, {"n": 1},
                         weights_file="policy.safetensors")
    assert sorted(p.name for p in written) == ["params.json", "policy.safetensors"]
    assert not (tmp_path / WEIGHTS_FILE).exists()
    params, fitted, state = load_torch(tmp_path, FMT, "Agent", weights_file="policy.safetensors")
    assert (params, fitted, list(state)) == ({"n": 1}, {}, ["policy.w"])
    with pytest.raises(ValueError, match="policy.safetensors does not fit Agent"):
        load_state(nn.Linear(1, 1), state, tmp_path, "Agent", weights_file="policy.safetensors")


def test_json_scalar_refuses_what_is_not_json():
    assert json_scalar(np.int64(3)) == 3 and type(json_scalar(np.int64(3))) is int
    with pytest.raises(TypeError, match="ndarray"):
        json_scalar(np.zeros(2))
