"""MPI tests: the same test runs on every rank (``mpiexec -n P python -m pytest tests/mpi``).

Tests must pass at any world size. A failure on one rank aborts the world at once (with the
report), so the other ranks never wait for it in a collective until the timeout.
"""

from __future__ import annotations

import sys

import pytest
from mpi4py import MPI

COMM = MPI.COMM_WORLD


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and COMM.Get_size() > 1:
        sys.stderr.write(
            f"\n### rank {COMM.Get_rank()} of {COMM.Get_size()}: {item.nodeid} failed "
            f"({report.when})\n{report.longreprtext}\n"
        )
        sys.stderr.flush()
        COMM.Abort(1)


@pytest.fixture
def comm():
    return COMM


@pytest.fixture
def shared_tmp(tmp_path_factory):
    """A folder that every rank sees (rank 0 makes it)."""
    path = str(tmp_path_factory.mktemp("shared")) if COMM.Get_rank() == 0 else None
    from pathlib import Path

    return Path(COMM.bcast(path, root=0))
