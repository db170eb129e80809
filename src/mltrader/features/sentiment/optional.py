"""Importing a scorer's optional package, with a one-line fix when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from mltrader.errors import MltraderError


def need(module: str, package: str, scorer: str) -> ModuleType:
    """``module`` imported, or a one-line error naming the package and the extra to
    install: `pip install 'mltrader[sentiment]'`."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MltraderError(
            f"scorer {scorer!r} needs the {package} package, which is not installed: "
            "pip install 'mltrader[sentiment]'") from None
