"""Measuring the scorers on the VALIDATION split of the bundled labelled set (bands and models
are fit on train only), next to the majority-class baseline that any scorer must beat."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from mltrader.errors import ConfigError
from mltrader.features.sentiment.labelled import load_labelled_news
from mltrader.features.sentiment.labels import LABELS
from mltrader.features.sentiment.registry import SCORERS, check_names, get_scorer

BASELINE = "majority"


@dataclass(frozen=True)
class ScorerResult:
    """One scorer's measurement: metrics on ``split`` (n items), the band it used and where the
    band came from, and the wall seconds (including any first-use fitting)."""

    name: str
    split: str
    n: int
    accuracy: float
    macro_f1: float
    confusion: list[list[int]]  # rows true, columns predicted, in LABELS order
    band: float | None
    band_source: str
    seconds: float
    labels: tuple[str, ...] = LABELS

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d


def validation_items(limit: int | None = None) -> pd.DataFrame:
    """The validation split, or a fixed random sample of ``limit`` rows of it (quick checks)."""
    frame = load_labelled_news("validation")
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"limit {limit}: give a positive number of items")
        if limit < len(frame):
            frame = frame.sample(n=limit, random_state=0).reset_index(drop=True)
    return frame


def measure(name: str, y_true: np.ndarray, y_pred: np.ndarray, band: float | None,
            band_source: str, seconds: float, split: str = "validation") -> ScorerResult:
    """Accuracy, macro-F1 and the confusion matrix (scikit-learn) as a ScorerResult."""
    labels = list(LABELS)
    return ScorerResult(
        name=name, split=split, n=len(y_true),
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                zero_division=0)),
        confusion=confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
        band=band, band_source=band_source, seconds=round(seconds, 3))


def majority_result(items: pd.DataFrame) -> ScorerResult:
    """Always the most frequent TRAIN label: what "better than nothing" is."""
    start = time.perf_counter()
    top = str(load_labelled_news("train")["label_name"].value_counts().idxmax())
    y_pred = np.full(len(items), top, dtype=object)
    return measure(BASELINE, items["label_name"].to_numpy(), y_pred, None,
                   f"always {top}", time.perf_counter() - start)


def evaluate(names: Sequence[str] | None = None, limit: int | None = None
             ) -> list[ScorerResult]:
    """Each scorer (default: all of SCORERS) on the validation split, then the majority
    baseline; ``limit`` evaluates a fixed sample of that many items instead of all."""
    chosen = list(names) if names else list(SCORERS)
    check_names(chosen)
    items = validation_items(limit)
    texts = items["text"].tolist()
    y_true = items["label_name"].to_numpy()
    results = []
    for name in chosen:
        start = time.perf_counter()
        scorer = get_scorer(name)
        band = scorer.band  # fit on train on first use: part of the cost
        y_pred = scorer.classify(texts)
        results.append(measure(name, y_true, y_pred, band, scorer.band_source,
                               time.perf_counter() - start))
    results.append(majority_result(items))
    return results
