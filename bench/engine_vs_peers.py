"""mltrader's engine against backtrader, backtesting.py, vectorbt and a fused numba loop.

    python bench/engine_vs_peers.py [--quick] [--runs N] [--max-peer-seconds S] [--out FILE]
                                    [--md FILE]

Every library runs the canonical strategy of bench/reference.py (SMA 20/100 cross, next-open
fills, 0.95 x cash sizing, 0.1 % commission, -3 % stop / +5 % target) on the same workloads;
the plain-Python reference is the oracle each result is compared with, trade by trade.
Writes bench/results/engine_vs_peers.json and bench/RESULTS.md (see write_results_md);
--quick writes bench/results/engine_vs_peers_quick.json and bench/results/RESULTS_quick.md.

Timings: each library is warmed up once (JIT compiles excluded), then timed `--runs` times;
`seconds` is the median. Slow peers run only where one run is expected to take at most
`--max-peer-seconds` at the rate they showed on workload (a); elsewhere they are recorded as
"not run" with that estimate, never with an extrapolated result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from peers import PeerResult, from_reference  # noqa: E402
from reference import (  # noqa: E402
    COMMISSION,
    FAST,
    INITIAL_CASH,
    SLOW,
    STOP_LOSS,
    TAKE_PROFIT,
    run_reference_books,
    synthetic_ohlc,
)

EQUITY_RTOL = 1e-6
PRICE_RTOL = 1e-9

NOTES = [
    "Close-only data (the 20 stocks and the tiles): open = high = low = close = the close "
    "series, so fills happen at the next bar's close and stops are judged on closes.",
    "Signals: every library is given mltrader's sma_cross_signals computed on the workload's "
    "whole (T, N) panel, except fused_numba (its own rolling sums; near a tie both means are "
    "recomputed exactly rounded, as math.fsum / n). The golden test lets backtrader use its "
    "own SMA (math.fsum / n). Exact ties in real numbers do occur: on AMD 2002-12-05 (bar 3262 "
    "of the bundled set) the 20- and 100-day means are both exactly 7.095 in decimal, and a "
    "strict cross test then depends on rounding. mltrader's first sma (plain numpy window "
    "sums, commit e9e7dd6) crossed there at 3262 in a 1-symbol panel but at 3263 in a "
    "multi-symbol panel (numpy sums a contiguous window pairwise, a strided one "
    "sequentially); the exactly-rounded tie rule gives 3262 in every layout and library.",
    "vectorbt: stops take priority over user signals in from_signals, so adjust_sl_func_nb / "
    "adjust_tp_func_nb switch the stops off on a bar carrying an exit signal (the spec's "
    "'the cross-down exit wins'); size=0.95 percent with fees=0.001 and size_granularity=1 is "
    "the spec's floor(0.95 x cash / (open x 1.001)) because the buffer equals the fee rate.",
    "backtesting.py: buy(size=0.95) sizes at the fill bar's open as int(0.95 x cash // "
    "(open x 1.001)), the spec's size for the same reason; sl/tp are set on the entry bar "
    "from the fill price, so they are live from the bar after entry.",
    "backtrader: Cerebro(cheat_on_open=True); orders placed in next_open() fill at that bar's "
    "open; stop = sell Stop order, target = sell Limit order (OCO), placed on the bar after "
    "entry; the broker tries the stop first.",
]


# ------------------------------------------------------------------------------ workloads
@dataclass
class Workload:
    key: str
    title: str
    index: pd.DatetimeIndex
    open: np.ndarray  # (T, N)
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    cash: float  # per book; every symbol is its own book
    note: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return self.close.shape

    @property
    def bars(self) -> int:
        return int(self.close.size)

    def arrays(self):
        return self.index, self.open, self.high, self.low, self.close


def _close_only(key, title, index, close, note, cash=INITIAL_CASH) -> Workload:
    c = np.ascontiguousarray(close, dtype=np.float64)
    return Workload(key, title, index, c, c, c, c, cash,
                    "Close-only data: open = high = low = close, so entries and exits fill at "
                    "the next bar's close and stops are judged on closes. " + note)


def make_sp500() -> Workload:
    from mltrader.data.datasets import load_bundled

    b = load_bundled("sp500_ohlcv")
    return Workload("a_sp500_ohlcv", "(a) S&P 500 index OHLCV, 1999-2018", b.index,
                    b.open.copy(), b.high.copy(), b.low.copy(), b.close.copy(), INITIAL_CASH,
                    "Real daily OHLC; 1 book.")


def make_chained(n_bars: int) -> Workload:
    """Real daily bars of the OHLCV set chained end to end: each day's open/high/low/close as
    log-ratios to the previous close, minus the mean close-to-close log-return (the drift), so
    every 5,030-bar cycle ends where it began and prices stay in the original band."""
    from mltrader.data.datasets import load_bundled

    b = load_bundled("sp500_ohlcv")
    o, h, lo, c = (a[:, 0] for a in (b.open, b.high, b.low, b.close))
    prev = c[:-1]
    rel = [np.log(a[1:] / prev) for a in (o, h, lo, c)]
    mu = rel[3].mean()
    reps = -(-n_bars // len(prev))
    rel = [np.tile(r - mu, reps)[:n_bars] for r in rel]
    close = 100.0 * np.exp(np.cumsum(rel[3]))
    prev_close = np.concatenate([[100.0], close[:-1]])
    opn, high, low = (prev_close * np.exp(r) for r in rel[:3])
    high = np.maximum(high, np.maximum(opn, close))  # guard the OHLC order against rounding
    low = np.minimum(low, np.minimum(opn, close))
    index = pd.date_range("1900-01-01", periods=n_bars, freq="D", unit="s", tz="UTC")
    col = (lambda a: np.ascontiguousarray(a.reshape(-1, 1)))  # noqa: E731
    return Workload(
        "b_chained", f"(b) {n_bars:,} bars chained from the S&P 500 OHLCV days", index,
        col(opn), col(high), col(low), col(close), INITIAL_CASH,
        "The S&P days repeated in order with the drift removed (prices 38..119, periodic); "
        "1 book. On driftless data the strategy loses ~11 % per 5,030-bar cycle, so the book "
        "shrinks to a few shares and skips the cross-ups it cannot "
        "afford one share for (size 0 = no trade, in every library): of 6,363 cross-ups on "
        "1,000,000 bars, 4,119 become trades. A 1e12 book takes all 6,363, but falls 10 orders "
        "of magnitude, and rounding of its peak then exceeds 1e-6 of what is left.")


def make_stocks(n_symbols: int | None = None, key="c_20stocks", title=None) -> Workload:
    from mltrader.data.datasets import load_bundled

    b = load_bundled("sp500_20stocks")
    close = b.close if n_symbols is None else b.close[:, :n_symbols]
    syms = b.symbols if n_symbols is None else b.symbols[:n_symbols]
    title = title or f"(c) {len(syms)} bundled stocks, independent books"
    return _close_only(key, title, b.index, close, f"Symbols: {' '.join(syms)}.")


def make_tiled(n_symbols: int) -> Workload:
    from mltrader.data.datasets import load_bundled

    b = load_bundled("sp500_20stocks")
    reps = -(-n_symbols // b.close.shape[1])
    scales = np.repeat(0.5 + 0.1 * np.arange(reps), b.close.shape[1])[:n_symbols]
    close = np.tile(b.close, (1, reps))[:, :n_symbols] * scales
    return _close_only("d_tiled", f"(d) {n_symbols} symbols x {len(b.index):,} days tiled from "
                       "the 20 stocks, independent books", b.index, close,
                       "Tile k is the 20 stocks x (0.5 + 0.1 k).")


def make_synthetic(n_bars: int) -> Workload:
    o, h, lo, c = synthetic_ohlc(n_bars)
    col = (lambda a: np.ascontiguousarray(a.reshape(-1, 1)))  # noqa: E731
    index = pd.date_range("2000-01-03", periods=n_bars, freq="D", tz="UTC")
    return Workload("e_synthetic", f"(e) {n_bars:,} synthetic OHLC bars built to hit every rule",
                    index, col(o), col(h), col(lo), col(c), INITIAL_CASH,
                    "Not market data: reference.synthetic_ohlc makes calm closes, gap opens, "
                    "some wide bars, and the bar after every cross-down wide enough to reach "
                    "both the stop and the target, so 'the signal exit wins (at the open)' "
                    "decides prices there; real data rarely tests that rule.")


def workloads(quick: bool) -> list[Workload]:
    if quick:
        return [make_sp500(), make_chained(100_000),
                make_stocks(2, "c_subset", "(c-subset) 2 of the bundled stocks, independent "
                            "books"),
                make_tiled(40), make_synthetic(5_000)]
    return [make_sp500(), make_chained(1_000_000),
            make_stocks(2, "c_subset", "(c-subset) 2 of the bundled stocks, independent books"),
            make_stocks(), make_tiled(500), make_synthetic(20_000)]


# ------------------------------------------------------------------------------ libraries
@dataclass
class Library:
    name: str
    signals: str  # where its SMA cross signals come from
    slow: bool = False  # only run where one run is expected to be short
    prepare: object = None  # (w) -> state, untimed
    run: object = None  # (w, state) -> native result, timed
    convert: object = None  # (w, native) -> PeerResult
    unavailable: str = ""


def _library(name, signals, loader, **kw) -> Library:
    try:
        prepare, run, convert = loader()
    except Exception as e:  # not installed, or an API that has not landed yet
        return Library(name, signals, unavailable=f"not available: {e!r}"[:300], **kw)
    return Library(name, signals, prepare=prepare, run=run, convert=convert, **kw)


def _mltrader():
    from peers import mltrader_peer as m

    ok, why = m.available()
    if not ok:
        raise ImportError(why)
    return (lambda w: m.bars_of(w.index, w.open, w.high, w.low, w.close),
            lambda w, bars: (m.run_bars(bars, w.cash), bars),
            lambda w, out: m.to_peer(*out))


def _fused():
    from fused_numba import REASONS, run_fused

    def convert(w, out):
        tr, final = out
        rows = list(zip(tr["book"].tolist(), tr["entry_bar"].tolist(), tr["exit_bar"].tolist(),
                        tr["entry_price"].tolist(), tr["exit_price"].tolist(),
                        np.rint(tr["qty"]).astype(np.int64).tolist(),
                        [REASONS[k] for k in tr["reason"].tolist()], strict=True))
        return PeerResult(rows, np.asarray(final))

    return (lambda w: None, lambda w, _: run_fused(w.open, w.high, w.low, w.close, w.cash),
            convert)


def _vectorbt():
    from peers import vectorbt_peer as v

    return (lambda w: None,
            lambda w, _: v.portfolio(None, w.open, w.high, w.low, w.close, w.cash),
            lambda w, pf: v.to_peer(pf))


def _backtesting():
    from peers import backtesting_peer as p

    return lambda w: None, lambda w, _: p.run(*w.arrays(), w.cash), lambda w, r: r


def _backtrader():
    from peers import backtrader_peer as p

    from mltrader.strategy.crossover import sma_cross_signals

    return (lambda w: None,
            lambda w, _: p.run(*w.arrays(), w.cash,
                               signals=sma_cross_signals(w.close, FAST, SLOW)),
            lambda w, r: r)


def _reference():
    return (lambda w: None,
            lambda w, _: run_reference_books(w.open, w.high, w.low, w.close,
                                             initial_cash=w.cash),
            lambda w, r: from_reference(r))


def libraries() -> list[Library]:
    ms = "mltrader sma_cross_signals (exact window sums)"
    return [
        _library("reference", ms + "; plain Python loop, the oracle", _reference),
        _library("mltrader", ms, _mltrader),
        _library("fused_numba", "own rolling sums inside the loop, exact recompute near ties",
                 _fused),
        _library("vectorbt", ms + ", shifted one bar", _vectorbt),
        _library("backtesting.py", ms, _backtesting, slow=True),
        _library("backtrader", ms + ", carried in the data feed (the golden test uses "
                 "backtrader's own bt.ind.SMA instead)", _backtrader, slow=True),
    ]


# ------------------------------------------------------------------------------ comparison
def compare(a: PeerResult, ref: PeerResult, initial_cash: float) -> dict:
    """Trade-by-trade agreement of `a` with the oracle `ref`."""
    out = {"n_trades": len(a.trades), "n_trades_reference": len(ref.trades),
           "n_trades_equal": len(a.trades) == len(ref.trades)}
    first = None
    n_same = 0
    for x, y in zip(a.trades, ref.trades, strict=False):
        same = (x[0], x[1], x[2], x[5]) == (y[0], y[1], y[2], y[5])
        same = same and (x[6] == y[6] or "" in (x[6], y[6]))
        same = same and abs(x[3] - y[3]) <= PRICE_RTOL * abs(y[3])
        same = same and abs(x[4] - y[4]) <= PRICE_RTOL * abs(y[4])
        if not same and first is None:
            first = {"library": [_py(v) for v in x], "reference": [_py(v) for v in y]}
        n_same += same
    out["trades_identical"] = bool(out["n_trades_equal"] and n_same == len(ref.trades))
    out["n_trades_identical"] = n_same
    if first is None and not out["n_trades_equal"]:
        k = min(len(a.trades), len(ref.trades))
        first = {"library": [_py(v) for v in a.trades[k:k + 1]],
                 "reference": [_py(v) for v in ref.trades[k:k + 1]]}
    out["first_mismatch"] = first
    fa, fr = np.asarray(a.final_equity, float), np.asarray(ref.final_equity, float)
    if fa.shape == fr.shape:
        diff = np.abs(fa - fr)
        out["max_rel_final_equity_diff"] = float((diff / np.abs(fr)).max())
        out["max_abs_final_equity_diff"] = float(diff.max())
        out["max_abs_diff_over_initial_cash"] = float(diff.max() / initial_cash)
        out["min_final_equity_over_initial_cash"] = float(fr.min() / initial_cash)
    else:
        out["max_rel_final_equity_diff"] = None
    out["agrees"] = bool(out["trades_identical"] and out["max_rel_final_equity_diff"] is not None
                         and out["max_rel_final_equity_diff"] <= EQUITY_RTOL)
    return out


def _py(v):
    return v.item() if hasattr(v, "item") else v


# ------------------------------------------------------------------------------ timing
def time_library(lib: Library, w: Workload, n_runs: int, max_peer_s: float,
                 rates: dict[str, float]) -> tuple[dict, PeerResult | None]:
    rec: dict = {"library": lib.name, "signals": lib.signals}
    if lib.unavailable:
        rec["status"] = lib.unavailable
        return rec, None
    if lib.slow and lib.name in rates:
        est = w.bars / rates[lib.name]
        if est > max_peer_s:
            rec["status"] = (f"not run (would take ~{est:,.0f} s per run at the "
                             f"{rates[lib.name]:,.0f} bars/s it ran on (a))")
            rec["estimated_seconds_per_run"] = est
            return rec, None
    try:
        state = lib.prepare(w)
        t0 = time.perf_counter()
        native = lib.run(w, state)  # warm-up: JIT compiles, caches, imports
        rec["warmup_seconds"] = time.perf_counter() - t0
        times = []
        for _ in range(n_runs):
            t0 = time.perf_counter()
            native = lib.run(w, state)
            times.append(time.perf_counter() - t0)
        res = lib.convert(w, native)
    except Exception as e:
        rec["status"] = f"failed: {e!r}"[:500]
        rec["traceback"] = traceback.format_exc()[-2000:]
        return rec, None
    sec = statistics.median(times)
    rec.update(status="ok", seconds=sec, runs=times, bars_per_second=w.bars / sec,
               trades=len(res.trades), final_equity=float(np.sum(res.final_equity)))
    return rec, res


def _child(code: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=str(BENCH.parent), timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1500:])
    return json.loads(out.stdout.strip().splitlines()[-1])


_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {bench!r})
import mltrader
from mltrader.data.datasets import load_bundled
from peers import mltrader_peer
t1 = time.perf_counter()
bars = load_bundled("sp500_ohlcv")
t2 = time.perf_counter()
res = mltrader_peer.run_bars(bars, {cash!r})
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "first_run_s": t3 - t2,
                   "total_s": t3 - t0, "trades": len(res.trades),
                   "final_equity": float(res.equity.iloc[-1])}}))
"""


