"""Run ``hpcml`` as a user would, in a fresh process with a hard timeout."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from factories import slow_spec  # noqa: E402
from hpcmlcmd import env as _env  # noqa: E402
from hpcmlcmd import hpcml as _hpcml  # noqa: E402
from hpcmlcmd import start  # noqa: E402, F401 (the tests import it from here)

#: 2 models; logit's C spans orders of magnitude (log axis), tree has two parameters (heatmap).
SPEC = """\
data:
  generator: sklearn.datasets.make_classification
  params: {n_samples: 240, n_features: 6, random_state: 1}
cv: {splitter: StratifiedKFold, n_splits: 3, shuffle: true, random_state: 0}
scoring: [roc_auc, accuracy]
refit: roc_auc
models:
  logit:
    estimator: sklearn.linear_model.LogisticRegression
    params: {max_iter: 500}
    grid: {C: [0.001, 0.01, 0.1, 1.0, 10.0]}
  tree:
    estimator: sklearn.tree.DecisionTreeClassifier
    params: {random_state: 0}
    grid: {max_depth: [1, 2, 4], min_samples_leaf: [1, 10]}
"""

#: 24 fits of 0.3 s: about 4 s on two ranks, long enough to watch and to kill.
SLOW_SPEC = slow_spec(0.3, 120)


def env() -> dict[str, str]:
    return _env()


def hpcml(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return _hpcml(*args, cwd=cwd, timeout=timeout)


def wait_status(path: Path, ok, timeout: float = 90, job: subprocess.Popen | None = None):
    """Poll ``path`` until ``ok(status)``; every read must be valid JSON once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            status = json.loads(path.read_text())  # atomic writes: never torn
            if ok(status):
                return status
        if job is not None and job.poll() is not None:
            raise AssertionError(f"the run ended first ({job.returncode}): {job.stderr.read()}")
        time.sleep(0.1)
    raise AssertionError(f"{path}: condition not met after {timeout}s")
