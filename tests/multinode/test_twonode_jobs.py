"""Two-node jobs: sbatch templates, predict, shards, submitit, a lost node, wall time.

All on the real two-node cluster of ``conftest.py``; results must equal a one-node run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mnhelpers import SLOW_1S, SRUN, rank_pids, run_json, srun
from slurmhelpers import (
    job_info,
    log_of,
    read_csv,
    same_results,
    sbatch,
    wait_end,
    wait_state,
)

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(200)]

TEMPLATES = Path(__file__).parents[2] / "slurm"
TWO_NODES = ["--nodes=2", "--ntasks-per-node=2", "--cpus-per-task=1"]


def journaled(out: Path) -> int:
    """Fits in the journal of ``out`` (0 before it exists)."""
    from hpcml.run.journal import iter_records

    try:
        return sum(1 for _ in iter_records(out))
    except (OSError, ValueError):  # a journal being written
        return 0


def wait_for_journal(out: Path, job: str | None, folder: Path, n: int = 1) -> None:
    """Wait until the run in ``out`` has journaled at least ``n`` fits."""
    deadline = time.monotonic() + 90
    while True:
        if journaled(out) >= n:
            return
        assert time.monotonic() < deadline, log_of(job, folder) if job else "no journal"
        time.sleep(0.2)


def test_rendered_multi_node_script_gives_the_one_node_results(cluster2, hostile, job_env,
                                                               reference):
    """``hpcml slurm render --nodes 2``, submitted with sbatch: done, same results."""
    render = subprocess.run(
        [sys.executable, "-m", "hpcml", "slurm", "render", "spec.yaml", "--out", "out",
         "--nodes", "2", "--ranks-per-node", "2", "--threads-per-rank", "1", "--time", "5"],
        cwd=hostile, env=job_env, capture_output=True, text=True, timeout=60)
    assert render.returncode == 0, render.stderr
    (hostile / "job.sbatch").write_text(render.stdout)
    job = sbatch([str(hostile / "job.sbatch")], cwd=hostile, env=job_env)
    state = wait_end(job, timeout=150)
    log = log_of(job, hostile, f"slurm-{job}.out")
    assert state == "COMPLETED", log
    same_results(read_csv(hostile / "out" / "cv_results.csv"), reference)
    run = run_json(hostile / "out")
    assert run["nodes"] == 2 and sorted(run["hosts"]) == cluster2.nodes, run


def test_multi_node_template_gives_the_one_node_results(cluster2, hostile, job_env, reference):
    """slurm/multi-node.sbatch as shipped, on 2 nodes x 2 ranks."""
    env = {**job_env, "HPCML_SPEC": str(hostile / "spec.yaml"),
           "HPCML_OUT": str(hostile / "out")}
    job = sbatch([*TWO_NODES, str(TEMPLATES / "multi-node.sbatch")], cwd=hostile, env=env)
    state = wait_end(job, timeout=150)
    assert state == "COMPLETED", log_of(job, hostile)
    same_results(read_csv(hostile / "out" / "cv_results.csv"), reference)
    assert run_json(hostile / "out")["nodes"] == 2


def test_predict_on_two_nodes_equals_model_predict(cluster2, tmp_path, job_env):
    import joblib
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=3000, n_features=8, random_state=0)
    model = LogisticRegression(max_iter=500).fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    np.save(tmp_path / "X.npy", X)
    proc = srun(["hpcml", "predict", "model.joblib", "X.npy", "--out", "pred.npy",
                 "--method", "predict_proba", "--block-rows", "200", "--no-progress"],
                tmp_path, job_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy"), model.predict_proba(X))


def test_shard_array_over_both_nodes_then_collect(cluster2, hostile, job_env, reference):
    """array.sbatch: 2 shards, each on both nodes; the dependent merge job: one run's results."""
    env = {**job_env, "HPCML_SPEC": str(hostile / "spec.yaml"),
           "HPCML_OUT": str(hostile / "out")}
    job = sbatch(["--array=0-1", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                  "--cpus-per-task=1", str(TEMPLATES / "array.sbatch")], cwd=hostile, env=env)
    assert wait_end(job, timeout=150) == "COMPLETED", log_of(job, hostile, f"hpcml-{job}_0.out")
    assert job_info(job)["NumNodes"].startswith("2"), job_info(job)
    merge_log = hostile / f"hpcml-{job}_collect.out"
    deadline = time.monotonic() + 60
    while not (merge_log.exists() and "fits" in merge_log.read_text()):
        assert time.monotonic() < deadline, "no merge job output"
        time.sleep(0.2)
    assert "15/15 fits (complete)" in merge_log.read_text()
    same_results(read_csv(hostile / "out" / "cv_results.csv"), reference)


