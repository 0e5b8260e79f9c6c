"""The slurm/ templates and rendered scripts, submitted with sbatch to a real local cluster.

Each job runs the small SPEC on 2 ranks and must give the cv_results.csv of
``hpcml run -n 2`` (timings aside). Jobs run in a folder whose name holds spaces, both quotes
and a newline.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurmhelpers import (
    SLOW_SPEC,
    job_info,
    log_of,
    read_csv,
    same_results,
    sbatch,
    wait_end,
    wait_state,
)

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(240)]

TEMPLATES = Path(__file__).parents[2] / "slurm"


def run_template(name: str, folder: Path, env: dict, *sbatch_args: str, out: str = "out"):
    env = {**env, "HPCML_SPEC": str(folder / "spec.yaml"), "HPCML_OUT": str(folder / out)}
    job = sbatch([*sbatch_args, str(TEMPLATES / name)], cwd=folder, env=env)
    state = wait_end(job)
    return job, state


@pytest.mark.parametrize(
    ("template", "launcher", "layout"),
    [
        ("single-node.sbatch", "srun-pmi2", ["--ntasks=2"]),
        ("single-node.sbatch", "mpiexec", ["--ntasks=2"]),
        ("multi-node.sbatch", "srun-pmi2", ["--nodes=1", "--ntasks-per-node=2",
                                            "--cpus-per-task=1"]),
    ],
)
def test_template_gives_the_results_of_mpiexec(slurm, hostile, job_env, reference, template,
                                               launcher, layout):
    job, state = run_template(template, hostile, {**job_env, "LAUNCHER": launcher}, *layout)
    log = log_of(job, hostile)
    assert state == "COMPLETED", log
    same_results(read_csv(hostile / "out" / "cv_results.csv"), reference)
    import json

    run = json.loads((hostile / "out" / "run.json").read_text())
    assert run["ranks"] == 2 and run["threads_per_rank"] == 1, log


def test_rendered_script_submitted_prints_job_id(slurm, hostile, job_env, reference):
    """``hpcml slurm submit`` renders, submits, prints the id; the job gives the reference."""
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "slurm", "submit", "spec.yaml", "--out", "my out",
         "--ranks-per-node", "2", "--time", "5", "--job-name", "it's \"mine\""],
        cwd=hostile, env=job_env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    assert job.isdigit(), proc.stdout
    assert f"submitted job {job}" in proc.stderr
    assert job_info(job)["JobName"].startswith("it's")
    state = wait_end(job)
    log = log_of(job, hostile, f"slurm-{job}.out")
    assert state == "COMPLETED", log
    same_results(read_csv(hostile / "my out" / "cv_results.csv"), reference)


def test_submit_refuses_more_cpus_than_a_node_has(slurm, hostile, job_env):
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "slurm", "submit", "spec.yaml", "--out", "o",
         "--ranks-per-node", str(slurm.cpus), "--threads-per-rank", "2"],
        cwd=hostile, env=job_env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"the nodes have at most {slurm.cpus} CPUs" in proc.stderr


def test_plain_srun_is_refused(slurm, hostile, job_env):
    """srun without an MPI plugin starts 1-rank worlds: hpcml stops with the fix, exit 2."""
    script = hostile / "plain.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --ntasks=2\n#SBATCH --output=plain-%j.out\n"
        f"srun --mpi=none {sys.executable} -m hpcml run spec.yaml --out out\n"
    )
    job = sbatch([str(script)], cwd=hostile, env=job_env)
    assert wait_end(job) == "FAILED"
    log = log_of(job, hostile, f"plain-{job}.out")
    assert log.count("each sees an MPI world of 1 rank") == 2, log
    assert "srun --mpi=pmi2" in log and "Traceback" not in log
    assert job_info(job)["ExitCode"] == "2:0"
    assert not (hostile / "out" / "cv_results.csv").exists()


STUB = """\
#!/bin/bash
# A stand-in for hpcml: the first start waits for USR1 or TERM and exits 75 (stopped, journal
# kept); the start after a requeue writes its arguments and exits 0.
rank=${PMI_RANK:-$SLURM_PROCID}
if [ "${SLURM_RESTART_COUNT:-0}" -eq 0 ]; then
    trap 'echo "rank $rank got USR1" >> "$STUB_DIR/signals"; exit 75' USR1
    trap 'echo "rank $rank got TERM" >> "$STUB_DIR/signals"; exit 75' TERM
    touch "$STUB_DIR/started.$rank"
    for i in $(seq 600); do sleep 0.1; done
    exit 1
fi
printf '%s\\0' "$@" > "$STUB_DIR/args.$rank"
"""


def start_stub_job(folder: Path, env: dict, launcher: str) -> str:
    """single-node.sbatch on 2 ranks with the stub as hpcml; return once both ranks run."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "hpcml"
    stub.write_text(STUB)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {**env, "PATH": f"{bin_dir}:{env['PATH']}", "STUB_DIR": str(folder),
           "LAUNCHER": launcher, "HPCML_SPEC": str(folder / "spec.yaml"),
           "HPCML_OUT": str(folder / "out")}
    job = sbatch(["--ntasks=2", str(TEMPLATES / "single-node.sbatch")], cwd=folder, env=env)
    deadline = time.monotonic() + 60
    while not all((folder / f"started.{r}").exists() for r in (0, 1)):
        assert time.monotonic() < deadline, log_of(job, folder)
        time.sleep(0.1)
    return job


