"""`mltrader seeds`: one config run with several seeds, to show how much of a result is luck.

A learned policy (rl_sharpe, the SB3 agents, a network) starts from random weights and, for
the agents, random episodes: another seed is another policy. A single seed's out-of-sample
Sharpe can sit anywhere in the spread, so a result is reported with each seed's Sharpe, their
mean and standard deviation (ddof 1), and how many seeds beat buy-and-hold. Every seed is a
trial of the search: each run is recorded as an ``rl_seed`` trial, and each seed's deflated
Sharpe is computed at the end over every trial then recorded on the data (or, with no
registry, over the seeds themselves, their Sharpe spread as the trials' variance).

The data are loaded once; each seed is a full `pipeline.run` (same folds, same engine), run
as one unit on the config's executor (`executor`: this process, local workers or Ray), with
the same results on each; the trials are recorded here, in seed order.
"""

from __future__ import annotations

import html
import json
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mltrader.backtest.deflated import deflated_sharpe_ratio
from mltrader.config import RunConfig
from mltrader.data.bars import Bars
from mltrader.errors import ConfigError
from mltrader.models.units import map_units, parallel_active
from mltrader.parallel import session
from mltrader.pipeline import ProgressFactory, load_data, run, run_trials
from mltrader.runs import json_safe
from mltrader.trials import (
    Trial,
    TrialRegistry,
    data_fingerprint,
    deflation_inputs,
    per_bar_sharpe,
)

MIN_SEEDS = 2
COLUMNS = ("seed", "total_return", "cagr", "sharpe", "max_drawdown", "turnover",
           "buy_and_hold_sharpe", "sharpe_difference_p", "beats_buy_and_hold", "dsr")
CSV_NAME, JSON_NAME, HTML_NAME = "seeds.csv", "summary.json", "seeds.html"


@dataclass(frozen=True)
class SeedsOutput:
    """Each seed's out-of-sample figures (`COLUMNS`), their spread, and the run's context."""

    config: RunConfig
    runs: pd.DataFrame
    summary: dict[str, object]
    out_of_sample: dict[str, object]

    def sentences(self) -> list[str]:
        s = self.summary
        n, bh = s["seeds"], s["buy_and_hold_sharpe"]
        out = [
            f"Out-of-sample Sharpe over {n} seeds: mean {s['sharpe_mean']:.2f}, standard "
            f"deviation {s['sharpe_std']:.2f}, from {s['sharpe_min']:.2f} to "
            f"{s['sharpe_max']:.2f}; buy-and-hold {bh:.2f} on the same bars.",
            f"{s['seeds_above_buy_and_hold_sharpe']} of {n} seeds had a higher Sharpe than "
            f"buy-and-hold; {s['seeds_beating_buy_and_hold']} beat it significantly (Sharpe "
            "difference, 5% level).",
            f"Deflated Sharpe counted {s['n_trials']} trial(s) on these data (every seed "
            "included); the best seed's is "
            + ("n/a." if s["dsr_best"] is None else f"{s['dsr_best']:.2f}."),
        ]
        if s["sharpe_std"] > 0 and n > 1:
            out.append("A single seed's Sharpe is one draw from this spread: quote the mean "
                       "and the standard deviation, not the best seed.")
        return out


def check_seeds(n: int, first: int) -> list[int]:
    if isinstance(n, bool) or n < MIN_SEEDS:
        raise ConfigError(f"--n: at least {MIN_SEEDS} seeds to measure a spread (5 or more "
                          f"to report one), e.g. --n 5 (got {n})")
    if first < 0:
        raise ConfigError(f"--first-seed: a seed >= 0, e.g. --first-seed 0 (got {first})")
    return list(range(first, first + n))


def _num(v: object) -> float:
    return float(v) if isinstance(v, int | float) and v is not None else float("nan")


@dataclass(frozen=True)
class _SeedRun:
    """What one seed's run sends back to the driver: its table row, its equity's bar
    returns, the out-of-sample period, and what `pipeline.run_trials` counts it by (whether
    a model was walked forward, its tuning trials)."""

    row: dict[str, object]
    returns: np.ndarray
    out_of_sample: dict[str, object]
    modelled: bool
    tuning_trials: int