def test_submit_with_two_nodes_returns_the_result(cluster2, hostile, job_env, reference):
    """``hpcml.submit(..., nodes=2)`` through submitit: the result comes back to Python."""
    import hpcml

    folder = str(hostile.parent / "it's \"jobs\"" / "%j")
    job = hpcml.submit(hostile / "spec.yaml", out=hostile / "out", folder=folder, nodes=2,
                       ranks_per_node=2, time=5)
    result = job.result(timeout=150)
    assert result.run["ranks"] == 4 and result.run["nodes"] == 2, result.run
    assert sorted(result.run["hosts"]) == cluster2.nodes
    same_results(read_csv(result.out / "cv_results.csv"), reference)
    assert "--nodes=2" in job.job.paths.submission_file.read_text()


def test_lost_node_ends_the_run_at_once_and_the_rerun_resumes(cluster2, hostile, job_env,
                                                              slow_reference):
    """SIGKILL every rank on node2 mid-search: the step ends in seconds, naming the node and
    its ranks; the journal keeps the finished fits; the rerun gives the uninterrupted results."""
    (hostile / "slow.yaml").write_text(SLOW_1S)
    cmd = [*SRUN, "hpcml", "run", "slow.yaml", "--out", "out", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=hostile, env=job_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_journal(hostile / "out", None, hostile, n=2)
        ranks = rank_pids(cluster2.node_pids("node2"), "slow.yaml")
        assert len(ranks) == 2, ranks
        t0 = time.monotonic()
        for pid in ranks:
            os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert elapsed < 20, (elapsed, err)
    assert "node2" in err and "tasks 2-3" in err, err
    kept = journaled(hostile / "out")
    assert 0 < kept < 18, kept
    rerun = srun(["hpcml", "run", "slow.yaml", "--out", "out", "--no-progress"], hostile,
                 job_env, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    run = run_json(hostile / "out")
    assert run["n_resumed"] >= kept and run["nodes"] == 2, run
    same_results(read_csv(hostile / "out" / "cv_results.csv"), slow_reference)


def test_two_node_job_signalled_with_usr1_requeues_and_finishes(cluster2, hostile, job_env,
                                                                slow_reference):
    """multi-node.sbatch on 2 nodes: USR1 (what --signal=B:USR1@N sends) → every rank stops
    between fits, exit 75 → requeue → the rerun resumes to the uninterrupted results."""
    (hostile / "slow.yaml").write_text(SLOW_1S)
    env = {**job_env, "HPCML_SPEC": str(hostile / "slow.yaml"),
           "HPCML_OUT": str(hostile / "out")}
    job = sbatch([*TWO_NODES, str(TEMPLATES / "multi-node.sbatch")], cwd=hostile, env=env)
    wait_state(job, {"RUNNING"})
    wait_for_journal(hostile / "out", job, hostile, n=2)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True, timeout=30)
    state = wait_end(job, timeout=150)
    log = log_of(job, hostile)
    assert state == "COMPLETED", log
    assert job_info(job)["Restarts"] == "1", log
    assert "requeueing job" in log, log
    run = run_json(hostile / "out")
    assert run["n_resumed"] > 0 and run["nodes"] == 2, run
    same_results(read_csv(hostile / "out" / "cv_results.csv"), slow_reference)
