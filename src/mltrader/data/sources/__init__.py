"""Market-data sources behind one interface (see base.py)."""
