"""save_oof: out-of-fold predictions equal cross_val_predict, at any world size."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.tree import DecisionTreeClassifier

from hpcml import run_experiment
from hpcml.run.collect import collect

pytestmark = pytest.mark.mpi


def spec(save_oof):
    return {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": 150, "n_features": 5, "n_classes": 3,
                            "n_informative": 3, "random_state": 5}},
        "cv": {"splitter": "StratifiedKFold", "n_splits": 3, "shuffle": True, "random_state": 2},
        "scoring": ["accuracy"],
        "save_oof": save_oof,
        "models": {
            "lr": {"estimator": "sklearn.linear_model.LogisticRegression",
                   "params": {"max_iter": 500}, "grid": {"C": [0.01, 1.0]}},
            "tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                     "params": {"random_state": 0}, "grid": {"max_depth": [2, 4]}},
        },
    }


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def reference(estimator, method):
    X, y = make_classification(n_samples=150, n_features=5, n_classes=3, n_informative=3,
                               random_state=5)
    cv = StratifiedKFold(3, shuffle=True, random_state=2)
    return cross_val_predict(estimator, X, y, cv=cv, method=method)


def test_oof_of_best_candidates_equals_cross_val_predict(comm, shared_tmp):
    out = shared_tmp / "oof"
    result = run_experiment(spec(True), out=out, comm=comm, progress=False)
    if comm.Get_rank() != 0:
        return
    rows = read(out / "oof_predictions.csv")
    assert len(rows) == 150 and [int(r["row"]) for r in rows] == list(range(150))
    cv = result.cv_results
    best_lr = min(range(2), key=lambda i: (cv["rank_test_accuracy"][i], i))
    best_tree = 2 + min(range(2), key=lambda i: (cv["rank_test_accuracy"][2 + i], i))
    lr = LogisticRegression(max_iter=500, C=cv["params"][best_lr]["C"])
    tree = DecisionTreeClassifier(random_state=0, max_depth=cv["params"][best_tree]["max_depth"])
    for name, est in (("lr", lr), ("tree", tree)):
        ref = reference(est, "predict_proba")
        ours = np.array([[float(r[f"{name}:{c}"]) for c in (0, 1, 2)] for r in rows])
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    # collect rebuilds the same file from the journal
    before = (out / "oof_predictions.csv").read_text()
    (out / "oof_predictions.csv").unlink()
    collect(out, refit=False)
    assert (out / "oof_predictions.csv").read_text() == before


def test_oof_of_all_candidates_with_predict(comm, shared_tmp):
    out = shared_tmp / "oof_all"
    run_experiment(spec({"candidates": "all", "method": "predict"}), out=out, comm=comm,
                   progress=False)
    if comm.Get_rank() != 0:
        return
    rows = read(out / "oof_predictions.csv")
    assert list(rows[0])[:2] == ["row", "fold"]
    assert list(rows[0])[2:] == ["lr#0", "lr#1", "tree#2", "tree#3"]
    ref = reference(DecisionTreeClassifier(random_state=0, max_depth=4), "predict")
    np.testing.assert_array_equal([int(r["tree#3"]) for r in rows], ref)
