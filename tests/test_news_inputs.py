"""The configured news, end to end: a file in, scored, aligned, used by a model's features;
`mltrader news import` checks and converts an archive."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrader.config import config_from_dict
from mltrader.data.files import save_file
from mltrader.errors import ConfigError
from mltrader.features.news import bar_close_times
from mltrader.news_inputs import forget_news, prepare_news
from mltrader.pipeline import compute_signals, load_data
from mltrader.testing import synthetic_bars
from tests.test_cli import assert_one_line_error, invoke

HEADLINES = ["Shares surge after record profit and strong upgrade",
             "Stock plunges as company misses estimates and cuts guidance",
             "Company schedules annual meeting"]


@pytest.fixture(autouse=True)
def _forget():
    forget_news()
    yield
    forget_news()


def _setup(tmp_path, n_items=300, seed=3):
    bars_path = save_file(synthetic_bars(600, 3, seed=4, start="2000-01-03"),
                          tmp_path / "bars.csv")
    rng = np.random.default_rng(seed)
    t0, t1 = pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2002-05-01", tz="UTC")
    times = pd.to_datetime(rng.integers(t0.value, t1.value, n_items), utc=True)
    news = pd.DataFrame({"timestamp": times.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                         "symbols": rng.choice(["S00", "S01", "S02", "S00 S02"], n_items),
                         "headline": rng.choice(HEADLINES, n_items)})
    news.to_csv(tmp_path / "news.csv", index=False)
    cfg = config_from_dict({
        "model": {"name": "ridge"}, "features": ["ret_1", "news_score", "news_count",
                                                  "news_surprise_5", "news_decay_3"],
        "walk_forward": {"first_test_year": 2001, "min_train_rows": 100},
        "data": {"source": "file", "path": str(bars_path)},
        "news": {"source": "file", "path": str(tmp_path / "news.csv"), "scorer": "vader"}})
    return cfg, news


def test_a_news_file_becomes_model_features(tmp_path):
    cfg, news = _setup(tmp_path)
    bars, _ = load_data(cfg)
    sig = compute_signals(bars, cfg)
    assert np.isfinite(sig.predictions.to_numpy()[sig.start:]).any()
    rows = prepare_news(cfg, bars)  # already registered: not loaded again
    per_symbol = news["symbols"].str.split().str.len().sum()
    assert rows == per_symbol  # every (item, symbol) of the universe scored
    from mltrader.features.registry import compute_features

    f = compute_features(bars, ["news_count", "news_score"])
    closes = bar_close_times(bars.index, "XNYS", bars.symbols)
    t = pd.to_datetime(news["timestamp"], utc=True)
    step = closes[1] - closes[0]
    inside = ((t >= closes[0] - step) & (t < closes[-1])).to_numpy()
    assert f["news_count"].to_numpy().sum() == news["symbols"].str.split().str.len()[inside].sum()
    # the surge headline scores positive, the plunge negative (VADER)
    assert f["news_score"].to_numpy().max() > 0 > f["news_score"].to_numpy().min()


def test_news_features_without_a_news_section_is_a_config_error(tmp_path):
    cfg, _ = _setup(tmp_path)
    cfg = cfg.model_copy(update={"news": None})
    bars, _ = load_data(cfg)
    with pytest.raises(ConfigError, match="no `news:` section"):
        compute_signals(bars, cfg)


def test_news_import_checks_and_converts(tmp_path, monkeypatch):
    _setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    r = invoke("news", "import", "news.csv")
    assert r.exit_code == 0, r.output
    assert "300 news items about 3 symbols" in r.output.replace("\n", " ")
    back = pd.read_parquet(tmp_path / "data" / "news.parquet")
    assert len(back) == 300
    bad = tmp_path / "bad.csv"
    bad.write_text("when,symbols,headline\n2024-01-02,AAPL,hi\n")
    assert_one_line_error(invoke("news", "import", bad), "timestamp")
    naive = tmp_path / "naive.csv"
    naive.write_text("timestamp,symbols,headline\n2024-01-02 10:00,AAPL,hi\n")
    assert_one_line_error(invoke("news", "import", naive), "time zone")
    assert invoke("news", "import", naive, "--tz", "America/New_York").exit_code == 0
    assert_one_line_error(invoke("news", "import", naive, "--tz", "America/New_York",
                                 "--symbols", "MSFT"), "unknown symbol")


class _FakeNewsStream:
    """alpaca-py's NewsDataStream as AlpacaNewsStream uses it: subscribe_news, run, stop."""

    def __init__(self):
        import threading

        self.handler, self.done = None, threading.Event()

    def subscribe_news(self, handler, *symbols):
        self.handler, self.symbols = handler, symbols

    def run(self):
        self.done.wait(10)

    def stop(self):
        self.done.set()


