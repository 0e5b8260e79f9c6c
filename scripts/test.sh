#!/usr/bin/env bash
# The whole test suite, set-up included (README's second command; .ci/run calls exactly this).
#   1. a virtual environment in .venv with hpcml and its test tools (PyPI: mpich, mpi4py, ...)
#   2. ruff
#   3. the MPI tests on every rank, under mpiexec -n 1, 2 and 3 (each with a hard timeout),
#      and the joblib backend under mpiexec -n 2 and 3 (tests/joblib_backend)
#   3b. scikit-learn's own search tests against hpcml's drop-ins, under mpiexec -n 1, 2, 3
#   4. the Slurm tests against a real one-node cluster started by the tests (tests/slurm)
#   5. the two-node tests against a real two-node cluster in network namespaces (tests/multinode)
#   6. the plain pytest suite (pure logic, CLI, hpcml run under mpiexec, the report in a
#      headless Chromium: tests/report, the other engines in tests/engines: loky, Dask,
#      Ray and Spark on local clusters; Spark needs Java 17)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,dask,ray,spark]' 2>&1 \
    | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import hpcml, mpi4py.MPI, matplotlib" >/dev/null  # matplotlib: [test]

# The report tests render report.html in Debian's chromium: installed here when missing and
# root (tests/report/browser.py tries the same); in CI (CI=true) a missing browser fails them.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing chromium (apt-get) for the report tests"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi

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

for n in 1 2 3; do
    echo "== scikit-learn's search tests on the drop-ins: mpiexec -n $n (tests/sklearn_suite)"
    timeout --signal=TERM --kill-after=20 1200 \
        .venv/bin/mpiexec -n "$n" .venv/bin/python tests/sklearn_suite/run_suite.py -q \
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

# A real two-node Slurm cluster, each node in its own network, UTS and mount namespace
# (tests/multinode/localcluster2.py); root only, and required in CI like the one-node one.
echo "== two-node tests: a Slurm cluster of two namespaced nodes (tests/multinode)"
timeout --signal=TERM --kill-after=30 900 \
    .venv/bin/python -m pytest -q -rs -p no:cacheprovider tests/multinode

echo "== pytest (doctests, pure logic, CLI)"
exec .venv/bin/python -m pytest -q --doctest-modules hpcml tests --ignore=tests/mpi \
    --ignore=tests/slurm --ignore=tests/multinode --ignore=tests/sklearn_suite \
    --ignore=tests/joblib_backend "$@"
