"""``python -m hpcml ...`` as a test's subprocess: an environment without a launcher's
variables (so hpcml starts its own ranks), with the tests' modules importable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

#: Variables a launcher (mpiexec, srun, Open MPI) sets; a child that kept them would think it
#: is a rank of the test's own MPI job.
LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMI_FD", "OMPI_COMM_WORLD_SIZE", "HYDRA_CONTROL_FD",
                 "PMIX_RANK")


def env(**extra: str) -> dict[str, str]:
    """This process's environment for an ``hpcml`` child, plus ``extra``."""
    out = {**os.environ, "UCX_LOG_LEVEL": "error",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent),
                                          os.environ.get("PYTHONPATH", "")]), **extra}
    for var in LAUNCHER_VARS:
        out.pop(var, None)
    return out


def hpcml(*args: str, cwd: Path, timeout: float = 240,
          environ: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m hpcml ARGS`` to its end (or ``timeout``), output captured."""
    return subprocess.run([sys.executable, "-m", "hpcml", *args], cwd=cwd,
                          env=environ or env(), capture_output=True, text=True, timeout=timeout)


def start(*args: str, cwd: Path, environ: dict[str, str] | None = None) -> subprocess.Popen:
    """``hpcml ARGS`` in the background, in its own session (kill the group to kill all)."""
    return subprocess.Popen([sys.executable, "-m", "hpcml", *args], cwd=cwd,
                            env=environ or env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
