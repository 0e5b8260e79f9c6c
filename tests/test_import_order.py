"""In fresh processes under a real mpiexec: a rank starts MPI before numpy, scipy or
scikit-learn begin to load (an audit hook sees every import as it starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MPIEXEC = str(Path(sys.executable).with_name("mpiexec"))
SPEC = """\
data: {generator: sklearn.datasets.make_classification, params: {n_samples: 60, random_state: 0}}
cv: {n_splits: 2}
refit: false
models:
  lr: {estimator: sklearn.linear_model.LogisticRegression, grid: {C: [1.0]}}
"""

# Runs ``python -m hpcml ARGS`` with a hook that notes, when numpy, scipy or sklearn start to
# import, whether MPI was already initialised; each rank writes its notes to a file.
PROBE = r"""
import json, os, runpy, sys
seen = {}
def hook(event, args):
    if event != "import":
        return
    top = args[0].split(".")[0]
    if top in ("numpy", "scipy", "sklearn") and top not in seen:
        mpi = sys.modules.get("mpi4py.MPI")
        ready = getattr(mpi, "Is_initialized", None)
        seen[top] = bool(ready and ready())
sys.addaudithook(hook)
try:
    sys.argv = ["hpcml", *sys.argv[1:]]
    runpy.run_module("hpcml", run_name="__main__")
finally:
    rank = os.environ.get("PMI_RANK", "x")
    with open(f"seen-{rank}.json", "w") as f:
        json.dump(seen, f)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n", [1, 2])
def test_rank_starts_mpi_before_numpy_scipy_sklearn(tmp_path, n):
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "SLURM_"))}
    proc = subprocess.run(
        [MPIEXEC, "-n", str(n), sys.executable, "probe.py", "run", "spec.yaml", "--out", "out",
         "--no-progress"],
        cwd=tmp_path, env={**env, "UCX_LOG_LEVEL": "error"}, capture_output=True, text=True,
        timeout=100,
    )
    assert proc.returncode in (0, None), proc.stderr
    notes = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("seen-*.json"))]
    assert len(notes) == n
    for seen in notes:
        assert set(seen) == {"numpy", "scipy", "sklearn"}, seen  # the probe saw them load
        assert all(seen.values()), f"loaded before MPI_Init: {seen}"
