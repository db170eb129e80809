"""The README's user-strategy example runs as written and is under 20 lines."""

import re
from pathlib import Path

import numpy as np

from mltrader.strategy.base import StrategyInputs
from mltrader.strategy.registry import STRATEGIES, run_strategy
from mltrader.testing import synthetic_bars

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_user_strategy_example_works():
    text = README.read_text()
    section = text[text.index("Your own strategy"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) < 20
    try:
        exec(compile(code, "README.md", "exec"), {})
        bars = synthetic_bars(300, 3, seed=0)
        w = run_strategy("momentum", StrategyInputs(bars=bars), {"lookback": 60})
        assert w.shape == bars.shape and set(np.unique(w.to_numpy())) <= {0.0, 1 / 3}
    finally:
        STRATEGIES.pop("momentum", None)
