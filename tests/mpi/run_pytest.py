"""Run pytest on every rank with one report (rank 0's).

``mpiexec -n P python tests/mpi/run_pytest.py [pytest args]``. A rank whose pytest fails
aborts the world, so no rank waits for it in a collective until the timeout.
"""

import os
import sys

import pytest
from mpi4py import MPI


def main(args: list[str]) -> int:
    """pytest on this rank (stdout of ranks > 0 silenced); aborts the world on a failure."""
    comm = MPI.COMM_WORLD
    if comm.Get_rank() > 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # stdout only: failures still reach stderr
        args = [*args, "-p", "no:cacheprovider"]
    code = int(pytest.main(args))
    if code not in (0, 5) and comm.Get_size() > 1:
        sys.stderr.write(f"### rank {comm.Get_rank()}: pytest exit status {code}\n")
        sys.stderr.flush()
        comm.Abort(code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