def test_the_live_runner_gets_news_from_the_stream_as_it_arrives(tmp_path):
    """`mltrader live` with news.source alpaca: an article from the stream is scored and,
    by its publication time, in the next bar's features."""
    import asyncio

    from mltrader.features.registry import compute_features
    from mltrader.news_inputs import live_news

    cfg, _ = _setup(tmp_path)
    cfg = cfg.model_copy(update={"news": cfg.news.model_copy(update={"source": "alpaca"})})
    bars, _ = load_data(cfg)
    from mltrader.features import news as nws

    nws.use_news(pd.DataFrame({"time": pd.DatetimeIndex([], tz="UTC"), "symbol": [],
                               "score": []}), "XNYS")
    fake = _FakeNewsStream()
    stop = live_news(cfg, list(bars.symbols), stream=fake)
    try:
        last = bars.index[-2]  # an article published during the last bar's session
        published = (bar_close_times(bars.index, "XNYS", bars.symbols)[-1]
                     - pd.Timedelta(hours=1))
        asyncio.run(fake.handler({
            "T": "n", "id": 1, "headline": "S01 shares surge after record profit",
            "summary": "", "author": "x", "created_at": published.isoformat(),
            "updated_at": published.isoformat(), "content": "", "url": "",
            "symbols": ["S01", "ZZZZ"], "source": "benzinga"}))
        f = compute_features(bars, ["news_count", "news_score"])
        assert f["news_count"].loc[bars.index[-1], "S01"] == 1
        assert f["news_count"].loc[last].sum() == 0  # not before its publication
        assert f["news_score"].loc[bars.index[-1], "S01"] > 0
        assert f["news_count"].to_numpy().sum() == 1  # ZZZZ: not in the universe
    finally:
        stop()
    assert fake.done.is_set()


def test_compare_with_and_without_news_finds_a_planted_signal_and_no_placebo_one(tmp_path):
    """The with / without comparison can tell: news that knows tomorrow's move (planted,
    published before today's close) lifts the out-of-sample IC far above the model without
    it; placebo news (random headlines, times and symbols) does not."""
    from mltrader.compare import compare
    from mltrader.data.files import load_file

    bars_path = save_file(synthetic_bars(700, 4, seed=21, start="2000-01-03"),
                          tmp_path / "bars.csv")
    bars = load_file(bars_path)
    close = bars.frame("close")
    nxt = close.shift(-2) / close.shift(-1) - 1  # the return a decision at t trades (t+1 fill)
    closes = bar_close_times(bars.index, "XNYS", bars.symbols)
    rows = []
    for i, t in enumerate(bars.index[:-2]):
        for s in bars.symbols:
            up = nxt.loc[t, s] > 0
            rows.append({"timestamp": (closes[i] - pd.Timedelta(hours=1)).isoformat(),
                         "symbols": s, "headline": HEADLINES[0] if up else HEADLINES[1]})
    pd.DataFrame(rows).to_csv(tmp_path / "planted.csv", index=False)
    base = {"model": {"name": "ridge"}, "features": ["ret_1", "ret_5"],
            "walk_forward": {"first_test_year": 2001, "min_train_rows": 100},
            "data": {"source": "file", "path": str(bars_path)},
            "compare": [{"name": "ridge", "label": "without"},
                        {"name": "ridge", "label": "with",
                         "add_features": ["news_score", "news_count"]}]}

    def ic(news):
        forget_news()
        board = compare(config_from_dict({**base, "news": news})).leaderboard
        return board.set_index("model")["ic_mean"]

    planted = ic({"source": "file", "path": str(tmp_path / "planted.csv"), "scorer": "vader"})
    assert planted["with"] > 0.3 and abs(planted["without"]) < 0.05
    placebo = ic({"source": "placebo", "per_day": 8, "scorer": "vader"})
    assert abs(placebo["with"] - placebo["without"]) < 0.05
