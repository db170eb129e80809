"""Risk: sizing, exits and guards shared by the backtest engine and the live runner."""
