"""The runner's side of journal-broker agreement: restart, reconcile, and order events.

A restarted runner gets its guard counters, exit levels and past predictions back from the
journal (`_restore`); `reconcile()` brings journal and broker into agreement before the first
bar; on every bar `_drain` journals the broker's order events in one transaction, each fill
clipped to what the broker's cumulative total leaves unjournaled, so a replayed or re-sent
event never counts twice. `Runner` (runner.py) mixes this in and owns the state it uses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mltrader.config import RunConfig
from mltrader.data.bars import Bars
from mltrader.live.brokers.base import Broker, BrokerError, Fill, Order, OrderUpdate
from mltrader.live.crashpoints import checkpoint
from mltrader.live.exits import ExitBook
from mltrader.live.journal import Journal, hash_config
from mltrader.risk.guards import RiskGate

log = logging.getLogger("mltrader.live.runner")  # the runner's log: one stream per run
_EPS = 1e-9


class JournalSync:
    """Restart, reconcile and order-event handling of `Runner` (see the module docstring)."""

    # set by Runner.__init__
    broker: Broker
    journal: Journal | None
    history: Bars
    gate: RiskGate
    exits: ExitBook
    run_id: int | None
    bars_digest: str
    _last_done: pd.Timestamp | None
    _eq_last: float
    _held: dict[str, float]
    _exit_orders: dict[str, dict[str, Any]]
    _last_close: dict[str, float]
    _bh: dict[str, float]
    _unconfirmed: dict[str, pd.Timestamp]
    _fill_totals: dict[str, tuple[float, float, float]]
    _order_views: dict[str, tuple[object, ...]]
    _pred_rows: dict[pd.Timestamp, dict[str, np.ndarray]]

    # ------------------------------------------------------------------ restart
    @staticmethod
    def resume_point(journal: Journal, cfg: RunConfig, broker_name: str
                     ) -> tuple[int, pd.Timestamp | None] | None:
        """The newest journaled run of this config at this broker and the last bar it
        completed (None when it never completed one), or None when there is no such run."""
        run_id = journal.find_run(hash_config(cfg.model_dump(mode="json")), broker_name)
        if run_id is None:
            return None
        state = journal.runner_state(run_id)
        return run_id, (state[0] if state else None)

    def _restore(self, journal: Journal, run_id: int) -> None:
        saved = journal.runner_state(run_id)
        if saved is not None:
            self._last_done, st = saved
            self.gate.restore(np.asarray(st["gate"], dtype=np.float64),
                              np.asarray(st["orders"], dtype=np.int64))
            self.exits.restore(st.get("exits", {}))
            self._held = {k: float(v) for k, v in st.get("held", {}).items()}
            self._exit_orders = dict(st.get("exit_orders", {}))
            self._last_close = {k: float(v) for k, v in st.get("last_close", {}).items()}
            self._eq_last = float(st.get("eq_last", self._eq_last))
            self._bh = {k: float(v) for k, v in st.get("bh", {}).items()}
            self.bars_digest = str(st.get("bars_digest", ""))
        dec = journal.decisions_frame(run_id)
        if len(dec):  # what the model said on the bars already traded (strategies look back)
            syms = list(self.history.symbols)
            for t, grp in dec.groupby("bar_time"):
                rows: dict[str, np.ndarray] = {}
                main = np.full(len(syms), np.nan)
                for _, r in grp.iterrows():
                    if r["symbol"] not in syms:
                        continue
                    j = syms.index(r["symbol"])
                    main[j] = np.nan if pd.isna(r["prediction"]) else r["prediction"]
                    for k, v in (r["features"] or {}).items():
                        if k.startswith("member:"):
                            rows.setdefault(k[7:], np.full(len(syms), np.nan))[j] = (
                                np.nan if v is None else v)
                rows["model"] = main
                self._pred_rows[pd.Timestamp(t)] = rows

    def reconcile(self) -> dict[str, int]:
        """Bring journal and broker into agreement before the first bar; returns counts."""
        counts = {"orders_checked": 0, "fills_recovered": 0, "cancelled": 0, "adopted": 0,
                  "left_for_rerun": 0, "position_mismatches": 0}
        if self.journal is None:
            return counts
        j = self.journal
        for row in j.pending_orders():
            cid = row["client_order_id"]
            counts["orders_checked"] += 1
            try:
                order = self.broker.get_order(cid)
            except BrokerError as e:
                log.warning("reconcile: cannot look up %s (%s); will retry next bar", cid, e)
                self._unconfirmed[cid] = pd.Timestamp(row["bar_time"] or pd.Timestamp.min)
                continue
            if order is None:
                bar = row["bar_time"]
                if row["status"] == "pending" and bar is not None and (
                        self._last_done is None or pd.Timestamp(bar) > self._last_done):
                    counts["left_for_rerun"] += 1  # its bar runs again: sent then, once
                    self._unconfirmed[cid] = pd.Timestamp(bar)
                    continue
                self._cancel_unsent(cid, row)
                counts["cancelled"] += 1
                continue
            counts["fills_recovered"] += self._recover_fills(order)
            j.update_order(order)
        for order in self.broker.open_orders():
            if j.order_row(order.client_order_id) is None:
                j.update_order(order)  # adopted (run_id NULL), audited by the journal
                counts["adopted"] += 1
                log.warning("reconcile: adopted open order %s (%s %s %g) the journal did "
                            "not know", order.client_order_id, order.side, order.symbol,
                            order.qty)
        held = {s: p.qty for s, p in self.broker.positions().items()}
        self._catch_up_entries(held)
        implied = self._journal_positions()
        for sym in sorted(set(held) | set(implied)):
            if abs(held.get(sym, 0.0) - implied.get(sym, 0.0)) > 1e-6:
                counts["position_mismatches"] += 1
                log.warning("reconcile: %s: broker holds %g, the journal's fills imply %g; "
                            "trading from the broker's position", sym, held.get(sym, 0.0),
                            implied.get(sym, 0.0))
        self._held = dict(held)
        self.exits.sync(held)
        j.audit("reconciled", counts, run_id=self.run_id)
        log.info("reconciled journal and broker: %s", counts)
        return counts

    def _journal_positions(self) -> dict[str, float]:
        assert self.journal is not None
        fills = self.journal.fills_for(self.run_id)  # this run's (a journal may hold others)
        if not len(fills):
            return {}
        signed = np.where(fills["side"] == "buy", 1.0, -1.0) * fills["qty"]
        out = signed.groupby(fills["symbol"]).sum()
        return {str(k): float(v) for k, v in out.items() if abs(v) > 1e-9}

    def _catch_up_entries(self, held: Mapping[str, float]) -> None:
        """Positions opened (or flipped) after the restored state was saved, i.e. inside the
        bar a crash cut short after its fills were journaled: their entries come from the
        journal's fills, so the bar's re-run places their protective orders (the state of
        the bar before knew nothing of them)."""
        assert self.journal is not None
        stale = sorted(s for s, q in held.items() if q != 0.0 and (
            (self._held.get(s, 0.0) > 0) != (q > 0) or self._held.get(s, 0.0) == 0.0))
        if not stale or not self.exits.active:
            return
        fills = self.journal.fills_for()
        for sym in stale:
            rows = fills[fills["symbol"] == sym]
            signed = [(r.qty if r.side == "buy" else -r.qty, r.price, r.time)
                      for r in rows.itertuples()]
            pos, start = 0.0, 0
            for k, (q, _, _) in enumerate(signed):  # the current position's first fill
                if abs(pos) < _EPS:
                    start = k
                pos += q
            before = 0.0
            for q, px, t in signed[start:]:
                self.exits.on_fill(sym, q, px, t, before)
                before += q

    def _cancel_unsent(self, cid: str, row: Mapping[str, Any]) -> None:
        assert self.journal is not None
        self.journal.update_order(Order(cid, "", row["symbol"], row["side"], row["qty"], 0.0,
                                        "cancelled", row["type"],
                                        reason="never reached the broker"))
        log.warning("order %s never reached the broker: cancelled in the journal", cid)

    def _recover_fills(self, order: Order) -> int:
        """Journal fills the broker has and the journal lacks (lost in a crash)."""
        assert self.journal is not None
        q, notional, comm = self._totals(order.client_order_id) or (0.0, 0.0, 0.0)
        missing = order.filled_qty - q
        if missing <= _EPS:
            return 0
        listed = getattr(self.broker, "fills", None)
        n = 0
        if callable(listed):
            for f in listed(order.client_order_id):
                if self._record_fill(f, order):
                    n += 1
            return n
        avg = order.avg_fill_price or 0.0
        price = (order.filled_qty * avg - notional) / missing if avg else avg
        fill = Fill(order.client_order_id, order.broker_id,
                    f"{order.broker_id}:{order.filled_qty:g}:reconciled", order.symbol,
                    order.side, missing, price, max(order.commission - comm, 0.0),
                    order.submitted_at or pd.Timestamp.now(tz="UTC"))
        return int(self._record_fill(fill, order))

    # ------------------------------------------------------------------ events
    def _record_fill(self, fill: Fill, order: Order) -> bool:
        """Journal a fill, clipped to what the broker's cumulative total leaves unjournaled
        (a broker that re-reports an execution under a new id never counts it twice)."""
        assert self.journal is not None
        totals = self._totals(fill.client_order_id)
        if totals is not None:
            q, notional, _ = totals
            if order.filled_qty > 0:
                missing = order.filled_qty - q
                if missing <= _EPS:
                    return False
                if missing < fill.qty - _EPS:  # part of it is journaled already
                    avg = order.avg_fill_price or fill.price
                    price = (order.filled_qty * avg - notional) / missing
                    share = missing / fill.qty
                    fill = Fill(fill.client_order_id, fill.broker_id, fill.fill_id,
                                fill.symbol, fill.side, missing, price,
                                fill.commission * share, fill.time)
        if not self.journal.record_fill(fill):
            return False
        q, notional, comm = totals or (0.0, 0.0, 0.0)
        self._fill_totals[fill.client_order_id] = (q + fill.qty, notional + fill.qty * fill.price,
                                                   comm + fill.commission)
        self._apply_fill(fill)
        self.count_fill(fill)
        return True

    def count_fill(self, fill: Fill) -> None:
        """A fill journaled for the first time (the runner notifies it)."""

    def _totals(self, cid: str) -> tuple[float, float, float] | None:
        """Journaled (qty, notional, commission) of an order's fills; None when the journal
        does not know the order. Cached: this runner is the journal's only writer of fills."""
        assert self.journal is not None
        got = self._fill_totals.get(cid)
        if got is None and self.journal.order_row(cid) is not None:
            got = self._fill_totals[cid] = self.journal.filled_totals(cid)
        return got

    def _apply_fill(self, fill: Fill) -> None:
        signed = fill.qty if fill.side == "buy" else -fill.qty
        before = self._held.get(fill.symbol, 0.0)
        self.exits.on_fill(fill.symbol, signed, fill.price, fill.time, before)
        after = before + signed
        if abs(after) < 1e-10 * max(1.0, abs(signed)):
            self._held.pop(fill.symbol, None)
        else:
            self._held[fill.symbol] = after

    def _drain(self, now: pd.Timestamp) -> None:
        """Journal the broker's order events (one transaction) and settle unconfirmed sends."""
        updates: list[OrderUpdate] = list(self.broker.updates())
        checkpoint("updates_taken")
        if self.journal is None:
            for u in updates:
                if u.fill is not None:
                    self._apply_fill(u.fill)
                self._forget_exit(u.order)
            return
        try:
            with self.journal.batch():
                for u in updates:
                    if u.fill is not None:
                        self._record_fill(u.fill, u.order)
                    self._update_order(u.order)
                    self._unconfirmed.pop(u.order.client_order_id, None)
                    self._forget_exit(u.order)
        except BaseException:
            self._fill_totals.clear()  # rolled back: the caches may hold what was not written
            self._order_views.clear()
            raise
        checkpoint("drained")
        for cid, bar in list(self._unconfirmed.items()):
            if bar >= now:
                continue  # its bar is being run again: the re-run sends it once
            try:
                order = self.broker.get_order(cid)
            except BrokerError as e:
                log.warning("order %s: still cannot ask the broker (%s)", cid, e)
                continue
            del self._unconfirmed[cid]
            if order is None:
                row = self.journal.order_row(cid)
                if row is not None and row["status"] == "pending":
                    self._cancel_unsent(cid, row)
            else:
                self._recover_fills(order)
                self.journal.update_order(order)

    def _update_order(self, order: Order) -> None:
        """Journal the broker's view of an order unless this runner journaled exactly that
        view already (a broker echoes an accepted order as a "new" event)."""
        assert self.journal is not None
        view = (order.status, order.filled_qty, order.avg_fill_price, order.broker_id,
                order.qty, order.limit_price, order.stop_price, order.reason)
        if self._order_views.get(order.client_order_id) == view:
            return
        self.journal.update_order(order)
        self._order_views[order.client_order_id] = view

    def _forget_exit(self, order: Order) -> None:
        if order.done:
            for sym, ex in list(self._exit_orders.items()):
                if ex["cid"] == order.client_order_id:
                    del self._exit_orders[sym]
