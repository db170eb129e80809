"""The scorer contract: texts -> scores in [-1, 1] (negative = bearish) and -> labels through a
neutral band, so lexicons and trained models can be swapped and measured the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pandas as pd

from mltrader.features.sentiment.band import best_band
from mltrader.features.sentiment.labels import apply_band


class Scorer:
    """Base class of the sentiment scorers: subclasses implement `_score_one` (or `score`) and
    say where their neutral band comes from (`band_source`)."""

    name: ClassVar[str] = ""
    band_source: ClassVar[str] = "fit on train"  # or "authors" (a fixed band), "argmax"

    def __init__(self) -> None:
        self._band: float | None = None

    # ---- scores
    def _score_one(self, text: str) -> float:
        raise NotImplementedError

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """One float in [-1, 1] per text (negative = bearish); deterministic."""
        values = np.fromiter((self._score_one(str(t)) for t in texts), dtype=float,
                             count=len(texts))
        return np.clip(values, -1.0, 1.0)

    # ---- labels
    @property
    def band(self) -> float | None:
        """The neutral band's half-width: fixed by the authors, or fit on the TRAIN split of
        the bundled labelled set on first use (None for a scorer that classifies otherwise)."""
        if self._band is None:
            from mltrader.features.sentiment.labelled import load_labelled_news

            self._band = self.fit_band(load_labelled_news("train"))
        return self._band

    def fit_band(self, frame: pd.DataFrame) -> float:
        """The band from labelled rows (text, label_name[, split]); only rows of the train
        split are used when a ``split`` column is present."""
        if "split" in frame.columns:
            frame = frame[frame["split"] == "train"]
        return best_band(self.score(frame["text"].tolist()), frame["label_name"].to_numpy())

    def classify(self, texts: Sequence[str]) -> np.ndarray:
        """A label in {"bearish", "neutral", "bullish"} per text, through the neutral band."""
        band = self.band
        assert band is not None
        return apply_band(self.score(texts), band)
