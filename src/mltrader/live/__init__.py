"""Live and paper trading: brokers, the runner, the journal."""
