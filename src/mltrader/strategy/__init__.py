"""Strategies: pure functions from causal predictions to target weights."""
