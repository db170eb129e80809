"""Bar arrival -> orders submitted: the runner's latency per bar (the live-trading issue).

    python bench/live_latency.py [--bars 250] [--journal]

Default config (LightGBM, 9 features, threshold rule) on the bundled 20 stocks: the model in
force is trained on the history first (the walk-forward schedule retrains it at each new
period; such a bar is reported on its own), then the last `--bars` bars are replayed through
the runner and the paper broker; each `Runner.on_bar` call is timed (features and prediction for
the newest bar, the strategy row, sizing, order planning, submission, and with --journal the
SQLite journal writes). Target: p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time

import numpy as np

from mltrader.config import load_config
from mltrader.data.feeds import ReplayFeed
from mltrader.live.journal import Journal
from mltrader.live.paper import PaperBroker
from mltrader.live.runner import Runner
from mltrader.pipeline import engine_settings, load_bars, resolve_fill

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=250)
    ap.add_argument("--journal", action="store_true", help="journal to SQLite as well")
    a = ap.parse_args()
    cfg = load_config(os.path.join(ROOT, "configs", "default.yaml"),
                      {"execution.size_at": "decision", "strategy.rebalance": "daily"})
    bars = load_bars(cfg)
    start = len(bars) - a.bars
    history = bars.select(None, None, bars.index[start - 1])
    broker = PaperBroker(engine_settings(cfg, resolve_fill(cfg, bars)), bars.close_only)
    tmp = tempfile.mkdtemp()
    journal = Journal(f"sqlite:///{tmp}/j.db") if a.journal else None
    t0 = time.perf_counter()
    runner = Runner(cfg, broker, history, journal)
    if runner.signal is not None:
        runner.signal(history)  # train the fold in force (a bot does it before the open)
    train = time.perf_counter() - t0
    lat, orders, retrain = [], 0, []
    feed = ReplayFeed(bars, start=bars.index[start])
    for t, group in itertools.groupby(feed.bars(), key=lambda e: e.time):
        events = {e.symbol: e for e in group}
        broker.on_bar(t, events)
        fit = getattr(runner.signal, "last_fit", None)
        t1 = time.perf_counter()
        orders += len(runner.on_bar(t, events))
        took = time.perf_counter() - t1
        if getattr(runner.signal, "last_fit", None) != fit:
            retrain.append((t, took))  # a scheduled retrain, reported on its own
        else:
            lat.append(took)
    ms = np.array(lat) * 1e3
    print(f"history {len(history)} bars x {len(bars.symbols)} symbols; model trained in "
          f"{train:.1f} s; {len(ms)} bars replayed, {orders} orders; journal: {a.journal}")
    print(f"on_bar latency: median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, "
          f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms (target p99 < 50 ms)")
    for t, took in retrain:
        print(f"retrain bar {t.date()} (walk-forward schedule): {took * 1e3:.0f} ms, "
              "not counted above")


if __name__ == "__main__":
    main()
