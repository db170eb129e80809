"""Deep-RL traders: Stable-Baselines3 agents (PPO, A2C, SAC, DQN) as panel models.

`RLAgent` is a scikit-learn estimator over a (T, N, F) panel whose ``fit`` trains an SB3
agent inside a simulated market and whose ``predict`` lets the trained policy trade it. The
market is not the model's to build (it needs the engine's settings, a higher layer): the
walk-forward passes ``market(**env_kwargs)``, an environment over exactly the rows being
fitted or predicted (`mltrader.plan.panel_market`: a `PortfolioEnv` with the run's fills and
costs, actions scaled as the positions rule scales them). So the reward an agent learns from
is the equity the backtest would give its actions, costs included.

Training runs `n_envs` copies of the market side by side (each drawing its own episodes),
so the policy is called once per step for all of them; PPO's rollout is n_steps x n_envs.

Observation: the last `window` rows of the inputs of every symbol, flattened, and the current
weights (`PortfolioEnv(flat=True)`), normalised by the running mean and variance gathered in
training (SB3's `VecNormalize`; frozen when predicting). Actions: a position in [-1, 1] per
symbol (PPO, A2C, SAC), or -1 / 0 / +1 per symbol with ``discrete=True`` (PPO, A2C). DQN has
no multi-discrete head: it takes one of short / flat / long for the whole basket at once.

``predict(X, market=...)`` runs the deterministic policy from the first row with a full
window to the last, stepping the market with its own actions, so the weights it observes are
those its actions produced; row t's position reads rows <= t only. Rows before the first full
window are NaN (hold). Reproducible: a seeded agent, one torch thread and deterministic
algorithms give byte-identical positions. Saved without pickle: the policy's tensors and the
observation statistics as safetensors, params and spaces as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from mltrader.errors import ConfigError
from mltrader.models.torch_io import load_state, load_torch, save_torch, torch_env

ALGOS = ("ppo", "a2c", "sac", "dqn")
REWARDS = ("log_return", "differential_sharpe", "drawdown_penalised")
FORMAT = "mltrader.rl_agent/1"
WEIGHTS_FILE = "policy.safetensors"
CLIP_OBS = 10.0  # VecNormalize's default clip and epsilon: predict normalises as training did
EPS = 1e-8


def _algo(name: str) -> Any:
    import stable_baselines3 as sb3

    return {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "dqn": sb3.DQN}[name]


class _Basket(gym.ActionWrapper):
    """DQN's action: Discrete(3), short / flat / long applied to every symbol at once."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._n = int(np.prod(env.action_space.shape))
        self.action_space = gym.spaces.Discrete(3)

    def action(self, action: Any) -> np.ndarray:
        return np.full(self._n, float(int(action) - 1), dtype=np.float32)