@pytest.mark.parametrize("launcher", ["srun-pmi2", "mpiexec"])
def test_template_forwards_usr1_and_requeues_on_75(slurm, hostile, job_env, launcher):
    """The template mechanics with a stub hpcml: USR1 reaches every rank, 75 requeues, the
    requeued job runs the same command and completes."""
    job = start_stub_job(hostile, job_env, launcher)
    # What --signal=B:USR1@N does before the time limit: USR1 to the batch shell only.
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True, timeout=30)
    state = wait_end(job, timeout=120)
    log = log_of(job, hostile)
    assert state == "COMPLETED", log
    assert "requeueing job" in log
    assert job_info(job)["Restarts"] == "1"
    assert sorted((hostile / "signals").read_text().split("\n")[:-1]) == [
        "rank 0 got USR1", "rank 1 got USR1"], log
    args = (hostile / "args.0").read_text().split("\0")[:-1]
    assert args == ["run", str(hostile / "spec.yaml"), "--out", str(hostile / "out"),
                    "--threads-per-rank", "1"]


def test_cancelled_template_job_is_not_requeued(slurm, hostile, job_env):
    """scancel sends TERM; hpcml would exit 75 then too, but the job must stay cancelled."""
    job = start_stub_job(hostile, job_env, "srun-pmi2")
    subprocess.run(["scancel", job], check=True, timeout=30)
    assert wait_end(job) == "CANCELLED"
    time.sleep(2)
    info = job_info(job)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", info
    assert "requeueing" not in log_of(job, hostile)


def test_job_signalled_with_usr1_requeues_and_finishes_identically(slurm, hostile, job_env,
                                                                  slow_reference):
    """Real hpcml: USR1 mid-run → exit 75 → requeue → the rerun resumes from the journal."""
    # Fits of 1 s (9 s on 2 ranks): the run cannot end before the signal, even on a busy machine.
    (hostile / "slow.yaml").write_text(SLOW_SPEC.replace("sleep: 0.25", "sleep: 1.0"))
    env = {**job_env, "HPCML_SPEC": str(hostile / "slow.yaml"), "HPCML_OUT": str(hostile / "out")}
    job = sbatch(["--ntasks=2", str(TEMPLATES / "single-node.sbatch")], cwd=hostile, env=env)
    wait_state(job, {"RUNNING"})
    deadline = time.monotonic() + 60
    while not list((hostile / "out").glob("journal/*")):
        assert time.monotonic() < deadline, log_of(job, hostile)
        time.sleep(0.2)
    time.sleep(1.0)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True, timeout=30)
    state = wait_end(job, timeout=180)
    log = log_of(job, hostile)
    assert state == "COMPLETED", log
    assert job_info(job)["Restarts"] == "1", log
    assert "exit status 75" in log or "Exited with exit code 75" in log, log
    same_results(read_csv(hostile / "out" / "cv_results.csv"), slow_reference)


def test_array_shards_then_merge(slurm, hostile, job_env, reference):
    """Two shards as an array job, then the dependent merge job: the results of one run."""
    env = {**job_env, "HPCML_SPEC": str(hostile / "spec.yaml"), "HPCML_OUT": str(hostile / "out")}
    job = sbatch(["--array=0-1", "--ntasks=1", str(TEMPLATES / "array.sbatch")], cwd=hostile,
                 env=env)
    assert wait_end(job) == "COMPLETED", log_of(job, hostile, f"hpcml-{job}_0.out")
    merge_log = hostile / f"hpcml-{job}_collect.out"
    deadline = time.monotonic() + 60
    while not (merge_log.exists() and "fits" in merge_log.read_text()):
        assert time.monotonic() < deadline, "no merge job output"
        time.sleep(0.2)
    squeue = subprocess.run(["squeue", "--noheader", "--format=%i %j"], capture_output=True,
                            text=True, timeout=30).stdout
    for line in squeue.splitlines():
        if "hpcml-collect" in line:
            wait_end(line.split()[0])
    assert "15/15 fits (complete)" in merge_log.read_text()
    same_results(read_csv(hostile / "out" / "cv_results.csv"), reference)
    assert (hostile / "out" / "best_model.joblib").exists()


def test_templates_are_valid_bash():
    for template in TEMPLATES.glob("*.sbatch"):
        proc = subprocess.run(["bash", "-n", str(template)], capture_output=True, text=True)
        assert proc.returncode == 0, (template, proc.stderr)
        text = template.read_text()
        assert "#SBATCH --signal=B:USR1@" in text and "scontrol requeue" in text
        assert 'if [ "$status" -eq 75 ]' in text
        assert os.access(template, os.R_OK)