def mltrader_startup(n_cold: int) -> dict:
    """cold start: new processes with the numba cache warm (the parent has just used it);
    first compile: one process with an empty NUMBA_CACHE_DIR."""
    code = _CHILD.format(bench=str(BENCH), cash=INITIAL_CASH)
    env = dict(os.environ)
    out: dict = {}
    try:
        _child(code, env)  # prime: recompiles into the cache if the kernel source changed
        cold = [_child(code, env) for _ in range(n_cold)]
        out["cold_start_seconds"] = statistics.median(c["total_s"] for c in cold)
        out["cold_start_runs"] = cold
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as d:
            first = _child(code, {**env, "NUMBA_CACHE_DIR": d})
        out["first_compile_seconds"] = first["first_run_s"]
        out["first_compile_process_seconds"] = first["total_s"]
        out["first_compile_run"] = first
    except Exception as e:
        out["startup_error"] = f"{e!r}"[:1500]
    return out


def _versions() -> dict:
    v = {"python": platform.python_version()}
    for pkg in ("mltrader", "numpy", "pandas", "numba", "backtrader", "backtesting", "vectorbt"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = None
    return v


# ------------------------------------------------------------------------------ main
def run_all(quick: bool, n_runs: int, max_peer_s: float) -> dict:
    libs = libraries()
    started = time.time()
    result = {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_start": os.getloadavg()},
        "versions": _versions(),
        "strategy": (f"long-only SMA {FAST}/{SLOW} cross, next-open fills, size floor(0.95 x cash"
                     f" / (open x 1.001)), commission {COMMISSION:.1%} per side, stop "
                     f"-{STOP_LOSS:.0%} / target +{TAKE_PROFIT:.0%} from the fill price checked "
                     "from the bar after entry (stop first; a gap fills at the open), a "
                     "cross-down exit beats the stops; see bench/reference.py"),
        "timing": (f"median of {n_runs} runs after one warm-up run (JIT excluded); wall clock "
                   "on a shared machine, so noisy"),
        "agreement_rule": (f"same trades (book, entry bar, exit bar, shares, exit reason where "
                           f"the library reports one; prices within {PRICE_RTOL:g} relative) "
                           f"and final equity per book within {EQUITY_RTOL:g} relative of "
                           "bench/reference.py"),
        "notes": NOTES,
        "workloads": {},
    }
    rates: dict[str, float] = {}
    for w in workloads(quick):
        print(f"\n== {w.title}: {w.shape[0]:,} bars x {w.shape[1]} symbols "
              f"= {w.bars:,} bars", flush=True)
        wrec = {"title": w.title, "bars": w.shape[0], "symbols": w.shape[1],
                "total_bars": w.bars, "initial_cash_per_book": w.cash, "note": w.note,
                "libraries": {}}
        ref_res = None
        for lib in libs:
            rec, res = time_library(lib, w, n_runs, max_peer_s, rates)
            if lib.name == "reference":
                ref_res = res
            if res is not None and w.key.startswith("a_"):
                rates[lib.name] = rec["bars_per_second"]
            if res is not None and ref_res is not None:
                rec["agreement"] = compare(res, ref_res, w.cash)
                rec["agrees"] = rec["agreement"]["agrees"]
                if not rec["agrees"]:
                    rec["why"] = _why(lib.name, rec["agreement"])
            wrec["libraries"][lib.name] = rec
            _print_rec(rec)
        ran = [r for r in wrec["libraries"].values() if "agreement" in r and
               r["library"] != "reference"]
        wrec["agreement_summary"] = {
            "libraries_compared": [r["library"] for r in ran],
            "all_agree": all(r["agrees"] for r in ran),
            "n_trades": {r["library"]: r["trades"] for r in wrec["libraries"].values()
                         if "trades" in r},
            "max_rel_final_equity_diff": max(
                (np.inf if r["agreement"]["max_rel_final_equity_diff"] is None
                 else r["agreement"]["max_rel_final_equity_diff"] for r in ran), default=None),
        }
        result["workloads"][w.key] = wrec
    ml = result["workloads"]["a_sp500_ohlcv"]["libraries"].get("mltrader", {})
    if ml.get("status") == "ok":
        print("\n== mltrader start-up (child processes)", flush=True)
        ml.update(mltrader_startup(3))
        for k in ("cold_start_seconds", "first_compile_seconds", "startup_error"):
            if k in ml:
                print(f"  {k}: {ml[k]}")
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["elapsed_seconds"] = time.time() - started
    return result


def _why(name: str, ag: dict) -> str:
    if not ag["n_trades_equal"]:
        return (f"{ag['n_trades']} trades vs {ag['n_trades_reference']} in the reference; "
                f"first difference: {ag['first_mismatch']}")
    if not ag["trades_identical"]:
        return f"{ag['n_trades_identical']} of {ag['n_trades']} trades identical; first " \
               f"difference: {ag['first_mismatch']}"
    why = (f"all {ag['n_trades']} trades identical, but final equity differs by "
           f"{ag['max_rel_final_equity_diff']:.3g} relative ({ag['max_abs_final_equity_diff']:.3g} "
           f"absolute, {ag['max_abs_diff_over_initial_cash']:.1e} of the initial cash)")
    if ag["min_final_equity_over_initial_cash"] < 1e-3:
        why += (f"; the book ends at {ag['min_final_equity_over_initial_cash']:.1e} of its "
                "initial cash, so rounding of order 1e-16 accumulated while it was large is "
                "big relative to what is left: a float-order effect, not a different trade")
    return why


def _print_rec(rec: dict) -> None:
    if rec.get("status") != "ok":
        print(f"  {rec['library']:<15} {rec.get('status')}", flush=True)
        return
    ag = rec.get("agreement", {})
    agree = "" if not ag else ("agrees" if ag["agrees"] else "DISAGREES: " + rec.get("why", ""))
    diff = ag.get("max_rel_final_equity_diff")
    print(f"  {rec['library']:<15} {rec['seconds']:9.4f} s {rec['bars_per_second']:14,.0f} "
          f"bars/s  trades {rec['trades']:>7,}  final equity {rec['final_equity']:,.2f}  "
          f"{f'max rel diff {diff:.1e}  ' if diff is not None else ''}{agree}", flush=True)


# ------------------------------------------------------------------------------ markdown
def _fmt_s(x: float) -> str:
    return f"{x:.4f}" if x < 1 else f"{x:.2f}"


def _targets_md(r: dict) -> list[str]:
    """The engine issue's speed targets, each checked against this run's numbers."""
    ws = r["workloads"]

    def lib(key: str, name: str) -> dict:
        rec = ws.get(key, {}).get("libraries", {}).get(name, {})
        return rec if rec.get("status") == "ok" else {}

    rows = []

    def check(what: str, value: float | None, ok: bool | None, shown: str) -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "**not met**")
        rows.append(f"| {what} | {shown if value is not None else 'not measured'} | {verdict} |")

    for key, label in (("b_chained", "1M-bar series"), ("c_20stocks", "20 stocks"),
                       ("d_tiled", "500 x 8,313 portfolio")):
        ml = lib(key, "mltrader")
        bps = ml.get("bars_per_second")
        check(f"mltrader >= 20 million bars/s, {label}", bps,
              None if bps is None else bps >= 20e6, f"{(bps or 0) / 1e6:.1f} M/s")
    for key, label in (("a_sp500_ohlcv", "(a) 5,031 bars"), ("b_chained", "(b) 1M bars"),
                       ("c_20stocks", "(c) 20 stocks"), ("d_tiled", "(d) 500 x 8,313")):
        ml, fu = lib(key, "mltrader"), lib(key, "fused_numba")
        ratio = ml["seconds"] / fu["seconds"] if ml and fu and fu["seconds"] > 0 else None
        check(f"within 8x of the fused numba bound, {label}", ratio,
              None if ratio is None else ratio <= 8, f"{(ratio or 0):.1f}x")
    ml = lib("a_sp500_ohlcv", "mltrader")
    t = ml.get("seconds")
    check("one short series (5,031 bars, more than the 2,000 asked) < 5 ms end to end", t,
          None if t is None else t < 0.005, f"{(t or 0) * 1000:.2f} ms")
    cold = ml.get("cold_start_seconds")
    check("cold start < 2 s (numba cache warm)", cold, None if cold is None else cold < 2,
          f"{(cold or 0):.2f} s")
    d = lib("d_tiled", "mltrader").get("seconds")
    check("500 x 8,313 portfolio with stops and costs < 0.5 s", d,
          None if d is None else d < 0.5, f"{(d or 0):.3f} s")
    return ["", "## Speed targets of the engine issue, checked on this run", "",
            "| target | this run | |", "| --- | ---: | --- |", *rows]


