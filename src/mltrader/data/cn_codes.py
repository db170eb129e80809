"""China A-share stock codes: one normal form, ``600519.SH``, from the spellings users and
vendors write (600519, "sh600519", "600519.SS", "sz.000001", "000001.XSHE", an int that lost
its leading zeros in a CSV, ...).

The exchange follows from the code's first digits (the exchanges' numbering rule):
60xxxx, 688/689 (STAR) and 900 (B shares) are Shanghai (SH); 0xxxxx, 2xxxxx (B shares) and
3xxxxx (ChiNext) are Shenzhen (SZ); 4xxxxx, 8xxxxx and 920xxx (the codes the Beijing Stock
Exchange gives since 2024) are Beijing (BJ). A spelled-out exchange must agree with that rule:
``000001.SH`` is the SSE Composite *index*, not a stock, and is refused (see `normalize_index`).
Funds, bonds and other 1/5/7-codes are not A-share stocks and are refused too.
"""

from __future__ import annotations

import numbers
import re
from typing import Literal

from mltrader.errors import DataError

__all__ = ["Board", "akshare_code", "board", "exchange_of", "is_cn_code", "normalize_code",
           "normalize_index"]

Board = Literal["main", "chinext", "star", "bse"]
EXCHANGES: tuple[str, ...] = ("SH", "SZ", "BJ")
# every spelling of an exchange, as a suffix (.SH) or a prefix (sh600519, sh.600519)
_ALIASES = {"SH": "SH", "SS": "SH", "XSHG": "SH", "SSE": "SH",
            "SZ": "SZ", "XSHE": "SZ", "SZSE": "SZ",
            "BJ": "BJ", "BSE": "BJ", "XBSE": "BJ"}
_PREFIX = re.compile(r"^(SH|SZ|BJ)\.?(\d{1,6})$")
_SUFFIX = re.compile(r"^(\d{1,6})\.([A-Z]+)$")
_DIGITS = re.compile(r"^\d{1,6}$")
FORMS = "600519, sh600519, 600519.SH, 600519.SS or 000001.XSHE"


def exchange_of(digits: str) -> str | None:
    """The exchange (SH, SZ, BJ) of a 6-digit stock code by the numbering rule; None if the
    code is not an A-share stock's (funds, bonds, ...)."""
    head = digits[:1]
    if digits.startswith("92"):
        return "BJ"
    if head in ("6", "9"):
        return "SH"
    if head in ("0", "2", "3"):
        return "SZ"
    if head in ("4", "8"):
        return "BJ"
    return None


def _split(value: object) -> tuple[str, str | None]:
    """(zero-padded digits, exchange as written or None) of any accepted spelling."""
    if isinstance(value, bool) or value is None:
        raise DataError(f"{value!r} is not an A-share code; write it as {FORMS}")
    if isinstance(value, numbers.Integral):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        f = float(value)
        if not f.is_integer():
            raise DataError(f"{value!r} is not an A-share code; write it as {FORMS}")
        text = str(int(f))
    elif isinstance(value, str):
        text = value.strip().upper()
    else:
        raise DataError(f"{value!r} ({type(value).__name__}) is not an A-share code; "
                        f"write it as {FORMS}")
    exch: str | None = None
    if _DIGITS.match(text):
        digits = text
    elif m := _PREFIX.match(text):
        exch, digits = m.group(1), m.group(2)
    elif (m := _SUFFIX.match(text)) and m.group(2) in _ALIASES:
        digits, exch = m.group(1), _ALIASES[m.group(2)]
    else:
        raise DataError(f"{value!r} is not an A-share code; write it as {FORMS}")
    if 4 < len(digits) < 6:  # a lost 0 leaves "00xxxx" -> at most 4 digits; 5 is a typo
        raise DataError(f"{value!r}: {digits} has 5 digits, and padding it to "
                        f"{digits.zfill(6)} would be a guess; write all 6 digits")
    return digits.zfill(6), exch


def normalize_code(value: object) -> str:
    """The normal form ``600519.SH`` of an A-share stock code in any accepted spelling.

    Up to 4 digits are zero-padded (a CSV reader turned 000001 into 1; a lost zero leaves at
    most 4, so 5 digits are refused as ambiguous); an exchange
    written out must match the numbering rule (module doc), else DataError.
    """
    digits, written = _split(value)
    exch = exchange_of(digits)
    if exch is None:
        raise DataError(f"{value!r}: {digits} is not an A-share stock code (stocks start with "
                        "0, 2, 3, 4, 6, 8 or 9; funds and bonds are not supported)")
    if written is not None and written != exch:
        raise DataError(f"{value!r}: the stock {digits} trades on {exch}, not {written} "
                        f"({digits}.{written} may be an index); write {digits}.{exch}")
    return f"{digits}.{exch}"


def normalize_index(value: object) -> str:
    """The normal form of an index code: ``000300.SH``. A written exchange is kept (index
    codes overlap stock codes: 000001.SH is the SSE Composite); a bare 399xxx is Shenzhen,
    899xxx Beijing, any other bare code Shanghai / CSI (000300, 000905, 000001)."""
    digits, written = _split(value)
    if written is not None:
        return f"{digits}.{written}"
    exch = "SZ" if digits.startswith("399") else "BJ" if digits.startswith("899") else "SH"
    return f"{digits}.{exch}"


def akshare_code(value: object) -> str:
    """The bare 6 digits akshare's stock functions take (``600519``)."""
    return normalize_code(value).split(".", 1)[0]


def board(code: object) -> Board:
    """The board of a stock: main, chinext (300/301), star (688/689) or bse (Beijing)."""
    digits, exch = normalize_code(code).split(".", 1)
    if exch == "BJ":
        return "bse"
    if digits[:3] in ("688", "689"):
        return "star"
    if digits[:3] in ("300", "301", "302"):
        return "chinext"
    return "main"


def is_cn_code(value: object) -> bool:
    """True when `normalize_code` accepts the value."""
    try:
        normalize_code(value)
    except DataError:
        return False
    return True
