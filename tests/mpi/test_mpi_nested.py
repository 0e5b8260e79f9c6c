"""Nested CV (``outer_cv``) at any world size: the outer scores and choices of
``cross_validate(GridSearchCV(...), cv=outer_cv)``, and a stop then a resume that give them."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_validate
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from hpcml import run_experiment

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

DATA = {"n_samples": 150, "n_features": 5, "n_classes": 3, "n_informative": 3,
        "random_state": 4}
SVC_GRID = {"C": [0.1, 1.0, 10.0], "gamma": ["scale", 0.05]}
TREE_GRID = {"max_depth": [2, 5]}


def spec():
    return {
        "data": {"generator": "sklearn.datasets.make_classification", "params": DATA},
        "cv": {"splitter": "KFold", "n_splits": 3, "shuffle": True, "random_state": 2},
        "outer_cv": {"splitter": "StratifiedKFold", "n_splits": 3, "shuffle": True,
                     "random_state": 1},
        "scoring": ["accuracy", "balanced_accuracy"], "refit": "balanced_accuracy",
        "models": {
            "svc": {"estimator": "sklearn.svm.SVC", "grid": SVC_GRID},
            "tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                     "params": {"random_state": 0}, "grid": TREE_GRID},
        },
    }


def reference():
    X, y = make_classification(**DATA)
    scoring = ["accuracy", "balanced_accuracy"]
    out = {}
    for name, est, grid in (("svc", SVC(), SVC_GRID),
                            ("tree", DecisionTreeClassifier(random_state=0), TREE_GRID)):
        gs = GridSearchCV(est, grid, cv=KFold(3, shuffle=True, random_state=2),
                          scoring=scoring, refit="balanced_accuracy")
        out[name] = cross_validate(gs, X, y, cv=StratifiedKFold(3, shuffle=True,
                                                                random_state=1),
                                   scoring=scoring, return_estimator=True)
    return out


def check(path):
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == 6
    for name, ref in reference().items():
        mine = [r for r in rows if r["model"] == name]
        assert [json.loads(r["params"]) for r in mine] == [e.best_params_
                                                            for e in ref["estimator"]]
        for m in ("accuracy", "balanced_accuracy"):
            assert [float(r[f"test_{m}"]) for r in mine] == list(ref[f"test_{m}"])


def test_nested_cv_equals_cross_validate_at_any_world_size(comm, shared_tmp):
    out = shared_tmp / "nested"
    result = run_experiment(spec(), out=out, comm=comm, progress=False)
    assert result.complete  # on every rank
    assert result.run["n_tasks"] == 8 * (3 + 3 * 3) + 2 * 3
    if comm.Get_rank() == 0:
        check(out / "nested_cv.csv")
        best = json.loads((out / "best.json").read_text())
        assert set(best["nested"]) == {"accuracy", "balanced_accuracy"}
        assert set(best["nested_by_model"]) == {"svc", "tree"}


class Counter:
    def __init__(self):
        self.seen = 0

    def result(self, r):
        self.seen += 1

    def update(self, *a, **k):
        pass

    def close(self):
        pass


def test_stop_then_resume_gives_the_same_nested_scores(comm, shared_tmp):
    out = shared_tmp / "stopped"
    counter = Counter()
    first = run_experiment(spec(), out=out, comm=comm, progress=False,
                           stop=lambda: comm.Get_rank() == 0 and counter.seen >= 4,
                           observers=(counter,))
    assert first.interrupted and not first.complete
    again = run_experiment(spec(), out=out, comm=comm, progress=False)
    assert again.complete and again.n_resumed >= 4
    if comm.Get_rank() == 0:
        assert not np.isnan(again.cv_results["mean_test_accuracy"]).any()
        check(out / "nested_cv.csv")
