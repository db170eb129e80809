"""How mltrader scales when work runs at the same time: one subcommand per measurement.

    python bench/scale.py side-by-side [-c configs/default.yaml] [--set KEY=VALUE ...]
                                       [--env KEY=VALUE ...] [--json FILE]

side-by-side: `mltrader backtest -c CONFIG` once alone, then two copies started at once
(separate processes, each writing to its own temporary `-o` folder). Reports the wall time
of each, the ratio slowest-of-the-pair / alone (target <= 2.5; fair sharing of the cores
is about 2 on a 2-core machine) and whether the three runs wrote the same metrics.json.
`--set` is passed to every backtest (e.g. `--set model.params.n_jobs=2` reproduces the old
fixed LightGBM thread count); `--env` sets environment variables for them (e.g.
`--env MLTRADER_THREADS=1`). Exits 1 when the target is missed or the metrics differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIDE_BY_SIDE_TARGET = 2.5


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _backtest_cmd(config: str, out_dir: Path, sets: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "mltrader", "backtest", "-c", config, "-o", str(out_dir)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _env(pairs: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


def _metrics(out_dir: Path) -> dict[str, Any] | None:
    found = sorted(out_dir.rglob("metrics.json"))
    return json.loads(found[0].read_text()) if found else None


def _run_together(n: int, config: str, sets: list[str], env: dict[str, str],
                  tmp: Path, tag: str) -> list[dict[str, Any]]:
    """Start `n` backtests at once; wait for all; wall time of each from the common start."""
    procs = []
    start = time.perf_counter()
    for i in range(n):
        out_dir = tmp / f"{tag}-{i}"
        log = open(tmp / f"{tag}-{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(_backtest_cmd(config, out_dir, sets), cwd=ROOT, env=env,
                                       stdout=log, stderr=subprocess.STDOUT), out_dir, log))
    results = []
    pending = list(range(n))
    ends: dict[int, float] = {}
    while pending:
        for i in list(pending):
            if procs[i][0].poll() is not None:
                ends[i] = time.perf_counter() - start
                pending.remove(i)
        time.sleep(0.05)
    for i, (proc, out_dir, log) in enumerate(procs):
        log.close()
        if proc.returncode != 0:
            tail = (tmp / f"{tag}-{i}.log").read_text()[-2000:]
            raise SystemExit(f"{tag} run {i} failed (exit {proc.returncode}):\n{tail}")
        results.append({"seconds": round(ends[i], 2), "metrics": _metrics(out_dir)})
    return results


def side_by_side(args: argparse.Namespace) -> int:
    env = _env(args.env)
    info: dict[str, Any] = {
        "command": " ".join(["mltrader", "backtest", "-c", args.config]
                            + [f"--set {s}" for s in args.set]),
        "env": args.env, "cores": _cores(), "load_start": _loadavg(),
    }
    print(f"cores {info['cores']}, load average {info['load_start']}; "
          f"running: {info['command']}" + (f" with {' '.join(args.env)}" if args.env else ""))
    with tempfile.TemporaryDirectory(prefix="mltrader-scale-") as tmp_name:
        tmp = Path(tmp_name)
        alone = _run_together(1, args.config, args.set, env, tmp, "alone")[0]
        print(f"alone: {alone['seconds']:.1f} s")
        pair = _run_together(2, args.config, args.set, env, tmp, "pair")
        print("two side by side: " + ", ".join(f"{r['seconds']:.1f} s" for r in pair))
    worst = max(r["seconds"] for r in pair)
    ratio = worst / alone["seconds"]
    same = all(r["metrics"] == alone["metrics"] for r in pair) and alone["metrics"] is not None
    info.update(alone_s=alone["seconds"], pair_s=[r["seconds"] for r in pair],
                ratio=round(ratio, 2), target=SIDE_BY_SIDE_TARGET,
                met=ratio <= SIDE_BY_SIDE_TARGET, same_metrics=same, load_end=_loadavg())
    print(f"ratio (slowest of the pair / alone): {ratio:.2f}x, target <= {SIDE_BY_SIDE_TARGET}x: "
          f"{'met' if info['met'] else 'MISSED'}; same metrics.json in all three runs: {same}; "
          f"load average at the end {info['load_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    return 0 if info["met"] and same else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("side-by-side", help="one backtest alone, then two at once")
    p.add_argument("-c", "--config", default="configs/default.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to every `mltrader backtest` as --set KEY=VALUE")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the backtests, e.g. MLTRADER_THREADS=1")
    p.add_argument("--json", help="write the numbers to this JSON file")
    p.set_defaults(func=side_by_side)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
