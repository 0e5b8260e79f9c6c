"""joblib's own backend tests with ``"mpi"``: ``mpiexec -n P python -m hpcml.joblib
tests/joblib_backend/run_joblib_tests.py [pytest args]`` (rank 0 runs pytest, the other ranks
are the backend's workers)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import joblib_suite  # noqa: E402

if __name__ == "__main__":
    sys.exit(int(pytest.main(["--pyargs", "joblib.test.test_parallel", "-p", "no:cacheprovider",
                              *sys.argv[1:]], plugins=[joblib_suite])))
