"""``hpcml.submit`` / ``hpcml submit``: submitit jobs on the local cluster, and without Slurm.

The cluster has no accounting (``sacct`` fails, so submitit reads every state as UNKNOWN):
hpcml asks ``scontrol`` instead, so a cancelled job raises instead of waiting forever. Every
test uses a fresh submitit folder: job ids restart at 1 on a fresh cluster.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from slurmhelpers import (
    SLOW_SPEC,
    job_info,
    read_csv,
    same_results,
    wait_end,
    wait_state,
)

import hpcml
from hpcml.slurm.submit import JobError, SearchJob

pytestmark = pytest.mark.timeout(240)


def jobs(hostile) -> str:
    """submitit's folder: quotes and spaces, but no newline (an #SBATCH line cannot hold one)."""
    return str(hostile.parent / "it's \"jobs\"" / "%j")


def as_rows(result) -> list[dict]:
    """An ExperimentResult's cv_results as the rows of its CSV file."""
    return read_csv(result.out / "cv_results.csv")


@pytest.mark.slurm
def test_submit_returns_the_search_result(slurm, hostile, job_env, reference):
    job = hpcml.submit(hostile / "spec.yaml", out=hostile / "out", folder=jobs(hostile),
                       ranks_per_node=2, time=5)
    assert isinstance(job, SearchJob) and job.cluster == "slurm" and job.job_id.isdigit()
    result = job.result(timeout=180)
    assert result.run["ranks"] == 2 and result.run["nodes"] == 1
    assert result.best["model"] in ("logit", "tree") and result.best_estimator is not None
    same_results(as_rows(result), reference)
    script = job.job.paths.submission_file.read_text()
    assert "--mpi=pmi2" in script and "--ntasks-per-node=2" in script
    assert "export OMP_NUM_THREADS=1" in script
    assert "#SBATCH --signal=USR2@75" in script  # a quarter of the 5 minutes, after the start
    assert job.done() and wait_end(job.job_id) == "COMPLETED" and job.state == "COMPLETED"


@pytest.mark.slurm
def test_cancelled_job_raises_instead_of_hanging(slurm, hostile, job_env):
    # Fits of 1 s: the job cannot finish before the cancel lands, even on a busy machine.
    (hostile / "slow.yaml").write_text(SLOW_SPEC.replace("sleep: 0.25", "sleep: 1.0"))
    job = hpcml.submit(hostile / "slow.yaml", out=hostile / "out",
                       folder=jobs(hostile), ranks_per_node=2, time=5)
    wait_state(job.job_id, {"RUNNING"})
    time.sleep(1.0)
    job.cancel()
    t0 = time.monotonic()
    with pytest.raises(JobError, match=rf"job {job.job_id} ended in state CANCELLED without a "
                       r"result: it was cancelled") as info:
        job.result(timeout=90)
    assert time.monotonic() - t0 < 60
    assert "submit again to resume" in str(info.value)
    assert job.done()


@pytest.mark.slurm
def test_pending_job_cancelled_raises(slurm, hostile, job_env):
    """Cancelled before it ever ran (held): no log, no result, still a clear error."""
    import submitit

    ex = submitit.AutoExecutor(folder=jobs(hostile))
    ex.update_parameters(slurm_additional_parameters={"hold": True})
    job = hpcml.submit(hostile / "spec.yaml", ex, out=hostile / "out", ranks_per_node=2, time=5)
    assert wait_state(job.job_id, {"PENDING"}) == "PENDING"
    with pytest.raises(TimeoutError, match="still PENDING after 1 s"):
        job.result(timeout=1)
    subprocess.run(["scancel", job.job_id], check=True, timeout=30)
    with pytest.raises(JobError, match="CANCELLED"):
        job.result(timeout=60)