def write_results_md(json_path: str | Path, md_path: str | Path) -> str:
    """Render the JSON written by this script as a markdown report; returns the text."""
    r = json.loads(Path(json_path).read_text())
    v = r.get("versions", {})
    m = r.get("machine", {})
    lines = [
        "# mltrader engine vs peers",
        "",
        f"Generated {r['generated']} by `python bench/engine_vs_peers.py"
        f"{' --quick' if r['mode'] == 'quick' else ''}` ({r['mode']} run). "
        f"{m.get('cpus')} CPUs, load average {_load(m.get('loadavg_start'))} at the start and "
        f"{_load(m.get('loadavg_end'))} at the end: **timings are noisy**.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        "",
        f"**Strategy:** {r['strategy']}.",
        "",
        f"**Timing:** {r['timing']}.",
        "",
        f"**Agreement:** {r['agreement_rule']}.",
    ]
    for w in r["workloads"].values():
        s = w["agreement_summary"]
        lines += ["", f"## {w['title']}", "",
                  f"{w['bars']:,} bars x {w['symbols']} symbols = {w['total_bars']:,} bars; "
                  f"initial cash {w['initial_cash_per_book']:,.0f} per book. {w['note']}", "",
                  "| library | seconds | bars/s | trades | final equity | agrees with reference |",
                  "| --- | ---: | ---: | ---: | ---: | --- |"]
        for name, rec in w["libraries"].items():
            if rec.get("status") != "ok":
                lines.append(f"| {name} | – | – | – | – | {rec.get('status')} |")
                continue
            if name == "reference":
                agree = "(the oracle)"
            elif rec.get("agrees"):
                d = rec["agreement"]["max_rel_final_equity_diff"]
                agree = f"yes (max rel. equity diff {d:.1e})"
            else:
                agree = f"**no**: {rec.get('why', '')}"
            runs = len(rec.get("runs", []))
            lines.append(f"| {name} | {_fmt_s(rec['seconds'])} ({runs} run{'s' * (runs > 1)}) "
                         f"| {rec['bars_per_second']:,.0f} | {rec['trades']:,} | "
                         f"{rec['final_equity']:,.2f} | {agree} |")
        mx = s["max_rel_final_equity_diff"]
        lines += ["", f"All compared libraries agree: **{'yes' if s['all_agree'] else 'no'}** "
                  f"({', '.join(s['libraries_compared']) or 'none'}; max relative final-equity "
                  f"difference {mx:.1e})." if mx is not None else ""]
        ml = w["libraries"].get("mltrader", {})
        if "cold_start_seconds" in ml or "startup_error" in ml:
            lines += ["", "mltrader start-up on this workload (new Python processes): "]
            if "cold_start_seconds" in ml:
                lines.append(f"- cold start (import mltrader + load data + one run, numba cache "
                             f"warm; median of {len(ml.get('cold_start_runs', []))} processes): "
                             f"{ml['cold_start_seconds']:.2f} s")
            if "first_compile_seconds" in ml:
                lines.append(f"- first compile (empty NUMBA_CACHE_DIR; first run_signals call): "
                             f"{ml['first_compile_seconds']:.2f} s "
                             f"({ml['first_compile_process_seconds']:.2f} s for the process)")
            if "startup_error" in ml:
                lines.append(f"- start-up measurement failed: {ml['startup_error'][:300]}")
    lines += _targets_md(r)
    models_md = Path(md_path).with_name("RESULTS_models.md")
    if models_md.exists():  # the model-zoo figures (bench/models.py) live beside these
        lines += ["", "## Models", "", "From `bench/models.py` (its own run; see "
                  "RESULTS_models.md):", ""]
        lines += [ln for ln in models_md.read_text().splitlines() if ln.startswith("|")]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in r.get("notes", [])]
    sig = {}
    for w in r["workloads"].values():
        for name, rec in w["libraries"].items():
            sig.setdefault(name, rec.get("signals", ""))
    lines += ["", "## Where each library's signals come from", ""]
    lines += [f"- {name}: {s}" for name, s in sig.items()]
    text = "\n".join(lines) + "\n"
    Path(md_path).write_text(text)
    return text


