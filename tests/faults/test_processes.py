"""Processes: a killed launcher, mpiexec or rank, a fit that hangs in C, stale shared memory.

Each ends in seconds, with no process left behind and every finished fit in the journal.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import psutil
import pytest
from faultkit import (
    journal_lines,
    kill_tree,
    run,
    spec,
    start,
    wait_for,
    wait_gone,
)

SLOW = """\
  slow:
    estimator: faultmodels:Majority
    params: {delay: 0.4}
    grid: {C: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}
"""


def _slow_run(tmp_path: Path):
    s = spec(tmp_path / "s.yaml", SLOW)
    proc = start(["run", "-n", "2", str(s), "--out", str(tmp_path / "out"), "--no-progress"],
                 tmp_path)
    wait_for(lambda: journal_lines(tmp_path / "out") >= 2, 60, "the first fits")
    return proc, s


def _ranks(launcher: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(launcher).children(recursive=True)
            if "python" in p.name()]


@pytest.mark.timeout(90)
def test_sigkill_of_the_launcher_leaves_no_orphans(tmp_path):
    proc, s = _slow_run(tmp_path)
    assert len(_ranks(proc.pid)) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    assert wait_gone(str(s), 5) == [], "mpiexec or ranks outlived the launcher"
    done = journal_lines(tmp_path / "out")
    assert done >= 2
    again = run(["run", "-n", "2", str(s), "--out", str(tmp_path / "out"), "--no-progress"],
                tmp_path, timeout=90)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["n_resumed"] >= done


@pytest.mark.timeout(90)
def test_sigkill_of_mpiexec_stops_the_ranks(tmp_path):
    proc, s = _slow_run(tmp_path)
    mpiexec = next(p for p in psutil.Process(proc.pid).children() if "mpiexec" in p.name())
    mpiexec.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == 128 + 9
    err = proc.stderr.read()
    assert err.count("hpcml: error:") == 1 and "mpiexec was killed by SIGKILL" in err, err
    assert "run the same command again to resume" in err
    assert wait_gone(str(s), 5) == []


@pytest.mark.timeout(90)
def test_sigkill_of_the_ranks_proxy_stops_the_ranks(tmp_path):
    """Under any launcher: a rank whose parent dies dies with it (PR_SET_PDEATHSIG)."""
    proc, s = _slow_run(tmp_path)
    ranks = _ranks(proc.pid)
    ranks[0].parent().send_signal(signal.SIGKILL)  # hydra_pmi_proxy
    assert wait_gone(str(s) + " --out", 10) == [] or not any(r.is_running() for r in ranks)
    proc.wait(10)
    assert all(not r.is_running() or r.status() == psutil.STATUS_ZOMBIE for r in ranks)


def _memory_cgroup(limit: int) -> Path:
    root = Path("/sys/fs/cgroup/memory")
    if not (root / "cgroup.procs").exists():
        unified = Path("/sys/fs/cgroup")
        if (unified / "cgroup.controllers").exists():
            cg = unified / f"hpcml-oom-{uuid.uuid4().hex[:8]}"
            cg.mkdir()
            (cg / "memory.max").write_text(str(limit))
            (cg / "memory.swap.max").write_text("0")
            return cg
        pytest.fail("no memory cgroup to set a limit in (the OOM test needs root and cgroups)")
    cg = root / f"hpcml-oom-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    (cg / "memory.limit_in_bytes").write_text(str(limit))
    if (cg / "memory.memsw.limit_in_bytes").exists():
        (cg / "memory.memsw.limit_in_bytes").write_text(str(limit))
    return cg


@pytest.mark.timeout(90)
def test_a_rank_killed_out_of_memory_is_named(tmp_path):
    models = """\
  ok: {estimator: faultmodels:Majority, grid: {C: [1, 2, 3]}}
  hog: {estimator: faultmodels:Majority, params: {hog: true}}
"""
    s = spec(tmp_path / "s.yaml", models)
    cg = _memory_cgroup(600 << 20)
    try:
        def enter():  # the launcher and all it starts run under the limit
            (cg / "cgroup.procs").write_text(str(os.getpid()))

        t0 = time.monotonic()
        proc = start(["run", "-n", "2", str(s), "--out", str(tmp_path / "out"),
                      "--no-progress"], tmp_path, preexec_fn=enter)
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - t0 < 45
        assert proc.returncode not in (0, 2, 75), err
        assert "Traceback" not in err
        line = next(ln for ln in err.splitlines() if ln.startswith("hpcml: error:"))
        assert "rank " in line and "killed (out of memory?)" in line, err
        assert "run the same command again to resume" in line
        assert wait_gone(str(s), 5) == []
    finally:
        for pid in (cg / "cgroup.procs").read_text().split():
            kill_tree(int(pid))
        time.sleep(0.5)
        cg.rmdir()


HANG = """\
  m:
    estimator: faultmodels:Majority
    grid: [{C: [1, 2, 3, 4]}, {hang: [true]}]
"""


@pytest.mark.timeout(120)
def test_a_fit_hanging_in_native_code(tmp_path):
    """Without fit_timeout nothing inside the fit can stop it: a stop signal waits for it, the
    job's wall time (SIGKILL) ends it, with the finished fits kept. With fit_timeout it is
    stopped and scored as failed."""
    s = spec(tmp_path / "s.yaml", HANG)
    out = str(tmp_path / "out")
    proc = start(["run", "-n", "1", str(s), "--out", out, "--no-progress"], tmp_path)
    wait_for(lambda: journal_lines(tmp_path / "out") >= 8, 60, "the fits before the hang")
    proc.send_signal(signal.SIGTERM)  # the stop request waits for the fit: documented
    time.sleep(2)
    assert proc.poll() is None
    kill_tree(proc.pid)  # what Slurm does at the end of the wall time
    proc.wait(5)
    assert wait_gone(str(s), 5) == []
    assert journal_lines(tmp_path / "out") >= 8  # nothing finished was lost
    t0 = time.monotonic()
    done = run(["run", "-n", "1", str(s), "--out", out, "--no-progress", "--fit-timeout", "2"],
               tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2 of 10 fits failed" in done.stderr and "fit_timeout=2" in done.stderr
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_json["n_resumed"] == 8 and run_json["failures"]["n_failed"] == 2
    assert run_json["failures"]["first"]["params"] == {"hang": True}
    assert time.monotonic() - t0 < 40


@pytest.mark.timeout(120)
def test_stale_shared_memory_of_a_killed_run_does_not_break_the_next(tmp_path):
    before = set(os.listdir("/dev/shm"))
    proc, s = _slow_run(tmp_path)
    kill_tree(proc.pid)
    proc.wait(5)
    assert wait_gone(str(s), 5) == []
    left = set(os.listdir("/dev/shm")) - before  # MPICH's segments of the killed ranks
    fake = Path("/dev/shm") / f"mpich_shm_{uuid.uuid4().hex[:8]}_0"
    fake.write_bytes(b"\0" * 4096)  # and a stale segment of some other run
    try:
        again = run(["run", "-n", "2", str(s), "--out", str(tmp_path / "out"),
                     "--no-progress"], tmp_path, timeout=90)
        assert again.returncode == 0, again.stderr
    finally:
        fake.unlink()
        for name in left:  # our own killed run's segments
            Path("/dev/shm", name).unlink(missing_ok=True)