def _run_seed(shared: tuple[RunConfig, Bars, ProgressFactory | None], seed: int) -> _SeedRun:
    """One seed's full run, a unit of `map_units` (on a worker or here), run without the
    registry: the row never depends on it (the Sharpe difference test does not count trials)."""
    cfg, bars, fold_progress = shared
    out = run(cfg.model_copy(update={"seed": seed}), progress=fold_progress, bars=bars)
    m = out.metrics
    st, bh = m["strategy"], m["buy_and_hold"]
    sig = m.get("vs_buy_and_hold_significance") or {}
    diff = sig.get("sharpe_difference") or {}
    row = {
        "seed": seed, "total_return": st["total_return"], "cagr": st["cagr"],
        "sharpe": st["sharpe"], "max_drawdown": st["max_drawdown"],
        "turnover": st["turnover"], "buy_and_hold_sharpe": bh["sharpe"],
        "sharpe_difference_p": diff.get("p_value"),
        "beats_buy_and_hold": bool(sig.get("beats_benchmark")),
    }
    return _SeedRun(row, out.strategy.equity.pct_change().dropna().to_numpy(),
                    dict(m["out_of_sample"]),  # type: ignore[call-overload]
                    bool(out.signals.folds), int(out.signals.n_trials))


def _seed_trials(cfg: RunConfig, dataset: str, seed: int, got: _SeedRun) -> list[Trial]:
    """The trials `pipeline.run(..., registry, trial_kind="rl_seed")` records for one seed."""
    return run_trials(dataset, cfg.model_copy(update={"seed": seed}), got.modelled,
                      got.returns, got.tuning_trials, "rl_seed")


def run_seeds(cfg: RunConfig, seeds: list[int], registry: TrialRegistry | None = None,
              progress: ProgressFactory | None = None,
              fold_progress: ProgressFactory | None = None, bars: Bars | None = None
              ) -> SeedsOutput:
    """Run `cfg` once per seed on the same bars; every seed recorded as an rl_seed trial.

    Each seed is a unit of `map_units` on `cfg.executor` (this process, local workers or
    Ray); the results do not depend on which. The registry stays here: a seed is recorded
    once every seed before it has been, so the trials land in seed order as they finish.
    `fold_progress` (each seed's folds) shows only when the seeds run in this process."""
    if bars is None:
        bars, _ = load_data(cfg)
    seeds = list(seeds)
    dataset = data_fingerprint(bars) if registry is not None else ""
    got: dict[int, _SeedRun] = {}
    recorded = 0
    ctx = progress(len(seeds)) if progress else nullcontext(lambda _msg: None)
    with session(cfg.executor), ctx as step:
        def finished(i: int, res: _SeedRun) -> None:
            nonlocal recorded
            got[i] = res
            while registry is not None and recorded in got:
                registry.record_many(_seed_trials(cfg, dataset, seeds[recorded],
                                                  got[recorded]))
                recorded += 1
            step(f"seed {seeds[i]}: Sharpe {_num(res.row['sharpe']):.2f}")

        shared = (cfg, bars, None if parallel_active() else fold_progress)
        results: list[_SeedRun] = map_units(_run_seed, shared, seeds, on_result=finished)
    rows = [res.row for res in results]
    returns = [res.returns for res in results]
    oos = dict(results[-1].out_of_sample)
    per_bar = [per_bar_sharpe(r) for r in returns]
    if registry is not None:
        n, var = deflation_inputs(registry.stats(dataset),
                                  min(len(r) for r in returns))
    else:
        finite = [s for s in per_bar if s is not None and math.isfinite(s)]
        n = len(seeds)
        var = float(np.var(finite, ddof=1)) if len(finite) > 1 else 1.0 / len(returns[0])
        var = max(var, 1.0 / len(returns[0]))
    for row, r in zip(rows, returns, strict=True):
        try:
            row["dsr"] = deflated_sharpe_ratio(r, n, sr_variance=var)["dsr"]
        except ValueError:
            row["dsr"] = None
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    sh = frame["sharpe"].to_numpy(float)
    best = int(np.nanargmax(sh)) if np.isfinite(sh).any() else 0
    summary: dict[str, object] = {
        "seeds": len(seeds), "seed_list": seeds,
        "sharpe_mean": float(np.nanmean(sh)),
        "sharpe_std": float(np.nanstd(sh, ddof=1)) if len(sh) > 1 else 0.0,
        "sharpe_min": float(np.nanmin(sh)), "sharpe_max": float(np.nanmax(sh)),
        "total_return_mean": float(frame["total_return"].astype(float).mean()),
        "total_return_std": float(frame["total_return"].astype(float).std(ddof=1)),
        "buy_and_hold_sharpe": float(frame["buy_and_hold_sharpe"].iloc[0]),
        "seeds_above_buy_and_hold_sharpe": int(
            (frame["sharpe"] > frame["buy_and_hold_sharpe"]).sum()),
        "seeds_beating_buy_and_hold": int(frame["beats_buy_and_hold"].sum()),
        "best_seed": int(frame["seed"].iloc[best]),
        "dsr_best": frame["dsr"].iloc[best],
        "n_trials": int(n), "trial_sharpe_variance": float(var),
        "model": cfg.model.name, "config": cfg.name,
    }
    return SeedsOutput(cfg, frame, summary, oos)