class RLAgent(BaseEstimator):
    """An SB3 agent trained per fold in the run's own market; outputs positions in [-1, 1]."""

    needs_market = True  # models.panel hands it market(**env_kwargs) over the rows it is on
    online = False

    def __init__(self, algo: str = "ppo", total_timesteps: int = 20_000, window: int = 5,
                 reward: str = "log_return", discrete: bool = False, episode_length: int = 252,
                 learning_rate: float = 3e-4, n_steps: int = 1024, batch_size: int = 256,
                 n_epochs: int = 10, gamma: float = 0.99, ent_coef: float = 0.0,
                 net_arch: tuple[int, ...] | list[int] = (64, 64), eta: float = 0.01,
                 drawdown_penalty: float = 1.0, buffer_size: int = 50_000, n_envs: int = 4,
                 threads: int | None = 1, seed: int = 0) -> None:
        self.algo = algo
        self.total_timesteps = total_timesteps
        self.window = window
        self.reward = reward
        self.discrete = discrete
        self.episode_length = episode_length
        self.learning_rate = learning_rate
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.gamma = gamma
        self.ent_coef = ent_coef
        self.net_arch = net_arch
        self.eta = eta
        self.drawdown_penalty = drawdown_penalty
        self.buffer_size = buffer_size
        self.n_envs = n_envs
        self.threads = threads
        self.seed = seed

    # ------------------------------------------------------------------ checks
    def _check(self) -> None:
        def whole(name: str, lo: int) -> int:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise ConfigError(f"model.params.{name} for {self.algo}: a whole number >= {lo} "
                                  f"(got {v!r})")
            return int(v)

        if self.algo not in ALGOS:
            raise ConfigError(f"model.params.algo: one of {', '.join(ALGOS)} (got {self.algo!r})")
        if self.reward not in REWARDS:
            raise ConfigError(f"model.params.reward for {self.algo}: one of {', '.join(REWARDS)} "
                              f"(got {self.reward!r})")
        for name, lo in (("total_timesteps", 1), ("window", 1), ("episode_length", 2),
                         ("n_steps", 2), ("batch_size", 2), ("n_epochs", 1),
                         ("buffer_size", 100), ("n_envs", 1)):
            whole(name, lo)
        for name, zero_ok, hi in (("learning_rate", False, math.inf), ("gamma", False, 1.0),
                                  ("ent_coef", True, math.inf), ("eta", False, 1.0),
                                  ("drawdown_penalty", True, math.inf)):
            v = getattr(self, name)
            number = not isinstance(v, bool) and isinstance(v, int | float)
            if not number or not (v >= 0 if zero_ok else v > 0) or not v <= hi:
                span = f"[0, {hi:g}]" if zero_ok else f"(0, {hi:g}]"
                raise ConfigError(f"model.params.{name} for {self.algo}: a number in {span} "
                                  f"(got {v!r})")
        arch = self.net_arch
        if not isinstance(arch, list | tuple) or not arch or not all(
                isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in arch):
            raise ConfigError(f"model.params.net_arch for {self.algo}: hidden layer sizes, "
                              f"e.g. [64, 64] (got {arch!r})")
        if self.discrete and self.algo == "sac":
            raise ConfigError("model.params.discrete: SAC needs continuous actions; use ppo, "
                              "a2c or dqn for discrete ones, or discrete: false")

    @property
    def _discrete_env(self) -> bool:
        return bool(self.discrete) and self.algo != "dqn"

    def _env(self, market: Callable[..., gym.Env], episode_length: int | None) -> gym.Env:
        env = market(window=int(self.window), reward=self.reward, discrete=self._discrete_env,
                     flat=True, eta=float(self.eta), drawdown_penalty=float(self.drawdown_penalty),
                     episode_length=episode_length)
        return _Basket(env) if self.algo == "dqn" else env

    # ------------------------------------------------------------------ sklearn API
    def fit(self, X: np.ndarray, y: np.ndarray | None = None, *,
            market: Callable[..., gym.Env]) -> RLAgent:
        """Train the agent on episodes of `episode_length` bars drawn inside the rows of X."""
        from stable_baselines3.common.logger import Logger
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        self._check()
        X = np.asarray(X)
        if X.ndim != 3:
            raise ValueError(f"X must be (T, N, F); got shape {X.shape}")
        span = X.shape[0] - int(self.window)  # steps the market has over these rows
        if span < 2:
            raise ConfigError(f"{self.algo}: {X.shape[0]} training bars leave no episode with "
                              f"window {self.window}; load more history")
        episode = min(int(self.episode_length), span)
        with torch_env(self.threads, deterministic=True):
            # n_envs copies, each drawing its own episodes: one batched policy call per step
            envs = [lambda: self._env(market, episode)] * int(self.n_envs)
            venv = VecNormalize(DummyVecEnv(envs),
                                norm_obs=True, norm_reward=True, clip_obs=CLIP_OBS,
                                gamma=float(self.gamma), epsilon=EPS)
            algo = _algo(self.algo)
            kw: dict[str, Any] = {"learning_rate": float(self.learning_rate),
                                  "gamma": float(self.gamma)}
            if self.algo in ("ppo", "a2c"):
                kw["n_steps"] = int(self.n_steps)
                kw["ent_coef"] = float(self.ent_coef)
            if self.algo == "ppo":
                kw["batch_size"] = int(self.batch_size)
                kw["n_epochs"] = int(self.n_epochs)
            if self.algo in ("sac", "dqn"):
                kw["batch_size"] = int(self.batch_size)
                kw["buffer_size"] = int(self.buffer_size)
                kw["learning_starts"] = min(1000, int(self.total_timesteps) // 2)
            agent = algo("MlpPolicy", venv, seed=int(self.seed), device="cpu", verbose=0,
                         policy_kwargs={"net_arch": [int(k) for k in self.net_arch]}, **kw)
            agent.set_logger(Logger(folder=None, output_formats=[]))  # no SB3-* temp folders
            agent.learn(total_timesteps=int(self.total_timesteps))
        self.policy_ = agent.policy
        self.policy_.set_training_mode(False)
        self.obs_mean_ = np.asarray(venv.obs_rms.mean, dtype=np.float64)
        self.obs_var_ = np.asarray(venv.obs_rms.var, dtype=np.float64)
        self.n_symbols_ = int(X.shape[1])
        self.n_features_in_ = int(X.shape[2])
        self.timesteps_ = int(agent.num_timesteps)
        return self

    def _act(self, obs: np.ndarray) -> np.ndarray:
        z = np.clip((obs - self.obs_mean_) / np.sqrt(self.obs_var_ + EPS), -CLIP_OBS, CLIP_OBS)
        action, _ = self.policy_.predict(z.astype(np.float32), deterministic=True)
        return np.asarray(action)

    def _position(self, action: np.ndarray) -> np.ndarray:
        if self.algo == "dqn":
            return np.full(self.n_symbols_, float(int(action) - 1))
        if self._discrete_env:
            return action.astype(np.float64) - 1.0
        return np.clip(action.astype(np.float64), -1.0, 1.0)

    def predict(self, X: np.ndarray, *, market: Callable[..., gym.Env]) -> np.ndarray:
        """(T, N) positions: the deterministic policy trading the rows of X in order."""
        check_is_fitted(self, "policy_")
        X = np.asarray(X)
        if X.ndim != 3 or X.shape[1:] != (self.n_symbols_, self.n_features_in_):
            raise ValueError(f"X has shape {X.shape}; this agent was fitted on (T, "
                             f"{self.n_symbols_}, {self.n_features_in_})")
        out = np.full((X.shape[0], self.n_symbols_), np.nan)
        if X.shape[0] < 2:  # no bar with a next bar to step to
            return out
        env = self._env(market, None)
        positions = []
        with torch_env(self.threads, deterministic=True), torch.no_grad():
            obs, _ = env.reset()
            while True:
                action = self._act(obs)
                positions.append(self._position(action))
                obs, _r, terminated, truncated, _info = env.step(action)
                if terminated:  # equity gone: nothing left to trade
                    break
                if truncated:  # the last row: decide it, no next bar to step to
                    positions.append(self._position(self._act(obs)))
                    break
        first = env.unwrapped.span[0] - (env.unwrapped.span[1] - (X.shape[0] - 1))
        out[first:first + len(positions)] = np.asarray(positions)
        if len(positions) < X.shape[0] - first:
            out[first + len(positions):] = 0.0  # bankrupt: flat from there on
        return out

    # ------------------------------------------------------------------ artifacts
    def save(self, path: Path) -> list[Path]:
        """Write <path>/policy.safetensors (policy tensors, observation statistics) and
        <path>/params.json (params, shapes, format); return both paths."""
        check_is_fitted(self, "policy_")
        state = {f"policy.{k}": v for k, v in self.policy_.state_dict().items()}
        state["obs_mean"] = torch.from_numpy(self.obs_mean_)
        state["obs_var"] = torch.from_numpy(self.obs_var_)
        params = self.get_params()
        params["net_arch"] = [int(k) for k in params["net_arch"]]
        fitted = {"n_symbols_": self.n_symbols_, "n_features_in_": self.n_features_in_,
                  "timesteps_": self.timesteps_}
        return save_torch(path, FORMAT, type(self).__name__, state, params, fitted,
                          weights_file=WEIGHTS_FILE)

    @classmethod
    def load(cls, path: Path) -> RLAgent:
        """Rebuild an agent written by `save` (its policy, no optimiser): it can predict."""
        params, fitted, state = load_torch(path, FORMAT, cls.__name__, weights_file=WEIGHTS_FILE)
        model = cls(**params)
        model.n_symbols_ = int(fitted["n_symbols_"])
        model.n_features_in_ = int(fitted["n_features_in_"])
        model.timesteps_ = int(fitted["timesteps_"])
        model.obs_mean_ = state.pop("obs_mean").numpy().copy()
        model.obs_var_ = state.pop("obs_var").numpy().copy()
        n_obs = int(model.window) * model.n_symbols_ * model.n_features_in_ + model.n_symbols_
        if model.obs_mean_.shape != (n_obs,):
            raise ValueError(f"{Path(path) / WEIGHTS_FILE} does not fit {cls.__name__} with "
                             f"{n_obs} observations: {model.obs_mean_.shape}")
        obs_space = gym.spaces.Box(-np.inf, np.inf, shape=(n_obs,), dtype=np.float32)
        if model.algo == "dqn":
            act_space: gym.Space = gym.spaces.Discrete(3)
        elif model._discrete_env:
            act_space = gym.spaces.MultiDiscrete(np.full(model.n_symbols_, 3, dtype=np.int64))
        else:
            act_space = gym.spaces.Box(-1.0, 1.0, shape=(model.n_symbols_,), dtype=np.float32)
        policy_cls = _algo(model.algo).policy_aliases["MlpPolicy"]
        with torch_env(model.threads, deterministic=True):
            policy = policy_cls(obs_space, act_space, lambda _p: 0.0,
                                net_arch=list(model.net_arch))
        load_state(policy, {k.removeprefix("policy."): v for k, v in state.items()}, path,
                   cls.__name__, weights_file=WEIGHTS_FILE)
        policy.set_training_mode(False)
        model.policy_ = policy
        return model
