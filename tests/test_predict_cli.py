"""``hpcml predict`` as a user runs it: ``-n 1/2/3`` (self-launched), under ``mpiexec``, errors.

Every case is a subprocess; they start together (module fixture) so the module takes about
as long as the slowest few rather than their sum. Each rank pays for importing scikit-learn,
so keep the number of MPI runs small: fewer rows than ranks and empty inputs are covered in
process, on every rank of 1, 2 and 3, by tests/mpi/test_mpi_predict.py (the same code the
ranks of 'hpcml predict' run).
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from hpcml.cli.main import main

LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCALNRANKS", "SLURM_", "HPCML_")
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")

# name: arguments after 'hpcml' (or the full command when it starts with mpiexec)
CASES = {
    "n1_npy": ["predict", "-n", "1", "logit.joblib", "tree.joblib", "x.npy", "--out", "n1.npy"],
    "n2_csv_proba": ["predict", "-n", "2", "logit.joblib", "tree.joblib", "x.csv", "--out",
                     "n2.csv", "--method", "predict_proba", "--block-rows", "37"],
    "n3_csv_npy": ["predict", "-n", "3", "logit.joblib", "tree.joblib", "x.csv", "--out",
                   "n3.npy", "--block-rows", "29", "--no-progress"],
    # bad input: one line, exit status 2, nothing written
    "no_method": ["predict", "-n", "2", "lin.joblib", "x.npy", "--out", "e1.npy",
                  "--method", "predict_proba"],
    "columns": ["predict", "-n", "2", "logit.joblib", "x4.npy", "--out", "e2.npy"],
    "no_input": ["predict", "-n", "2", "logit.joblib", "nowhere.csv", "--out", "e3.npy"],
    "out_exists": ["predict", "-n", "2", "logit.joblib", "x.npy", "--out", "taken.csv"],
    "bad_value": ["predict", "-n", "2", "logit.joblib", "bad.csv", "--out", "e4.npy",
                  "--block-rows", "10", "--no-progress"],
    "mpiexec_no_method": [MPIEXEC, "-n", "2", sys.executable, "-m", "hpcml", "predict",
                          "lin.joblib", "x.npy", "--out", "e5.npy", "--method", "predict_proba"],
}


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    env["UCX_LOG_LEVEL"] = "error"
    return env


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict_cli")
    X, y = make_classification(n_samples=500, n_features=6, n_informative=4, n_classes=3,
                               random_state=3)
    models = {
        "logit": LogisticRegression(max_iter=1000).fit(X, y),
        "tree": DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, y),
    }
    for name, est in models.items():
        joblib.dump(est, d / f"{name}.joblib")
    joblib.dump(LinearRegression().fit(X, X[:, 0]), d / "lin.joblib")
    np.save(d / "x.npy", X)
    np.save(d / "x4.npy", X[:, :4])
    header = ",".join(f"f{j}" for j in range(6))
    lines = [header] + [",".join(map(repr, row)) for row in X.tolist()]
    (d / "x.csv").write_text("\n".join(lines) + "\n")
    lines[400] = "1,2,3,oops,5,6"
    (d / "bad.csv").write_text("\n".join(lines) + "\n")
    (d / "taken.csv").write_text("keep me\n")
    return d, X, models


@pytest.fixture(scope="module")
def runs(files):
    d = files[0]
    procs = {}
    for name, args in CASES.items():
        cmd = args if args[0] == MPIEXEC else [sys.executable, "-m", "hpcml", *args]
        procs[name] = subprocess.Popen(cmd, cwd=d, env=clean_env(), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    out = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        out[name] = (proc.returncode, stdout, stderr)
    return out


def test_one_rank_npy(files, runs):
    d, X, models = files
    code, stdout, stderr = runs["n1_npy"]
    assert code == 0, stderr
    expected = np.column_stack([m.predict(X) for m in models.values()])
    np.testing.assert_array_equal(np.load(d / "n1.npy"), expected)
    assert "wrote n1.npy: 500 rows x 2 columns (logit, tree)" in stdout


def test_two_ranks_csv_probabilities(files, runs):
    d, X, models = files
    code, stdout, stderr = runs["n2_csv_proba"]
    assert code == 0, stderr
    with open(d / "n2.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [f"{m}:{c}" for m in ("logit", "tree") for c in range(3)]
    expected = np.hstack([m.predict_proba(X) for m in models.values()])
    np.testing.assert_allclose(np.array(rows[1:], dtype=float), expected, rtol=0, atol=1e-12)
    # progress from rank 0 only (a .csv input counts blocks: its row count is not known ahead)
    assert len(re.findall(r"^blocks (\d+)/\1 \(100\.0%\)", stderr, re.M)) == 1, stderr


def test_three_ranks_csv_to_npy(files, runs):
    d, X, models = files
    code, _, stderr = runs["n3_csv_npy"]
    assert code == 0, stderr
    expected = np.column_stack([m.predict(X) for m in models.values()])
    np.testing.assert_array_equal(np.load(d / "n3.npy"), expected)
    assert stderr == ""


@pytest.mark.parametrize("name, message", [
    ("no_method", "model lin (lin.joblib): LinearRegression has no predict_proba (it has: "
                  "predict); choose another --method"),
    ("columns", "x4.npy has 4 columns but model logit (logit.joblib) expects 6 features"),
    ("no_input", "input file not found: nowhere.csv"),
    ("out_exists", "--out taken.csv: already exists; choose another name or pass --force"),
    ("bad_value", "bad.csv: the line at byte"),
    ("mpiexec_no_method", "LinearRegression has no predict_proba"),
])
def test_bad_input_one_line_exit_2_nothing_written(files, runs, name, message):
    d = files[0]
    code, stdout, stderr = runs[name]
    assert code == 2, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr  # one line, from one rank, no traceback
    assert lines[0].startswith("hpcml: error: ") and message in lines[0]
    assert (d / "taken.csv").read_text() == "keep me\n"
    assert not [p.name for p in d.iterdir() if p.name.startswith((".e", "e1", "e2", "e3", "e4",
                                                                   "e5"))]


def test_help_documents_columns(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "<model file stem>:<class>" in text and "--block-rows" in text
