"""``mpiexec -n P python -m hpcml.joblib script.py [args]``: rank 0 runs the script."""

import sys

from hpcml.engines.mpi.joblib_launch import run_script

if __name__ == "__main__":
    sys.exit(run_script(sys.argv[1:]))