# ---------------------------------------------------------------------- files
def _fmt(v: object, kind: str = "ratio") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    x = float(v)  # type: ignore[arg-type]
    return {"pct": f"{100 * x:+.1f}%", "p": f"{x:.3f}", "times": f"{x:.1f}x"}.get(
        kind, f"{x:.2f}")


# the printed table (CAGR stays in seeds.csv): fits an 80-column terminal
_SHOWN = (("seed", "seed", "int"), ("return", "total_return", "pct"),
          ("Sharpe", "sharpe", "ratio"), ("max DD", "max_drawdown", "pct"),
          ("turns/yr", "turnover", "times"), ("B&H", "buy_and_hold_sharpe", "ratio"),
          ("p", "sharpe_difference_p", "p"), ("beats", "beats_buy_and_hold", "bool"),
          ("DSR", "dsr", "ratio"))
TABLE_HEADS = tuple(head for head, _, _ in _SHOWN)


def table_rows(out: SeedsOutput) -> list[tuple[str, ...]]:
    """One row per seed: `TABLE_HEADS`, formatted."""
    return [tuple(str(rec[col]) if kind == "int" else _fmt(rec[col], kind)
                  for _, col, kind in _SHOWN)
            for rec in out.runs.to_dict(orient="records")]


def _chart(out: SeedsOutput) -> str:
    import plotly.graph_objects as go

    f = out.runs
    fig = go.Figure(go.Bar(x=[str(s) for s in f["seed"]], y=f["sharpe"].astype(float),
                           marker={"color": "#4c78a8"}, name="seed",
                           hovertemplate="seed %{x}: Sharpe %{y:.2f}<extra></extra>"))
    s = out.summary
    fig.add_hline(y=float(s["sharpe_mean"]), line={"color": "#4c78a8", "dash": "dash"},  # type: ignore[arg-type]
                  annotation_text=f"mean {s['sharpe_mean']:.2f}")
    fig.add_hline(y=float(s["buy_and_hold_sharpe"]), line={"color": "#d62728", "width": 3},  # type: ignore[arg-type]
                  annotation_text=f"buy-and-hold {s['buy_and_hold_sharpe']:.2f}",
                  annotation_position="bottom right")
    fig.update_layout(template="plotly_white", height=380, xaxis_title="seed",
                      yaxis_title="out-of-sample Sharpe", margin={"l": 60, "r": 30, "t": 30,
                                                                  "b": 50})
    return fig.to_html(full_html=False, include_plotlyjs=True,
                       config={"displaylogo": False, "responsive": True})


def seeds_html(out: SeedsOutput) -> str:
    from mltrader.placebo_report import _CSS

    cfg = out.config
    title = f"mltrader seeds: {cfg.name} ({cfg.model.name}, {cfg.strategy.name})"
    oos = out.out_of_sample
    head = "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEADS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table_rows(out))
    items = "".join(f"<li>{html.escape(s)}</li>" for s in out.sentences())
    return "\n".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=\"sub\">Out of sample {oos.get('start')} .. {oos.get('end')}; "
        f"{out.summary['seeds']} seeds, each a full walk-forward run.</p>",
        f"<ul class=\"summary\">{items}</ul>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        "<h2>Each seed's out-of-sample Sharpe</h2>",
        _chart(out),
        "</main>\n</body>\n</html>\n",
    ])


def write_seeds(out: SeedsOutput, folder: Path) -> dict[str, Path]:
    """Write seeds.csv (one row per seed), summary.json and seeds.html (opens offline)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"runs": folder / CSV_NAME, "summary": folder / JSON_NAME,
             "report": folder / HTML_NAME}
    out.runs.to_csv(paths["runs"], index=False, float_format="%.6g")
    doc = {**out.summary, "out_of_sample": out.out_of_sample}
    paths["summary"].write_text(json.dumps(json_safe(doc), indent=2) + "\n")
    paths["report"].write_text(seeds_html(out), encoding="utf-8")
    return paths
