"""Brokers behind one interface (base.py: the `Broker` protocol, orders, fills, positions):
the built-in paper broker (paper.py, its SQLite state in paper_store.py), Alpaca (alpaca*.py)
and Interactive Brokers (ib*.py). Nothing is imported here, and alpaca-py / ib_async only
inside the adapter functions that use them.
"""
