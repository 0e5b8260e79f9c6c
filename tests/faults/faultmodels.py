"""Estimators and data for the fault tests (named in specs as ``faultmodels:NAME``)."""

from __future__ import annotations

import ctypes
import os
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class Majority(ClassifierMixin, BaseEstimator):
    """A majority-class classifier whose fit can sleep, hang in C, hog memory or be slow
    only when refit on all the data (``refit_delay``, for signals during the refit)."""

    def __init__(self, delay=0.0, C=1.0, hang=False, hog=False, refit_delay=0.0, n_all=0):
        self.delay = delay
        self.C = C
        self.hang = hang
        self.hog = hog
        self.refit_delay = refit_delay
        self.n_all = n_all

    def fit(self, X, y):
        if self.hang:  # native code that never returns (a signal only interrupts one sleep)
            while True:
                ctypes.CDLL(None).sleep(10_000)
        if self.hog:  # allocate and touch memory until the kernel kills us
            chunks = []
            while True:
                chunks.append(np.ones(16 << 20, dtype=np.uint8))
        time.sleep(self.delay)
        if self.refit_delay and len(X) == self.n_all:  # the refit, announced by refit.started
            folder = os.environ.get("HPCML_TEST_MARKS")
            if folder:
                open(os.path.join(folder, "refit.started"), "w").close()
            time.sleep(self.refit_delay)
        self.classes_, counts = np.unique(y, return_counts=True)
        self.majority_ = self.classes_[np.argmax(counts)]
        return self

    def predict(self, X):
        return np.full(len(X), self.majority_)


def small(n_samples=80, delay=0.0):
    """A small classification set; ``delay`` seconds of "loading" first."""
    from sklearn.datasets import make_classification

    time.sleep(delay)
    return make_classification(n_samples=n_samples, n_features=5, random_state=0)


def pid_file_data(path, n_samples=80):
    """Data, after writing this process's pid to ``path`` (tests find the rank)."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return small(n_samples)


def marked_data(folder, n_samples=80, delay=1.0):
    """Data that take ``delay`` seconds to load, announced by ``FOLDER/load.started``."""
    from pathlib import Path

    Path(folder, "load.started").touch()
    return small(n_samples, delay)
