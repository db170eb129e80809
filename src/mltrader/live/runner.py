"""The runner: on each finished bar, the strategy's newest targets become journaled orders.

Per bar, in this order (the backtest kernel's order within a bar; before it, the operator's
pending commands from the journal are applied: pause, flatten, kill, parameter edits, see
`live.controls`):
1. take the broker's order events and journal them (fills deduplicated against the broker's
   cumulative totals, so a replayed or re-sent event never counts twice), one transaction;
2. append the bar to the window; compute the strategy's row for it from the window only
   (features and predictions use bars up to now; strategies are causal, so the last row is
   the decision); size it with the risk rules;
3. feed the close to the risk guards (daily loss limit, kill switch): a tripped guard turns
   the bar's orders into flattening orders; otherwise the targets become share deltas at
   this close with the engine's own rule (`core.orders.decision_orders`), each checked by
   the guards (kill switch, halt, orders per symbol) as the kernel checks them; a due time
   stop closes the position;
4. journal every intent BEFORE sending (one transaction, deterministic client order ids), send;
5. keep one protective order per position for stop-loss / trailing stop / take-profit (the
   kernel's levels, `live.exits`), placed or moved after the close, working in the next bar;
6. journal decisions (features -> prediction -> target, with the model's artifact hash),
   order states, positions, equity and the runner's own state, one transaction.

At the built-in paper broker the guards also act at the fill (price sanity, trades per day,
halts), exactly where the kernel checks them; a real broker fills on its own, so there those
checks run when the order is created, against the last close.

Restart: `Runner(..., run_id=N)` continues a journaled run (guard counters, exit levels and
past predictions come back from the journal) and `reconcile()` brings journal and broker
into agreement before the first bar: orders the broker knows get their status and any fill
the journal missed; intents that never reached the broker are either re-derived by the
re-run of their bar (same client order id, sent once) or cancelled; orders the broker has
and the journal lacks are adopted. A client order id the broker knows is never sent again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from mltrader.config import RunConfig
from mltrader.core.orders import decision_orders
from mltrader.data.bars import Bars
from mltrader.data.calendars import MarketCalendar, periods_per_year, resolve_calendar, session_ids
from mltrader.data.feeds import BarEvent
from mltrader.live import controls
from mltrader.live.benchmark import buy_and_hold_shares, marked_value
from mltrader.live.brokers.base import (
    UNTRIGGERABLE_BUY_STOP,
    Broker,
    BrokerError,
    Fill,
    Order,
    OrderRejected,
    OrderRequest,
    client_order_id,
)
from mltrader.live.crashpoints import checkpoint
from mltrader.live.exits import ExitBook, ExitPlan
from mltrader.live.journal import Journal, hash_config
from mltrader.live.sync import JournalSync
from mltrader.risk.guards import RiskGate
from mltrader.risk.sizing import size_targets
from mltrader.strategy.base import StrategyInputs
from mltrader.strategy.registry import get_strategy, run_strategy

log = logging.getLogger("mltrader.live.runner")

SignalFn = Callable[[Bars], pd.Series]
_EPS = 1e-9
STALE_BARS = 5  # bars a held symbol may go without a bar before the runner warns


def _day(time: pd.Timestamp, calendar: MarketCalendar) -> int:
    """The trading session of a bar time, by the rule the backtest gives the kernel
    (`calendars.session_ids`, decided per timestamp, so one bar alone gets the same)."""
    return int(session_ids(calendar, pd.DatetimeIndex([pd.Timestamp(time)]))[0])


class _FillGate:
    """The guards at the paper broker's fills: the kernel's gate_fill / record_fill."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def check(self, symbol: str, adds: bool, ref_price: float) -> str | None:
        r = self.runner
        r._start_day(r._broker_time())
        return r.gate.check_fill(adds, ref_price, r._last_close.get(symbol, math.nan))

    def filled(self, symbol: str) -> None:
        r = self.runner
        r._start_day(r._broker_time())
        r.gate.filled()


