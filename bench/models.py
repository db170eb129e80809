"""Model speed on 2 cores: the figures the model-zoo issue asks for.

    python bench/models.py [--lstm-epochs 5]

1. LightGBM, full walk-forward on configs/default.yaml (features, 18 yearly folds, batched
   predictions): seconds.
2. The live path: `latest_features` for the newest bar of 20 symbols from a 260-bar tail,
   and one batched predict call of the fitted LightGBM model: milliseconds (median of 50).
3. LSTM (2 x 50, dropout 0.2), one fold on 20 symbols x 15 years of daily bars, 60-bar
   windows of the nine default features: seconds for `--lstm-epochs` epochs.
Writes bench/results/models.json and bench/RESULTS_models.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lstm-epochs", type=int, default=5)
    args = ap.parse_args()
    from mltrader.config import load_config
    from mltrader.features.labels import forward_return
    from mltrader.features.latest import latest_features
    from mltrader.features.registry import compute_features
    from mltrader.models.registry import make_model
    from mltrader.models.torch_models import LSTMRegressor
    from mltrader.models.walkforward import sequence_samples, stack
    from mltrader.pipeline import compute_signals, load_bars

    cfg = load_config(ROOT / "configs" / "default.yaml")
    bars = load_bars(cfg)
    out: dict[str, object] = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}

    t = time.perf_counter()
    sig = compute_signals(bars, cfg)
    out["lightgbm_walk_forward_seconds"] = time.perf_counter() - t
    out["lightgbm_folds"] = len(sig.folds)

    model = sig.last_model
    model.set_params(n_jobs=1)  # a 20-row batch: starting a thread pool costs more than it saves
    tail = bars.select(None, bars.index[-260], None)  # enough history for SMA 200 and vol 60
    times = []
    for _ in range(50):
        t = time.perf_counter()
        row = latest_features(tail, cfg.features)  # (20 symbols, 9 features): newest bar only
        model.predict(row)
        times.append(time.perf_counter() - t)
    out["predict_newest_bar_20_symbols_ms"] = float(np.median(times) * 1000)

    x = stack(compute_features(bars, cfg.features))
    y = forward_return(bars, "next_close").to_numpy()
    stop = int(bars.index.searchsorted(bars.index[0].replace(year=bars.index[0].year + 15)))
    xs, ys, _ = sequence_samples(x, y, 0, stop, window=60)
    lstm = LSTMRegressor(epochs=args.lstm_epochs, patience=args.lstm_epochs, seed=42)
    t = time.perf_counter()
    lstm.fit(xs, ys)
    out["lstm_fold_seconds"] = time.perf_counter() - t
    out["lstm_samples"] = int(len(ys))
    out["lstm_epochs_run"] = len(lstm.history_)
    out["loadavg_end"] = os.getloadavg()
    _ = make_model  # the registry builds the same models for runs

    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "models.json").write_text(json.dumps(out, indent=2) + "\n")
    per_epoch = out["lstm_fold_seconds"] / max(out["lstm_epochs_run"], 1)
    rows = [
        ("LightGBM full walk-forward, default config", "< 30 s",
         f"{out['lightgbm_walk_forward_seconds']:.1f} s ({out['lightgbm_folds']} folds)",
         out["lightgbm_walk_forward_seconds"] < 30),
        ("Predict the newest bar for 20 symbols (features + model)", "< 10 ms",
         f"{out['predict_newest_bar_20_symbols_ms']:.1f} ms",
         out["predict_newest_bar_20_symbols_ms"] < 10),
        (f"LSTM 2x50, one fold, 20 symbols x 15 years ({out['lstm_samples']:,} windows of 60)",
         "< 120 s", f"{out['lstm_fold_seconds']:.0f} s for {out['lstm_epochs_run']} epochs "
         f"({per_epoch:.0f} s/epoch)", out["lstm_fold_seconds"] < 120),
    ]
    md = ["# Model speed (bench/models.py)", "",
          f"2 cores, load average {out['loadavg_start'][0]:.2f} at the start, "
          f"{out['loadavg_end'][0]:.2f} at the end; one run, so expect noise.", "",
          "| what | target | this run | |", "| --- | --- | --- | --- |"]
    md += [f"| {a} | {b} | {c} | {'met' if ok else '**not met**'} |" for a, b, c, ok in rows]
    (ROOT / "bench" / "RESULTS_models.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
