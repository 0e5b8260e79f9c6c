"""Fixtures of the Slurm tests: a real one-node cluster, a hostile folder, a reference run.

The cluster (``localslurm.py``) needs root: it apt-get installs Slurm and munge if missing.
Without root the cluster tests are skipped, except in CI (``CI=true``) or with
``HPCML_SLURM_REQUIRED=1``, where they fail instead: a skip must not hide a gap.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from localslurm import ClusterError, LocalSlurm  # noqa: E402
from slurmhelpers import (  # noqa: E402
    HERE,
    HOSTILE,
    SLOW_SPEC,
    SPEC,
    VENV_BIN,
    read_csv,
    required,
)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running one-node cluster; ``SLURM_CONF`` points at it for the whole session."""
    if os.geteuid() != 0:
        message = "the local Slurm cluster needs root (it installs and starts slurmctld)"
        if required():
            pytest.fail(f"{message}; CI must run the Slurm tests")
        pytest.skip(message)
    cluster = LocalSlurm(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
    except ClusterError as exc:
        if required():
            pytest.fail(f"cannot start the local Slurm cluster: {exc}")
        pytest.skip(f"cannot start the local Slurm cluster: {exc}")
    previous = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env)
    yield cluster
    cluster.stop()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


@pytest.fixture
def hostile(tmp_path) -> Path:
    """A fresh folder whose name needs quoting, holding spec.yaml."""
    path = tmp_path / HOSTILE
    path.mkdir()
    (path / "spec.yaml").write_text(SPEC)
    return path


@pytest.fixture
def job_env(monkeypatch):
    """The environment jobs inherit: this venv first on PATH, slowmodels importable."""
    monkeypatch.setenv("PATH", f"{VENV_BIN}:{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("UCX_LOG_LEVEL", "error")
    for var in ("PMI_RANK", "PMI_SIZE", "PMI_FD", "HYDRA_CONTROL_FD", "PMIX_RANK",
                "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    return dict(os.environ)


def _reference(root: Path, spec: str) -> list[dict]:
    """cv_results.csv of ``hpcml run -n 2`` (mpiexec) on ``spec``."""
    (root / "spec.yaml").write_text(spec)
    env = {**os.environ, "UCX_LOG_LEVEL": "error",
           "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH"))
                                         if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "run", "-n", "2", "spec.yaml", "--out", "out",
         "--no-progress"], cwd=root, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return read_csv(root / "out" / "cv_results.csv")


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> list[dict]:
    """cv_results.csv of ``hpcml run -n 2`` (mpiexec) on SPEC."""
    return _reference(tmp_path_factory.mktemp("reference"), SPEC)


@pytest.fixture(scope="session")
def slow_reference(tmp_path_factory) -> list[dict]:
    """cv_results.csv of ``hpcml run -n 2`` on SLOW_SPEC, uninterrupted."""
    return _reference(tmp_path_factory.mktemp("slow_reference"), SLOW_SPEC)


