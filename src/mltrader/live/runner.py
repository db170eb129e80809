"""The runner: on each finished bar, the strategy's newest targets become journaled orders.

Per bar: take the broker's order events (fills into the journal), append the bar to the
history window, compute the strategy's row for this bar from the window only (features and
predictions use bars up to now; strategies are causal, so their last row is the decision),
size it with the risk rules, turn targets into share deltas at this bar's close with the
engine's own rule (`risk.orders.decision_orders`), journal each order BEFORE sending it
(under a deterministic client order id, so a restarted runner never sends it twice), submit,
and snapshot positions and equity.

The model (when the strategy needs one) is trained once on the history before the first
traded bar, as a paper or live session would; `decision_orders` with the engine's
`size_at="decision"` makes a replay through the paper broker trade what the backtest trades.
Not here yet: the risk guards and intrabar stops (the engine's RiskGate / exits), restart
reconciliation, market hours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from mltrader.config import RunConfig
from mltrader.data.bars import Bars
from mltrader.data.feeds import BarEvent
from mltrader.features.latest import latest_features
from mltrader.features.registry import compute_features
from mltrader.live.broker import Broker, OrderRejected, OrderRequest, client_order_id
from mltrader.live.journal import Journal
from mltrader.models.registry import SEQUENCE_MODELS, make_model
from mltrader.models.walkforward import stack
from mltrader.risk.orders import decision_orders
from mltrader.risk.sizing import size_targets
from mltrader.strategy.base import StrategyInputs
from mltrader.strategy.registry import get_strategy, run_strategy

log = logging.getLogger("mltrader.live.runner")

SignalFn = Callable[[Bars], pd.Series]
FEATURE_TAIL = 400  # bars of history the newest feature row needs (SMA 200, vol 60, RSI 14)


def model_signal(cfg: RunConfig, history: Bars) -> SignalFn:
    """Train the config's model on `history` (labels embargoed) and return a function giving
    the prediction row of the newest bar of a window."""
    from mltrader.features.labels import forward_return, label_lookahead
    from mltrader.pipeline import resolve_fill

    if cfg.model.name in SEQUENCE_MODELS:
        raise NotImplementedError("the runner does not serve sequence models yet")
    fill = resolve_fill(cfg, history)
    feats = stack(compute_features(history, cfg.features))
    y = forward_return(history, fill, cfg.target.horizon).to_numpy(np.float64)
    t_len, n = history.shape
    keep = t_len - label_lookahead(cfg.target.horizon)  # labels known by the last bar
    x2 = feats[:keep].reshape(-1, feats.shape[-1])
    y2 = y[:keep].reshape(-1)
    ok = np.isfinite(x2).all(axis=1) & np.isfinite(y2)
    model = make_model(cfg.model.name, dict(cfg.model.params), cfg.seed).fit(x2[ok], y2[ok])

    def signal(window: Bars) -> pd.Series:
        # the newest row only, from a bounded tail (equal to the full computation's last row,
        # tests/features/test_latest.py): the live path, milliseconds instead of a full pass
        tail = window if len(window) <= FEATURE_TAIL else window.select(
            None, window.index[-FEATURE_TAIL], None)
        x = latest_features(tail, list(cfg.features))
        out = np.full(n, np.nan)
        good = np.isfinite(x).all(axis=1)
        if good.any():
            out[good] = model.predict(x[good])
        return pd.Series(out, index=list(window.symbols))

    return signal


class Runner:
    """Trades one config's strategy on a broker, bar by bar; see the module docstring."""

    def __init__(self, cfg: RunConfig, broker: Broker, history: Bars,
                 journal: Journal | None = None, signal: SignalFn | None = None,
                 mode: str = "paper") -> None:
        self.cfg = cfg
        self.broker = broker
        self.journal = journal
        self.spec = get_strategy(cfg.strategy.name)
        if self.spec.needs_model and signal is None:
            signal = model_signal(cfg, history)
        self.signal = signal
        self.history = history
        self._preds: list[pd.Series] = []
        self.run_id = (journal.start_run(cfg.strategy.name, broker.name, mode,
                                         config=cfg.model_dump(mode="json"))
                       if journal is not None else None)
        from mltrader.pipeline import engine_settings, resolve_fill, sizing_rules

        self.settings = engine_settings(cfg, resolve_fill(cfg, history))
        self.rules = sizing_rules(cfg)
        self.sent: list[OrderRequest] = []

    def on_bar(self, time: pd.Timestamp, bars: Mapping[str, BarEvent]) -> list[OrderRequest]:
        """Process one finished bar of every symbol; returns the orders sent."""
        self._drain()
        self.history = _append(self.history, time, bars)
        w = self.history
        members: dict[str, pd.DataFrame] = {}
        if self.signal is not None:
            self._preds.append(self.signal(w))
            pad = len(w) - len(self._preds)
            pred = pd.DataFrame([[np.nan] * len(w.symbols)] * pad + [p.to_numpy() for p in
                                                                     self._preds],
                                index=w.index, columns=list(w.symbols))
            members = {"model": pred, self.cfg.model.label or self.cfg.model.name: pred}
        regimes = None
        if self.spec.needs_regimes:
            from mltrader.pipeline import strategy_regimes

            regimes = strategy_regimes(w, self.cfg)
        weights = run_strategy(self.cfg.strategy.name, StrategyInputs(w, members, regimes),
                               self.cfg.strategy.params)
        # sizing is row-wise but for the trailing volatility: a short tail gives the same row
        k = min(len(w), 2 * self.rules.vol_window + 2)
        tail = w if k == len(w) else w.select(None, w.index[-k], None)
        sized = size_targets(weights.iloc[-k:], tail, self.rules)
        row = sized.values.iloc[-1]
        account = self.broker.account()
        held = {s: p.qty for s, p in self.broker.positions().items()}
        closes = {s: e.close for s, e in bars.items()}
        s = self.settings
        deltas = decision_orders(
            {k: float(v) for k, v in row.items() if k in closes}, account.equity, closes, held,
            s.slippage_bps + s.half_spread_bps + s.commission_bps, s.rebalance_band,
            s.whole_shares, sized.unit)
        sent = []
        for sym, d in deltas.items():
            req = OrderRequest(client_order_id(self.cfg.name, time, sym, f"{d:+.6g}"), sym,
                               "buy" if d > 0 else "sell", abs(d))
            if self.journal is not None and not self.journal.record_order_intent(
                    req, self.run_id, time):
                log.warning("order %s already journaled: not sent again", req.client_order_id)
                continue
            try:
                order = self.broker.submit(req)
            except OrderRejected as e:
                log.warning("rejected %s: %s", req.client_order_id, e)
                if self.journal is not None:
                    self.journal.audit("order_rejected", {"client_order_id":
                                       req.client_order_id, "reason": str(e)},
                                       run_id=self.run_id)
                continue
            if self.journal is not None:
                self.journal.update_order(order)
            sent.append(req)
        self.sent += sent
        if self.journal is not None:
            acct = self.broker.account()
            self.journal.snapshot(self.run_id, time, self.broker.positions(), acct.cash,
                                  acct.equity)
        return sent

    def _drain(self) -> None:
        for u in self.broker.updates():
            if self.journal is None:
                continue
            if u.fill is not None:
                self.journal.record_fill(u.fill)
            self.journal.update_order(u.order)

    def finish(self) -> None:
        """Journal the last order events."""
        self._drain()


def _append(history: Bars, time: pd.Timestamp, bars: Mapping[str, BarEvent]) -> Bars:
    """The window with one more bar (NaN for a symbol without one)."""
    syms = list(history.symbols)
    row = {f: [getattr(bars[s], f) if s in bars else np.nan for s in syms]
           for f in ("open", "high", "low", "close", "volume")}
    idx = history.index.append(pd.DatetimeIndex([time]))

    def grow(arr: np.ndarray | None, field: str) -> np.ndarray | None:
        if arr is None:
            return None
        return np.vstack([arr, np.asarray(row[field], dtype=np.float64)[None, :]])

    return Bars(index=idx, symbols=history.symbols, close=grow(history.close, "close"),
                open=grow(history.open, "open"), high=grow(history.high, "high"),
                low=grow(history.low, "low"), volume=grow(history.volume, "volume"),
                source=history.source)
