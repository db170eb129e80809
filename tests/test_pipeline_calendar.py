"""A run follows its data's calendar: crypto annualises with 365 days, a short out-of-sample
period is flagged, and `data check` judges a file against what `backtest` would use."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from mltrader.backtest.metrics import bar_returns
from mltrader.config import config_from_dict
from mltrader.data.bars import Bars
from mltrader.data.files import save_file
from mltrader.pipeline import run
from tests.test_cli import invoke, plain


def _crypto(start: str = "2019-01-01", end: str = "2021-06-30", seed: int = 0) -> Bars:
    """Daily bars on every calendar day, weekends included, as crypto trades."""
    idx = pd.date_range(start, end, freq="D", tz="UTC")
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.03, (len(idx), 2)), axis=0))
    return Bars(index=idx, symbols=("BTC-USD", "ETH-USD"), close=close, source="t")


def _cfg(first_test_year: int, **data: object):
    return config_from_dict({
        "data": data or {}, "strategy": {"name": "crossover", "fast": 10, "slow": 40},
        "walk_forward": {"first_test_year": first_test_year}})


@pytest.fixture(scope="module")
def crypto() -> Bars:
    return _crypto()


def test_a_crypto_daily_run_annualises_with_365_days(crypto):
    out = run(_cfg(2020), bars=crypto)
    m = out.metrics
    assert (m["periods_per_year"], m["calendar"], m["interval"]) == (365.0, "24/7", "1d")
    assert m["annualised_from_under_a_year"] is False
    r = bar_returns(out.benchmark.equity, out.benchmark.initial_cash)
    assert m["buy_and_hold"]["annual_volatility"] == pytest.approx(
        np.std(r, ddof=1) * np.sqrt(365), rel=1e-12)
    assert "Annualised with 365 bars a year (calendar 24/7, interval 1d)." in out.notes
    assert not any("less than a year" in w for w in out.warnings)


def test_a_short_out_of_sample_period_is_flagged(crypto, tmp_path):
    from mltrader.runs import write_run

    out = run(_cfg(2021), bars=crypto)
    bars = out.metrics["out_of_sample"]["bars"]
    assert bars == 181 and out.metrics["annualised_from_under_a_year"] is True
    assert (f"The out-of-sample period is {bars} bars (< one year of 365): CAGR, volatility "
            "and Sharpe below are annualised from less than a year; read them as rough."
            in out.warnings)
    html = write_run(out, tmp_path)["report"].read_text()
    assert "CAGR (from &lt; 1 year)" in html


def test_an_explicit_calendar_overrides_the_symbols(crypto):
    out = run(_cfg(2020, calendar="24/5"), bars=crypto)
    assert (out.metrics["periods_per_year"], out.metrics["calendar"]) == (260.0, "24/5")


def test_data_check_judges_a_file_as_backtest_does(tmp_path):
    path = tmp_path / "crypto.csv"
    save_file(_crypto(seed=1), path)
    r = invoke("data", "check", path)
    assert r.exit_code == 0, r.output
    text = plain(r.output)
    got = re.search(r"judged against calendar (\S+) \(default for the symbols\), "
                    r"interval (\S+) \(detected\)", text)
    assert got is not None, text
    out = run(_cfg(2020, source="file", path=str(path)))
    assert (out.metrics["calendar"], out.metrics["interval"]) == got.groups() == ("24/7", "1d")
    # given on the command line, nothing is marked as a default
    r = invoke("data", "check", path, "--calendar", "XNYS", "--interval", "1d")
    text = plain(r.output)
    assert "judged against calendar XNYS, interval 1d" in text
    assert re.search(r"non_session: \d+ - BTC-USD 2019-01-01, 2019-01-05, 2019-01-06", text), text


def test_cleaning_fills_the_days_of_the_data_calendar(tmp_path):
    from mltrader.pipeline import load_data

    full = _crypto("2021-01-01", "2021-03-31")
    keep = full.index != pd.Timestamp("2021-01-09", tz="UTC")  # a Saturday: a crypto day
    path = tmp_path / "gap.csv"
    save_file(Bars(index=full.index[keep], symbols=full.symbols, close=full.close[keep],
                   source="t"), path)
    cfg = config_from_dict({"data": {"source": "file", "path": str(path), "clean": "ffill"}})
    bars, notes = load_data(cfg)
    assert pd.Timestamp("2021-01-09", tz="UTC") in bars.index and len(bars) == len(full)
    assert any(n.startswith("Cleaning (ffill, calendar 24/7, interval 1d) changed 2 cell(s)")
               for n in notes), notes


def test_weekend_bars_on_an_exchange_calendar_are_flagged(tmp_path):
    """A Binance export named BTCUSDT-1d-2021-01.csv names no calendar (XNYS by default): its
    weekend bars must not be annualised silently as NYSE sessions."""
    crypto = _crypto(seed=2)
    odd = Bars(index=crypto.index, symbols=("BTCUSDT-1D", "X"), close=crypto.close, source="t")
    out = run(_cfg(2020), bars=odd)
    assert out.metrics["calendar"] == "XNYS"
    hint = [w for w in out.warnings if "Saturdays and Sundays, when XNYS never trades" in w]
    assert len(hint) == 1 and "set data.calendar: 24/7 (--set data.calendar=24/7)" in hint[0]
    path = tmp_path / "odd.csv"
    save_file(odd, path)
    text = plain(invoke("data", "check", path).output)
    assert "when XNYS never trades" in text and "set --calendar 24/7" in text
    # with the calendar stated, or on stock data, nothing is said
    assert not any("never trades" in w for w in run(_cfg(2020, calendar="24/7"),
                                                    bars=odd).warnings)
    assert "never trades" not in plain(invoke("data", "check", path, "--calendar",
                                              "24/7").output)


def test_a_stated_interval_is_checked_against_the_file_even_when_daily(tmp_path):
    """--interval 1d on a weekly file (and data check --interval 1wk on a daily one) is an
    error, as any other disagreement: 1d used to pass unchecked, being the default."""
    daily = _crypto("2018-01-01", "2021-12-31", seed=3)
    weekly = Bars(index=daily.index[::7], symbols=daily.symbols, close=daily.close[::7],
                  source="t")
    wpath, dpath = tmp_path / "w.csv", tmp_path / "d.csv"
    save_file(weekly, wpath)
    save_file(daily, dpath)
    with pytest.raises(Exception, match=r"data.interval says 1d bars but they are 1wk apart"):
        run(_cfg(2020, source="file", path=str(wpath), interval="1d"))
    out = run(_cfg(2020, source="file", path=str(wpath)))  # unset: detected
    assert (out.metrics["interval"], out.metrics["periods_per_year"]) == ("1wk", 52.0)
    r = invoke("data", "check", dpath, "--interval", "1wk")
    assert r.exit_code != 0
    assert "--interval says 1wk bars but they are 1d apart" in plain(r.output)


def test_close_only_exits_say_which_way_each_level_is_off():
    """On close-only data a take-profit fills at the breaching close: the report says it is
    optimistic (and a stop's fill pessimistic) instead of calling every fill 'worse'."""
    from mltrader.pipeline import close_only_exits_note

    both = close_only_exits_note(0.03, 0.05, None)
    assert "take-profit fills at the close beyond its target (optimistic" in both
    assert "stop fills at the close that breaches it (pessimistic" in both
    assert "optimistic" not in close_only_exits_note(0.03, None, None)
    assert "pessimistic" not in close_only_exits_note(None, 0.05, None)
