#!/usr/bin/env bash
# The whole test suite, set-up included (README's second command; .ci/run calls exactly this).
#   1. a virtual environment in .venv with hpcml and its test tools (PyPI: mpich, mpi4py, ...)
#   2. ruff
#   3. the MPI tests on every rank, under mpiexec -n 1, 2 and 3 (each with a hard timeout),
#      and the joblib backend under mpiexec -n 2 and 3 (tests/joblib_backend)
#   4. the Slurm tests against a real one-node cluster started by the tests (tests/slurm)
#   5. the plain pytest suite (pure logic, CLI, hpcml run under mpiexec)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import hpcml, mpi4py.MPI" >/dev/null

export UCX_LOG_LEVEL=error  # MPICH's UCX layer warns about benign pools at exit
export PYTHONDONTWRITEBYTECODE=1

echo "== ruff"
.venv/bin/ruff check hpcml tests benchmarks

for n in 1 2 3; do
    echo "== MPI tests: mpiexec -n $n"
    timeout --signal=TERM --kill-after=20 600 \
        .venv/bin/mpiexec -n "$n" .venv/bin/python tests/mpi/run_pytest.py tests/mpi -q \
        -p no:cacheprovider
done

# The joblib backend "mpi": rank 0 runs pytest, the other ranks are its workers. joblib's own
# backend tests (from the installed joblib, "mpi" added), then scikit-learn against loky.
for n in 2 3; do
    echo "== joblib backend: joblib's own tests, mpiexec -n $n"
    timeout --signal=TERM --kill-after=20 600 \
        .venv/bin/mpiexec -n "$n" .venv/bin/python -m hpcml.joblib \
        tests/joblib_backend/run_joblib_tests.py -q --timeout 60
    echo "== joblib backend: scikit-learn, mpiexec -n $n"
    timeout --signal=TERM --kill-after=20 300 \
        .venv/bin/mpiexec -n "$n" .venv/bin/python -m hpcml.joblib \
        tests/joblib_backend/run_pytest.py -q tests/joblib_backend/test_backend_mpi.py
done

echo "== joblib backend: failures and exits, each its own mpiexec job; a world of one"
timeout --signal=TERM --kill-after=20 400 \
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/joblib_backend/test_failures.py \
    tests/joblib_backend/test_backend_mpi.py

# A real one-node Slurm cluster (apt-get installs it as root). Without root its tests skip,
# except in CI (CI=true), where they must run: there they fail instead of skipping.
echo "== Slurm tests: templates, renderer and submitit on a local cluster (tests/slurm)"
timeout --signal=TERM --kill-after=30 900 \
    .venv/bin/python -m pytest -q -rs -p no:cacheprovider tests/slurm

echo "== pytest (doctests, pure logic, CLI)"
exec .venv/bin/python -m pytest -q --doctest-modules hpcml tests --ignore=tests/mpi \
    --ignore=tests/slurm --ignore=tests/joblib_backend "$@"
