"""Backtesting: the execution engine, costs, metrics and the HTML report."""
