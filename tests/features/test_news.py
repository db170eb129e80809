"""News sentiment features: causal alignment to bars and the per-bar measures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.features import news as nws
from mltrader.features.registry import compute_features

DAYS = pd.DatetimeIndex(["2024-11-26", "2024-11-27", "2024-11-29", "2024-12-02", "2024-12-03"],
                        tz="UTC")  # Thanksgiving (28th) closed; the 29th closes at 13:00 ET
BARS = Bars(index=DAYS, symbols=("AAPL", "MSFT"), close=np.full((5, 2), 100.0))
NAMES = ["news_score", "news_count", "news_surprise_2", "news_decay_2"]


def _scored(rows):
    t, s, v = zip(*rows, strict=True) if rows else ([], [], [])
    return pd.DataFrame({"time": pd.DatetimeIndex(list(t), tz="UTC"), "symbol": list(s),
                         "score": np.array(v, dtype="float64")})


@pytest.fixture(autouse=True)
def _no_news_left_behind():
    yield
    nws.use_news(None)


def _features(rows, bars=BARS):
    nws.use_news(_scored(rows), "XNYS")
    return compute_features(bars, NAMES)


def test_an_item_counts_for_the_first_bar_that_closes_after_it():
    f = _features([
        ("2024-11-26 20:59:59", "AAPL", 0.5),   # before the 16:00 ET close: that bar
        ("2024-11-26 21:00:00", "AAPL", -0.5),  # at the close: the next bar
        ("2024-11-28 15:00:00", "AAPL", 1.0),   # Thanksgiving: the next session (29th)
        ("2024-11-29 18:00:01", "MSFT", 0.2),   # one second after the 13:00 ET early close
        ("2024-11-30 12:00:00", "MSFT", 0.4),   # Saturday: Monday
    ])
    count = f["news_count"]
    assert count.loc["2024-11-26", "AAPL"] == 1 and count.loc["2024-11-27", "AAPL"] == 1
    assert count.loc["2024-11-29", "AAPL"] == 1 and count.loc["2024-11-29", "MSFT"] == 0
    assert count.loc["2024-12-02", "MSFT"] == 2
    assert f["news_score"].loc["2024-12-02", "MSFT"] == pytest.approx(0.3)
    assert f["news_score"].loc["2024-11-27", "AAPL"] == -0.5
    assert count.to_numpy().sum() == 5  # nothing lost


def test_items_after_the_last_bar_or_before_the_data_are_left_out():
    f = _features([("2024-12-03 21:00:00", "AAPL", 1.0), ("2024-11-01 12:00", "AAPL", 1.0),
                   ("2024-11-25 22:00", "AAPL", 0.5)])  # after the bar before the first
    assert f["news_count"].to_numpy().sum() == 1
    assert f["news_count"].loc["2024-11-26", "AAPL"] == 1


def test_surprise_and_decay_by_hand():
    f = _features([("2024-11-26 15:00", "AAPL", 0.6), ("2024-11-27 15:00", "AAPL", 0.2),
                   ("2024-11-27 16:00", "AAPL", 0.4), ("2024-12-02 15:00", "AAPL", -0.3)])
    s = f["news_surprise_2"]["AAPL"].to_numpy()
    # bar 0: 0.6 against no past (neutral 0); bar 1: mean 0.3 - the previous 2 bars' items'
    # mean (0.6); bar 2: no items -> 0; bar 3: -0.3 - mean of bars 1..2's items (0.2, 0.4)
    assert s == pytest.approx([0.6, 0.3 - 0.6, 0.0, -0.3 - 0.3, 0.0])
    w = 0.5 ** 0.5
    d = f["news_decay_2"]["AAPL"].to_numpy()
    num = [0.6, 0.6 * w + 0.6, (0.6 * w + 0.6) * w, ((0.6 * w + 0.6) * w) * w - 0.3]
    den = [1, w + 2, (w + 2) * w, (w + 2) * w * w + 1]
    assert d[:4] == pytest.approx([a / b for a, b in zip(num, den, strict=True)])
    assert f["news_decay_2"]["MSFT"].to_numpy() == pytest.approx(np.zeros(5))


def test_the_news_features_share_one_alignment_until_the_news_changes(monkeypatch):
    calls = []
    real = nws.assign_bars
    monkeypatch.setattr(nws, "assign_bars", lambda *a: calls.append(1) or real(*a))
    rows = [("2024-11-26 15:00", "AAPL", 0.6)]
    first = _features(rows)  # registers the news; four features, one alignment
    assert len(calls) == 1
    nws.add_news(_scored([("2024-11-27 15:00", "AAPL", -0.2)]))  # a streamed item
    again = compute_features(BARS, NAMES)
    assert len(calls) == 2 and again["news_count"].to_numpy().sum() == 2
    assert first["news_count"].to_numpy().sum() == 1  # the earlier frames are untouched


def test_a_news_feature_without_news_is_a_one_line_error():
    nws.use_news(None)
    with pytest.raises(ConfigError, match="`news:` section") as e:
        compute_features(BARS, ["news_score"])
    assert "\n" not in str(e.value)


LONG = Bars(index=pd.bdate_range("2024-01-02", periods=60, tz="UTC"), symbols=("A", "B", "C"),
            close=np.full((60, 3), 10.0))
CLOSES = nws.bar_close_times(LONG.index, "XNYS", LONG.symbols)
SPAN = (int(CLOSES[0].value - 86_400e9), int(CLOSES[-1].value + 86_400e9))
item = st.tuples(st.integers(*SPAN), st.sampled_from("ABC"), st.floats(-1, 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(item, max_size=40), st.integers(0, 58), st.lists(item, min_size=1, max_size=5),
       st.data())
def test_news_after_a_close_changes_nothing_at_or_before_that_bar(base, t, extra, data):
    """The perturbation test: change or add any item published at or after bar t's close
    and every news feature at or before t is unchanged."""
    cut = CLOSES[t].value

    def frame(rows):
        return _scored([(pd.Timestamp(ns), s, v) for ns, s, v in rows])

    nws.use_news(frame(base), "XNYS")
    before = compute_features(LONG, NAMES)
    later = [(max(ns, cut), s, v) for ns, s, v in extra]  # added: at or after the close
    changed = [(ns, s, data.draw(st.floats(-1, 1)) if ns >= cut else v) for ns, s, v in base]
    nws.use_news(frame(changed + later), "XNYS")
    after = compute_features(LONG, NAMES)
    for name in NAMES:
        np.testing.assert_array_equal(before[name].to_numpy()[: t + 1],
                                      after[name].to_numpy()[: t + 1], err_msg=name)
