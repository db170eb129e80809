"""A small supervised scorer: TF-IDF word 1-2 grams + logistic regression, trained on the TRAIN
split of the bundled labelled set on first use (about a second) and kept for the process."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mltrader.features.sentiment.base import Scorer
from mltrader.features.sentiment.labels import LABELS

URL = re.compile(r"https?://\S+")
# C chosen by 5-fold cross-validation on the train split only (macro-F1 0.680 / 0.716 / 0.731
# / 0.733 at C = 1 / 3 / 10 / 30). newton-cg: the same optimum as lbfgs, about 1 s instead of
# 20 s on this data (few, exact Newton steps).
PARAMS: dict[str, Any] = {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 2, "C": 10.0,
                          "solver": "newton-cg", "max_iter": 200}


def clean(text: str) -> str:
    """Lower case, links replaced by one token (a t.co link carries no sentiment)."""
    return URL.sub(" httplink ", str(text).lower())


def build_pipeline(params: dict[str, Any] = PARAMS) -> Pipeline:
    """The unfitted vectoriser + classifier (deterministic: no sampling)."""
    vec = TfidfVectorizer(preprocessor=clean, ngram_range=params["ngram_range"],
                          sublinear_tf=params["sublinear_tf"], min_df=params["min_df"])
    clf = LogisticRegression(C=params["C"], solver=params["solver"],
                             max_iter=params["max_iter"])
    return Pipeline([("tfidf", vec), ("lr", clf)])


@lru_cache(maxsize=1)
def trained_pipeline() -> Pipeline:
    """The pipeline fit on the train split of the bundled set (once per process)."""
    from mltrader.features.sentiment.labelled import load_labelled_news

    train = load_labelled_news("train")
    return build_pipeline().fit(train["text"].tolist(), train["label_name"].to_numpy())


class TfidfLRScorer(Scorer):
    """score = P(bullish) - P(bearish); classify = the most probable class (no band needed)."""

    name: ClassVar[str] = "tfidf_lr"
    band_source: ClassVar[str] = "argmax"

    def __init__(self, pipeline: Pipeline | None = None) -> None:
        super().__init__()
        self._pipeline = pipeline

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = trained_pipeline()
        return self._pipeline

    @property
    def band(self) -> float | None:
        return None

    def _proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, columns in LABELS order."""
        pipe = self.pipeline
        proba = pipe.predict_proba([str(t) for t in texts])
        order = [list(pipe.classes_).index(lab) for lab in LABELS]
        return proba[:, order]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0)
        p = self._proba(texts)
        return np.clip(p[:, 2] - p[:, 0], -1.0, 1.0)

    def classify(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0, dtype=object)
        return np.asarray(LABELS, dtype=object)[np.argmax(self._proba(texts), axis=1)]
