"""mltrader: machine-learning stock trading that is honest about out-of-sample results."""

__version__ = "0.1.0"