def _load(x) -> str:
    return "?" if not x else " / ".join(f"{v:.2f}" for v in x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced workloads (smoke test)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per library (>= 3)")
    ap.add_argument("--max-peer-seconds", type=float, default=10.0,
                    help="run slow peers only where one run should take at most this")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file (default bench/results/engine_vs_peers.json; with --quick "
                         "bench/results/engine_vs_peers_quick.json, so a smoke run does not "
                         "overwrite the full results)")
    ap.add_argument("--md", type=Path, default=None,
                    help="markdown file (default bench/RESULTS.md; --quick: "
                         "bench/results/RESULTS_quick.md)")
    a = ap.parse_args(argv)
    jp = a.out or BENCH / "results" / ("engine_vs_peers_quick.json" if a.quick
                                       else "engine_vs_peers.json")
    md = a.md or (BENCH / "results" / "RESULTS_quick.md" if a.quick else BENCH / "RESULTS.md")
    res = run_all(a.quick, max(a.runs, 3), a.max_peer_seconds)
    jp.parent.mkdir(parents=True, exist_ok=True)
    jp.write_text(json.dumps(res, indent=2, default=_py))
    write_results_md(jp, md)
    print(f"\nwrote {jp} and {md} ({res['elapsed_seconds']:.0f} s)")
    bad = [(k, n) for k, w in res["workloads"].items() for n, rec in w["libraries"].items()
           if rec.get("agrees") is False]
    if bad:
        print("DISAGREEMENTS:", ", ".join(f"{n} on {k}" for k, n in bad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
