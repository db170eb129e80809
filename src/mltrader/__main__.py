"""`python -m mltrader` runs the command line."""

from mltrader.entry import main

main()
