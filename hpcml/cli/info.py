"""``hpcml info``: the MPI library, launcher and thread layout a run would use."""

from __future__ import annotations

import argparse
from typing import Any

from hpcml.cli.common import default_ranks, positive_int
from hpcml.errors import UsageError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add ``hpcml info``."""
    info = sub.add_parser(
        "info", help="show the MPI library, launcher and thread layout a run would use"
    )
    info.add_argument("-n", "--ranks", type=positive_int, metavar="P", help="ranks to plan for")
    info.add_argument("--threads-per-rank", type=positive_int, metavar="T")


def run(args: argparse.Namespace) -> int:
    from hpcml.core.threads import threads_per_rank, usable_cores
    from hpcml.run.launch import find_mpiexec, under_mpi_launcher

    cores = usable_cores()
    n = args.ranks or default_ranks()
    threads, source = threads_per_rank(min(n, cores), cli=args.threads_per_rank)
    try:
        mpiexec = find_mpiexec()
    except UsageError as exc:
        mpiexec = f"not found ({exc})"
    from hpcml.engines.mpi import world as _mpi

    print(f"MPI library:       {_mpi.mpi_library_version()}")
    print(f"mpiexec:           {mpiexec}")
    print(f"under a launcher:  {'yes' if under_mpi_launcher() else 'no'}")
    print(f"usable cores:      {cores}")
    print(f"ranks:             {n}")
    print(f"threads per rank:  {threads} (from {source})")
    return 0
