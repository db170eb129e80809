"""A-share runs end to end: akshare (its client faked offline) and a plain file of 6-digit
codes go through the same panel, rules and report as the bundled stocks."""

from __future__ import annotations

import pandas as pd
import pytest

from mltrader.config import config_from_dict, load_yaml
from mltrader.data.ashare import ASHARE_FILE, _bundled
from mltrader.errors import ConfigError
from mltrader.pipeline import run

SYMS = ["600519.SH", "000858.SZ", "601088.SH"]
RULE = {"strategy": {"name": "crossover", "fast": 5, "slow": 20},
        "walk_forward": {"first_test_year": 2019}, "market": "cn_a",
        "costs": {"commission_bps": 2.5, "slippage_bps": 5}}


def _long() -> pd.DataFrame:
    df = _bundled(ASHARE_FILE)
    return df[df["symbol"].isin(SYMS) & (df["date"] <= "2020-06-30")].reset_index(drop=True)


def _check(out) -> None:
    m = out.metrics
    assert m["market"]["currency"] == "CNY" and m["index"]["name"] == "000300.SH"
    assert set(m["symbols"]) == set(SYMS)
    fills = out.strategy.fills
    assert len(fills) > 5 and (fills["qty"].abs() % 100 == 0).all()  # board lots
    assert (fills["commission"] >= 5.0).all()  # the minimum per order
    assert any(k.startswith("market: limit-up lock") for k in m["risk"]["orders"])


def test_akshare_source_runs_through_the_panel(monkeypatch):
    asked = {}

    def fake(symbols, start, end, cache=True):
        asked["symbols"] = list(symbols)
        return _long()

    monkeypatch.setattr("mltrader.data.cn_fetch.fetch_ashare", fake)
    raw = load_yaml("data: {source: akshare, symbols: [600519, 000858, 601088], "
                    "start: 2017-01-01, adjust: qfq}")
    out = run(config_from_dict({**RULE, **raw}))
    assert asked["symbols"] == ["600519", "000858", "601088"]  # 000858 kept as a code
    _check(out)


@pytest.mark.parametrize("code", ["plain", "prefixed"])
def test_a_file_of_six_digit_codes(tmp_path, code):
    df = _long()
    digits = df["symbol"].str[:6]
    df["symbol"] = digits if code == "plain" else (
        df["symbol"].str[-2:].str.lower() + digits)
    path = tmp_path / "cn.csv"
    df.to_csv(path, index=False)
    out = run(config_from_dict({**RULE, "data": {"source": "file", "path": str(path)}}))
    _check(out)


def test_a_share_data_needs_the_market():
    with pytest.raises(ConfigError, match="market: cn_a"):
        config_from_dict({"data": {"source": "bundled", "dataset": "ashare_csi300"}})
