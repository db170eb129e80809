"""`evaluate` measures on the validation split with scikit-learn's metrics, next to the
majority baseline; the trained scorer really beats that baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from mltrader.errors import ConfigError
from mltrader.features.sentiment import LABELS, evaluate, get_scorer
from mltrader.features.sentiment.evaluate import validation_items


def test_metrics_match_sklearn_recomputed_by_hand():
    results = evaluate(["vader", "lm"], limit=300)
    assert [r.name for r in results] == ["vader", "lm", "majority"]
    items = validation_items(300)
    assert len(items) == 300 and set(items["split"]) == {"validation"}
    y = items["label_name"].to_numpy()
    for r in results[:2]:
        pred = get_scorer(r.name).classify(items["text"].tolist())
        assert r.n == 300 and r.split == "validation"
        assert r.accuracy == pytest.approx(accuracy_score(y, pred))
        assert r.macro_f1 == pytest.approx(f1_score(y, pred, labels=list(LABELS),
                                                    average="macro"))
        cm = np.array(r.confusion)
        assert cm.tolist() == confusion_matrix(y, pred, labels=list(LABELS)).tolist()
        assert cm.sum() == 300 and r.accuracy == pytest.approx(np.trace(cm) / 300)
        assert list(cm.sum(axis=1)) == [int((y == lab).sum()) for lab in LABELS]
        assert r.band == get_scorer(r.name).band and r.seconds >= 0
    json.dumps([r.to_dict() for r in results])  # serialisable as is


def test_majority_baseline_is_the_train_mode():
    base = evaluate(["vader"], limit=200)[-1]
    assert base.name == "majority" and base.band_source == "always neutral"
    cm = np.array(base.confusion)
    assert cm[:, 1].sum() == 200 and cm[:, [0, 2]].sum() == 0


def test_tfidf_lr_beats_the_majority_baseline_on_the_whole_validation_split():
    tfidf, base = evaluate(["tfidf_lr"])
    assert tfidf.n == base.n == 2388
    assert tfidf.macro_f1 > base.macro_f1 + 0.2
    assert tfidf.accuracy > base.accuracy
    assert tfidf.band is None and tfidf.band_source == "argmax"


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown sentiment scorer 'nope'"):
        evaluate(["nope"])
    with pytest.raises(ConfigError, match="positive"):
        evaluate(["vader"], limit=0)
