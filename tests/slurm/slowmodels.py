"""An estimator whose fit sleeps: jobs that run long enough to be signalled or cancelled."""

import time

from sklearn.linear_model import LogisticRegression


class SleepyLogit(LogisticRegression):
    """``LogisticRegression`` that sleeps ``sleep`` seconds before each fit."""

    def __init__(self, sleep=0.5, C=1.0, max_iter=200):
        super().__init__(C=C, max_iter=max_iter)
        self.sleep = sleep

    def fit(self, X, y, sample_weight=None):
        time.sleep(self.sleep)
        return super().fit(X, y, sample_weight)
