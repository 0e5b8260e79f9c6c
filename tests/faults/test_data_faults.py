"""Data faults: each is one line naming the file (and row, column), exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from faultkit import one_error_line, run

from hpcml.errors import UsageError
from hpcml.run.experiment import run_experiment
from hpcml.spec import load_spec, precheck_spec

SPEC = """\
data: {path: DATA, target: label}
cv: 2
models:
  lr: {estimator: sklearn.linear_model.LogisticRegression}
"""
ROWS = ["1,2,0", "3,4,1", "5,6,0", "7,8,1", "9,1,0", "2,3,1"]


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    (tmp_path / "d.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    path = tmp_path / "s.yaml"
    path.write_text(SPEC.replace("DATA", "d.csv"))
    return path


def _refused(tmp_path: Path, *needles: str) -> str:
    proc = run(["run", "-n", "2", "s.yaml", "--out", "out", "--no-progress"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc, *needles)
    assert not (tmp_path / "out").exists()
    return line


@pytest.mark.timeout(60)
def test_empty_target_cell_is_refused_with_file_column_and_line(tmp_path):
    rows = ROWS.copy()
    rows[3] = "7,8,"
    _csv(tmp_path, rows)
    _refused(tmp_path, "data.target", "d.csv line 5", "column 'label'", "empty cell",
             "Input y contains NaN")


@pytest.mark.timeout(60)
def test_ragged_csv_row_is_refused(tmp_path):
    rows = ROWS.copy()
    rows[2] = "5,6,0,9"
    _csv(tmp_path, rows)
    _refused(tmp_path, "d.csv line 4", "4 fields, header has 3")


@pytest.mark.timeout(60)
def test_single_class_target_is_refused_before_any_fit(tmp_path):
    _csv(tmp_path, [r[:-1] + "1" for r in ROWS])
    _refused(tmp_path, "data.target", "single class (1)", "models.lr", "need at least 2 classes")


def test_npz_without_y_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((6, 2)))
    (tmp_path / "s.yaml").write_text(SPEC.replace("DATA", "d.npz").replace(", target: label", ""))
    with pytest.raises(UsageError, match=r"data.target: d.npz has no array 'y' \(has \['X'\]\)"):
        run_experiment(load_spec(tmp_path / "s.yaml"), progress=False)


def test_nan_target_in_npz_is_refused_with_its_row(tmp_path):
    y = np.array([0, 1, 0, np.nan, 1, 0])
    np.savez(tmp_path / "d.npz", X=np.ones((6, 2)), y=y)
    (tmp_path / "s.yaml").write_text(SPEC.replace("DATA", "d.npz").replace(", target: label", ""))
    with pytest.raises(UsageError, match="target holds NaN .first at row 3"):
        run_experiment(load_spec(tmp_path / "s.yaml"), progress=False)


def test_data_file_that_disappears_after_the_check(tmp_path):
    """The launcher checked the file; it is gone when the ranks load it."""
    path = _csv(tmp_path, ROWS)
    assert precheck_spec(path) == tmp_path / "d.csv"
    spec = load_spec(path)
    (tmp_path / "d.csv").unlink()
    with pytest.raises(UsageError, match="data.path: data file not found: .*d.csv"):
        run_experiment(spec, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
