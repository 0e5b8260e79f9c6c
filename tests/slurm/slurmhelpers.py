"""Constants and helpers of the Slurm tests (specs, job polling, result comparison)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

SPEC = """\
data:
  generator: sklearn.datasets.make_classification
  params: {n_samples: 200, n_features: 6, random_state: 3}
cv: {splitter: StratifiedKFold, n_splits: 3, shuffle: true, random_state: 0}
scoring: [accuracy, roc_auc]
refit: roc_auc
models:
  logit:
    estimator: sklearn.linear_model.LogisticRegression
    params: {max_iter: 500}
    grid: {C: [0.1, 1.0, 10.0]}
  tree:
    estimator: sklearn.tree.DecisionTreeClassifier
    params: {random_state: 0}
    grid: {max_depth: [2, null]}
"""

#: Fits that sleep: a job that runs long enough to be signalled or cancelled mid-run.
SLOW_SPEC = """\
data:
  generator: sklearn.datasets.make_classification
  params: {n_samples: 200, n_features: 6, random_state: 3}
cv: {splitter: StratifiedKFold, n_splits: 3, shuffle: true, random_state: 0}
scoring: [accuracy]
models:
  slow:
    estimator: slowmodels.SleepyLogit
    params: {sleep: 0.25}
    grid: {C: [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]}
"""

TIMING = {"mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"}
#: A folder name with spaces, both quotes and a newline: every path must be quoted.
HOSTILE = "it's a \"weird\" dir\nwith a newline"
VENV_BIN = str(Path(sys.executable).parent)


def required() -> bool:
    """Whether the cluster tests must run (CI): then a cluster that cannot start fails them."""
    flag = os.environ.get("HPCML_SLURM_REQUIRED") or os.environ.get("CI") or ""
    return flag.lower() in ("1", "true", "yes")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def same_results(rows: list[dict], reference: list[dict]) -> None:
    """Equal cv_results (timing columns aside)."""
    assert rows and len(rows) == len(reference)
    assert list(rows[0]) == list(reference[0])
    keys = [k for k in reference[0] if k not in TIMING]
    for got, want in zip(rows, reference, strict=True):
        assert {k: got[k] for k in keys} == {k: want[k] for k in keys}


def sbatch(args: list[str], cwd: Path, env: dict | None = None) -> str:
    """Submit; return the job id."""
    proc = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (the first record of an array)."""
    proc = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id],
                          capture_output=True, text=True, timeout=30)
    info: dict[str, str] = {}
    for field in proc.stdout.splitlines()[0].split(" ") if proc.stdout else []:
        key, _, value = field.partition("=")
        info.setdefault(key, value)
    return info


def wait_state(job_id: str, states: set[str], timeout: float = 90) -> str:
    """Wait until the job is in one of ``states`` (or raise with its log)."""
    from hpcml.slurm.render import job_state

    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = job_state(job_id)
        if state in states:
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {state} after {timeout:g} s, not {states}\n"
                         f"{job_info(job_id)}")


def wait_end(job_id: str, timeout: float = 120) -> str:
    """Wait until the job (all array tasks) has ended; return its state."""
    from hpcml.slurm.render import TERMINAL_STATES

    return wait_state(job_id, set(TERMINAL_STATES), timeout)


def log_of(job_id: str, cwd: Path, name: str | None = None) -> str:
    path = cwd / (name or f"hpcml-{job_id}.out")
    return path.read_text(errors="replace") if path.exists() else f"(no log {path})"
