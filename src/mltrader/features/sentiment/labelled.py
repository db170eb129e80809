"""The bundled labelled set of finance tweets (bearish / neutral / bullish, train / validation)
that every scorer is measured on; see data/bundled/README.md for its provenance and licence."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

from mltrader.errors import ConfigError

LABELLED_FILE = "news/twitter_financial_news_sentiment.csv.gz"
SPLITS = ("train", "validation")


@lru_cache(maxsize=1)
def _all() -> pd.DataFrame:
    path = resources.files("mltrader.data.bundled").joinpath(LABELLED_FILE)
    with path.open("rb") as fh:
        frame = pd.read_csv(fh, compression="gzip", usecols=["text", "label_name", "split"],
                            dtype={"text": str, "label_name": str, "split": str},
                            keep_default_na=False)
    return frame


def load_labelled_news(split: str | None = None) -> pd.DataFrame:
    """Rows (text, label_name, split) of the bundled set; ``split`` is "train", "validation"
    or None for both. A fresh copy each call, so callers may modify it."""
    frame = _all()
    if split is not None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        frame = frame[frame["split"] == split]
    return frame.reset_index(drop=True).copy()
