"""Out-of-sample prediction quality: IC, hit rate against coin flips and "always up", MSE."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest

from mltrader.models.walkforward import daily_ic


def _mean_pearson_ic(pred: np.ndarray, realised: np.ndarray) -> float | None:
    """Mean over bars of the cross-sectional Pearson correlation (bars with >= 3 pairs)."""
    ok = np.isfinite(pred) & np.isfinite(realised)
    n = ok.sum(axis=1)
    p = np.where(ok, pred, 0.0)
    r = np.where(ok, realised, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pm = p.sum(axis=1) / n
        rm = r.sum(axis=1) / n
        dp = np.where(ok, p - pm[:, None], 0.0)
        dr = np.where(ok, r - rm[:, None], 0.0)
        ic = (dp * dr).sum(axis=1) / np.sqrt((dp ** 2).sum(axis=1) * (dr ** 2).sum(axis=1))
    ic = ic[(n >= 3) & np.isfinite(ic)]
    return float(ic.mean()) if len(ic) else None


def prediction_stats(pred: np.ndarray, realised: np.ndarray, regression: bool = True
                     ) -> dict[str, float | int | None]:
    """Quality of (T, N) predictions against realised returns, over cells where both exist.

    - ``ic_mean``, ``ic_t``: mean per-bar Spearman IC (rank IC) and its t-statistic (IC / its
      standard error over bars); ``pearson_ic_mean``: the mean per-bar Pearson IC (Qlib's
      "IC"; its rank IC is ``ic_mean``);
    - ``hit_rate``: share of cells where the predicted sign matches the realised sign
      (realised exactly 0 is left out), ``hit_p_value``: one-sided binomial test against 50%,
      ``always_up_rate``: the hit rate of always predicting "up" on the same cells;
    - ``mse``, ``mse_zero``, ``mse_ratio``: squared error of the predicted return against the
      zero-return forecast (regressors only; a ratio >= 1 means no better than zero).
    """
    ic = daily_ic(pred, realised)
    ic = ic[np.isfinite(ic)]
    ok = np.isfinite(pred) & np.isfinite(realised) & (realised != 0)
    p, r = pred[ok], realised[ok]
    hits = int(((p > 0) == (r > 0)).sum())
    n = int(ok.sum())
    out: dict[str, float | int | None] = {
        "ic_mean": float(ic.mean()) if len(ic) else None,
        "ic_t": (float(ic.mean() / ic.std(ddof=1) * math.sqrt(len(ic)))
                 if len(ic) > 2 and ic.std(ddof=1) > 0 else None),
        "pearson_ic_mean": _mean_pearson_ic(pred, realised),
        "n_predictions": n,
        "hit_rate": hits / n if n else None,
        "hit_p_value": float(binomtest(hits, n, 0.5, alternative="greater").pvalue) if n else None,
        "always_up_rate": float((r > 0).mean()) if n else None,
        "mse": None, "mse_zero": None, "mse_ratio": None,
    }
    if regression and n:
        full = np.isfinite(pred) & np.isfinite(realised)
        mse = float(np.mean((pred[full] - realised[full]) ** 2))
        mse0 = float(np.mean(realised[full] ** 2))
        out.update(mse=mse, mse_zero=mse0, mse_ratio=mse / mse0 if mse0 > 0 else None)
    return out