class Runner(JournalSync):
    """Trades one config's strategy on a broker, bar by bar; see the module docstring."""

    def __init__(self, cfg: RunConfig, broker: Broker, history: Bars,
                 journal: Journal | None = None, signal: SignalFn | None = None,
                 mode: str = "paper", *, run_id: int | None = None) -> None:
        from mltrader.plan import engine_settings, guards, resolve_fill, sizing_rules

        self.cfg = cfg
        self.broker = broker
        self.journal = journal
        from mltrader.live.notify import Notifier

        # fills, guard trips, errors and a daily summary to the configured sinks (never blocks)
        self.notifier = Notifier(cfg.notify, source=cfg.name)
        self._day_note: list[Any] | None = None  # [session date, its start equity, fills]
        self._peak_eq = float(cfg.initial_cash)
        self.mode = mode
        self.spec = get_strategy(cfg.strategy.name)
        from mltrader.news_inputs import prepare_news

        prepare_news(cfg, history)  # news_* features: the configured news, scored, registered
        if self.spec.needs_model and signal is None:
            from mltrader.live.signals import WalkForwardSignal

            signal = WalkForwardSignal(cfg, history)
        self.signal = signal
        self.history = history
        # the backtest's calendar: its bars a year size by volatility (and set the borrow
        # rate), its sessions reset the daily guards (pipeline.run uses the same two)
        self.calendar = resolve_calendar(cfg.data.calendar, history.symbols)
        ppy = periods_per_year(history.index, self.calendar)
        self.settings = engine_settings(cfg, resolve_fill(cfg, history), ppy)
        self.rules = sizing_rules(cfg, ppy, history)
        self.guards = guards(cfg)
        self._session: tuple[pd.Timestamp | None, int] = (None, 0)  # last time -> session
        self.gate = RiskGate(self.guards, cfg.initial_cash, list(history.symbols))
        self.exits = ExitBook(cfg.risk.stop_loss, cfg.risk.take_profit, cfg.risk.trailing_stop)
        self.config_hash = hash_config(cfg.model_dump(mode="json"))
        self.sent: list[OrderRequest] = []
        self._pred_rows: dict[pd.Timestamp, dict[str, np.ndarray]] = {}
        self._pred_buf: dict[str, np.ndarray] = {}  # key -> (capacity, N), row = window bar
        self._held: dict[str, float] = {}  # from fills: the exits' "held before"
        self._exit_orders: dict[str, dict[str, Any]] = {}  # symbol -> protective order
        self._placed_before: list[OrderRequest] = []  # this bar's, at the broker before
        self._unconfirmed: dict[str, pd.Timestamp] = {}  # sent? the broker did not say
        self._deferred: list[Callable[[Journal], object]] | None = None
        self._fill_totals: dict[str, tuple[float, float, float]] = {}
        self._order_views: dict[str, tuple[object, ...]] = {}
        self._last_close: dict[str, float] = {}
        self._bh: dict[str, float] = {}  # buy-and-hold shares per symbol (the first bar's)
        self._missing: dict[str, int] = {}  # held symbol -> bars in a row without a bar
        self.bars_digest = ""  # chained hash of every bar taken (a resume checks its replay)
        self._eq_last = float(cfg.initial_cash)
        self._last_done: pd.Timestamp | None = None
        self._time: pd.Timestamp | None = None
        self._fill_gate = _FillGate(self)
        self.controls = controls.ControlState()  # the operator's commands (live.controls)
        if self.guards.active and hasattr(broker, "fill_gate"):
            broker.fill_gate = self._fill_gate  # type: ignore[attr-defined]
        if journal is None:
            self.run_id = None
        elif run_id is not None:
            self.run_id = run_id
            self._restore(journal, run_id)
            journal.audit("run_resumed", {"last_bar": self._last_done}, run_id=run_id)
        else:
            self.run_id = journal.start_run(cfg.strategy.name, broker.name, mode,
                                            self.config_hash)

    # ------------------------------------------------------------------ guards
    def _broker_time(self) -> pd.Timestamp:
        t = getattr(self.broker, "time", None) or getattr(self.broker, "_time", None)
        return pd.Timestamp(t) if t is not None else (self._time or pd.Timestamp.now(tz="UTC"))

    def _start_day(self, time: pd.Timestamp) -> None:
        if self.guards.active:
            if self._session[0] != time:  # called per bar and per fill: look up once
                self._session = (time, _day(time, self.calendar))
            self.gate.start_bar(self._session[1], self._eq_last)

    # ------------------------------------------------------------------ the bar
    def _predictions(self, w: Bars, time: pd.Timestamp) -> dict[str, pd.DataFrame]:
        if self.signal is None:
            return {}
        members_fn = getattr(self.signal, "members", None)
        if callable(members_fn):
            got = {k: np.asarray(v.reindex(list(w.symbols)), dtype=np.float64)
                   for k, v in members_fn(w).items()}
        else:
            got = {"model": np.asarray(self.signal(w).reindex(list(w.symbols)),
                                       dtype=np.float64)}
        self._pred_rows[time] = got
        label = self.cfg.model.label or self.cfg.model.name
        t_len, n = len(w), len(w.symbols)
        for key, row in got.items():
            buf = self._pred_buf.get(key)
            if buf is None or len(buf) < t_len:  # grow (doubling) and fill restored rows
                grown = np.full((max(2 * t_len, 64), n), np.nan)
                if buf is not None:
                    grown[: len(buf)] = buf
                else:
                    for t, rows in self._pred_rows.items():
                        if key in rows and t in w.index:
                            grown[w.index.get_loc(t)] = rows[key]
                self._pred_buf[key] = buf = grown
            buf[t_len - 1] = row
        frames = {key: pd.DataFrame(buf[:t_len], index=w.index, columns=list(w.symbols))
                  for key, buf in self._pred_buf.items()}
        frames.setdefault(label, frames["model"])
        return frames

    def on_bar(self, time: pd.Timestamp, bars: Mapping[str, BarEvent]) -> list[OrderRequest]:
        """Process one finished bar of every symbol; returns the orders sent."""
        time = pd.Timestamp(time)
        controls.apply_pending(self)  # the operator's commands, between bars
        self._time = time
        self.bars_digest = chain_digest(self.bars_digest, time, bars)
        self._start_day(time)
        self._drain(time)
        self.history = _append(self.history, time, bars)
        w = self.history
        members = self._predictions(w, time)
        regimes = None
        if self.spec.needs_regimes:
            from mltrader.plan import strategy_regimes

            regimes = strategy_regimes(w, self.cfg)
        weights = run_strategy(self.cfg.strategy.name, StrategyInputs(w, members, regimes),
                               self.cfg.strategy.params)
        # sizing is row-wise but for the trailing volatility: a short tail gives the same row
        k = min(len(w), 2 * self.rules.vol_window + 2)
        tail = w if k == len(w) else w.select(None, w.index[-k], None)
        sized = size_targets(weights.iloc[-k:], tail, self.rules)
        row = sized.values.iloc[-1]
        try:
            account = self.broker.account()
            held = {s: p.qty for s, p in self.broker.positions().items()}
        except BrokerError as e:
            log.warning("bar %s skipped: the broker's account is unavailable (%s)", time, e)
            self.notifier.error(f"bar {time} skipped: the broker's account is unavailable",
                                time)
            if self.journal is not None:
                self.journal.audit("bar_skipped", {"bar_time": time, "reason": str(e)},
                                   run_id=self.run_id)
            return []
        closes = {s: e.close for s, e in bars.items() if np.isfinite(e.close)}
        self._note_missing(time, held, closes)
        for sym, e in bars.items():
            self.exits.on_close(sym, time, e.high, e.low)
        self.exits.sync(held)
        self._held = {s: q for s, q in held.items() if q != 0}
        equity = float(account.equity)
        self._daily_summary(time, equity)
        self._deferred = []
        try:
            reqs = self._plan(time, row, equity, closes, held, sized.unit)
            self._release_exits(reqs)
            self._placed_before = []
            sent = self._send(time, reqs)
            after = dict(held)  # held once the bar's orders fill: what to protect
            for r in sent:
                signed = r.qty if r.side == "buy" else -r.qty
                after[r.symbol] = after.get(r.symbol, 0.0) + signed
            for sym, rest in self._unfilled(self._placed_before).items():
                after[sym] = after.get(sym, 0.0) + rest  # sent before a crash, this bar
            sent += self._protect(time, {s: q for s, q in after.items() if abs(q) > _EPS})
            self.sent += sent
            for sym, c in closes.items():
                self._last_close[sym] = float(c)
            if not self._bh:
                self._bh = buy_and_hold_shares(equity, self._last_close)
            self._eq_last = equity
            self._finish_bar(time, row, members, account.cash, equity)
        except BaseException:
            self._fill_totals.clear()  # a rolled-back write: the caches may be ahead of it
            self._order_views.clear()
            raise
        finally:
            self._flush()  # after a failure inside the bar: the answers still get journaled
        checkpoint("bar_done")
        return sent

    def _note_missing(self, time: pd.Timestamp, held: Mapping[str, float],
                      closes: Mapping[str, float]) -> None:
        """Warn once when a held symbol has had no bar for STALE_BARS bars in a row: it is
        valued at its last close and cannot trade (a delisting, a halt, a feed gap)."""
        for sym, qty in held.items():
            if abs(qty) <= _EPS or sym in closes:
                self._missing.pop(sym, None)
                continue
            n = self._missing[sym] = self._missing.get(sym, 0) + 1
            if n != STALE_BARS:
                continue
            last = self._last_close.get(sym, math.nan)
            log.warning("%s: no bar for %d bars (to %s) while holding %g: valued at its last "
                        "close %.4g; check the symbol (delisted, halted, or missing from the "
                        "feed) and flatten it by hand if it is gone", sym, n, time, qty, last)
            if self.journal is not None:
                self.journal.audit("stale_symbol", {"symbol": sym, "bars_missing": n,
                                                    "bar_time": time, "qty": qty,
                                                    "last_close": last}, run_id=self.run_id)

    def _plan(self, time: pd.Timestamp, row: pd.Series, equity: float,
              closes: Mapping[str, float], held: Mapping[str, float], unit: str
              ) -> list[OrderRequest]:
        """The bar's orders: flattening when a guard says so, else the strategy's deltas
        (guarded), with due time stops closing their positions."""
        tripped = self.gate.close(equity) if self.guards.active else None
        if tripped:
            detail = {"guard": tripped, "bar_time": time, "equity": equity}
            self._journal(lambda j: j.audit("guard_tripped", detail, run_id=self.run_id))
        if tripped:
            log.warning("risk guard tripped at %s: %s (equity %.2f)", time, tripped, equity)
            self.notifier.guard(tripped, f"equity {equity:,.2f}", time)
        flat = self.gate.must_flatten() if self.guards.active else None
        operator = self.controls.flatten_reason()  # taken even when a guard flattens now
        flat = flat or operator
        held_back = self.controls.blocks_adds()
        tif = "gtc" if self.cfg.execution.tif == "gtc" else "day"
        out: list[OrderRequest] = []
        if flat:
            for sym, q in sorted(held.items()):
                if q != 0:
                    out.append(OrderRequest(
                        client_order_id(self.cfg.name, time, sym, f"flatten:{flat}"), sym,
                        "sell" if q > 0 else "buy", abs(q)))
            if out:  # which orders close what, and why (the Risk page's "why")
                detail = {"reason": flat, "bar_time": time,
                          "orders": {r.client_order_id: r.symbol for r in out}}
                self._journal(lambda j: j.audit("flatten_orders", detail, run_id=self.run_id))
            return out
        s = self.settings
        deltas = decision_orders(
            {k: float(v) for k, v in row.items() if k in closes}, equity, closes, held,
            s.slippage_bps + s.half_spread_bps + s.commission_bps, s.rebalance_band,
            s.whole_shares, unit)
        due = self._time_stops(time, held)
        for sym in due:
            deltas[sym] = -held[sym]
        for sym, d in deltas.items():
            h = held.get(sym, 0.0)
            new = h + d
            adds = abs(new) > abs(h) * (1 + _EPS) or new * h < 0
            if adds and held_back and sym not in due:
                if new * h < 0:  # a flip: only its closing part reduces
                    d, adds = -h, False
                else:
                    detail = {"symbol": sym, "delta": d, "guard": held_back, "bar_time": time}
                    self._journal(lambda j, x=detail: j.audit("order_blocked", x,
                                                              run_id=self.run_id))
                    continue
            if sym not in due and self.guards.active:
                blocked = self.gate.check_order(sym, adds)
                if blocked is None and not hasattr(self.broker, "fill_gate"):
                    # a real broker fills on its own: its fill-time checks run now
                    blocked = self.gate.check_fill(adds, closes[sym],
                                                   self._last_close.get(sym, math.nan))
                if blocked is not None:
                    log.info("order blocked by %s: %s %+g", blocked, sym, d)
                    detail = {"symbol": sym, "delta": d, "guard": blocked, "bar_time": time}
                    self._journal(lambda j, x=detail: j.audit("order_blocked", x,
                                                              run_id=self.run_id))
                    continue
            intent = "time_stop" if sym in due else f"{d:+.6g}"
            out.append(OrderRequest(client_order_id(self.cfg.name, time, sym, intent), sym,
                                    "buy" if d > 0 else "sell", abs(d),
                                    time_in_force=tif))  # type: ignore[arg-type]
        return out

    def _time_stops(self, time: pd.Timestamp, held: Mapping[str, float]) -> set[str]:
        n = self.guards.time_stop
        if not n:
            return set()
        idx = self.history.index
        due = set()
        for sym, q in held.items():
            entry = self.exits.entry_time(sym)
            if q != 0 and entry is not None:
                bars_held = len(idx) - int(idx.searchsorted(entry))  # incl. the entry bar
                if bars_held >= n:  # closes at the next fill: n bars after entry
                    due.add(sym)
        return due

    def _send(self, time: pd.Timestamp, reqs: list[OrderRequest]) -> list[OrderRequest]:
        """Journal every intent first (one transaction), then send each once."""
        if not reqs:
            return []
        fresh = ([True] * len(reqs) if self.journal is None else
                 self.journal.record_order_intents(reqs, self.run_id, time))
        checkpoint("intents_journaled")
        sent = []
        for req, new in zip(reqs, fresh, strict=True):
            if not new and not self._still_unsent(req):
                log.info("order %s already at the broker: not sent again", req.client_order_id)
                self._placed_before.append(req)
                continue
            if self._submit(req, time):
                sent.append(req)
        return sent

    def _unfilled(self, reqs: list[OrderRequest]) -> dict[str, float]:
        """Signed unfilled quantity per symbol of orders this bar re-derived that the broker
        already had (sent before a crash cut the bar short): they will fill like the
        bar's new ones, so the position they leave is the one to protect."""
        out: dict[str, float] = {}
        for req in reqs:
            try:
                order = self.broker.get_order(req.client_order_id)
            except BrokerError:
                continue
            if order is None or order.done:
                continue
            rest = order.qty - order.filled_qty
            out[req.symbol] = out.get(req.symbol, 0.0) + (rest if req.side == "buy" else -rest)
        return out

    def _still_unsent(self, req: OrderRequest) -> bool:
        """A journaled intent that the broker never got (a crash between the two)."""
        assert self.journal is not None
        row = self.journal.order_row(req.client_order_id)
        if row is None or row["status"] != "pending":
            return False
        try:
            order = self.broker.get_order(req.client_order_id)
        except BrokerError as e:
            log.warning("order %s: cannot ask the broker (%s); not sent now",
                        req.client_order_id, e)
            return False
        if order is not None:
            self.journal.update_order(order)
            self._unconfirmed.pop(req.client_order_id, None)
            return False
        return True

    def _journal(self, write: Callable[[Journal], object]) -> None:
        """A journal write of the broker's answers: inside a bar it joins the bar's closing
        transaction (one commit per bar; an answer lost in a crash is recovered by
        `reconcile`: its intent is journaled and the broker knows the order)."""
        if self.journal is None:
            return
        if self._deferred is not None:
            self._deferred.append(write)
        else:
            write(self.journal)

    def _flush(self) -> None:
        deferred, self._deferred = self._deferred or [], None
        if deferred and self.journal is not None:
            with self.journal.batch():
                for write in deferred:
                    write(self.journal)

    def _submit(self, req: OrderRequest, time: pd.Timestamp) -> bool:
        cid = req.client_order_id
        try:
            order = self.broker.submit(req)
        except OrderRejected as e:
            log.warning("rejected %s: %s", cid, e)
            self.notifier.error(f"order {cid} rejected: {e}", time)
            why = str(e)
            rejected = Order(cid, "", req.symbol, req.side, req.qty, 0.0, "rejected", req.type,
                             reason=why)
            self._journal(lambda j: (j.update_order(rejected), j.audit(
                "order_rejected", {"client_order_id": cid, "reason": why},
                run_id=self.run_id)))
            self._unconfirmed.pop(cid, None)
            return False
        except BrokerError as e:
            log.warning("order %s not confirmed by the broker (%s); it stays pending in the "
                        "journal and is looked up on the next bar", cid, e)
            why = str(e)
            self._journal(lambda j: j.audit("order_submit_failed",
                                            {"client_order_id": cid, "error": why},
                                            run_id=self.run_id))
            self._unconfirmed[cid] = time
            return False
        checkpoint("submitted")
        self._unconfirmed.pop(cid, None)
        self._journal(lambda j: self._update_order(order))
        return True

    def _release_exits(self, reqs: list[OrderRequest]) -> None:
        """Cancel the protective order of a position that an order of this bar sells (or
        buys back) BEFORE that order is sent: a broker that holds the shares for the exit
        refuses the order (Alpaca), one that does not may fill both (IB: a short)."""
        for r in reqs:
            ex = self._exit_orders.get(r.symbol)
            if ex is not None and r.side == ex.get("side"):
                self._cancel(ex["cid"])
                del self._exit_orders[r.symbol]

    def _protect(self, time: pd.Timestamp, held: Mapping[str, float]) -> list[OrderRequest]:
        """One protective order per position (as held once the bar's orders fill) with the
        kernel's exit levels."""
        if not self.exits.active:
            return []
        sent: list[OrderRequest] = []
        for sym in sorted(set(held) | set(self._exit_orders)):
            plan = self.exits.plan(sym) if held.get(sym) else None
            if plan is not None and plan.qty * held[sym] < 0:
                plan = None  # the bar's order flips it: the new side is protected once filled
            elif plan is not None and abs(plan.qty - held[sym]) > _EPS:
                plan = dataclasses.replace(plan, qty=held[sym])
            have = self._exit_orders.get(sym)
            if plan is None:
                if have is not None:
                    self._cancel(have["cid"])
                    del self._exit_orders[sym]
                continue
            want = _exit_fields(plan)
            if have is not None and all(have.get(k) == v for k, v in want.items()):
                continue
            if have is not None and have.get("take_profit") == want["take_profit"] and \
                    have.get("side") == want["side"]:
                try:
                    order = self.broker.replace(have["cid"], qty=want["qty"],
                                                stop_price=want["stop"])
                    self._journal(lambda j, o=order: j.update_order(o))
                    self._exit_orders[sym] = {**want, "cid": have["cid"]}
                    continue
                except BrokerError as e:
                    log.info("exit order %s not replaced (%s): placing a new one",
                             have["cid"], e)
            if have is not None:
                self._cancel(have["cid"])
            req = _exit_request(self.cfg.name, time, plan)
            if self._send(time, [req]):
                sent.append(req)
                self._exit_orders[sym] = {**want, "cid": req.client_order_id}
            elif req in self._placed_before:  # sent before a crash cut this bar short
                self._exit_orders[sym] = {**want, "cid": req.client_order_id}
        return sent

    def _cancel(self, cid: str) -> None:
        try:
            self.broker.cancel(cid)
        except BrokerError as e:
            log.warning("cancel %s failed: %s", cid, e)
            return
        self._journal(lambda j: j.audit("order_cancel_requested", {"client_order_id": cid},
                                        run_id=self.run_id))

    def _finish_bar(self, time: pd.Timestamp, row: pd.Series,
                    members: Mapping[str, pd.DataFrame], cash: float, equity: float) -> None:
        if self.journal is None:
            return
        try:
            positions = self.broker.positions()
        except BrokerError as e:
            log.warning("positions unavailable after bar %s (%s)", time, e)
            positions = {}
        feats = getattr(self.signal, "last_features", None) or {}
        art = getattr(self.signal, "artifact_hash", "") or ""
        rows = self._pred_rows.get(time, {})
        syms = list(self.history.symbols)
        main = self.cfg.model.label or self.cfg.model.name
        decided = []
        for j, sym in enumerate(syms):
            target = row.get(sym, math.nan)
            pred = rows["model"][j] if "model" in rows else math.nan
            if self.signal is None and not np.isfinite(target):
                continue
            f = dict(feats.get(sym, {}))
            for label, arr in rows.items():
                if label not in ("model", main):
                    f[f"member:{label}"] = arr[j]
            decided.append((sym, f, pred, target))
        deferred, self._deferred = self._deferred or [], None
        with self.journal.batch():
            for write in deferred:
                write(self.journal)
            self.journal.record_decisions(self.run_id, time, decided, art)
            self.journal.snapshot(self.run_id, time, positions, cash, equity,
                                  benchmark=marked_value(self._bh, self._last_close))
            self.journal.save_runner_state(self.run_id, time, self._state())
        self._last_done = time

    def _state(self) -> dict[str, Any]:
        """What a restarted runner needs back (saved after each bar)."""
        gs, orders = self.gate.state()
        return {"gate": gs, "orders": orders, "exits": self.exits.state(),
                "held": self._held, "exit_orders": self._exit_orders,
                "last_close": self._last_close, "eq_last": self._eq_last, "bh": self._bh,
                "bars_digest": self.bars_digest, "controls": self.controls.state()}

    def _restore(self, journal: Journal, run_id: int) -> None:
        super()._restore(journal, run_id)
        saved = journal.runner_state(run_id)
        if saved is not None:
            controls.restore(self, saved[1].get("controls"))

    # ------------------------------------------------------------------ operator
    def flatten(self, reason: str) -> list[OrderRequest]:
        """Cancel every open order and close every position at market, journaled."""
        now = pd.Timestamp.now(tz="UTC").floor("s")
        for o in self.broker.open_orders():
            self._cancel(o.client_order_id)
        self._exit_orders.clear()
        reqs = [OrderRequest(client_order_id(self.cfg.name, now, p.symbol, f"flatten:{reason}"),
                             p.symbol, "sell" if p.qty > 0 else "buy", abs(p.qty))
                for p in self.broker.positions().values() if p.qty != 0]
        if self.journal is not None:
            self.journal.audit("flatten", {"reason": reason, "orders": len(reqs)},
                               actor="operator", run_id=self.run_id)
        sent = self._send(now, reqs)
        self.sent += sent
        return sent

    def finish(self) -> None:
        """Journal the last order events; deliver the notifications still queued."""
        self._drain(pd.Timestamp.max.tz_localize("UTC"))
        self.notifier.close(5.0)

    def _daily_summary(self, time: pd.Timestamp, equity: float) -> None:
        """At the first bar of a new session, the summary of the one before (notify)."""
        day = pd.Timestamp(time).date()
        self._peak_eq = max(self._peak_eq, equity)
        note = self._day_note
        if note is not None and note[0] != day:
            self.notifier.daily_summary(
                note[0], equity, equity - note[1], equity - float(self.cfg.initial_cash),
                int(note[2]), equity / self._peak_eq - 1.0, time)
        if note is None or note[0] != day:
            self._day_note = [day, equity, 0]

    def count_fill(self, fill: Fill) -> None:
        """A new fill: notified, and counted for the day's summary."""
        self.notifier.fill(fill.symbol, fill.side, fill.qty, fill.price, fill.time)
        if self._day_note is not None:
            self._day_note[2] += 1


