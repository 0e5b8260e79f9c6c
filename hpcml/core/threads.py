"""Thread budget per rank: the allocation is the truth, never oversubscribe.

Pure helpers (no MPI): the caller passes the number of ranks sharing this node.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["usable_cores", "threads_per_rank", "thread_env", "thread_budget", "THREAD_ENV_VARS"]

#: Variables that size the native thread pools (BLAS, OpenMP, numexpr, ...).
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def usable_cores(environ: Mapping[str, str] | None = None) -> int:
    """Cores this process may use: CPU affinity, capped by a cgroup CPU quota.

    ``HPCML_CPU_COUNT`` overrides both (e.g. to test a layout).
    """
    env = os.environ if environ is None else environ
    if env.get("HPCML_CPU_COUNT"):
        return max(int(env["HPCML_CPU_COUNT"]), 1)
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, quota)
    return max(n, 1)


def threads_per_rank(
    ranks_on_node: int,
    cli: int | None = None,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> tuple[int, str]:
    """Threads each rank may use, and where that number came from.

    Order: ``cli`` (``--threads-per-rank``), ``SLURM_CPUS_PER_TASK``, ``OMP_NUM_THREADS``,
    else usable cores on this node divided by the ranks on this node; at least 1.

    Examples
    --------
    >>> threads_per_rank(2, environ={}, cores=8)
    (4, 'cores/ranks')
    >>> threads_per_rank(2, environ={"SLURM_CPUS_PER_TASK": "3"}, cores=8)
    (3, 'SLURM_CPUS_PER_TASK')
    >>> threads_per_rank(3, cli=1, environ={"OMP_NUM_THREADS": "9"}, cores=2)
    (1, '--threads-per-rank')
    >>> threads_per_rank(4, environ={}, cores=2)
    (1, 'cores/ranks')
    """
    env = os.environ if environ is None else environ
    if cli is not None:
        return max(int(cli), 1), "--threads-per-rank"
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = env.get(var, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value), var
    n = usable_cores(env) if cores is None else cores
    return max(n // max(int(ranks_on_node), 1), 1), "cores/ranks"


def thread_env(threads: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment settings that cap the native pools at ``threads`` (user's values win)."""
    env = os.environ if environ is None else environ
    return {var: str(threads) for var in THREAD_ENV_VARS if var not in env}


@contextlib.contextmanager
def thread_budget(threads: int) -> Iterator[None]:
    """Cap BLAS/OpenMP pools at ``threads`` and make ``n_jobs=None`` mean ``threads`` threads.

    Estimators that take ``n_jobs`` and leave it at ``None`` follow joblib's
    ``parallel_config``; the threading backend keeps their workers inside this rank.
    """
    from joblib import parallel_config
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads), parallel_config(backend="threading", n_jobs=threads):
        yield


def _cgroup_quota() -> int | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except OSError:
        return None
    if not text or text[0] == "max":
        return None
    quota, period = int(text[0]), int(text[1]) if len(text) > 1 else 100000
    return max(quota // max(period, 1), 1)
