"""In fresh processes: each rank's BLAS/OpenMP pools and joblib really get the thread budget."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
SPEC = """\
data:
  generator: sklearn.datasets.make_classification
  params: {n_samples: 100, n_features: 4, random_state: 0}
cv: {splitter: KFold, n_splits: 2}
refit: false
models:
  probe:
    estimator: factories.ThreadProbe
    grid: {k: [0, 1, 2]}
"""


def seen(tmp_path, *args, env=None):
    (tmp_path / "spec.yaml").write_text(SPEC)
    full = {**os.environ, "UCX_LOG_LEVEL": "error", "HPCML_CPU_COUNT": "2",
            "PYTHONPATH": str(TESTS), **(env or {})}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "SLURM_CPUS_PER_TASK", "PMI_RANK", "PMI_SIZE", "PMI_FD"):
        if var not in (env or {}):
            full.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "run", "spec.yaml", "--out", "out", "--no-progress",
         *args],
        cwd=tmp_path, env=full, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "out" / "cv_results.csv", newline="") as f:
        values = {float(row[f"split{k}_test_score"]) for row in csv.DictReader(f) for k in (0, 1)}
    assert len(values) == 1, values  # every fit saw the same budget
    value = int(values.pop())
    return {"pools": value % 100, "omp": value // 100 % 100, "n_jobs": value // 10000}


def test_two_ranks_on_two_cores_get_one_thread_each(tmp_path):
    assert seen(tmp_path, "-n", "2") == {"pools": 1, "omp": 1, "n_jobs": 1}


def test_threads_per_rank_flag(tmp_path):
    assert seen(tmp_path, "-n", "1", "--threads-per-rank", "2") == {
        "pools": 2, "omp": 2, "n_jobs": 2}


@pytest.mark.parametrize("var", ["SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"])
def test_allocation_variables_set_the_budget(tmp_path, var):
    got = seen(tmp_path, "-n", "1", env={var: "2"})
    assert got["pools"] == 2 and got["n_jobs"] == 2


def test_plan_prints_layout_and_lower_bound_without_fitting(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    env = {**os.environ, "HPCML_CPU_COUNT": "4", "PYTHONPATH": str(TESTS)}
    env.pop("SLURM_CPUS_PER_TASK", None)
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "plan", "spec.yaml", "-n", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tasks:             6 = 3 candidates (probe 3) x 2 folds" in proc.stdout
    assert "threads per rank:  2 (from cores/ranks)" in proc.stdout
    assert "lower bound:" in proc.stdout
    assert "re-ordered with measured costs at claims 4, 8, 16" in proc.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "results").exists()
