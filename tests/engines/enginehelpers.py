"""Shared by the engine tests: the optional packages (a skip, except in CI), specs, runs."""

from __future__ import annotations

import csv
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

import hpcmlcmd as cmd  # noqa: E402
from factories import slow_spec  # noqa: E402

#: engine -> the packages its extra installs
NEEDS = {"loky": [], "dask": ["distributed"], "ray": ["ray"], "spark": ["pyspark", "joblibspark"]}
TIMING = {"mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"}

SPEC = """\
data:
  generator: sklearn.datasets.make_classification
  params: {n_samples: 240, n_features: 6, random_state: 4}
cv: {splitter: StratifiedKFold, n_splits: 3, shuffle: true, random_state: 0}
scoring: [accuracy, roc_auc]
refit: accuracy
return_train_score: true
models:
  lr:
    estimator: sklearn.linear_model.LogisticRegression
    grid: {C: [0.01, 0.1, 1.0, 10.0]}
  tree:
    estimator: sklearn.tree.DecisionTreeClassifier
    params: {random_state: 0}
    grid: {max_depth: [1, 2, 3, null]}
"""

SLOW_SPEC = slow_spec(0.3, 200)


def need(engine: str) -> None:
    """Skip a test whose engine's extra is not installed; in CI (``CI=true``) fail instead."""
    for module in NEEDS[engine]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            message = f"--engine {engine} needs {module} (pip install 'hpcml[{engine}]'): {exc}"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{message}; CI must run the engine tests")
            pytest.skip(message)


def hpcml_env() -> dict[str, str]:
    return cmd.env(RAY_USAGE_STATS_ENABLED="0")


def hpcml(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return cmd.hpcml(*args, cwd=cwd, timeout=timeout, environ=hpcml_env())


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return cmd.start(*args, cwd=cwd, environ=hpcml_env())


def stop_group(job: subprocess.Popen) -> None:
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)


def read_scores(path: Path) -> list[dict[str, str]]:
    """cv_results.csv without its timing columns (the scores, params and ranks)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def wait_for_records(out: Path, n: int, timeout: float = 120) -> int:
    from hpcml.run.journal import iter_records

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = len(list(iter_records(out))) if (out / "journal").exists() else 0
        if count >= n:
            return count
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} journal records after {timeout}s")
