"""HTML report: one inlined plotly.js, no external references, warnings, labels and symbols."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from mltrader.backtest.metrics import compute_metrics
from mltrader.backtest.report import format_metric, round_sig, write_report
from mltrader.backtest.result import FILL_COLUMNS, TRADE_COLUMNS, BacktestResult

SURVIVORSHIP = "Survivorship bias: the universe is today's index members <tested>"
BUNDLE_BANNER = re.compile(r"^\* plotly\.js v\d", re.MULTILINE)


def synthetic_result(symbols: list[str], n_bars: int, seed: int,
                     initial_cash: float = 100_000.0) -> BacktestResult:
    """Random-walk prices, rotating equal weights, a fill per position change, some trades."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2005-01-03", periods=n_bars)
    prices = pd.DataFrame(100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_bars, len(symbols))),
                                                 axis=0)), index=index, columns=symbols)
    held = (rng.random((n_bars // 20 + 1, len(symbols))) > 0.5).repeat(20, axis=0)[:n_bars]
    positions = pd.DataFrame(np.where(held, 10.0, 0.0), index=index, columns=symbols)
    value = (positions * prices).sum(axis=1)
    cash = pd.Series(initial_cash - value.iloc[0], index=index)
    equity = cash + value
    weights = (positions * prices).div(equity, axis=0)
    changes = positions.diff().fillna(positions.iloc[0]).stack()
    changes = changes[changes != 0]
    fills = pd.DataFrame({
        "date": changes.index.get_level_values(0),
        "symbol": changes.index.get_level_values(1),
        "qty": changes.to_numpy(),
        "price": [prices.at[d, s] for d, s in changes.index],
    })
    fills["notional"] = fills["qty"].abs() * fills["price"]
    fills["commission"] = 0.001 * fills["notional"]
    fills["slippage"] = 0.0005 * fills["notional"]
    n_trades = 60
    entry = index[np.sort(rng.integers(0, n_bars - 30, n_trades))]
    pnl = rng.normal(5, 50, n_trades)
    trades = pd.DataFrame({
        "symbol": rng.choice(symbols, n_trades), "entry_date": entry,
        "exit_date": entry + pd.Timedelta(days=28), "entry_price": 100.0, "exit_price": 101.0,
        "max_qty": 10.0, "pnl": pnl, "return": pnl / 1000.0, "bars_held": 20,
        "open": [False] * (n_trades - 1) + [True],
    })
    return BacktestResult(equity=equity, cash=cash, positions=positions, weights=weights,
                          fills=fills[list(FILL_COLUMNS)], trades=trades[list(TRADE_COLUMNS)],
                          initial_cash=initial_cash, fill_timing="next bar's close")


def _write(tmp_path: Path, symbols: list[str], n_bars: int) -> tuple[Path, str]:
    strategy = synthetic_result(symbols, n_bars, seed=1)
    benchmark = synthetic_result(["SPX"], n_bars, seed=2)
    metrics = {"strategy": compute_metrics(strategy), "buy & hold": compute_metrics(benchmark)}
    path = write_report(
        tmp_path / "out" / "report.html", title="Momentum <test> report", strategy=strategy,
        benchmark=benchmark, metrics=metrics,
        notes=["Close-only data: orders fill at the next bar's close",
               "Out-of-sample period 2005-01-03 to 2022-12-28"],
        warnings=[SURVIVORSHIP],
    )
    return path, path.read_text(encoding="utf-8")


def _outside_bundle(text: str) -> str:
    """The page with the inlined plotly.js <script> removed (the bundle names CDNs itself)."""
    banner = BUNDLE_BANNER.search(text)
    assert banner is not None
    start = text.rfind("<script", 0, banner.start())
    end = text.index("</script>", banner.end())
    return text[:start] + text[end:]


def test_report_is_self_contained(tmp_path: Path) -> None:
    path, text = _write(tmp_path, ["AAA", "BBB", "CCC"], 300)
    assert path.exists() and path == tmp_path / "out" / "report.html"
    assert len(BUNDLE_BANNER.findall(text)) == 1
    assert text.count("Plotly.newPlot(") == 3
    rest = _outside_bundle(text)
    assert "cdn.plot.ly" not in rest and "https://cdn" not in rest
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", rest)
    assert "http://" not in rest and "https://" not in rest.replace("https://plot.ly", "")


def test_report_content(tmp_path: Path) -> None:
    _, text = _write(tmp_path, ["AAA", "BBB", "CCC"], 300)
    rest = _outside_bundle(text)
    assert "Survivorship bias: the universe is today&#x27;s index members &lt;tested&gt;" in rest
    assert "<tested>" not in rest
    assert "Momentum &lt;test&gt; report" in rest
    assert "Close-only data: orders fill at the next bar&#x27;s close" in rest
    for label in ("Total return", "CAGR", "Sharpe", "Sortino", "Max drawdown",
                  "Longest drawdown (days)", "Win rate", "Trades", "Turnover (x/yr)",
                  "Total costs", "Exposure"):
        assert f"<td>{label}" in rest, label
    assert "<th>strategy</th>" in rest and "<th>buy &amp; hold</th>" in rest
    for symbol in ("AAA", "BBB", "CCC"):
        assert f'"name":"{symbol}"' in rest
    assert '"name":"Gross exposure"' in rest
    assert '"yaxis.type":"log"' in rest
    assert 'class="best"' in rest
    assert "Last 50 of 60 trades" in rest
    assert rest.count("<td>open</td>") == 1


def test_large_report_stays_small(tmp_path: Path) -> None:
    symbols = [f"S{i:02d}" for i in range(20)]
    path, _ = _write(tmp_path, symbols, 4500)
    assert path.stat().st_size < 8 * 1024 * 1024


def test_formatting_helpers() -> None:
    assert format_metric("total_return", 0.1234) == "12.34%"
    assert format_metric("sharpe", None) == "n/a"
    assert format_metric("sharpe", float("nan")) == "n/a"
    assert format_metric("trades", 1234) == "1,234"
    assert format_metric("turnover", 2.5) == "2.50x"
    assert format_metric("unknown_key", 1.0 / 3) == "0.333333"
    np.testing.assert_array_equal(round_sig(np.array([123456789.0, 0.0, np.nan, -0.00123456789])),
                                  np.array([123457000.0, 0.0, np.nan, -0.00123457],
                                           dtype=np.float32))
