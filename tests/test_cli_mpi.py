"""The ``hpcml run`` command under real MPI: same results for 1, 2, 3 ranks; abort; srun check."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.tree import DecisionTreeRegressor

SPEC = """\
data:
  generator: sklearn.datasets.make_regression
  params: {n_samples: 200, n_features: 6, noise: 5.0, random_state: 2}
cv: {splitter: KFold, n_splits: 4, shuffle: true, random_state: 1}
scoring: [r2, neg_mean_absolute_error]
refit: r2
models:
  ridge:
    estimator: sklearn.linear_model.Ridge
    grid: {alpha: [0.1, 1.0, 10.0]}
  tree:
    estimator: sklearn.tree.DecisionTreeRegressor
    params: {random_state: 0}
    grid: {max_depth: [null, 3], min_samples_leaf: [1, 5]}
"""

TIMING = {"mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"}


def hpcml(*args, cwd, env=None, timeout=240):
    full_env = {**os.environ, "UCX_LOG_LEVEL": "error", **(env or {})}
    for var in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "HYDRA_CONTROL_FD", "PMIX_RANK"):
        full_env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "hpcml", *args], cwd=cwd, env=full_env, capture_output=True,
        text=True, timeout=timeout,
    )


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same spec run with 1, 2 and 3 ranks (launched by ``hpcml run -n P``)."""
    root = tmp_path_factory.mktemp("cli_mpi")
    (root / "spec.yaml").write_text(SPEC)
    out = {}
    for n in (1, 2, 3):
        proc = hpcml("run", "-n", str(n), "spec.yaml", "--out", f"out{n}", "--no-progress",
                     cwd=root)
        assert proc.returncode == 0, proc.stderr
        out[n] = root / f"out{n}"
    return out


def test_results_identical_for_1_2_3_ranks(runs):
    tables = {n: read_csv(p / "cv_results.csv") for n, p in runs.items()}
    assert len(tables[1]) == 3 + 4
    keys = [k for k in tables[1][0] if k not in TIMING]
    for n in (2, 3):
        assert list(tables[n][0]) == list(tables[1][0])
        for row1, row_n in zip(tables[1], tables[n], strict=True):
            assert {k: row1[k] for k in keys} == {k: row_n[k] for k in keys}
    bests = {n: json.loads((p / "best.json").read_text()) for n, p in runs.items()}
    for n in (2, 3):
        assert {k: v for k, v in bests[n].items() if k != "refit_time"} == {
            k: v for k, v in bests[1].items() if k != "refit_time"
        }
    runinfo = {n: json.loads((p / "run.json").read_text()) for n, p in runs.items()}
    assert [runinfo[n]["ranks"] for n in (1, 2, 3)] == [1, 2, 3]
    assert runinfo[2]["versions"]["mpi"].startswith(("MPICH", "Open MPI", "Intel"))


def test_cli_scores_equal_gridsearchcv(runs):
    rows = read_csv(runs[2] / "cv_results.csv")
    X, y = make_regression(n_samples=200, n_features=6, noise=5.0, random_state=2)
    cv = KFold(4, shuffle=True, random_state=1)
    scoring = ["r2", "neg_mean_absolute_error"]
    ref_ridge = GridSearchCV(Ridge(), {"alpha": [0.1, 1.0, 10.0]}, cv=cv, scoring=scoring,
                             refit=False).fit(X, y)
    ref_tree = GridSearchCV(DecisionTreeRegressor(random_state=0),
                            {"max_depth": [None, 3], "min_samples_leaf": [1, 5]}, cv=cv,
                            scoring=scoring, refit=False).fit(X, y)
    for metric in scoring:
        for k in range(4):
            col = f"split{k}_test_{metric}"
            ours = np.array([float(r[col]) for r in rows])
            ref = np.r_[ref_ridge.cv_results_[col], ref_tree.cv_results_[col]]
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert [json.loads(r["params"]) for r in rows] == (
        list(ref_ridge.cv_results_["params"]) + list(ref_tree.cv_results_["params"])
    )
    assert rows[3]["param_max_depth"] == "None" and rows[3]["param_alpha"] == ""


def test_best_model_is_refit_and_loadable(runs):
    import joblib

    best = json.loads((runs[2] / "best.json").read_text())
    model = joblib.load(runs[2] / "best_model.joblib")
    X, y = make_regression(n_samples=200, n_features=6, noise=5.0, random_state=2)
    assert type(model).__name__ == {"ridge": "Ridge", "tree": "DecisionTreeRegressor"}[best["model"]]
    assert model.predict(X).shape == (200,)
    assert not list(runs[2].glob(".*.tmp")), "temporary files left behind"


def test_exception_on_a_rank_aborts_all_with_rank_and_host(tmp_path):
    # a value that passes the params check (a bad type or range is refused before any fit)
    # but fails in the fit: lbfgs needs positive=True
    spec = (SPEC.replace("alpha: [0.1, 1.0, 10.0]", "alpha: [0.1], solver: [auto, lbfgs]")
            + "error_score: raise\n")
    (tmp_path / "spec.yaml").write_text(spec)
    proc = hpcml("run", "-n", "2", "spec.yaml", "--out", "out", "--no-progress", cwd=tmp_path,
                 timeout=120)
    assert proc.returncode not in (0, 2)
    assert "### hpcml: rank" in proc.stderr and "of 2 on" in proc.stderr
    assert socket.gethostname() in proc.stderr
    assert "Traceback" in proc.stderr and "lbfgs" in proc.stderr
    assert not (tmp_path / "out" / "run.json").exists()


def test_srun_without_mpi_plugin_is_refused(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    # What a task of plain `srun -n 2` sees: a 1-rank world while Slurm started 2 tasks.
    env = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2"}
    proc = hpcml("run", "spec.yaml", "--out", "out", cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "srun --mpi=pmi2" in proc.stderr and "mpiexec" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_progress_is_plain_lines_in_a_log(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    proc = hpcml("run", "-n", "2", "spec.yaml", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fits ")]
    assert lines and lines[-1].startswith("fits 28/28")
    assert "ETA" in lines[-1] and "/s" in lines[-1]
    assert "\r" not in proc.stderr
    assert "best: " in proc.stdout


def test_one_rank_world_in_a_multi_task_step_is_refused():
    from hpcml.engines.mpi.world import check_launch
    from hpcml.errors import UsageError

    env = {"SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_ID": "3"}
    with pytest.raises(UsageError, match="srun --mpi=pmi2"):
        check_launch(env, size=1)
    check_launch(env, size=4)  # a real 4-rank world is fine
    check_launch({"SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_ID": "batch"}, size=1)
