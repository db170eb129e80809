"""Save and load a torch model without pickle: safetensors weights + a JSON file of params.

A model directory holds two files:

* ``weights.safetensors`` (or the caller's `weights_file`): the state dict (name ->
  tensor), with the safetensors metadata ``{"format": <format>, "class": <class name>}``;
* ``params.json``: ``{"format": <format>, "class": <class name>, "params": {...},
  "fitted": {...}}`` (sorted keys, indent 2, a trailing newline; numpy scalars written as
  plain numbers, anything else that is not JSON refused).

`torch_env` sets torch's threads and deterministic mode for a fit or a predict.
`save_torch` writes them, `load_torch` reads them back and refuses another format or class
before a model is built; `load_state` loads a state dict into a module, strictly. Used by the
sequence models (`torch_models`, format ``mltrader-torch/1``) and the recurrent RL policy
(`rl_sharpe`, ``mltrader-rl/1``); any torch model whose state is a dict of tensors plus JSON
data can use it (each caller names its own format and checks its own fitted data).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Before torch loads its OpenMP runtime (see torch_models): idle threads sleep, not spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402

from mltrader.models.threads import thread_budget  # noqa: E402


@contextmanager
def torch_env(threads: int | None, deterministic: bool = False) -> Iterator[None]:
    """Set torch's thread count (and deterministic algorithms) for the block; both restored
    after. Every torch model here fits and predicts inside it (reproducible by seed).

    `threads` None (or 0) means the thread budget (`models.threads.thread_budget`: the cores
    given, or this worker's share). A model's `threads` is part of its result: torch's CPU
    kernels sum in a different order with another thread count (an LSTM's predictions moved
    by ~3e-8 between 1 and 2 threads), so the models keep an explicit default and only
    `threads=None` follows the budget."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(int(threads) if threads else thread_budget())
        if deterministic:
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


WEIGHTS_FILE = "weights.safetensors"
PARAMS_FILE = "params.json"


def json_scalar(value: Any) -> Any:
    """numpy scalars (e.g. a param given as np.float64) as plain Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot save a parameter of type {type(value).__name__} as JSON")


def save_torch(path: Path | str, fmt: str, name: str, state: Mapping[str, torch.Tensor],
               params: Mapping[str, Any], fitted: Mapping[str, Any] | None = None, *,
               weights_file: str = WEIGHTS_FILE) -> list[Path]:
    """Write <path>/<weights_file> and <path>/params.json; return both paths.

    `fmt` is the caller's format tag (e.g. ``"mltrader-torch/1"``), `name` its class name,
    `state` a state dict (tensors are detached and copied to contiguous CPU memory first, so
    a module's ``state_dict()`` can be passed as it is, tied weights included), `params` the
    constructor's params (``get_params()``) and `fitted` the JSON data learned by fitting
    (written as ``{}`` when None). Creates `path` if needed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights, params_file = path / weights_file, path / PARAMS_FILE
    tensors = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format)
               for k, v in state.items()}
    save_file(tensors, str(weights), metadata={"format": fmt, "class": name})
    doc = {"format": fmt, "class": name, "params": dict(params),
           "fitted": dict(fitted) if fitted is not None else {}}
    text = json.dumps(doc, indent=2, sort_keys=True, default=json_scalar)
    params_file.write_text(text + "\n")
    return [weights, params_file]


def load_torch(path: Path | str, fmt: str, name: str, *, weights_file: str = WEIGHTS_FILE
               ) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """Read what `save_torch` wrote: ``(params, fitted, state)``.

    Refuses (ValueError) a params.json of another format or class before it reads the
    weights; the state dict's tensors are on the CPU, as saved."""
    path = Path(path)
    doc = json.loads((path / PARAMS_FILE).read_text())
    if doc.get("format") != fmt:
        raise ValueError(f"{path / PARAMS_FILE}: unknown format {doc.get('format')!r}")
    if doc.get("class") != name:
        raise ValueError(f"{path} holds a {doc.get('class')}, not a {name}")
    state = load_file(str(path / weights_file))
    return doc["params"], doc.get("fitted", {}), state


def load_state(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path | str,
               name: str, *, weights_file: str = WEIGHTS_FILE) -> None:
    """``module.load_state_dict(state, strict=True)``; a missing, unexpected or misshapen
    tensor raises ValueError naming <path>/<weights_file> and `name`."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        msg = str(err).splitlines()[0]
        raise ValueError(f"{Path(path) / weights_file} does not fit {name}: {msg}") from None
