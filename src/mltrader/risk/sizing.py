"""Position sizing and exposure caps: a strategy's intent weights -> the targets the engine trades.

Vectorised and causal (row t uses prices up to t only), so the backtest sizes a whole panel
at once and the live runner sizes the newest row with the same function. Modes:

- `weights`: the strategy's weights as they are;
- `percent_of_equity`: every position is sign(w) x `percent` of equity;
- `fixed_shares`: every position is sign(w) x `shares` shares (targets in shares);
- `risk_per_trade`: shares = equity x `risk_per_trade` / (price x stop distance), the
  position-size formula; with the stop a fraction of the price that is a weight of
  risk_per_trade / stop_loss;
- `volatility_target`: w x `target_vol` / (the symbol's annualised volatility over the last
  `vol_window` bars), so each position carries about the same risk.

Then the caps, in this order: `max_position` per symbol, `max_sector` per sector (needs a
sector map), `max_net` on |sum of weights|, `max_gross` on the sum of |weights|. Each cap
scales down (never up); every change is logged with the rule that made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from mltrader.data.bars import Bars
from mltrader.errors import ConfigError

SizingMode = Literal["weights", "percent_of_equity", "fixed_shares", "risk_per_trade",
                     "volatility_target"]
ADJUSTMENT_COLUMNS = ["date", "symbol", "rule", "requested", "allowed"]


@dataclass(frozen=True)
class SizingRules:
    """How big each position is, and the exposure caps (fractions of equity)."""

    mode: SizingMode = "weights"
    percent: float = 0.1
    shares: float = 100.0
    risk_per_trade: float = 0.01
    stop_loss: float | None = None
    target_vol: float = 0.15
    vol_window: int = 60
    periods_per_year: float = 252.0
    max_position: float | None = None
    max_sector: float | None = None
    sectors: Mapping[str, str] = field(default_factory=dict)
    max_net: float | None = None
    max_gross: float | None = None

    def __post_init__(self) -> None:
        if self.mode == "risk_per_trade" and not self.stop_loss:
            raise ConfigError("risk.sizing is risk_per_trade but risk.stop_loss is not set; "
                              "the stop distance sizes the position, e.g. stop_loss: 0.03")
        if self.mode == "fixed_shares" and (self.max_sector or self.max_net):
            raise ConfigError("risk.max_sector / max_net cap weights, but fixed_shares sizes "
                              "in shares; use another sizing mode or drop those caps")
        if self.max_sector and not self.sectors:
            raise ConfigError("risk.max_sector is set but risk.sectors (symbol: sector) is "
                              "empty; add the sector map")

    @property
    def unit(self) -> str:
        return "shares" if self.mode == "fixed_shares" else "weight"


@dataclass(frozen=True)
class SizedTargets:
    """Targets for the engine (`unit` weight or shares) and the log of every cap that acted."""

    values: pd.DataFrame
    unit: str
    adjustments: pd.DataFrame


def realised_vol(close: np.ndarray, window: int, periods_per_year: float) -> np.ndarray:
    """Annualised std of simple returns over the last `window` bars, up to and including t."""
    r = np.full(close.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        r[1:] = close[1:] / close[:-1] - 1.0
    vol = pd.DataFrame(r).rolling(window, min_periods=max(window // 2, 2)).std()
    return vol.to_numpy() * np.sqrt(periods_per_year)


def _base(w: np.ndarray, bars: Bars, rules: SizingRules) -> np.ndarray:
    sign = np.sign(w)
    if rules.mode == "weights":
        return w.copy()
    if rules.mode == "percent_of_equity":
        return sign * rules.percent
    if rules.mode == "fixed_shares":
        return sign * rules.shares
    if rules.mode == "risk_per_trade":
        return sign * rules.risk_per_trade / float(rules.stop_loss)  # type: ignore[arg-type]
    vol = realised_vol(bars.close, rules.vol_window, rules.periods_per_year)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = w * rules.target_vol / vol
    # no volatility estimate yet: no position rather than an unbounded one
    out[~np.isnan(w) & ~np.isfinite(out)] = 0.0
    return out


def _log(log: list[pd.DataFrame], bars: Bars, rule: str, before: np.ndarray,
         after: np.ndarray) -> None:
    with np.errstate(invalid="ignore"):
        changed = np.abs(after - before) > 1e-12
    if not changed.any():
        return
    r, c = np.nonzero(changed)
    log.append(pd.DataFrame({
        "date": bars.index[r], "symbol": np.asarray(bars.symbols)[c], "rule": rule,
        "requested": before[r, c], "allowed": after[r, c]}))


def _scale_rows(w: np.ndarray, total: np.ndarray, cap: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(total > cap, cap / total, 1.0)
    return w * f[:, None]


def size_targets(weights: pd.DataFrame, bars: Bars, rules: SizingRules) -> SizedTargets:
    """Size and cap a strategy's weights (T x N, NaN = no decision) for the engine."""
    w = weights.reindex(index=bars.index, columns=list(bars.symbols)).to_numpy(np.float64)
    out = _base(w, bars, rules)
    log: list[pd.DataFrame] = []
    if rules.unit == "weight":
        if rules.max_position:
            capped = np.clip(out, -rules.max_position, rules.max_position)
            _log(log, bars, "max_position", out, capped)
            out = capped
        if rules.max_sector:
            sec = np.array([rules.sectors.get(s, s) for s in bars.symbols])
            capped = out.copy()
            for name in np.unique(sec):
                cols = sec == name
                total = np.nansum(np.abs(out[:, cols]), axis=1)
                capped[:, cols] = _scale_rows(out[:, cols], total, rules.max_sector)
            _log(log, bars, "max_sector", out, capped)
            out = capped
        if rules.max_net:
            capped = out.copy()
            net = np.abs(np.nansum(out, axis=1))
            capped = _scale_rows(out, net, rules.max_net)
            _log(log, bars, "max_net", out, capped)
            out = capped
        if rules.max_gross:
            capped = _scale_rows(out, np.nansum(np.abs(out), axis=1), rules.max_gross)
            _log(log, bars, "max_gross", out, capped)
            out = capped
    adj = (pd.concat(log, ignore_index=True) if log else pd.DataFrame({
        "date": bars.index[:0], "symbol": pd.Series([], dtype=object), "rule": pd.Series(
            [], dtype=object), "requested": np.array([]), "allowed": np.array([])}))
    values = pd.DataFrame(out, index=bars.index, columns=list(bars.symbols))
    return SizedTargets(values, rules.unit, adj)
