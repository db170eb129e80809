"""A-share code normalisation: every accepted spelling maps to 600519.SH, the exchange comes
from the numbering rule, anything else is one DataError line (examples and round trips)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mltrader.data.cn_codes import (
    akshare_code,
    board,
    exchange_of,
    is_cn_code,
    normalize_code,
    normalize_index,
)
from mltrader.errors import DataError


@pytest.mark.parametrize("raw, want", [
    (600519, "600519.SH"), ("600519", "600519.SH"), ("sh600519", "600519.SH"),
    ("SH600519", "600519.SH"), ("600519.SH", "600519.SH"), ("600519.SS", "600519.SH"),
    ("600519.ss", "600519.SH"), (" sh.600519 ", "600519.SH"), ("600519.XSHG", "600519.SH"),
    ("sz000001", "000001.SZ"), ("000001.SZ", "000001.SZ"), ("000001.XSHE", "000001.SZ"),
    ("1", "000001.SZ"), (1, "000001.SZ"), (np.int64(1), "000001.SZ"), (1.0, "000001.SZ"),
    (2594, "002594.SZ"), ("300750", "300750.SZ"), ("688981", "688981.SH"),
    ("689009", "689009.SH"), ("430047", "430047.BJ"), ("bj430047", "430047.BJ"),
    ("832000.BJ", "832000.BJ"), ("920002", "920002.BJ"), ("900901", "900901.SH"),
    ("200002", "200002.SZ"), ("1.SZ", "000001.SZ"),
])
def test_normalize_examples(raw, want):
    assert normalize_code(raw) == want
    assert is_cn_code(raw)


@pytest.mark.parametrize("raw", [
    "AAPL", "", "60051", "6005190", "600519.HK", "600519.SZ", "000001.SH", "sh000001",
    "510300", "159919", "110030", "700001", None, True, 1.5, -1, "600519.0.SH", "SH 600519",
    ["600519"],
])
def test_bad_codes_raise_one_line(raw):
    with pytest.raises(DataError) as e:
        normalize_code(raw)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 240
    assert not is_cn_code(raw)


def test_bad_code_messages_say_the_fix():
    with pytest.raises(DataError, match=r"trades on SZ, not SH.*write 000001\.SZ"):
        normalize_code("000001.SH")
    with pytest.raises(DataError, match="600519.SH"):
        normalize_code("AAPL")
    with pytest.raises(DataError, match="funds and bonds"):
        normalize_code("510300")


@pytest.mark.parametrize("code, want", [
    ("600519", "main"), ("000001.SZ", "main"), ("002594", "main"), ("300750", "chinext"),
    ("301269.SZ", "chinext"), ("688981", "star"), ("689009", "star"), ("430047", "bse"),
    ("832000", "bse"), ("920002", "bse"), ("601398.SH", "main"),
])
def test_board(code, want):
    assert board(code) == want


def test_akshare_code():
    assert akshare_code("600519.SH") == "600519"
    assert akshare_code(1) == "000001"
    assert akshare_code("sz300750") == "300750"
    with pytest.raises(DataError):
        akshare_code("600519.SZ")


def test_index_codes_keep_their_exchange():
    assert normalize_index("000300") == "000300.SH"
    assert normalize_index("000001.SH") == "000001.SH"
    assert normalize_index("sh000001") == "000001.SH"
    assert normalize_index("399001") == "399001.SZ"
    assert normalize_index("sz399006") == "399006.SZ"
    with pytest.raises(DataError):
        normalize_index("CSI300")


STOCK_HEADS = ["600", "601", "603", "605", "688", "689", "900", "000", "001", "002", "003",
               "200", "300", "301", "430", "830", "870", "920"]
codes = st.builds(lambda h, n: h + f"{n:03d}", st.sampled_from(STOCK_HEADS),
                  st.integers(0, 999))


@given(codes)
def test_round_trip_every_spelling(digits):
    norm = normalize_code(digits)
    num, exch = norm.split(".")
    assert num == digits and exch == exchange_of(digits)
    spellings = [digits, int(digits), exch.lower() + digits, exch + digits,
                 f"{exch.lower()}.{digits}", norm, norm.lower(),
                 f"{digits}.{ {'SH': 'SS', 'SZ': 'SZ', 'BJ': 'BJ'}[exch] }",
                 f"{digits}.{ {'SH': 'XSHG', 'SZ': 'XSHE', 'BJ': 'BSE'}[exch] }"]
    for s in spellings:
        assert normalize_code(s) == norm, s
    assert normalize_code(norm) == norm  # idempotent
    assert akshare_code(norm) == digits
    assert board(norm) in ("main", "chinext", "star", "bse")


@given(codes, st.sampled_from(["SH", "SZ", "BJ"]))
def test_a_wrong_exchange_is_refused(digits, exch):
    good = exchange_of(digits)
    if exch == good:
        assert normalize_code(f"{digits}.{exch}") == f"{digits}.{exch}"
    else:
        with pytest.raises(DataError, match=f"write {digits}.{good}"):
            normalize_code(f"{digits}.{exch}")


@given(st.integers(1, 9_999))
def test_ints_that_lost_their_zeros_are_padded(n):
    assert normalize_code(n) == normalize_code(f"{n:06d}")
    assert normalize_code(str(n)) == normalize_code(f"{n:06d}")
