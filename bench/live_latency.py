"""Bar arrival -> orders submitted: the runner's latency per bar (the live-trading issue).

    python bench/live_latency.py [--bars 250] [--journal]

Default config (LightGBM, 9 features, threshold rule) on the bundled 20 stocks: the model in
force is trained on the history first (the walk-forward schedule retrains it at the first
bar of each new period; that bar is counted and also named), then the last `--bars` bars
are replayed through the runner and the paper broker. Two figures per bar: bar arrival ->
the last order handed to the broker (the target's definition: features and prediction for
the newest bar, the strategy row, sizing, order planning, with --journal the intents
committed before sending), and the whole `Runner.on_bar` call (adding the protective orders
and the journal's closing transaction). Target: p99 < 50 ms.
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
from mltrader.live.brokers.paper import PaperBroker
from mltrader.live.journal import Journal
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
    lat, orders, retrain, to_submit = [], 0, [], []
    submitted: list[float] = []
    submit = broker.submit

    def timed_submit(request):  # the moment each order is handed to the broker
        submitted.append(time.perf_counter())
        return submit(request)

    broker.submit = timed_submit  # type: ignore[method-assign]
    feed = ReplayFeed(bars, start=bars.index[start])
    for t, group in itertools.groupby(feed.bars(), key=lambda e: e.time):
        events = {e.symbol: e for e in group}
        broker.on_bar(t, events)
        fit = getattr(runner.signal, "last_fit", None)
        submitted.clear()
        t1 = time.perf_counter()
        orders += len(runner.on_bar(t, events))
        took = time.perf_counter() - t1
        if getattr(runner.signal, "last_fit", None) != fit:
            retrain.append((t, took))  # a scheduled retrain: counted, and named below
        lat.append(took)
        if submitted:
            to_submit.append(max(submitted) - t1)
    ms = np.array(lat) * 1e3
    sub = np.array(to_submit) * 1e3
    print(f"history {len(history)} bars x {len(bars.symbols)} symbols; model trained in "
          f"{train:.1f} s; {len(ms)} bars replayed, {orders} orders; journal: {a.journal}")
    print(f"bar arrival -> last order submitted ({len(sub)} bars with orders): median "
          f"{np.median(sub):.1f} ms, p95 {np.percentile(sub, 95):.1f} ms, p99 "
          f"{np.percentile(sub, 99):.1f} ms, max {sub.max():.1f} ms (target p99 < 50 ms)")
    print(f"whole on_bar incl. the journal writes after sending: median {np.median(ms):.1f} "
          f"ms, p95 {np.percentile(ms, 95):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, max "
          f"{ms.max():.1f} ms")
    for t, took in retrain:
        print(f"retrain bar {t.date()} (walk-forward schedule): {took * 1e3:.0f} ms, the max "
              "above (counted: one bar in a year)")


if __name__ == "__main__":
    main()