def chain_digest(prev: str, time: pd.Timestamp, bars: Mapping[str, BarEvent]) -> str:
    """sha256 of the previous digest and one bar time's events (symbols sorted, prices as
    exact float reprs): equal chains mean the same bars were taken, in the same order."""
    parts = [prev, pd.Timestamp(time).isoformat()]
    for sym in sorted(bars):
        e = bars[sym]
        parts.append(f"{sym}:{e.open!r}:{e.high!r}:{e.low!r}:{e.close!r}:{e.volume!r}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _exit_fields(plan: ExitPlan) -> dict[str, Any]:
    return {"side": plan.side, "qty": abs(plan.qty), "stop": plan.stop,
            "take_profit": plan.take_profit}


def _exit_request(strategy: str, time: pd.Timestamp, plan: ExitPlan) -> OrderRequest:
    """A stop order carrying the take-profit (OCO); a take-profit alone rides on a stop that
    cannot trigger (0 for a long), so the order stays a reduce-only protective exit."""
    stop = plan.stop
    if stop is None:
        stop = 0.0 if plan.qty > 0 else 10 * UNTRIGGERABLE_BUY_STOP
    return OrderRequest(client_order_id(strategy, time, plan.symbol, f"exit:{plan.side}"),
                        plan.symbol, plan.side, abs(plan.qty), "stop",  # type: ignore[arg-type]
                        "gtc", stop_price=stop, take_profit=plan.take_profit)


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
