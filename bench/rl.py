"""RL speed on 2 cores: the figures the RL issue asks for, in one run.

    python bench/rl.py [--quick] [--torch-threads 1] [--ppo-timesteps 20000]
                       [--config-fold configs/rl_ppo.yaml]

1. Sharpe ascent, one fold: `DirectReinforcement` (configs/rl_sharpe.yaml: features ret_20,
   sma_ratio_50, vol_20, rsi_14 + the last 5 returns, 200 epochs, lr 0.05, weight_decay 0.001,
   training cost = the run's commission + slippage) fitted on 20 symbols x the 15 years before
   2020, inputs and labels built as the pipeline builds them (`compute_features`, `stack`,
   `panel_inputs`, `forward_return` at the resolved fill, `run_folds` with a rolling 15-year
   window, `panel_plan`'s factory). Times `fit` (target < 60 s) and `predict` on 2020 (from
   252 bars before it, as `walk_forward_panel` does).
2. Environment throughput: `PortfolioEnv` (flat=True and flat=False, window 5, the 4 features)
   stepped over the whole data, all 20 symbols at once, with seeded uniform [-1, 1] actions
   (positions scaled by 1/20, as the positions rule scales them; shorts allowed, 1 bps
   commission + 5 bps slippage, fractional shares): symbol-steps/s = steps x 20 / s (target
   >= 100,000). Beside it `PandasPortfolioEnv` below, a plain pandas environment written the
   way a tutorial writes one, on the same data, actions and costs: its symbol-steps/s, the
   ratio, and both final equities (with and without costs) to show it is the same work;
   with costs they differ (5e-3 after 33 years of random trading) only because the engine
   sizes each order after the earlier fills' costs, which `_order_by_order` (the pandas
   rules in that order) confirms.
3. PPO throughput: Stable-Baselines3 PPO("MlpPolicy") on PortfolioEnv(flat=True, window=5,
   episode_length=252) over the 20 symbols x 4 features; timesteps/s and wall time, split
   into rollout collection (policy forward + env steps) and the gradient updates.

`--config-fold PATH` also times one fold (the fold testing 2020) of a panel-model config
through the pipeline's own pieces (`panel_plan`, `panel_inputs`, `panel_market`,
`fit_panel`, `predict_panel`), e.g. configs/rl_ppo.yaml (an SB3 agent trained in the run's
market, `models/rl_agent.py`, which sets its own torch threads) or configs/rl_sharpe.yaml.
The fold is the config's own (expanding window unless the config says otherwise).

Timings are wall clock on a shared 2-core machine; the load average is printed at the start
and the end.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

# Before torch loads its OpenMP runtime: idle threads sleep rather than spin (as the models do).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RL_SHARPE = ROOT / "configs" / "rl_sharpe.yaml"
FEATURES = ["ret_20", "sma_ratio_50", "vol_20", "rsi_14"]


# --------------------------------------------------------------------------- the pandas env


class PandasPortfolioEnv:
    """A straightforward pandas trading environment (gymnasium-like reset / step).

    Prices and features live in DataFrames (bars x symbols); the action is one target weight
    per symbol decided on bar t's close. Step: clip to [-1, 1], scale, cap the gross at
    `max_gross_leverage`; at bar t+1 value the book at the open, turn the weights into
    shares (fractional; a buy's weight also pays its costs, the engine's sizing rule), fill
    at the open +- `slippage_bps`, pay `commission_bps` of the traded value, mark at t+1's
    close, reward = log equity change, observation = the last `window` feature rows and the
    weights (computed with pandas). Close-only data: pass the close as `open_`.
    """

    def __init__(self, open_: pd.DataFrame, close: pd.DataFrame,
                 features: dict[str, pd.DataFrame], *, window: int = 1,
                 initial_cash: float = 100_000.0, commission_bps: float = 0.0,
                 slippage_bps: float = 0.0, allow_short: bool = True,
                 max_gross_leverage: float = 1.0, action_scale: float = 1.0,
                 flat: bool = False) -> None:
        self.open = open_
        self.close = close
        self.symbols = list(close.columns)
        # one wide frame, columns (symbol, feature): a window of rows reshapes to (w, N, F)
        wide = pd.concat(features, axis=1).swaplevel(axis=1)
        self.features = wide.reindex(columns=pd.MultiIndex.from_product(
            [self.symbols, list(features)])).fillna(0.0).astype(np.float32)
        self.window = window
        self.initial_cash = initial_cash
        self.commission = commission_bps * 1e-4
        self.slippage = slippage_bps * 1e-4
        self.allow_short = allow_short
        self.max_gross = max_gross_leverage
        self.scale = action_scale
        self.flat = flat

    def reset(self, start: int | None = None, end: int | None = None) -> tuple[Any, dict]:
        self.t = self.window - 1 if start is None else start
        self.end = len(self.close) - 1 if end is None else end
        self.cash = self.initial_cash
        self.shares = pd.Series(0.0, index=self.symbols)
        self.equity = self.initial_cash
        self.weights = pd.Series(0.0, index=self.symbols)
        return self._obs(), {"equity": self.equity}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        target = pd.Series(np.clip(action, -1.0, 1.0), index=self.symbols) * self.scale
        if not self.allow_short:
            target = target.clip(lower=0.0)
        gross = target.abs().sum()
        if gross > self.max_gross:
            target *= self.max_gross / gross
        self.t += 1
        price = self.open.iloc[self.t]
        value = self.cash + (self.shares * price).sum()  # the book at the fill bar's open
        desired = target * value / price
        buying = (desired > self.shares) & (desired > 0)
        with_costs = target * value / (price * (1.0 + self.slippage + self.commission))
        desired = desired.where(~buying, with_costs.where(with_costs >= self.shares,
                                                          self.shares))
        delta = desired - self.shares
        delta = delta.where(delta.abs() * price >= 1e-9 * abs(value) + 1e-12, 0.0)  # dust
        fill = price * (1.0 + np.sign(delta) * self.slippage)
        traded = delta.abs() * fill
        self.cash -= (delta * fill).sum() + self.commission * traded.sum()
        self.shares = self.shares + delta
        mark = self.close.iloc[self.t]
        prev, self.equity = self.equity, self.cash + (self.shares * mark).sum()
        self.weights = self.shares * mark / self.equity
        terminated = not self.equity > 0
        truncated = not terminated and self.t >= self.end
        reward = math.log(max(self.equity, 1e-300) / prev)
        return (self._obs(), reward, terminated, truncated,
                {"equity": self.equity, "traded_value": float(traded.sum())})

    def _obs(self) -> Any:
        f = self.features.iloc[self.t - self.window + 1:self.t + 1].to_numpy()
        f = f.reshape(self.window, len(self.symbols), -1)
        w = self.weights.to_numpy(np.float32)
        if self.flat:
            return np.concatenate([f.reshape(-1), w])
        return {"features": f, "weights": w}


# --------------------------------------------------------------------------- helpers


def _load_str() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} / {b:.2f} / {c:.2f}"


def _run_env(env: Any, actions: np.ndarray, start: int, end: int) -> tuple[float, int, float]:
    """(seconds, steps, final equity) of one episode start..end on the given action rows."""
    if hasattr(env, "action_space"):  # PortfolioEnv (gymnasium)
        env.reset(options={"start": start, "end": end})
    else:
        env.reset(start, end)
    steps = 0
    t0 = time.perf_counter()
    done = False
    while not done:
        _, _, term, trunc, info = env.step(actions[start + steps])
        steps += 1
        done = term or trunc
    secs = time.perf_counter() - t0
    return secs, steps, float(info["equity"])


def _order_by_order(open_: np.ndarray, close: np.ndarray, actions: np.ndarray, start: int,
                    end: int, scale: float, commission_bps: float, slippage_bps: float,
                    cash: float = 100_000.0) -> float:
    """Final equity of the pandas env's rules with one change, the engine's (rl/execution.py):
    orders are sized one at a time, exposure-reducing ones first, against the book value
    *after* the earlier fills' costs (the pandas env sizes every order from the value before
    any fill). Explains the residual between the two environments when costs are on."""
    com, slip = commission_bps * 1e-4, slippage_bps * 1e-4
    n = close.shape[1]
    sh = np.zeros(n)
    for t in range(start, end):
        tw = np.clip(actions[t], -1.0, 1.0) * scale
        g = np.abs(tw).sum()
        if g > 1.0:
            tw = tw / g
        p = open_[t + 1]
        bval = cash + (sh * p).sum()
        for phase in (0, 1):
            for i in range(n):
                d = tw[i] * bval / p[i]
                if d > sh[i] and d > 0:
                    d = max(tw[i] * bval / (p[i] * (1.0 + slip + com)), sh[i])
                q = d - sh[i]
                if abs(q) * p[i] < 1e-9 * abs(bval) + 1e-12:
                    continue
                if (phase == 0) != (abs(sh[i] + q) < abs(sh[i])):
                    continue
                fill = p[i] * (1.0 + np.sign(q) * slip)
                flow = -q * fill - abs(q) * fill * com
                cash += flow
                bval += flow + q * p[i]
                sh[i] += q
    return float(cash + (sh * close[end]).sum())


# --------------------------------------------------------------------------- 1. Sharpe ascent


def bench_sharpe(quick: bool) -> dict[str, Any]:
    from mltrader.config import load_config
    from mltrader.features.labels import forward_return
    from mltrader.features.registry import compute_features
    from mltrader.models.panel import WARMUP, panel_inputs, predict_panel
    from mltrader.models.walkforward import stack
    from mltrader.pipeline import load_bars
    from mltrader.plan import panel_plan, resolve_fill, run_folds

    over: dict[str, Any] = {"walk_forward.first_test_year": 2020,
                            "walk_forward.window": "rolling", "walk_forward.train_years": 15}
    if quick:
        over["model.params.epochs"] = 20
    cfg = load_config(RL_SHARPE, over)
    bars = load_bars(cfg)
    fill = resolve_fill(cfg, bars)
    t0 = time.perf_counter()
    feats = compute_features(bars, cfg.features)
    labels = forward_return(bars, fill, cfg.target.horizon)
    y = labels.to_numpy(np.float64)
    pp = panel_plan(cfg.model, cfg, dict(cfg.model.params))
    x = panel_inputs(stack(feats), bars.close, pp.lags)
    prep = time.perf_counter() - t0
    fold = run_folds(bars, cfg)[0]
    model = pp.factory(cfg.model.name, cfg.seed)()
    train = slice(fold.train_start, fold.train_stop)
    t0 = time.perf_counter()
    model.fit(x[train], y[train])
    fit_s = time.perf_counter() - t0
    lo = max(0, fold.test_start - WARMUP)
    t0 = time.perf_counter()
    pos = predict_panel(model, x, y, slice(lo, fold.test_stop))
    pred_s = time.perf_counter() - t0
    idx = bars.index
    return {
        "fit_s": fit_s, "predict_s": pred_s, "prep_s": prep,
        "epochs": len(model.history_), "train_rows": fold.train_stop - fold.train_start,
        "n_inputs": x.shape[2], "n_symbols": x.shape[1],
        "train": f"{idx[fold.train_start].date()}..{idx[fold.train_stop - 1].date()}",
        "test": f"{idx[fold.test_start].date()}..{idx[fold.test_stop - 1].date()}",
        "predict_rows": len(pos), "test_rows": fold.test_stop - fold.test_start,
        "cost_bps": pp.est["cost_bps"], "train_sharpe": model.train_sharpe_,
    }


# --------------------------------------------------------------------------- 2. environments


def _env_inputs(bars: Any) -> tuple[dict[str, pd.DataFrame], np.ndarray]:
    from mltrader.features.registry import compute_features
    from mltrader.models.walkforward import stack

    feats = compute_features(bars, FEATURES)
    x = stack(feats)
    # z-scored over the whole panel: for the scale only (a throughput bench, not a backtest)
    mu, sd = np.nanmean(x, axis=(0, 1)), np.nanstd(x, axis=(0, 1))
    x = (x - mu) / np.where(sd > 0, sd, 1.0)
    scaled = {k: pd.DataFrame(x[:, :, i], index=bars.index, columns=list(bars.symbols))
              for i, k in enumerate(feats)}
    return scaled, x


def _settings(costs: bool) -> Any:
    from mltrader.core.settings import EngineSettings

    return EngineSettings(fill="next_close", whole_shares=False, allow_short=True,
                          commission_bps=1.0 if costs else 0.0,
                          slippage_bps=5.0 if costs else 0.0)


def bench_envs(bars: Any, quick: bool, seed: int, repeats: int) -> dict[str, Any]:
    from mltrader.rl import PortfolioEnv

    feats, x = _env_inputs(bars)
    t_len, n = bars.shape
    window = 5
    start = window - 1
    end = t_len - 1 if not quick else start + 1000
    actions = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(t_len, n))
    scale = 1.0 / n
    out: dict[str, Any] = {"steps": end - start, "symbols": n, "window": window}
    for flat in (True, False):
        env = PortfolioEnv(bars, x, _settings(True), window=window, flat=flat,
                           action_scale=scale)
        _run_env(env, actions, start, start + 50)  # numba compile / cache load, not timed
        runs = [_run_env(env, actions, start, end) for _ in range(repeats)]
        secs = float(np.median([r[0] for r in runs]))
        out[f"portfolio_flat_{flat}"] = {"s": secs, "sps": runs[0][1] * n / secs,
                                         "equity": runs[0][2], "runs": repeats}
    close = bars.frame("close")
    open_ = close if bars.close_only else bars.frame("open")
    for flat in (True, False):
        penv = PandasPortfolioEnv(open_, close, feats, window=window, commission_bps=1.0,
                                  slippage_bps=5.0, action_scale=scale, flat=flat)
        _run_env(penv, actions, start, start + 20)
        secs, steps, eq = _run_env(penv, actions, start, end)
        out[f"pandas_flat_{flat}"] = {"s": secs, "sps": steps * n / secs, "equity": eq,
                                      "runs": 1}
    # the same actions without costs: sizing then needs no running equity, so both agree
    # to rounding (see the report for why costs leave a small residual)
    env = PortfolioEnv(bars, x, _settings(False), window=window, flat=True, action_scale=scale)
    penv = PandasPortfolioEnv(open_, close, feats, window=window, action_scale=scale, flat=True)
    out["no_cost_equity"] = (_run_env(env, actions, start, end)[2],
                             _run_env(penv, actions, start, end)[2])
    c = bars.close
    o = c if bars.close_only else bars.open
    out["order_by_order_equity"] = _order_by_order(o, c, actions, start, end, scale, 1.0, 5.0)
    return out


# --------------------------------------------------------------------------- 3. PPO


def bench_ppo(bars: Any, timesteps: int, threads: int, seed: int) -> dict[str, Any]:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from mltrader.rl import PortfolioEnv

    torch.set_num_threads(threads)
    _, x = _env_inputs(bars)
    env = PortfolioEnv(bars, x, _settings(True), window=5, flat=True, episode_length=252,
                       action_scale=1.0 / bars.shape[1])

    class Clock(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rollout = 0.0
            self._t = 0.0

        def _on_rollout_start(self) -> None:
            self._t = time.perf_counter()

        def _on_rollout_end(self) -> None:
            self.rollout += time.perf_counter() - self._t

        def _on_step(self) -> bool:
            return True

    t0 = time.perf_counter()
    model = PPO("MlpPolicy", env, n_steps=1024, batch_size=256, seed=seed, device="cpu",
                verbose=0)
    setup = time.perf_counter() - t0
    clock = Clock()
    t0 = time.perf_counter()
    model.learn(total_timesteps=timesteps, callback=clock)
    wall = time.perf_counter() - t0
    done = int(model.num_timesteps)
    return {"timesteps": done, "asked": timesteps, "wall_s": wall, "tps": done / wall,
            "rollout_s": clock.rollout, "update_s": wall - clock.rollout, "setup_s": setup,
            "threads": torch.get_num_threads(), "obs_dim": int(env.observation_space.shape[0]),
            "n_epochs": model.n_epochs}


# --------------------------------------------------------------------------- config fold


def bench_config_fold(path: str, threads: int) -> dict[str, Any]:
    """One fold (the one testing 2020, else the last) of a panel-model config, timed the way
    `pipeline._predict_panel` runs it."""
    import torch

    from mltrader.config import load_config
    from mltrader.features.labels import forward_return
    from mltrader.features.registry import compute_features
    from mltrader.models.panel import WARMUP, fit_panel, panel_inputs, predict_panel
    from mltrader.models.registry import PANEL_MODELS
    from mltrader.models.walkforward import stack
    from mltrader.pipeline import load_bars, run_clock
    from mltrader.plan import panel_market, panel_plan, resolve_fill, run_folds

    torch.set_num_threads(threads)
    cfg = load_config(path)
    if cfg.model.name not in PANEL_MODELS:
        raise SystemExit(f"--config-fold: {path} uses model {cfg.model.name!r}, not a panel "
                         f"model ({', '.join(sorted(PANEL_MODELS))})")
    bars = load_bars(cfg)
    fill = resolve_fill(cfg, bars)
    feats = compute_features(bars, cfg.features)
    y = forward_return(bars, fill, cfg.target.horizon).to_numpy(np.float64)
    pp = panel_plan(cfg.model, cfg, dict(cfg.model.params))
    x = panel_inputs(stack(feats), bars.close, pp.lags)
    market = panel_market(cfg, bars, x, fill, run_clock(cfg, bars).periods_per_year)
    folds = run_folds(bars, cfg)
    fold = next((f for f in folds if bars.index[f.test_start].year == 2020), folds[-1])
    model = pp.factory(cfg.model.name, cfg.seed)()
    t0 = time.perf_counter()
    fit_panel(model, x, y, slice(fold.train_start, fold.train_stop), market)
    fit_s = time.perf_counter() - t0
    lo = max(0, fold.test_start - WARMUP)
    t0 = time.perf_counter()
    predict_panel(model, x, y, slice(lo, fold.test_stop), market)
    return {"config": path, "model": cfg.model.name, "fold": fold.describe(bars.index),
            "fit_s": fit_s, "predict_s": time.perf_counter() - t0, "folds": len(folds)}


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="sanity run: 20 epochs, 1,000 env steps, 2,048 PPO timesteps")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch threads for PPO (DirectReinforcement sets its own: 1)")
    ap.add_argument("--ppo-timesteps", type=int, default=None, help="default 20,000")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed PortfolioEnv episodes (median); default 5 (quick: 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config-fold", metavar="YAML", default=None,
                    help="also time one fold (testing 2020) of a panel-model config, e.g. "
                         "configs/rl_ppo.yaml or configs/rl_sharpe.yaml")
    a = ap.parse_args()
    timesteps = a.ppo_timesteps or (2048 if a.quick else 20_000)
    repeats = a.repeats or (2 if a.quick else 5)

    import gymnasium
    import stable_baselines3
    import torch

    import mltrader

    load0 = _load_str()
    print(f"bench/rl.py{' --quick' if a.quick else ''}: {os.cpu_count()} CPUs, load average "
          f"{load0} at the start; python {platform.python_version()}, mltrader "
          f"{mltrader.__version__}, numpy {np.__version__}, pandas {pd.__version__}, torch "
          f"{torch.__version__}, stable-baselines3 {stable_baselines3.__version__}, gymnasium "
          f"{gymnasium.__version__}", flush=True)

    sh = bench_sharpe(a.quick)
    print(f"\n1. DirectReinforcement, one fold (configs/rl_sharpe.yaml; {sh['n_symbols']} "
          f"symbols x {sh['n_inputs']} inputs, train {sh['train']} = {sh['train_rows']:,} bars, "
          f"{sh['epochs']} epochs, cost {sh['cost_bps']:g} bps):")
    print(f"   fit {sh['fit_s']:.2f} s (in-sample per-bar Sharpe {sh['train_sharpe']:.3f}); "
          f"predict {sh['test']} ({sh['test_rows']} bars, run from {sh['predict_rows']} rows "
          f"incl. the 252-bar warm-up) {sh['predict_s'] * 1e3:.1f} ms; inputs (features, "
          f"labels, lags) {sh['prep_s']:.2f} s", flush=True)

    from mltrader.config import load_config
    from mltrader.pipeline import load_bars

    bars = load_bars(load_config(RL_SHARPE))
    ev = bench_envs(bars, a.quick, a.seed, repeats)
    n = ev["symbols"]
    print(f"\n2. Environments: {ev['steps']:,} steps x {n} symbols, window {ev['window']}, "
          f"{len(FEATURES)} features, seeded uniform actions x 1/{n}, shorts, 1 bps commission + "
          "5 bps slippage, fractional shares:")
    for key, label in (("portfolio_flat_True", "PortfolioEnv flat=True"),
                       ("portfolio_flat_False", "PortfolioEnv flat=False"),
                       ("pandas_flat_True", "pandas env flat=True"),
                       ("pandas_flat_False", "pandas env flat=False")):
        r = ev[key]
        runs = f"median of {r['runs']} runs" if r["runs"] > 1 else "1 run"
        print(f"   {label:<24} {r['s']:8.3f} s {'(' + runs + ')':<19} "
              f"{r['sps']:>12,.0f} symbol-steps/s  final equity {r['equity']:,.6f}")
    p_eq, d_eq = ev["portfolio_flat_True"]["equity"], ev["pandas_flat_True"]["equity"]
    diff = abs(p_eq - d_eq) / abs(p_eq)
    nc = ev["no_cost_equity"]
    diff0 = abs(nc[0] - nc[1]) / abs(nc[0])
    ratio_flat = ev["portfolio_flat_True"]["sps"] / ev["pandas_flat_True"]["sps"]
    ratio_dict = ev["portfolio_flat_False"]["sps"] / ev["pandas_flat_False"]["sps"]
    print(f"   PortfolioEnv / pandas: {ratio_flat:,.0f}x (flat), {ratio_dict:,.0f}x (dict)")
    print(f"   final equity, same actions: with costs {p_eq:,.6f} vs {d_eq:,.6f} (rel. diff "
          f"{diff:.1e}); without costs {nc[0]:,.6f} vs {nc[1]:,.6f} (rel. diff {diff0:.1e})")
    obo = ev["order_by_order_equity"]
    diff_obo = abs(p_eq - obo) / abs(p_eq)
    print(f"   the residual with costs is the sizing order: the pandas env's rules with orders "
          f"sized one by one after the earlier fills' costs (the engine's order) give "
          f"{obo:,.6f} (rel. diff to PortfolioEnv {diff_obo:.1e})", flush=True)

    pp = bench_ppo(bars, timesteps, a.torch_threads, a.seed)
    print(f"\n3. PPO (stable-baselines3, MlpPolicy, n_steps 1024, batch 256, {pp['n_epochs']} "
          f"epochs, obs {pp['obs_dim']}, episode 252, torch threads {pp['threads']}): "
          f"{pp['timesteps']:,} timesteps in {pp['wall_s']:.1f} s = {pp['tps']:,.0f} "
          f"timesteps/s (rollouts {pp['rollout_s']:.1f} s, updates {pp['update_s']:.1f} s; "
          f"setup {pp['setup_s']:.1f} s)", flush=True)

    cf = None
    if a.config_fold:
        cf = bench_config_fold(a.config_fold, a.torch_threads)
        print(f"\n4. {cf['config']} ({cf['model']}), one of {cf['folds']} folds, {cf['fold']}: "
              f"fit {cf['fit_s']:.2f} s, predict (test year + 252-bar warm-up) "
              f"{cf['predict_s'] * 1e3:.1f} ms", flush=True)

    load1 = _load_str()
    sps = ev["portfolio_flat_True"]["sps"]
    rows = [
        ("DirectReinforcement fit, one fold (20 x 15 y)", "< 60 s", f"{sh['fit_s']:.2f} s",
         "met" if sh["fit_s"] < 60 else "**not met**"),
        ("DirectReinforcement predict, next year (+252 warm-up)", "-",
         f"{sh['predict_s'] * 1e3:.1f} ms", ""),
        ("PortfolioEnv flat=True, symbol-steps/s", ">= 100,000", f"{sps:,.0f}",
         "met" if sps >= 100_000 else "**not met**"),
        ("PortfolioEnv flat=False, symbol-steps/s", ">= 100,000",
         f"{ev['portfolio_flat_False']['sps']:,.0f}",
         "met" if ev["portfolio_flat_False"]["sps"] >= 100_000 else "**not met**"),
        ("pandas env flat=True / flat=False, symbol-steps/s", "-",
         f"{ev['pandas_flat_True']['sps']:,.0f} / {ev['pandas_flat_False']['sps']:,.0f}", ""),
        ("PortfolioEnv / pandas env", "-", f"{ratio_flat:,.0f}x / {ratio_dict:,.0f}x", ""),
        ("final equity rel. diff to pandas env (costs / none)", "-",
         f"{diff:.1e} / {diff0:.1e}", ""),
        ("... to the pandas rules sized order by order (costs)", "-", f"{diff_obo:.1e}", ""),
        (f"PPO {pp['timesteps']:,} timesteps, {pp['threads']} torch thread(s)", "-",
         f"{pp['tps']:,.0f} timesteps/s, {pp['wall_s']:.1f} s", ""),
    ]
    if cf:
        rows.append((f"{cf['model']} one fold ({Path(cf['config']).name})", "-",
                     f"fit {cf['fit_s']:.1f} s, predict {cf['predict_s'] * 1e3:.1f} ms", ""))
    print(f"\nload average {load0} at the start, {load1} at the end\n")
    print("| what | target | this run | |")
    print("| --- | --- | ---: | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
