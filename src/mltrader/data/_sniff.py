"""Guess a CSV's text encoding, field separator and decimal mark from its first lines, so
European (``;`` + ``1234,5``), tab (MetaTrader) and pipe exports load without editing."""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

SEPARATORS = (",", ";", "\t", "|")
SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
HEAD_BYTES = 1 << 16
SAMPLE_LINES = 50

_COMMA_DECIMAL = re.compile(r"^[+-]?(\d*|\d{1,3}(\.\d{3})+),\d+$")  # 1234,5 or 1.234,5
_DOT_DECIMAL = re.compile(r"^[+-]?\d*\.\d+([eE][+-]?\d+)?$")
_COMMA_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3}){2,}$")


def read_head(path: Path) -> bytes:
    """The first bytes of the (possibly gzipped) file; b"" when unreadable (the real read
    then reports the problem)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(HEAD_BYTES)
        if raw[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as gz:
                raw = gz.read(HEAD_BYTES)
        return raw
    except (OSError, EOFError):
        return b""


def encoding_of(head: bytes) -> str:
    """'utf-16' for a UTF-16 byte-order mark (MetaTrader exports), else UTF-8 (BOM allowed)."""
    return "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"


def sample_lines(head: bytes, encoding: str) -> list[str]:
    """Up to `SAMPLE_LINES` non-blank lines; a line cut by the byte limit is left out."""
    text = head.decode(encoding, errors="replace")
    lines = text.splitlines()
    if len(head) >= HEAD_BYTES and lines:
        lines = lines[:-1]
    return [ln for ln in lines if ln.strip()][:SAMPLE_LINES]


def _widths(lines: list[str], sep: str) -> list[int]:
    try:
        return [len(row) for row in csv.reader(lines, delimiter=sep)]
    except csv.Error:
        return [0]


def sniff_separator(lines: list[str]) -> str:
    """The candidate that splits every sampled line into the same number (> 1) of fields, the
    most fields winning; else the one splitting the header most; comma when nothing splits."""
    if not lines:
        return ","
    best, best_key = ",", (False, 1)
    for sep in SEPARATORS:
        w = _widths(lines, sep)
        key = (w[0] > 1 and all(x == w[0] for x in w), w[0])
        if key > best_key:
            best, best_key = sep, key
    return best


def sniff_decimal(lines: list[str], sep: str) -> str:
    """',' when the separator is not a comma and numbers look like ``1234,5`` or ``1.234,5``
    (and none like ``1234.5`` or ``1,234,567``); '.' otherwise."""
    if sep == "," or len(lines) < 2:
        return "."
    cells = [c.strip() for row in csv.reader(lines[1:], delimiter=sep) for c in row]
    if any(_DOT_DECIMAL.match(c) or _COMMA_THOUSANDS.match(c) for c in cells):
        return "."
    return "," if any(_COMMA_DECIMAL.match(c) for c in cells) else "."