@pytest.mark.slurm
def test_failing_rank_error_is_raised(slurm, hostile, job_env):
    """Plain srun (mpi=None) with 2 tasks: every rank refuses; the error names the fix."""
    job = hpcml.submit(hostile / "spec.yaml", out=hostile / "out",
                       folder=jobs(hostile), ranks_per_node=2, time=5, mpi=None)
    with pytest.raises(Exception, match=r"each sees an MPI world of 1 rank.*srun --mpi=pmi2"):
        job.result(timeout=120)


@pytest.mark.slurm
def test_cli_submit_prints_job_id_and_waits(slurm, hostile, job_env, reference):
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "submit", "spec.yaml", "--out", "cli out",
         "--folder", jobs(hostile), "--ranks-per-node", "2", "--time", "00:05:00", "--wait"],
        cwd=hostile, env=job_env, capture_output=True, text=True, timeout=200,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].isdigit() and lines[1].startswith("best: ")
    assert f"submitted job {lines[0]} (slurm)" in proc.stderr
    assert wait_end(lines[0]) == "COMPLETED"
    same_results(read_csv(hostile / "cli out" / "cv_results.csv"), reference)


def test_local_executor_runs_the_ranks_with_mpiexec(hostile, reference, monkeypatch):
    """No Slurm: submitit's local executor; hpcml starts 2 ranks with mpiexec."""
    monkeypatch.setenv("UCX_LOG_LEVEL", "error")
    job = hpcml.submit(hostile / "spec.yaml", "local", out=hostile / "out",
                       folder=jobs(hostile), ranks_per_node=2, time=5)
    assert job.cluster == "local"
    result = job.result(timeout=180)
    assert result.run["ranks"] == 2
    assert result.best_estimator is not None
    same_results(as_rows(result), reference)


def test_local_executor_reports_bad_spec_before_submitting(hostile):
    (hostile / "bad.yaml").write_text((hostile / "spec.yaml").read_text().replace("C:", "D:"))
    with pytest.raises(hpcml.UsageError, match="models.logit.grid.D"):
        hpcml.submit(hostile / "bad.yaml", "local", folder=jobs(hostile))
    assert not (hostile.parent / "it's \"jobs\"").exists()


def test_newline_in_submitit_folder_is_refused(hostile):
    with pytest.raises(hpcml.UsageError, match="newline"):
        hpcml.submit(hostile / "spec.yaml", "local", folder=hostile / "jobs")


def test_submit_is_a_function_and_its_module_lives_in_slurm():
    import importlib
    import types

    module = importlib.import_module("hpcml.slurm.submit")
    assert isinstance(hpcml.submit, types.FunctionType) and module.submit is hpcml.submit
    assert module.SearchJob is SearchJob


@pytest.mark.slurm
def test_preempted_submitit_job_requeues_and_resumes(slurm, hostile, job_env, slow_reference):
    """submitit's preemption signal (USR2) mid-run: stop, requeue, resume, same result."""
    # Fits of 1 s: the job cannot finish before the cancel lands, even on a busy machine.
    (hostile / "slow.yaml").write_text(SLOW_SPEC.replace("sleep: 0.25", "sleep: 1.0"))
    job = hpcml.submit(hostile / "slow.yaml", out=hostile / "out",
                       folder=jobs(hostile), ranks_per_node=2, time=5)
    wait_state(job.job_id, {"RUNNING"})
    deadline = time.monotonic() + 60
    while not list((hostile / "out").glob("journal/*")):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    result = job.result(timeout=180)
    assert job_info(job.job_id)["Restarts"] == "1"
    assert result.run.get("n_resumed", 0) > 0
    same_results(as_rows(result), slow_reference)


def test_default_executor_without_a_cluster_is_local(tmp_path, monkeypatch):
    """srun installed but no cluster answering (or no Slurm at all): this machine."""
    from hpcml.slurm.submit import _executor

    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sinfo
    executor, cluster = _executor(None, tmp_path / "jobs" / "%j")
    assert cluster == "local" and executor.cluster == "local"
