"""How mltrader scales when work runs at the same time: one subcommand per measurement.

    python bench/scale.py speedup [--workload compare|grid|both] [--rounds N]
                                  [--modes single,single-1-thread,workers,ray,ray-cluster]
                                  [--json FILE]
    python bench/scale.py overhead [--units 200] [--json FILE]
    python bench/scale.py project [-c configs/universe_500.yaml] [--cores-per-node 2]
                                  [--gbit 10] [--json FILE]

speedup: the issue's workloads run as a user runs them, in one process (`--workers 1`), on
2 local workers (`--workers 2`), on a local Ray with 2 CPUs that the command starts and stops
(`--executor ray`; its start is inside the time) and on a running Ray of 2 CPUs that it
connects to (mode ray-cluster: a head started once by the benchmark on 127.0.0.1, as a
cluster is run; `--executor ray --set executor.address=...`), each in a fresh process:
compare = `mltrader compare -c configs/compare.yaml` (8 models x 18 yearly folds); grid = a
30-cell `mltrader sensitivity` over ridge's alpha (6) x the threshold (5), which retrains
every cell. Reports the wall times, the speed-ups (target >= 1.7x for the parallel modes),
the ceiling (the single process's wall time over the 2-worker run's CPU-seconds / cores:
what perfect spreading of that work would give) and whether every mode wrote byte-identical
leaderboard.csv / sensitivity.csv. With --rounds N every mode runs N times, interleaved, and
the medians are compared: this machine's speed drifts by up to a quarter between minutes.
overhead: what one unit costs on each executor beyond its own work: opening the executor,
then 200 empty units (per-unit overhead = wall x concurrency / units), then one map whose
shared data is a 128 MB array (what shipping a universe-sized feature block costs).
project: the 500-symbol backtest (configs/universe_500.yaml) measured unit by unit on one
thread (each fold's fit-and-predict time, the driver's own time, the bytes each map ships),
then its projected wall time, and a 30-cell retraining grid's, on 1, 4, 16 and 64 nodes
(nodes of --cores-per-node CPUs, --gbit between them; each map's data sent from the driver
to every node in turn, the pessimistic case); --validate also runs it on local workers here.
speedup's single-1-thread mode is the single process on one thread (MLTRADER_THREADS=1):
the default single process already runs LightGBM on both cores.

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
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIDE_BY_SIDE_TARGET = 2.5
SPEEDUP_TARGET = 1.7
MODES = {"single": ["--workers", "1"], "single-1-thread": ["--workers", "1"],
         "workers": ["--workers", "2"],
         "ray": ["--executor", "ray", "--set", "executor.num_cpus=2"],
         "ray-cluster": ["--executor", "ray", "--set", "executor.address={ray_address}"]}
RAY_PORT = 6391  # the ray-cluster mode's head (GCS) on 127.0.0.1
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
MODE_ENV = {"single-1-thread": {"MLTRADER_THREADS": "1"}}
WORKLOADS = {
    "compare": (["compare", "-c", "configs/compare.yaml"], "leaderboard.csv"),
    "grid": (["sensitivity", "-c", "configs/default.yaml", "--set", "model.name=ridge",
              "--grid", "model.params.alpha=0.01,0.1,1,10,100,1000",
              "--grid", "threshold=0,0.0005,0.001,0.002,0.004"], "sensitivity.csv"),
}


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


def _timed(cmd: list[str], tmp: Path, tag: str, env: dict[str, str] | None = None
           ) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and the processes it waited for: its local
    workers; a Ray cluster's workers are not its children and are not counted)."""
    import resource

    log = tmp / f"{tag}.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise SystemExit(f"{tag} failed (exit {rc}):\n{log.read_text()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


@contextlib.contextmanager
def _ray_head(tmp: Path, cpus: int = 2) -> Iterator[str]:
    """A Ray head with ``cpus`` CPUs on 127.0.0.1 for the block (`ray start --head --block`,
    dashboard and usage stats off), as a cluster that commands connect to; its address."""
    address = f"127.0.0.1:{RAY_PORT}"
    ray_bin = Path(sys.executable).with_name("ray")
    log = open(tmp / "ray-head.log", "w")  # noqa: SIM115 - closed below
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--num-cpus={cpus}",
         "--node-ip-address=127.0.0.1", f"--port={RAY_PORT}", "--include-dashboard=false",
         "--disable-usage-stats"], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, **RAY_ENV})
    try:
        deadline = time.monotonic() + 120
        while subprocess.call([str(ray_bin), "status", f"--address={address}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, **RAY_ENV}) != 0:
            if head.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Ray head did not start:\n"
                                 f"{(tmp / 'ray-head.log').read_text()[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
        log.close()


def speedup(args: argparse.Namespace) -> int:
    names = list(WORKLOADS) if args.workload == "both" else [args.workload]
    info: dict[str, Any] = {"cores": _cores(), "load_start": _loadavg(), "workloads": {}}
    print(f"cores {info['cores']}, load average {info['load_start']}")
    ok = True
    modes = args.modes.split(",")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mltrader-speedup-")))
        ray_address = stack.enter_context(_ray_head(tmp)) if "ray-cluster" in modes else ""
        for name in names:
            argv, table = WORKLOADS[name]
            runs: dict[str, list[tuple[float, float]]] = {}
            outputs: dict[str, bytes | None] = {}
            for k in range(args.rounds):
                for mode in modes:
                    out = tmp / f"{name}-{mode}-{k}"
                    cmd = [sys.executable, "-m", "mltrader", *argv, "-o", str(out),
                           *(a.format(ray_address=ray_address) for a in MODES[mode])]
                    wall, cpu = _timed(cmd, tmp, f"{name}-{mode}-{k}",
                                       {**MODE_ENV.get(mode, {}), **RAY_ENV})
                    runs.setdefault(mode, []).append((round(wall, 1), round(cpu, 1)))
                    found = sorted(out.rglob(table))
                    outputs[f"{mode}-{k}"] = found[0].read_bytes() if found else None
                    print(f"{name} {mode} (round {k + 1}): {wall:.1f} s wall, {cpu:.1f} s CPU"
                          + (" (driver only)" if mode.startswith("ray") else ""), flush=True)
            walls = {m: float(statistics.median(w for w, _ in r)) for m, r in runs.items()}
            cpus = {m: float(statistics.median(c for _, c in r)) for m, r in runs.items()}
            same = None not in outputs.values() and len(set(outputs.values())) == 1
            ratios = {f"{p}_vs_{b}": round(walls[b] / walls[p], 2)
                      for b in ("single", "single-1-thread") if b in walls
                      for p in ("workers", "ray", "ray-cluster") if p in walls}
            # no executor can beat the work spread perfectly over the cores: the 2-worker
            # run's CPU-seconds / cores is a floor on any parallel run's wall time
            ceiling = ({b: round(walls[b] * info["cores"] / cpus["workers"], 2)
                        for b in ("single", "single-1-thread") if b in walls}
                       if "workers" in cpus else {})
            met = bool(ratios) and all(r >= SPEEDUP_TARGET for r in ratios.values())
            ok &= met and same
            info["workloads"][name] = {"command": "mltrader " + " ".join(argv),
                                       "runs_wall_cpu": runs, "median_seconds": walls,
                                       "median_cpu_seconds": cpus, "speedup": ratios,
                                       "ceiling_vs": ceiling, "met": met,
                                       f"same_{table}": same}
            print(f"{name}: speed-ups " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
                  + f" (target >= {SPEEDUP_TARGET}x: {'met' if met else 'MISSED'}); "
                  + "".join(f"ceiling vs {b} {v:.2f}x (its CPU work spread perfectly over "
                            f"{info['cores']} cores); " for b, v in ceiling.items())
                  + f"identical {table} in every mode: {same}", flush=True)
    info["load_end"] = _loadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    return 0 if ok else 1


def _noop(_shared: Any, unit: int) -> int:
    return unit


def _touch(shared: Any, unit: int) -> float:
    return float(shared[unit])


def overhead(args: argparse.Namespace) -> int:
    import numpy as np

    from mltrader.config import ExecutorConfig
    from mltrader.parallel import session

    big = np.ones(16 * 1024 * 1024)  # 128 MB of float64
    info: dict[str, Any] = {"cores": _cores(), "units": args.units, "shared_mb": 128}
    for mode, ex, conc in (("single", ExecutorConfig(), 1),
                           ("workers", ExecutorConfig(workers=2), 2),
                           ("ray", ExecutorConfig(kind="ray", num_cpus=2), 2)):
        t0 = time.perf_counter()
        with session(ex) as mapper:
            mapper(_noop, None, [0, 1])  # start the workers
            opened = time.perf_counter() - t0
            t1 = time.perf_counter()
            mapper(_noop, None, list(range(args.units)))
            per_unit = (time.perf_counter() - t1) * conc / args.units
            t2 = time.perf_counter()
            mapper(_touch, big, [0, 1])
            ship = time.perf_counter() - t2
        info[mode] = {"open_s": round(opened, 3), "per_unit_ms": round(per_unit * 1e3, 3),
                      "ship_128mb_s": round(ship, 3)}
        print(f"{mode}: open {opened:.2f} s, per unit {per_unit * 1e3:.2f} ms, one map "
              f"shipping 128 MB {ship:.2f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    return 0


def _makespan(durations: list[float], slots: int) -> float:
    """Longest-first onto the least loaded slot (what a task queue does, near enough)."""
    loads = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        i = loads.index(min(loads))
        loads[i] += d
    return max(loads)


def project(args: argparse.Namespace) -> int:
    import pickle

    os.environ["MLTRADER_THREADS"] = "1"  # a Ray task holds one CPU: measure units on one
    from mltrader.config import load_config
    from mltrader.models.units import using
    from mltrader.pipeline import run

    units: list[dict[str, Any]] = []

    def timing_map(fn: Any, shared: Any, items: list[Any], on_result: Any = None) -> list[Any]:
        size = len(pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL))
        out = []
        for i, u in enumerate(items):
            t = time.perf_counter()
            out.append(fn(shared, u))
            units.append({"fn": fn.__name__, "seconds": time.perf_counter() - t,
                          "shared_mb": size / 1e6})
            if on_result is not None:
                on_result(i, out[-1])
        return out

    cfg = load_config(ROOT / args.config)
    t0 = time.perf_counter()
    with using(timing_map):
        run(cfg)
    total = time.perf_counter() - t0
    work = [u["seconds"] for u in units]
    driver = total - sum(work)
    ship_mb = max((u["shared_mb"] for u in units), default=0.0)
    ov = json.loads(args.overhead_json.read_text()) if args.overhead_json else None
    per_task = (ov["ray"]["per_unit_ms"] / 1e3) if ov else 0.005
    bw = args.gbit * 1e9 / 8
    rows = []
    for nodes in (1, 4, 16, 64):
        slots = nodes * args.cores_per_node
        ship = ship_mb * 1e6 * nodes / bw if nodes > 1 else 0.0  # once to each node
        one = (driver + _makespan(work, slots) + per_task * len(work) / min(slots, len(work))
               + ship)
        grid = 30 * [total]  # each retraining cell: one whole run on one CPU
        cells = (_makespan(grid, slots) + per_task * 30 / min(slots, 30) + ship)
        rows.append({"nodes": nodes, "cpus": slots, "backtest_s": round(one, 1),
                     "grid30_s": round(cells, 1), "ship_s": round(ship, 2)})
    checked = None
    if args.validate:  # the 1-node projection against a real run on this machine's workers
        from mltrader.config import ExecutorConfig
        from mltrader.parallel import session

        os.environ.pop("MLTRADER_THREADS")
        t0 = time.perf_counter()
        with session(ExecutorConfig(workers=args.cores_per_node)):
            run(cfg)
        checked = round(time.perf_counter() - t0, 1)
        print(f"measured on {args.cores_per_node} local workers: {checked:.1f} s "
              f"(projected for 1 node: {rows[0]['backtest_s']:.1f} s)")
    info = {"config": args.config, "units": len(work), "measured_1_node_s": checked,
            "unit_seconds": [round(w, 2) for w in work],
            "driver_seconds": round(driver, 1), "total_seconds": round(total, 1),
            "shared_mb_per_map": round(ship_mb, 1), "per_task_overhead_s": per_task,
            "cores_per_node": args.cores_per_node, "gbit": args.gbit, "projection": rows}
    print(f"{args.config}: {total:.1f} s on one thread: {len(work)} units "
          f"({', '.join(f'{w:.1f}' for w in work)} s), driver {driver:.1f} s; each map ships "
          f"{ship_mb:.0f} MB")
    for r in rows:
        print(f"{r['nodes']:>3} node(s), {r['cpus']:>3} CPUs: backtest {r['backtest_s']:.0f} s, "
              f"30-cell retraining grid {r['grid30_s']:.0f} s (shipping {r['ship_s']:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    return 0


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
    p = sub.add_parser("speedup", help="compare and a 30-cell grid: 1 process, 2 workers, Ray")
    p.add_argument("--workload", choices=["compare", "grid", "both"], default="both")
    p.add_argument("--rounds", type=int, default=1, help="repeat every mode this many times, "
                   "interleaved; the medians are compared (this machine's speed drifts)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--json", help="write the numbers to this JSON file")
    p.set_defaults(func=speedup)
    p = sub.add_parser("overhead", help="per-unit cost and data shipping of each executor")
    p.add_argument("--units", type=int, default=200)
    p.add_argument("--json", help="write the numbers to this JSON file")
    p.set_defaults(func=overhead)
    p = sub.add_parser("project", help="universe_500 measured per unit; 1-64 node projection")
    p.add_argument("-c", "--config", default="configs/universe_500.yaml")
    p.add_argument("--cores-per-node", type=int, default=2)
    p.add_argument("--gbit", type=float, default=10.0, help="network between nodes, Gbit/s")
    p.add_argument("--overhead-json", type=Path, help="per-task overhead from `overhead`")
    p.add_argument("--validate", action="store_true",
                   help="also run it on this machine's cores as local workers, to check the "
                   "1-node projection")
    p.add_argument("--json", help="write the numbers to this JSON file")
    p.set_defaults(func=project)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
