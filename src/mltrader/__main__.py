"""`python -m mltrader` runs the command line."""

from mltrader.cli import main

main()
