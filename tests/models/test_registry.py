"""The model registry: a PyTorch model without PyTorch installed is a one-line user error."""

from __future__ import annotations

import sys

import pytest

import mltrader.models
from mltrader.errors import ConfigError
from mltrader.models.registry import make_model


@pytest.mark.parametrize("name", ["lstm", "cnn", "cnn_lstm", "rl_sharpe"])
def test_a_torch_model_without_torch_says_how_to_install_it(monkeypatch, name: str) -> None:
    """torch is an optional extra: a pip user running configs/lstm.yaml got 'internal error:
    ModuleNotFoundError'; it must name the model and the pinned install."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails as if absent
    for module in ("torch_models", "rl_sharpe"):
        monkeypatch.delitem(sys.modules, f"mltrader.models.{module}", raising=False)
        monkeypatch.delattr(mltrader.models, module, raising=False)
    with pytest.raises(ConfigError, match=rf"model '{name}' is a PyTorch network and PyTorch "
                       r"is not installed: pip install 'mltrader\[torch\]'"):
        make_model(name, {}, 0)
    assert make_model("ridge", {}, 0) is not None
