"""`find_lookahead`: which features of a builder use bars after the row they describe.

`PortfolioEnv` shows the agent feature rows t-window+1 .. t on bar t; that is causal only if
row t of the features uses nothing after bar t's close. This check perturbs every price
(and volume) strictly after a cut bar, rebuilds the features and reports each feature whose
rows at or before the cut changed: a feature computed from the next bar (a label shifted
into the past, a centred window, a full-sample normalisation) shows up; a causal one cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from mltrader.data.bars import FIELDS, Bars


def _panel(feats: np.ndarray, bars: Bars) -> np.ndarray:
    a = np.asarray(feats, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[:2] != bars.shape:
        raise ValueError(f"the feature builder returned shape {np.shape(feats)}, expected "
                         f"({bars.shape[0]}, {bars.shape[1]}, F)")
    return a


def perturb_after(bars: Bars, cut: int, rng: np.random.Generator, scale: float = 0.05) -> Bars:
    """`bars` with every field of the bars after `cut` scaled by a random positive factor per
    bar and symbol (the same for open, high, low, close and volume, so each bar stays valid)."""
    factor = np.ones(bars.shape)
    factor[cut + 1:] = np.exp(rng.normal(0.0, scale, size=(bars.shape[0] - cut - 1,
                                                           bars.shape[1])))
    arrays = {name: getattr(bars, name) * factor for name in FIELDS
              if getattr(bars, name) is not None}
    return bars.replace(**arrays)


def find_lookahead(feature_fn: Callable[[Bars], np.ndarray], bars: Bars,
                   cuts: Iterable[int] | None = None, *, seed: int = 0, scale: float = 0.05,
                   atol: float = 0.0) -> list[int]:
    """Indices of the features (last axis of `feature_fn(bars)`, shape (T, N, F)) whose value
    at some row <= cut changes when only bars after the cut change; [] for causal builders.

    `cuts`: the bars to cut after (default: a quarter, half and three quarters in); `atol`:
    differences up to this much count as equal (for builders with float-order noise)."""
    t_len = len(bars)
    base = _panel(feature_fn(bars), bars)
    if cuts is None:
        cuts = sorted({t_len // 4, t_len // 2, (3 * t_len) // 4})
    rng = np.random.default_rng(seed)
    leaks = np.zeros(base.shape[2], dtype=bool)
    for cut in cuts:
        if not 0 <= cut < t_len - 1:
            raise ValueError(f"cut {cut} must be in 0..{t_len - 2} (a bar with bars after it)")
        other = _panel(feature_fn(perturb_after(bars, int(cut), rng, scale)), bars)
        a, b = base[:cut + 1], other[:cut + 1]
        same = (np.abs(a - b) <= atol) | (np.isnan(a) & np.isnan(b))
        leaks |= ~same.all(axis=(0, 1))
    return np.flatnonzero(leaks).tolist()
