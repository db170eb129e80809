"""User-facing errors: one clear line naming the problem and the fix, never a traceback."""

from __future__ import annotations


class MltraderError(Exception):
    """An error caused by the user's input (data, config, arguments).

    The CLI prints ``str(err)`` as a single line and exits non-zero. Messages should name
    the file / row / column / key, say what is wrong, and say how to fix it.
    """


class DataError(MltraderError):
    """Bad market data: malformed file, NaN or non-positive prices, unsorted index, ..."""


class ConfigError(MltraderError):
    """Bad run configuration: unknown key, wrong type, impossible value."""
