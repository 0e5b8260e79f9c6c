"""Failures end every rank in bounded time (plain pytest; each case is its own mpiexec job).

A failing task reaches the caller with the worker's rank and host; a worker that dies, or
a script that raises, ends the whole job with a non-zero status and no hang; the workers
exit when the script ends, started either way (``-m hpcml.joblib`` or ``import``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
LIMIT = 90  # seconds: a case that takes longer has hung

pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="needs the mpich wheel's mpiexec")

HEAD = """
import os, sys
{imp}
import joblib
from joblib import Parallel, delayed
"""


def launch(tmp_path: Path, body: str, n: int = 3, module: bool = True) -> tuple[int, str, float]:
    imp = "" if module else "import hpcml.joblib"
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(HEAD.format(imp=imp)) + textwrap.dedent(body))
    cmd = [str(MPIEXEC), "-n", str(n), sys.executable]
    cmd += ["-m", "hpcml.joblib", str(script)] if module else [str(script)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), UCX_LOG_LEVEL="error", OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMIT, env=env,
                          cwd=tmp_path, start_new_session=True)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


@pytest.mark.parametrize("module", [True, False], ids=["python-m", "import"])
def test_clean_end_and_exit_status(tmp_path, module):
    code, out, _ = launch(tmp_path, """
        with joblib.parallel_config(backend="mpi", n_jobs=-1):
            r = Parallel()(delayed(os.getpid)() for _ in range(20))
        print("pids", len(set(r)), os.getpid() in r)
        sys.exit(4)
        """, module=module)
    assert code == 4, out
    assert "pids 2 False" in out


def test_failing_task_reports_rank_and_host(tmp_path):
    code, out, _ = launch(tmp_path, """
        def bad(i):
            if i == 5:
                raise ValueError("no good")
            return i
        with joblib.parallel_config(backend="mpi"):
            try:
                Parallel(batch_size=1)(delayed(bad)(i) for i in range(10))
            except ValueError as exc:
                print("CAUGHT", exc, "|", exc.__notes__[0].splitlines()[0])
        """)
    assert code == 0, out
    assert "CAUGHT no good | ### raised in a task on worker rank" in out


def test_script_that_raises_ends_every_rank(tmp_path):
    code, out, took = launch(tmp_path, """
        with joblib.parallel_config(backend="mpi"):
            Parallel()(delayed(abs)(i) for i in range(4))
        raise RuntimeError("the script fails")
        """)
    assert code != 0
    assert "the script fails" in out and "rank 0 of 3" in out
    assert took < LIMIT


@pytest.mark.parametrize("module", [True, False], ids=["python-m", "import"])
def test_dead_worker_ends_the_job(tmp_path, module):
    code, out, took = launch(tmp_path, """
        import signal, time
        def die(i):
            if i == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.2)
            return i
        with joblib.parallel_config(backend="mpi"):
            Parallel(batch_size=1)(delayed(die)(i) for i in range(50))
        print("NOT REACHED")
        """, module=module)
    assert code != 0
    assert "NOT REACHED" not in out
    assert took < LIMIT


def test_task_that_calls_exit_does_not_end_the_worker(tmp_path):
    code, out, _ = launch(tmp_path, """
        def leave(i):
            sys.exit(9)
        with joblib.parallel_config(backend="mpi"):
            try:
                Parallel()(delayed(leave)(i) for i in range(3))
            except SystemExit as exc:
                print("EXIT", exc.code)
            print(Parallel(n_jobs=2, backend="mpi")(delayed(abs)(-i) for i in range(3)))
        """, n=2)
    assert code == 0, out
    assert "EXIT 9" in out and "[0, 1, 2]" in out
