"""Backtest vs journal, trade by trade: does the paper session trade what the backtest trades?

`parity_report(run_dir)` re-runs `mltrader.pipeline.run` on the session folder's config.yaml
(the same data: the folder's config names it), takes the backtest's fills
(`RunOutput.strategy.fills`) and the journal's fills of the session's run
(`Journal.fills_for`), both up to the last bar the session completed, and matches them by
(symbol, bar time of the fill). Several executions of one symbol in one bar are summed
(quantity, commission) and price-averaged by quantity. A share-for-share comparison needs
`execution.size_at: decision` (the live rule); with "fill" the backtest sizes at the fill
price, which a live bot cannot know, and quantities differ by design (said in `notes`).

Dust: at the leverage or cash limit the engine resizes an order to the room left, which
rounding can make a fill of 1e-11 shares; the paper broker may fill the same dust or
nothing, and the journal never records a fill under 1e-9 shares (live/sync.py). A (symbol,
bar) whose fills on each side that has any are worth under `DUST` (value and commission)
is no trade on either side: left out of the table, counted in `dust` and named in `notes`.
The final equity is still compared, so dust that mattered would show there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mltrader.errors import MltraderError

TOLERANCE = 1e-6  # relative
DUST = 0.01  # account currency: a (symbol, bar) traded for less on each side is no trade
COLUMNS = ("symbol", "time", "side", "qty_backtest", "qty_journal", "qty_diff",
           "price_backtest", "price_journal", "price_diff", "commission_backtest",
           "commission_journal", "commission_diff", "status")


@dataclass(frozen=True)
class ParityReport:
    """The per-trade table and its summary."""

    frame: pd.DataFrame  # COLUMNS; status: match, differs, backtest only, journal only
    # (compare_fills' "dust" rows are left out of it and counted in `dust`)
    run_id: int
    until: pd.Timestamp | None  # the session's last completed bar (compared up to it)
    matched: int
    backtest_only: int
    journal_only: int
    differs: int
    max_qty_diff: float
    max_price_diff: float
    max_commission_diff: float
    equity_backtest: float | None
    equity_journal: float | None
    tolerance: float = TOLERANCE
    notes: list[str] = field(default_factory=list)
    dust: int = 0  # (symbol, bar) rows of fills worth under DUST, not compared

    @property
    def equity_ok(self) -> bool:
        if self.equity_backtest is None or self.equity_journal is None:
            return self.equity_backtest is None and self.equity_journal is None
        return _close(self.equity_backtest, self.equity_journal, self.tolerance)

    @property
    def ok(self) -> bool:
        """Every trade matched, none differs beyond the tolerance, and final equity agrees."""
        return (self.backtest_only == 0 and self.journal_only == 0 and self.differs == 0
                and self.equity_ok)

    def summary(self) -> str:
        """One line: matched / unmatched counts, the largest differences, final equity."""
        def money(v: float | None) -> str:
            return "n/a" if v is None else f"{v:,.2f}"

        until = f" up to {self.until}" if self.until is not None else ""
        verdict = "PARITY" if self.ok else "MISMATCH"
        dust = f" ({self.dust} worth under {DUST:g}: dust, left out)" if self.dust else ""
        return (f"{verdict}{until}: {self.matched} trade(s) matched ({self.differs} differ "
                f"beyond {self.tolerance:g} relative), {self.backtest_only} only in the "
                f"backtest, {self.journal_only} only in the journal{dust}; max |qty diff| "
                f"{self.max_qty_diff:.6g}, max |price diff| {self.max_price_diff:.6g}, max "
                f"|commission diff| {self.max_commission_diff:.6g}; final equity backtest "
                f"{money(self.equity_backtest)} vs journal {money(self.equity_journal)}")


def _close(a: float, b: float, tol: float) -> bool:
    if not (np.isfinite(a) and np.isfinite(b)):
        return False
    scale = max(abs(a), abs(b))
    return abs(a - b) <= tol * scale or abs(a - b) <= 1e-12


def _per_bar(frame: pd.DataFrame, time: str, qty: pd.Series) -> pd.DataFrame:
    """One row per (symbol, fill time): signed qty summed, price averaged by |qty|."""
    df = pd.DataFrame({
        "symbol": frame["symbol"].astype(str).to_numpy(),
        "time": pd.to_datetime(frame[time], utc=True).to_numpy(),
        "qty": qty.to_numpy(dtype=float),
        "notional": (qty.abs() * frame["price"].astype(float)).to_numpy(),
        "abs_qty": qty.abs().to_numpy(dtype=float),
        "commission": frame["commission"].astype(float).to_numpy(),
    })
    df["time"] = pd.to_datetime(df["time"], utc=True)
    g = df.groupby(["symbol", "time"], sort=True).sum(numeric_only=True)
    g["price"] = g["notional"] / g["abs_qty"].where(g["abs_qty"] > 0)
    return g[["qty", "price", "commission"]]


def _dust(qty: float, price: float, commission: float) -> bool:
    """A side of a (symbol, bar) row that traded nothing worth a cent (or nothing at all)."""
    if pd.isna(qty):
        return True
    value = abs(qty) * (0.0 if pd.isna(price) else abs(price))
    return value < DUST and abs(commission) < DUST


def compare_fills(backtest: pd.DataFrame, journal: pd.DataFrame,
                  tolerance: float = TOLERANCE) -> pd.DataFrame:
    """The per-trade table of backtest fills (engine columns: date, symbol, signed qty,
    price, commission) against journal fills (time, symbol, side, qty, price,
    commission), matched by (symbol, fill time). A row worth under `DUST` on both sides
    (one side may have nothing) has status "dust": no trade on either side."""
    bt = _per_bar(backtest, "date", backtest["qty"].astype(float))
    sign = np.where(journal["side"].astype(str) == "buy", 1.0, -1.0)
    jn = _per_bar(journal, "time", journal["qty"].astype(float) * sign)
    both = bt.add_suffix("_backtest").join(jn.add_suffix("_journal"), how="outer").reset_index()
    rows = []
    for r in both.itertuples(index=False):
        in_bt, in_jn = not pd.isna(r.qty_backtest), not pd.isna(r.qty_journal)
        qty = r.qty_backtest if in_bt else r.qty_journal
        if _dust(r.qty_backtest, r.price_backtest, r.commission_backtest) and \
                _dust(r.qty_journal, r.price_journal, r.commission_journal):
            status = "dust"
        elif in_bt and in_jn:
            same = all(_close(float(a), float(b), tolerance) for a, b in (
                (r.qty_backtest, r.qty_journal), (r.price_backtest, r.price_journal),
                (r.commission_backtest, r.commission_journal)))
            status = "match" if same else "differs"
        else:
            status = "backtest only" if in_bt else "journal only"
        rows.append({
            "symbol": r.symbol, "time": r.time, "side": "buy" if qty > 0 else "sell",
            "qty_backtest": abs(r.qty_backtest) if in_bt else np.nan,
            "qty_journal": abs(r.qty_journal) if in_jn else np.nan,
            "qty_diff": r.qty_journal - r.qty_backtest,
            "price_backtest": r.price_backtest, "price_journal": r.price_journal,
            "price_diff": r.price_journal - r.price_backtest,
            "commission_backtest": r.commission_backtest,
            "commission_journal": r.commission_journal,
            "commission_diff": r.commission_journal - r.commission_backtest,
            "status": status})
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    return out.sort_values(["time", "symbol"], kind="stable").reset_index(drop=True)


def _max_abs(s: pd.Series) -> float:
    s = s.abs().dropna()
    return float(s.max()) if len(s) else 0.0


def parity_report(run_dir: str | Path, tolerance: float = TOLERANCE) -> ParityReport:
    """Backtest the session folder's config again and compare its fills with the journal's
    (see the module docstring). MltraderError for a folder that is not a session."""
    from mltrader.live.journal import Journal
    from mltrader.live.session import BROKER_FILE, CONFIG_FILE, JOURNAL_FILE, session_config
    from mltrader.pipeline import run

    folder = Path(run_dir)
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise MltraderError(f"--tolerance must be a relative difference >= 0 (e.g. 1e-6), got "
                            f"{tolerance}")
    if folder.exists() and not folder.is_dir():
        raise MltraderError(f"{folder} is a file, not a session folder; pass the folder "
                            "`mltrader paper --session DIR` wrote")
    if not folder.is_dir():
        raise MltraderError(f"session folder {folder} not found; pass the folder `mltrader "
                            "paper --session DIR` (or `mltrader paper -o DIR`) wrote")
    for name in (CONFIG_FILE, JOURNAL_FILE):
        if not (folder / name).is_file():
            raise MltraderError(f"{folder} has no {name}: not a paper session folder; pass "
                                "the folder `mltrader paper` wrote")
    cfg = session_config(folder)
    notes = []
    if cfg.execution.size_at != "decision":
        notes.append(f"execution.size_at is {cfg.execution.size_at!r}, not 'decision': the "
                     "backtest sizes at the fill price, which live trading cannot know, so "
                     "quantities differ by design; compared anyway")
    journal = Journal(f"sqlite:///{folder / JOURNAL_FILE}")
    try:
        runs = journal.runs_frame()
        paper = runs[runs["broker"] == "paper"] if len(runs) else runs
        if paper.empty:
            raise MltraderError(f"journal {folder / JOURNAL_FILE} has no paper run yet; run "
                                f"`mltrader paper --session {folder}` first")
        run_id = int(paper["id"].iloc[-1])
        if len(paper) > 1:
            notes.append(f"the journal holds {len(paper)} paper runs; comparing the newest "
                         f"(run {run_id})")
        fills = journal.fills_for(run_id)
        eq = journal.equity_frame(run_id)
    finally:
        journal.close()
    if not (folder / BROKER_FILE).exists():
        notes.append(f"{BROKER_FILE} is missing: the paper account may not be this one's")
    until = eq.index[-1] if len(eq) else None
    if len(fills):  # an interrupted bar's fills: compared once the session completes it
        later = pd.to_datetime(fills["time"], utc=True) > until if until is not None else (
            np.ones(len(fills), dtype=bool))
        if later.any():
            notes.append(f"{int(later.sum())} journaled fill(s) belong to a bar after the last "
                         "completed one (the session stopped inside it); not compared until "
                         "the session resumes and completes that bar")
            fills = fills[~np.asarray(later)]
    out = run(cfg)
    bt = out.strategy.fills
    bt_time = pd.to_datetime(bt["date"], utc=True)
    equity_bt: float | None = None
    if until is not None:
        bt = bt[bt_time <= until]
        curve = out.strategy.equity.copy()
        curve.index = pd.to_datetime(curve.index, utc=True)
        upto = curve[curve.index <= until]
        equity_bt = float(upto.iloc[-1]) if len(upto) else None
    else:
        bt = bt.iloc[0:0]
    frame = compare_fills(bt, fills, tolerance)
    dust = frame[frame["status"] == "dust"]
    if len(dust):
        named = ", ".join(f"{r.symbol} {pd.Timestamp(r.time).date()}"
                          for r in dust.head(5).itertuples(index=False))
        more = f" and {len(dust) - 5} more" if len(dust) > 5 else ""
        notes.append(f"{len(dust)} fill(s) worth under {DUST:g} left out ({named}{more}): "
                     "dust of resizing an order to the leverage / cash room, which the "
                     "journal does not record; the final equity includes them")
        frame = frame[frame["status"] != "dust"].reset_index(drop=True)
    counts = frame["status"].value_counts()
    return ParityReport(
        frame=frame, run_id=run_id, until=until,
        matched=int(counts.get("match", 0) + counts.get("differs", 0)),
        backtest_only=int(counts.get("backtest only", 0)),
        journal_only=int(counts.get("journal only", 0)),
        differs=int(counts.get("differs", 0)),
        max_qty_diff=_max_abs(frame["qty_diff"]), max_price_diff=_max_abs(frame["price_diff"]),
        max_commission_diff=_max_abs(frame["commission_diff"]),
        equity_backtest=equity_bt,
        equity_journal=float(eq["equity"].iloc[-1]) if len(eq) else None,
        tolerance=tolerance, notes=notes, dust=len(dust))


def parity_frame(run_dir: str | Path) -> pd.DataFrame:
    """The per-trade backtest-vs-journal table of a paper session folder."""
    return parity_report(run_dir).frame


def parity_summary(run_dir: str | Path) -> str:
    """The one-line summary of a paper session folder's parity."""
    return parity_report(run_dir).summary()
