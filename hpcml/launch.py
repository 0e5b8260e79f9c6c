"""Pure helpers to start hpcml under an MPI launcher: find ``mpiexec``, build its command."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import UsageError

__all__ = ["find_mpiexec", "mpiexec_command", "under_mpi_launcher"]

#: Variables that MPI launchers set in every rank they start.
_LAUNCHER_VARS = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "HYDRA_CONTROL_FD",
)


def under_mpi_launcher(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by ``mpiexec``/``srun --mpi=...`` (from its environment).

    Examples
    --------
    >>> under_mpi_launcher({"PMI_RANK": "0"}), under_mpi_launcher({})
    (True, False)
    """
    env = os.environ if environ is None else environ
    return any(v in env for v in _LAUNCHER_VARS)


def find_mpiexec(environ: Mapping[str, str] | None = None) -> str:
    """The ``mpiexec`` to use: ``HPCML_MPIEXEC``, the one beside this Python, else ``PATH``."""
    env = os.environ if environ is None else environ
    if env.get("HPCML_MPIEXEC"):
        return env["HPCML_MPIEXEC"]
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if not found:
        raise UsageError(
            "no mpiexec found: install the MPICH wheel (pip install mpich), load your cluster's "
            "MPI module, or set HPCML_MPIEXEC to its path"
        )
    return found


def mpiexec_command(
    mpiexec: str, n: int, argv: Sequence[str], python: str | None = None
) -> list[str]:
    """``mpiexec -n N python -m hpcml ARGV...``.

    Examples
    --------
    >>> mpiexec_command("mpiexec", 2, ["run", "s.yaml"], python="py")
    ['mpiexec', '-n', '2', 'py', '-m', 'hpcml', 'run', 's.yaml']
    """
    return [mpiexec, "-n", str(int(n)), python or sys.executable, "-m", "hpcml", *argv]
