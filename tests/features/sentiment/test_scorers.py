"""The scorers keep the contract: right sign on obvious finance sentences, deterministic scores
in [-1, 1], labels through the band, bands fit on the train split only, one-line errors."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from mltrader.errors import ConfigError, MltraderError
from mltrader.features.sentiment import (
    LABELS,
    SCORERS,
    Scorer,
    apply_band,
    get_scorer,
    load_labelled_news,
)
from mltrader.features.sentiment.band import best_band, macro_f1
from mltrader.features.sentiment.lexicon import VaderScorer

BULLISH = ("Shares surge after record profit; analysts upgrade the stock to buy on strong "
           "growth")
BEARISH = ("Shares plunge after weak, disappointing results and the worst quarter in years; "
           "analysts downgrade the stock")
NEUTRAL = "The company will hold its annual shareholder meeting on Tuesday in Chicago"


def test_names_are_the_contract():
    assert SCORERS == ("vader", "textblob", "lm", "tfidf_lr")


@pytest.mark.parametrize("name", SCORERS)
def test_obvious_sentences_get_the_right_sign_and_label(name):
    scorer = get_scorer(name)
    assert scorer.name == name
    s = scorer.score([BULLISH, BEARISH, NEUTRAL])
    assert s[0] > 0 and s[1] < 0 and abs(s[2]) < 0.05
    assert list(scorer.classify([BULLISH, BEARISH, NEUTRAL])) == [
        "bullish", "bearish", "neutral"]


@pytest.mark.parametrize("name", SCORERS)
def test_scores_are_deterministic_bounded_and_vectorised(name):
    texts = load_labelled_news("validation")["text"].tolist()[::20]
    scorer = get_scorer(name)
    a, b = scorer.score(texts), scorer.score(texts)
    assert a.shape == (len(texts),) and a.dtype == float
    assert np.array_equal(a, b)
    assert np.all((a >= -1) & (a <= 1))
    assert np.array_equal(scorer.score(texts[:5]), a[:5])  # one text's score ignores the rest
    assert set(scorer.classify(texts)) <= set(LABELS)
    assert scorer.score([]).shape == (0,)


@pytest.mark.parametrize("name", ["vader", "textblob", "lm"])
def test_lexicon_classify_uses_the_band(name):
    scorer = get_scorer(name)
    texts = load_labelled_news("validation")["text"].tolist()[:300]
    assert scorer.band is not None and 0 < scorer.band < 1
    assert list(scorer.classify(texts)) == list(apply_band(scorer.score(texts), scorer.band))


def test_vader_keeps_its_authors_band():
    assert get_scorer("vader").band == 0.05
    assert get_scorer("vader").band_source == "authors"


def test_apply_band_edges():
    labels = apply_band(np.array([-0.5, -0.1, -0.09, 0.0, 0.09, 0.1, 0.5]), 0.1)
    assert list(labels) == ["bearish", "bearish", "neutral", "neutral", "neutral", "bullish",
                            "bullish"]


def test_best_band_finds_the_gap():
    scores = np.array([-0.9, -0.5, 0.0, 0.1, -0.1, 0.5, 0.9])
    labels = np.array(["bearish", "bearish", "neutral", "neutral", "neutral", "bullish",
                       "bullish"])
    band = best_band(scores, labels)
    assert 0.1 < band < 0.5
    assert list(apply_band(scores, band)) == list(labels)


def test_fast_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    t = rng.choice(LABELS, 500)
    p = rng.choice(LABELS[:2], 500)  # one class never predicted
    assert macro_f1(t, p) == pytest.approx(
        f1_score(t, p, labels=list(LABELS), average="macro", zero_division=0))


class _LengthScorer(Scorer):
    """A toy lexicon: longer text = more bullish, so a band can be fit on synthetic rows."""

    name = "length"

    def _score_one(self, text: str) -> float:
        return (len(text) - 10) / 10


def _rows(labels_val: list[str]) -> pd.DataFrame:
    texts = ["x" * n for n in (1, 2, 9, 10, 11, 19, 20)]
    train = pd.DataFrame({"text": texts, "label_name": ["bearish", "bearish", "neutral",
                          "neutral", "neutral", "bullish", "bullish"], "split": "train"})
    val = pd.DataFrame({"text": ["x" * 8, "x" * 12, "x" * 3],
                        "label_name": labels_val, "split": "validation"})
    return pd.concat([train, val], ignore_index=True)


def test_band_ignores_the_validation_split():
    a = _LengthScorer().fit_band(_rows(["bullish", "bearish", "bullish"]))
    b = _LengthScorer().fit_band(_rows(["neutral", "neutral", "neutral"]))
    assert a == b and 0.1 < a < 0.8


def test_real_band_unchanged_when_validation_labels_change():
    scorer = get_scorer("lm")
    frame = load_labelled_news()
    val = frame["split"] == "validation"
    flipped = frame.copy()
    flipped.loc[val, "label_name"] = flipped.loc[val, "label_name"].map(
        {"bearish": "bullish", "bullish": "bearish", "neutral": "bearish"})
    assert scorer.fit_band(flipped) == scorer.band


def test_labelled_set_loads_with_its_splits():
    frame = load_labelled_news()
    assert list(frame.columns) == ["text", "label_name", "split"]
    assert len(frame) == 11931
    assert len(load_labelled_news("train")) == 9543
    assert len(load_labelled_news("validation")) == 2388
    assert set(frame["label_name"]) == set(LABELS)
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        load_labelled_news("test")


def test_unknown_scorer_is_one_line_listing_the_names():
    with pytest.raises(ConfigError) as e:
        get_scorer("finbert")
    msg = str(e.value)
    assert "\n" not in msg and "'finbert'" in msg
    assert all(n in msg for n in SCORERS)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    with pytest.raises(MltraderError) as e:
        VaderScorer()
    assert "pip install 'mltrader[sentiment]'" in str(e.value) and "\n" not in str(e.value)
