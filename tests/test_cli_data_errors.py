"""Bad data found by the ranks (under mpiexec): one line, exit status 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SPEC = """\
data: {path: d.csv, target: label}
cv: {splitter: SPLITTER, n_splits: NSPLITS}
models:
  lr: {estimator: sklearn.linear_model.LogisticRegression}
"""
ROWS = ["1,2,0", "3,4,1", "5,6,0", "7,8,1", "9,1,0", "2,3,1"]


def run(tmp_path, rows, splitter="KFold", n_splits=2, out="out", ranks=2):
    (tmp_path / "d.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    spec = SPEC.replace("SPLITTER", splitter).replace("NSPLITS", str(n_splits))
    (tmp_path / "s.yaml").write_text(spec)
    env = {**os.environ, "UCX_LOG_LEVEL": "error"}
    for var in ("PMI_RANK", "PMI_SIZE", "PMI_FD", "HYDRA_CONTROL_FD"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "hpcml", "run", "-n", str(ranks), "s.yaml", "--out", out,
         "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )


def assert_usage_error(proc, tmp_path, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpcml: error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("ranks", [1, 2])
def test_nan_rejected_by_the_model(tmp_path, ranks):
    rows = ROWS.copy()
    rows[1] = "3,,1"
    proc = run(tmp_path, rows, ranks=ranks)
    assert_usage_error(proc, tmp_path, "data:", "NaN", "column 'b'", "models.lr", "SimpleImputer")


def test_more_folds_than_the_smallest_class(tmp_path):
    proc = run(tmp_path, ROWS, splitter="StratifiedKFold", n_splits=5)
    assert_usage_error(proc, tmp_path, "cv.n_splits", "only 3 members", "n_splits <= 3")


def test_out_holding_another_experiment_is_refused(tmp_path):
    first = run(tmp_path, ROWS, ranks=1)
    assert first.returncode == 0, first.stderr
    (tmp_path / "out" / "run.json").unlink()  # as if that run had been stopped
    before = sorted(p.name for p in (tmp_path / "out").rglob("*"))
    proc = run(tmp_path, ROWS, n_splits=3)
    assert proc.returncode == 2
    assert "another experiment" in proc.stderr and "spec key 'cv' differs" in proc.stderr
    assert "--force" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == before
