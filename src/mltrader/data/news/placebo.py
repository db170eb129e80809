"""Placebo news: real finance headlines (the bundled labelled tweets) at random times about
random symbols of the universe. It carries no information about the bars by construction,
so a model that trades better with features of it shows noise or a leak: the negative
control of a with / without sentiment comparison (configs/sentiment.yaml)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from mltrader.data.news.base import NewsError
from mltrader.data.news.frame import news_frame

HEADLINES_FILE = "news/twitter_financial_news_sentiment.csv.gz"


@lru_cache(maxsize=1)
def _headlines() -> tuple[str, ...]:
    path = resources.files("mltrader.data.bundled").joinpath(HEADLINES_FILE)
    with path.open("rb") as fh:
        texts = pd.read_csv(fh, compression="gzip", usecols=["text"], dtype={"text": str},
                            keep_default_na=False)["text"]
    return tuple(t.strip() for t in texts if t.strip())


class PlaceboNews:
    """``per_day`` items a calendar day on average (any hour, weekends too), each a random
    bundled headline about one random symbol; the same seed, symbols and span give the same
    items (their times are drawn per day, so a longer span keeps the shorter one's items)."""

    name = "placebo"

    def __init__(self, seed: int = 0, per_day: float = 4.0) -> None:
        if not per_day > 0:
            raise NewsError(f"placebo news: per_day must be > 0, got {per_day!r}")
        self.seed, self.per_day = int(seed), float(per_day)

    def fetch(self, symbols: Sequence[str], start: pd.Timestamp,
              end: pd.Timestamp) -> pd.DataFrame:
        syms = sorted({str(s).upper() for s in symbols})
        if not syms:
            raise NewsError("placebo news: no symbols")
        days = pd.date_range(pd.Timestamp(start).tz_convert("UTC").normalize(),
                             pd.Timestamp(end).tz_convert("UTC").normalize(), freq="D")
        heads = _headlines()
        rows = []
        for day in days:  # one generator per day: the items of a day never depend on span
            key = f"{self.seed}|{','.join(syms)}|{day.date()}".encode()
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8],
                                                       "little"))
            n = rng.poisson(self.per_day)
            secs = np.sort(rng.integers(0, 86_400, n))
            for s, sym, h in zip(secs, rng.integers(0, len(syms), n),
                                 rng.integers(0, len(heads), n), strict=True):
                t = day + pd.Timedelta(seconds=int(s))
                if start <= t <= end:
                    rows.append({"time": t, "symbols": (syms[sym],), "headline": heads[h],
                                 "summary": "", "source": "placebo", "provider": "placebo",
                                 "id": f"placebo-{t.value}-{syms[sym]}-{h}"})
        return news_frame(rows)
