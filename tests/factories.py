"""Estimator factories that test specs name as ``factories:function``."""

from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.linear_model import LogisticRegression
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


class SlowClassifier(ClassifierMixin, BaseEstimator):
    """A majority-class classifier whose fit sleeps ``delay`` seconds (time limits, signals)."""

    def __init__(self, delay=0.0, C=1.0):
        self.delay = delay
        self.C = C

    def fit(self, X, y):
        import time

        import numpy as np

        time.sleep(self.delay)
        self.classes_, counts = np.unique(y, return_counts=True)
        self.majority_ = self.classes_[np.argmax(counts)]
        return self

    def predict(self, X):
        import numpy as np

        return np.full(len(X), self.majority_)


class PickyLogistic(LogisticRegression):
    """A LogisticRegression whose fit raises for C above 1 (a fit that fails)."""

    def fit(self, X, y, sample_weight=None):
        if self.C > 1.0:
            raise ValueError(f"C={self.C} is above 1.0")
        return super().fit(X, y, sample_weight)


class ThreadProbe(ClassifierMixin, BaseEstimator):
    """Scores what a fit sees: native pool sizes, OMP_NUM_THREADS and joblib's n_jobs.

    ``score`` = max threads of the BLAS/OpenMP pools + 100 * OMP_NUM_THREADS
    + 10000 * joblib's effective n_jobs.
    """

    def __init__(self, k=0):
        self.k = k

    def fit(self, X, y):
        import os

        import numpy as np
        from joblib import Parallel
        from threadpoolctl import threadpool_info

        pools = [p["num_threads"] for p in threadpool_info()]
        omp = int(os.environ.get("OMP_NUM_THREADS", "0"))
        n_jobs = Parallel()._effective_n_jobs()
        self.seen_ = max(pools or [0]) + 100 * omp + 10000 * n_jobs
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        import numpy as np

        return np.full(len(X), self.classes_[0])

    def score(self, X, y, sample_weight=None):
        return float(self.seen_)


class CountingProjection(TransformerMixin, BaseEstimator):
    """A PCA that counts its fits (``fits``, in this process; one line per fit in ``log``),
    sleeps ``delay`` seconds in each, and raises in ``fit`` (``fail``) or ``transform``."""

    fits = 0

    def __init__(self, n_components=2, log=None, delay=0.0, fail=False, fail_transform=False):
        self.n_components = n_components
        self.log = log
        self.delay = delay
        self.fail = fail
        self.fail_transform = fail_transform

    def fit(self, X, y=None):
        import os
        import time

        from sklearn.decomposition import PCA

        type(self).fits += 1
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()} {self.n_components}\n")
        time.sleep(self.delay)
        if self.fail:
            raise ValueError("CountingProjection was told to fail")
        self.pca_ = PCA(self.n_components, random_state=0).fit(X)
        return self

    def fit_transform(self, X, y=None):  # never fails with fail_transform: scoring does
        return self.fit(X, y).pca_.transform(X)

    def transform(self, X):
        if self.fail_transform:
            raise ValueError("CountingProjection was told to fail in transform")
        return self.pca_.transform(X)


def counted_pipeline():
    """scale, a counted projection, then a classifier that fails for C > 1."""
    return Pipeline([("scale", StandardScaler()), ("proj", CountingProjection()),
                     ("clf", PickyLogistic(max_iter=1000))])


def pca_logit():
    """scale, PCA, logit."""
    from sklearn.decomposition import PCA

    return Pipeline([("scale", StandardScaler()), ("pca", PCA(random_state=0)),
                     ("clf", LogisticRegression(max_iter=1000))])


def slow_spec(delay: float = 0.3, n_samples: int = 200, candidates: int = 6) -> str:
    """A spec of ``candidates`` x 4 folds of :class:`SlowClassifier` fits of ``delay`` s each
    (long enough to watch, signal or kill a run)."""
    grid = ", ".join(str(c) for c in range(1, candidates + 1))
    return f"""\
data:
  generator: sklearn.datasets.make_classification
  params: {{n_samples: {n_samples}, n_features: 5, random_state: 3}}
cv: {{splitter: StratifiedKFold, n_splits: 4}}
scoring: [accuracy]
models:
  slow:
    estimator: factories.SlowClassifier
    grid: {{delay: [{delay}], C: [{grid}]}}
"""


class ShiftOnFit(TransformerMixin, BaseEstimator):
    """``fit_transform`` returns X + 1, ``transform`` X (like a target encoder's cross
    fitting: what the next step is fitted on differs from what it predicts on)."""

    def fit(self, X, y=None):
        return self

    def fit_transform(self, X, y=None):
        return X + 1.0

    def transform(self, X):
        return X


def shifted_logit():
    """ShiftOnFit, then a logistic regression."""
    return Pipeline([("shift", ShiftOnFit()), ("clf", LogisticRegression(max_iter=1000))])
