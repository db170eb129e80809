"""Reinforcement learning on the execution core: a gymnasium environment whose fills are the
backtest's fills.

- `env.PortfolioEnv`: observation = a window of causal features + current weights; action =
  target weights (continuous or -1/0/+1); each step fills at the next bar by the
  `EngineSettings` rules (a market's own included: A-shares) through `mltrader.core`
  (rl/execution.py, numba-compiled) and pays
  a log-return, differential-Sharpe or drawdown-penalised reward.
- `settings.check_settings`: the supported `EngineSettings` subset; the rest raise
  `UnsupportedSettingError` (a ValueError) naming the setting.
- `causal.find_lookahead`: the features of a builder that use bars after their row.

Layer: imports core, risk, data and errors (and numpy, numba, gymnasium); never backtest,
live, config, plan or the app layer. gymnasium is imported only here.
"""

from mltrader.rl.causal import find_lookahead
from mltrader.rl.env import REWARDS, PortfolioEnv
from mltrader.rl.settings import UnsupportedSettingError, check_settings

__all__ = ["REWARDS", "PortfolioEnv", "UnsupportedSettingError", "check_settings",
           "find_lookahead"]
