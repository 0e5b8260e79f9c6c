"""Pure helpers to start hpcml under an MPI launcher: find ``mpiexec``, build its command."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hpcml.errors import UsageError

__all__ = ["find_mpiexec", "mpiexec_command", "under_mpi_launcher", "srun_tasks_without_mpi"]

#: Variables that MPI launchers set in every rank they start.
_LAUNCHER_VARS = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMI_FD",
    "PMIX_RANK",
    "PMIX_NAMESPACE",
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


def srun_tasks_without_mpi(environ: Mapping[str, str] | None = None) -> int:
    """Tasks of a Slurm step that started this process with no MPI plugin (0 if not the case).

    Plain ``srun -n 2 hpcml run ...`` starts two independent copies; each would launch its own
    job. The batch script itself (step ``batch``) is not such a step.

    Examples
    --------
    >>> srun_tasks_without_mpi({"SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_ID": "0"})
    2
    >>> srun_tasks_without_mpi({"SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_ID": "0", "PMI_FD": "3"})
    0
    >>> srun_tasks_without_mpi({"SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_ID": "batch"})
    0
    """
    env = os.environ if environ is None else environ
    tasks = env.get("SLURM_STEP_NUM_TASKS", "")
    step = env.get("SLURM_STEP_ID", "")
    if not tasks.isdigit() or int(tasks) <= 1 or not step.isdigit():
        return 0
    return 0 if under_mpi_launcher(env) else int(tasks)


def srun_message(tasks: int | str) -> str:
    """What to tell a user whose ranks each see a world of one."""
    return (
        f"srun started {tasks} tasks but each sees an MPI world of 1 rank: srun has no "
        "MPI plugin for this MPI. Launch with 'srun --mpi=pmi2' (MPICH, the pip wheel), "
        "'srun --mpi=pmix' (Open MPI), or 'mpiexec -n N' inside the allocation"
    )


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
    mpiexec: str, n: int, argv: Sequence[str], python: str | None = None, module: str = "hpcml"
) -> list[str]:
    """``mpiexec -n N python -m MODULE ARGV...``.

    Examples
    --------
    >>> mpiexec_command("mpiexec", 2, ["run", "s.yaml"], python="py")
    ['mpiexec', '-n', '2', 'py', '-m', 'hpcml', 'run', 's.yaml']
    """
    return [mpiexec, "-n", str(int(n)), python or sys.executable, "-m", module, *argv]


def run_ranks(
    n: int,
    argv: Sequence[str],
    threads: int,
    *,
    module: str = "hpcml",
    on_stdout_line: Callable[[str], None] | None = None,
) -> int:
    """Run ``mpiexec -n N python -m MODULE ARGV...`` in the foreground; its exit status.

    Each rank gets ``threads`` BLAS/OpenMP threads through the environment, set before
    Python starts (see :func:`hpcml.core.threads.thread_env`).
    """
    from hpcml.core.threads import thread_env
    from hpcml.run.proc import run_foreground

    env = {**os.environ, **thread_env(threads)}
    env.setdefault("UCX_LOG_LEVEL", "error")  # MPICH's UCX netmod warns on benign exits
    return run_foreground(mpiexec_command(find_mpiexec(), n, argv, module=module), env=env,
                          on_stdout_line=on_stdout_line)
