"""Cost of ``fit_timeout`` (fits in a forked worker process): 2,000 DummyClassifier fits.

Run by hand: ``.venv/bin/python benchmarks/bench_timeout.py``. Prints the wall time of one
rank with and without a time limit, and the extra cost per fit.
"""

import time

from hpcml import run_experiment
from hpcml.engines.base import SerialEngine


def spec(fit_timeout=None):
    s = {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": 400, "n_features": 10, "random_state": 0}},
        "cv": {"splitter": "KFold", "n_splits": 5},
        "scoring": ["accuracy"],
        "refit": False,
        "models": {"dummy": {"estimator": "sklearn.dummy.DummyClassifier",
                             "grid": {"constant": list(range(400))}}},
    }
    if fit_timeout:
        s["fit_timeout"] = fit_timeout
    return s


def timed(fit_timeout):
    t = time.perf_counter()
    run_experiment(spec(fit_timeout), engine=SerialEngine(), progress=False)
    return time.perf_counter() - t


if __name__ == "__main__":
    timed(None)  # warm up imports
    base = min(timed(None) for _ in range(3))
    limited = min(timed(60.0) for _ in range(3))
    n = 2000
    print(f"2,000 fits, 1 rank: no limit {base:.2f} s, fit_timeout {limited:.2f} s")
    print(f"extra cost per fit with fit_timeout: {(limited - base) / n * 1e3:.3f} ms")
