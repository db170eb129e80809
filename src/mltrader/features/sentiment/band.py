"""Fitting a lexicon scorer's neutral band: the symmetric band that maximises macro-F1 on the
labelled rows it is given (the train split: the validation split never chooses it)."""

from __future__ import annotations

import numpy as np

from mltrader.features.sentiment.labels import LABELS, apply_band

MAX_CANDIDATES = 200


def candidate_bands(scores: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct |scores| (each gives a different split of the
    rows), thinned to at most MAX_CANDIDATES quantiles; always > 0."""
    mags = np.unique(np.abs(np.asarray(scores, dtype=float)))
    edges = np.concatenate([[0.0], mags, [1.0 + 1e-9]])
    mids = (edges[:-1] + edges[1:]) / 2
    mids = np.unique(mids[mids > 0])
    if len(mids) > MAX_CANDIDATES:
        mids = np.unique(np.quantile(mids, np.linspace(0, 1, MAX_CANDIDATES)))
    return mids


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the three LABELS (an absent class scores 0), as sklearn's
    ``f1_score(average="macro", zero_division=0)`` but fast enough for a band search."""
    f1s = []
    for lab in LABELS:
        t, p = y_true == lab, y_pred == lab
        tp = float(np.sum(t & p))
        denom = float(np.sum(t) + np.sum(p))
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))


def best_band(scores: np.ndarray, labels: np.ndarray) -> float:
    """The band with the highest macro-F1 of `apply_band(scores, band)` against ``labels``;
    ties go to the narrowest band. Rounded to 4 decimals for a readable record."""
    labels = np.asarray(labels, dtype=object)
    best, best_f1 = 0.05, -1.0
    for band in candidate_bands(scores):
        f1 = macro_f1(labels, apply_band(scores, band))
        if f1 > best_f1 + 1e-12:
            best, best_f1 = float(band), f1
    return max(round(best, 4), 1e-4)
