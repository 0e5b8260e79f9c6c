"""Estimator factories that test specs name as ``factories:function``."""

from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC


def scaled_svc():
    """A pipeline whose grid keys look like ``svc__C``."""
    return Pipeline([("scale", StandardScaler()), ("svc", SVC())])


def broken_factory():
    """A factory that fails when called."""
    raise RuntimeError("factory exploded")


def tiny_data(n_samples=60, random_state=0):
    """A small (X, y) generator for specs."""
    from sklearn.datasets import make_classification

    return make_classification(n_samples=n_samples, n_features=5, random_state=random_state)
