"""The `mltrader` console script: imports the command line lazily, so a Ctrl-C that lands
while the heavy libraries load (the first second) is one line, not a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the command line; an interrupt before a command takes over exits 130 quietly."""
    try:
        from mltrader.cli import main as run

        run()
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
