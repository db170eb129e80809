"""Causal features (row t uses nothing after bar t's close) and training labels."""

from mltrader.features.registry import FEATURES, compute_features, register_feature

__all__ = ["FEATURES", "compute_features", "register_feature"]
