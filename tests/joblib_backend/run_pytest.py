"""pytest on rank 0, the other ranks as the ``"mpi"`` backend's workers:
``mpiexec -n P python -m hpcml.joblib tests/joblib_backend/run_pytest.py [pytest args]``."""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(int(pytest.main(["-p", "no:cacheprovider", *sys.argv[1:]])))
