"""Sentiment of finance text: scorers (VADER, TextBlob, Loughran-McDonald, TF-IDF + logistic
regression) behind one contract, and their measurement on a bundled labelled set of tweets."""

from mltrader.features.sentiment.base import Scorer
from mltrader.features.sentiment.evaluate import ScorerResult, evaluate
from mltrader.features.sentiment.labelled import load_labelled_news
from mltrader.features.sentiment.labels import LABELS, apply_band
from mltrader.features.sentiment.registry import SCORERS, get_scorer

__all__ = ["LABELS", "SCORERS", "Scorer", "ScorerResult", "apply_band", "evaluate",
           "get_scorer", "load_labelled_news"]
