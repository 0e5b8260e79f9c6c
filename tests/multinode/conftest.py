"""Fixtures of the two-node tests: a real two-node Slurm cluster in network namespaces.

The cluster (``localcluster2.py``) needs root: it apt-get installs Slurm and munge if missing
and creates network namespaces. Without root the tests are skipped, except in CI
(``CI=true``) or with ``HPCML_SLURM_REQUIRED=1``, where they fail instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "slurm"))

from localcluster2 import ClusterError, LocalCluster2  # noqa: E402
from mnhelpers import SLOW_1S  # noqa: E402
from slurmhelpers import HERE as SLURM_TESTS  # noqa: E402
from slurmhelpers import HOSTILE, SPEC, VENV_BIN, read_csv, required  # noqa: E402

#: Wall times of the cluster's start and stop (printed at the end of the session).
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def cluster2(tmp_path_factory):
    """A running two-node cluster (``job_env`` points ``SLURM_CONF`` and ``PATH`` at it for
    one test at a time: the one-node cluster of tests/slurm may run in the same session)."""
    if os.geteuid() != 0:
        message = "the two-node cluster needs root (network namespaces, slurmctld)"
        if required():
            pytest.fail(f"{message}; CI must run the multi-node tests")
        pytest.skip(message)
    cluster = LocalCluster2(tmp_path_factory.mktemp("cluster2"))
    t0 = time.monotonic()
    try:
        cluster.start()
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        cluster.stop()
        if required():
            pytest.fail(f"cannot start the two-node cluster: {exc}")
        pytest.skip(f"cannot start the two-node cluster: {exc}")
    TIMINGS["cluster start"] = time.monotonic() - t0
    try:
        yield cluster
    finally:
        t0 = time.monotonic()
        cluster.stop()
        TIMINGS["cluster stop"] = time.monotonic() - t0


def pytest_terminal_summary(terminalreporter):
    """Print the cluster's start and stop times."""
    if TIMINGS:
        terminalreporter.write_line(
            "two-node cluster: " + ", ".join(f"{k} {v:.2f} s" for k, v in TIMINGS.items()))


@pytest.fixture
def hostile(tmp_path) -> Path:
    """A fresh folder whose name needs quoting, holding spec.yaml."""
    path = tmp_path / HOSTILE
    path.mkdir()
    (path / "spec.yaml").write_text(SPEC)
    return path


@pytest.fixture
def job_env(cluster2, monkeypatch) -> dict:
    """The environment jobs inherit: cluster wrappers and this venv first on PATH, slowmodels
    importable, a start-up watchdog short enough for a test."""
    monkeypatch.setenv("SLURM_CONF", str(cluster2.conf))
    monkeypatch.setenv("PATH", f"{cluster2.bin}:{VENV_BIN}:{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(SLURM_TESTS), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("UCX_LOG_LEVEL", "error")
    monkeypatch.setenv("HPCML_MPI_START_TIMEOUT", "30")
    for var in ("PMI_RANK", "PMI_SIZE", "PMI_FD", "HYDRA_CONTROL_FD", "PMIX_RANK",
                "OMPI_COMM_WORLD_SIZE", "MPIR_CVAR_CH4_NETMOD", "FI_PROVIDER", "UCX_TLS"):
        monkeypatch.delenv(var, raising=False)
    return dict(os.environ)


def _reference(root: Path, spec: str) -> list[dict]:
    """cv_results.csv of ``hpcml run -n 2`` (mpiexec, this machine, one node)."""
    (root / "spec.yaml").write_text(spec)
    env = {**os.environ, "UCX_LOG_LEVEL": "error",
           "PYTHONPATH": os.pathsep.join(p for p in (str(SLURM_TESTS),
                                                     os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "run", "-n", "2", "spec.yaml", "--out", "out",
         "--no-progress"], cwd=root, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return read_csv(root / "out" / "cv_results.csv")


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> list[dict]:
    """cv_results.csv of ``hpcml run -n 2`` on SPEC."""
    return _reference(tmp_path_factory.mktemp("reference"), SPEC)


@pytest.fixture(scope="session")
def slow_reference(tmp_path_factory) -> list[dict]:
    """cv_results.csv of ``hpcml run -n 2`` on the slow spec (1 s fits), uninterrupted."""
    return _reference(tmp_path_factory.mktemp("slow_reference"), SLOW_1S)
