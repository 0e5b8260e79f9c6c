"""The expensive step of ``bench_pipeline.py``: a PCA whose fit first burns ``work`` seconds
of CPU time (matrix products), and logs each fit to ``log``. Importable by hpcml's ranks and
by scikit-learn's loky workers (``benchmarks/`` goes on their ``PYTHONPATH``)."""

from __future__ import annotations

import os
import time

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


class CostlyPCA(TransformerMixin, BaseEstimator):
    """PCA after ``work`` CPU seconds of matrix products per fit; one line per fit in ``log``."""

    def __init__(self, n_components=20, work=1.0, log=None):
        self.n_components = n_components
        self.work = work
        self.log = log

    def fit(self, X, y=None):
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()}\n")
        a = np.ones((160, 160))
        t0 = time.process_time()
        while time.process_time() - t0 < self.work:
            a = a @ a / 160.0
        self.pca_ = PCA(self.n_components, random_state=0).fit(X)
        return self

    def transform(self, X):
        return self.pca_.transform(X)


def costly_pipeline(log=None, work=1.0, memory=None):
    """scale, the costly PCA, a cheap logistic regression."""
    return Pipeline([("scale", StandardScaler()), ("pca", CostlyPCA(work=work, log=log)),
                     ("clf", LogisticRegression(max_iter=500))], memory=memory)
