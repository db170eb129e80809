"""Market data: the `Bars` panel, bundled datasets and file loaders."""

from mltrader.data.bars import Bars

__all__ = ["Bars"]
