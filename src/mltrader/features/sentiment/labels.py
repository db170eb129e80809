"""The three sentiment labels and the neutral-band rule that turns a score into one."""

from __future__ import annotations

import numpy as np

LABELS: tuple[str, str, str] = ("bearish", "neutral", "bullish")


def apply_band(scores: np.ndarray, band: float) -> np.ndarray:
    """Labels from scores: bullish at ``score >= band``, bearish at ``score <= -band``, else
    neutral (VADER's own rule); ``band`` must be > 0 so a zero score is neutral."""
    s = np.asarray(scores, dtype=float)
    out = np.full(s.shape, "neutral", dtype=object)
    out[s >= band] = "bullish"
    out[s <= -band] = "bearish"
    return out
