"""Models behind scikit-learn's estimator API, and walk-forward training that cannot peek."""
