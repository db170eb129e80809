"""`PortfolioEnv`: a gymnasium environment that trades a `Bars` panel by the backtest's rules.

Each step is one bar. The action is a row of target weights decided on bar t's close; it
fills on bar t+1 at the open (`fill="next_open"`) or the close (`"next_close"`) and the book
is marked at t+1's close, through the execution core's functions (rl/execution.py), so the
equity after every step is `run_backtest`'s equity on the same target rows.

Observation (`flat=False`, the default): a Dict with
- "features": float32 (window, N, F), the feature rows t-window+1 .. t (row t uses nothing
  after bar t's close: the caller's features must be causal; `find_lookahead` checks a
  feature builder), NaN replaced by `nan_fill`;
- "weights": float32 (N,), each position's value over equity at bar t's close.
`flat=True`: one float32 Box, the features window flattened (C order) then the weights.

Action: Box(-1, 1, (N,)) target weights, clipped to [-1, 1]; `discrete=True`:
MultiDiscrete([3] * N), 0 / 1 / 2 meaning -1 / 0 / +1. With `action_scale` s the target is
the clipped action times s (the positions rule's allocation / N, so an agent that learns
positions in [-1, 1] trades the weights the backtest gives them). Without `allow_short` negative
targets become 0. A row whose gross exposure exceeds `max_gross_leverage` is scaled down to
it. `info["target_weights"]` is the row actually traded.

Rewards: "log_return" (log of equity after / before the step, net of all costs);
"differential_sharpe" (Moody & Saffell: the step's marginal effect on an exponentially
weighted Sharpe ratio of simple returns, adaptation rate `eta`); "drawdown_penalised" (log
return minus `drawdown_penalty` x the step's increase in drawdown from the episode's peak).

Episodes: `reset(options={"start": t0, "end": t1})` trades decisions on bars t0 .. t1-1 and
ends (truncated) when the book is marked at bar t1; without options the episode spans the
constructor's `start` .. `end` (default: the first bar with a full window .. the last bar),
or, with `episode_length`, a window of that many steps drawn inside it from the seeded
`np_random`. An episode terminates early if equity falls to zero or below.

Risk guards (`settings.guards`) act as in the backtest, through the same functions
(risk/guards.py): daily loss limit and kill switch (flatten everything at the next fill and
block added exposure), max trades per day, max orders per symbol per day, price sanity, max
position (resize) and time stop. Sessions are each bar's calendar date, or the `sessions`
given (as `run_backtest(..., sessions=)`). `info["guard"]` names the last guard that acted
in the step (None if none did) and `info["guard_actions"]` counts its actions.

A market's own rules (`settings.market`, e.g. `core.market.CN_A`, with the bars' `rules`
arrays from `core.market.rule_arrays`: the same arguments as `run_backtest(..., rules=)`)
act as in the backtest: board lots, T+1, limit-up / limit-down locks, taxes, the minimum
commission and ex-rights payouts. `bars` are then the prices orders fill at (A-shares: the
traded prices, `AshareData.exec_bars`); the features may come from other (adjusted) prices
on the same index and symbols. `info["market"]` says what the rules did in the step (None
for a market without rules): orders refused at a limit-up / limit-down lock, sells cut by
T+1, orders lot-rounded (dropped when under one lot), time stops held back, the cash of
ex-rights payouts and the taxes paid.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mltrader.core.market import RuleArrays, rule_arrays
from mltrader.core.params import FP_LEVERAGE, IP_SHORT, MODE_TARGETS, pack
from mltrader.core.sessions import session_days
from mltrader.core.settings import EngineSettings
from mltrader.data.bars import Bars
from mltrader.rl import execution as X
from mltrader.rl.settings import check_settings

REWARDS = ("log_return", "differential_sharpe", "drawdown_penalised")
_TINY = 1e-300


class PortfolioEnv(gym.Env):
    """Trade N symbols to target weights, one bar per step, by the backtest's fill rules."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, bars: Bars, features: np.ndarray, settings: EngineSettings | None = None,
                 *, window: int = 1, discrete: bool = False, reward: str = "log_return",
                 eta: float = 0.01, drawdown_penalty: float = 1.0, flat: bool = False,
                 start: int | None = None, end: int | None = None,
                 episode_length: int | None = None, nan_fill: float = 0.0,
                 action_scale: float = 1.0, sessions: np.ndarray | None = None,
                 rules: RuleArrays | None = None) -> None:
        super().__init__()
        self.settings = settings if settings is not None else EngineSettings()
        check_settings(self.settings, bars)
        t_len, n = bars.shape
        feats = np.asarray(features)
        if feats.ndim == 2:
            feats = feats[:, :, None]
        if feats.ndim != 3 or feats.shape[:2] != (t_len, n):
            raise ValueError(f"features has shape {np.shape(features)}, expected ({t_len}, {n}, "
                             "F): bars x symbols x features, row t known at bar t's close")
        if not (isinstance(window, int | np.integer) and 1 <= window <= t_len - 1):
            raise ValueError(f"window must be an int in 1..{t_len - 1} (bars - 1); got {window!r}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {', '.join(REWARDS)}; got {reward!r}")
        if not 0 < eta <= 1:
            raise ValueError(f"eta (differential Sharpe adaptation rate) must be in (0, 1]; "
                             f"got {eta!r}")
        if not (math.isfinite(action_scale) and action_scale > 0):
            raise ValueError(f"action_scale must be a finite number > 0; got {action_scale!r}")
        if drawdown_penalty < 0:
            raise ValueError(f"drawdown_penalty must be >= 0; got {drawdown_penalty!r}")
        self.bars = bars
        self.window = int(window)
        self.discrete = bool(discrete)
        self.reward_name = reward
        self.eta = float(eta)
        self.drawdown_penalty = float(drawdown_penalty)
        self.flat = bool(flat)
        self.action_scale = float(action_scale)
        f32 = feats.astype(np.float32)  # a copy: later edits of the caller's array change nothing
        f32[np.isnan(f32)] = nan_fill
        self._feats = np.ascontiguousarray(f32)
        c = bars.close
        o, h, lo = (c, c, c) if bars.close_only else (bars.open, bars.high, bars.low)
        self.rules = self._market_rules(rules)
        self._px = X.price_planes(o, h, lo, c, self.rules)
        self._ip, self._fp = pack(self.settings, MODE_TARGETS, bars.close_only)
        # state, with the guards' parameters and each bar's session (as run_backtest's)
        self._guards = self.settings.guards.active
        self._S, self._st, self._ints = X.new_state(n, t_len, self.settings.guards.vector(),
                                                    session_days(bars.index, sessions))
        self._lo = self.window - 1 if start is None else int(start)
        self._hi = t_len - 1 if end is None else int(end)
        self._check_span(self._lo, self._hi, "start", "end")
        if episode_length is not None and not 1 <= episode_length <= self._hi - self._lo:
            raise ValueError(f"episode_length must be in 1..{self._hi - self._lo} (end - start); "
                             f"got {episode_length!r}")
        self.episode_length = episode_length

        n_f = self._feats.shape[2]
        if self.discrete:
            self.action_space = spaces.MultiDiscrete(np.full(n, 3, dtype=np.int64))
        else:
            self.action_space = spaces.Box(-1.0, 1.0, shape=(n,), dtype=np.float32)
        if self.flat:
            self.observation_space = spaces.Box(-np.inf, np.inf, shape=(self.window * n * n_f + n,),
                                                dtype=np.float32)
        else:
            self.observation_space = spaces.Dict({
                "features": spaces.Box(-np.inf, np.inf, shape=(self.window, n, n_f),
                                       dtype=np.float32),
                "weights": spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32),
            })
        self._t = self._start = self._end = -1
        self._done = True

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        t0, t1 = self._episode(options or {})
        X.reset_state(self._S, self._st, self._ints, self.bars.close, t0, self._fp, self._ip)
        self._start, self._end, self._t = t0, t1, t0
        self._done = False
        eq = float(self._st[X.EQUITY])
        self._peak = eq  # drawdown_penalised
        self._dd = 0.0
        self._A = 0.0  # differential Sharpe: EW first and second moments of returns
        self._B = 0.0
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("the episode is over (or never started): call reset() first")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self._S.shape[1],):
            raise ValueError(f"action has shape {a.shape}, expected ({self._S.shape[1]},): one "
                             "target per symbol")
        a, discrete = self._scaled(a)
        prev = float(self._st[X.EQUITY])
        if not X.env_step(self._t, a, discrete, self._px, self._ip, self._fp, self._S,
                          self._st, self._ints):
            raise ValueError("action holds NaN or inf; give a finite target per symbol")
        self._t += 1
        eq = float(self._st[X.EQUITY])
        reward = self._reward(prev, eq)
        terminated = not eq > 0.0
        truncated = not terminated and self._t >= self._end
        self._done = terminated or truncated
        return self._obs(), reward, terminated, truncated, self._info()

    # ------------------------------------------------------------------ public helpers
    def target_weights(self, action: Any) -> np.ndarray:
        """The target weights an action trades (clipped, long-only, scaled to the leverage)."""
        out = np.empty(self._S.shape[1])
        a, discrete = self._scaled(np.asarray(action, dtype=np.float64))
        if not X.action_targets(a, discrete, self._ip[IP_SHORT] == 1,
                                float(self._fp[FP_LEVERAGE]), out):
            raise ValueError("action holds NaN or inf; give a finite target per symbol")
        return out

    @property
    def span(self) -> tuple[int, int]:
        """(start, end): the bars a reset without options trades from and marks up to."""
        return self._lo, self._hi

    @property
    def bar(self) -> int:
        """The bar whose close the current observation describes."""
        return self._t

    @property
    def equity(self) -> float:
        return float(self._st[X.EQUITY])

    @property
    def positions(self) -> np.ndarray:
        """Shares held per symbol (a copy)."""
        return self._S[X.SH].copy()

    # ------------------------------------------------------------------ internals
    def _market_rules(self, rules: RuleArrays | None) -> RuleArrays | None:
        """The market's per-bar arrays the steps read (None: no market rules, the US path),
        checked as `run_backtest` checks them."""
        market = self.settings.market
        t_len, n = self.bars.shape
        if rules is None:
            if not market.active:
                return None
            rules = rule_arrays(market, None, self.bars.index, n)  # taxes only
        if market.price_limits and rules.limit_up.shape != (t_len, n):
            raise ValueError(f"market {market.name} has price limits but no limit prices were "
                             f"given for these bars ({t_len}, {n}); pass rules="
                             "core.market.rule_arrays(market, data, index, n) of an A-share panel")
        for name in ("sell_tax_bps", "buy_tax_bps"):
            if np.shape(getattr(rules, name)) != (t_len,):
                raise ValueError(f"rules.{name} has shape {np.shape(getattr(rules, name))}, "
                                 f"expected ({t_len},): one rate per bar")
        for name in ("limit_up", "limit_down", "payout"):
            if np.shape(getattr(rules, name)) not in ((t_len, n), (1, 1)):
                raise ValueError(f"rules.{name} has shape {np.shape(getattr(rules, name))}, "
                                 f"expected ({t_len}, {n}) (or (1, 1): none)")
        return rules

    def _scaled(self, a: np.ndarray) -> tuple[np.ndarray, bool]:
        """(targets before the short / leverage rules, discrete?): with an action_scale
        other than 1 the action is clipped to [-1, 1] (discrete: -1 / 0 / +1) then scaled."""
        if self.action_scale == 1.0:
            return a, self.discrete
        if self.discrete:
            a = a - 1.0  # 0 / 1 / 2 -> -1 / 0 / +1 (NaN stays NaN and is refused)
        return np.clip(a, -1.0, 1.0) * self.action_scale, False
    def _check_span(self, t0: int, t1: int, a: str, b: str) -> None:
        t_len = len(self.bars)
        if not self.window - 1 <= t0 < t1 <= t_len - 1:
            raise ValueError(f"{a}={t0} and {b}={t1} must satisfy window - 1 = {self.window - 1} "
                             f"<= {a} < {b} <= {t_len - 1} (the last bar)")

    def _episode(self, options: dict[str, Any]) -> tuple[int, int]:
        unknown = set(options) - {"start", "end"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; use 'start' and 'end'")
        if "start" in options or "end" in options:
            t0 = int(options.get("start", self._lo))
            default_end = self._hi
            if self.episode_length is not None:
                default_end = min(t0 + self.episode_length, len(self.bars) - 1)
            t1 = int(options.get("end", default_end))
            self._check_span(t0, t1, "start", "end")
            return t0, t1
        if self.episode_length is None:
            return self._lo, self._hi
        t0 = int(self.np_random.integers(self._lo, self._hi - self.episode_length + 1))
        return t0, t0 + self.episode_length

    def _obs(self) -> Any:
        f = self._feats[self._t - self.window + 1:self._t + 1]
        w = self._S[X.WEIGHT].astype(np.float32)
        if self.flat:
            return np.concatenate((f.reshape(-1), w))
        return {"features": f.copy(), "weights": w}

    def _info(self) -> dict[str, Any]:
        st = self._st
        return {"bar": self._t, "equity": float(st[X.EQUITY]), "cash": float(st[X.CASH]),
                "commission": float(st[X.COMM]), "traded_value": float(st[X.TRADED]),
                "borrow": float(st[X.BORROW]), "target_weights": self._S[X.TARGET].copy(),
                "guard": X.ACTED.get(int(st[X.GUARD])) if self._guards else None,
                "guard_actions": int(st[X.GUARD_N]) if self._guards else 0,
                "market": self._market_info()}

    def _market_info(self) -> dict[str, float] | None:
        """What the market's rules did in the step (None without market rules)."""
        if self.rules is None:
            return None
        st = self._st
        out: dict[str, float] = {name: int(st[k]) for k, name in X.MARKET_NAMES.items()}
        out["payout"] = float(st[X.PAYOUT])
        out["tax"] = float(st[X.TAX])
        return out

    def _reward(self, prev: float, eq: float) -> float:
        log_r = math.log(max(eq, _TINY) / prev)
        if self.reward_name == "log_return":
            return log_r
        if self.reward_name == "drawdown_penalised":
            self._peak = max(self._peak, eq)
            dd = 1.0 - eq / self._peak
            rise = max(dd - self._dd, 0.0)
            self._dd = dd
            return log_r - self.drawdown_penalty * rise
        # differential Sharpe ratio (Moody & Saffell 2001, eq. 10) of the simple return
        r = eq / prev - 1.0
        A, B = self._A, self._B
        dA, dB = r - A, r * r - B
        var = B - A * A
        d = (B * dA - 0.5 * A * dB) / var ** 1.5 if var > 1e-12 else 0.0
        self._A = A + self.eta * dA
        self._B = B + self.eta * dB
        return d
