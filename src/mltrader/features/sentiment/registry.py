"""The scorers by name: `get_scorer("vader")`; one shared instance per name and process, so a
band or a trained model is fit once."""

from __future__ import annotations

from functools import cache

from mltrader.errors import ConfigError
from mltrader.features.sentiment.base import Scorer
from mltrader.features.sentiment.lexicon import LMScorer, TextBlobScorer, VaderScorer
from mltrader.features.sentiment.tfidf import TfidfLRScorer

_CLASSES: dict[str, type[Scorer]] = {
    c.name: c for c in (VaderScorer, TextBlobScorer, LMScorer, TfidfLRScorer)}
SCORERS: tuple[str, ...] = tuple(_CLASSES)


def check_names(names: list[str] | tuple[str, ...]) -> None:
    """Every name known, else one ConfigError line listing the valid names."""
    for name in names:
        if name not in _CLASSES:
            raise ConfigError(f"unknown sentiment scorer {name!r}; choose from "
                              f"{', '.join(SCORERS)}")


@cache
def get_scorer(name: str) -> Scorer:
    """The scorer called ``name`` (one of SCORERS); a missing optional package is a one-line
    error naming `pip install 'mltrader[sentiment]'`."""
    check_names([name])
    return _CLASSES[name]()
