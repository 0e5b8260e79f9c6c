"""random and halving specs over MPI: scikit-learn's results at any world size, and resume."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from sklearn.datasets import make_classification
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import HalvingGridSearchCV, RandomizedSearchCV, StratifiedKFold
from sklearn.tree import DecisionTreeClassifier

from hpcml import run_experiment

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]

DATA = {"n_samples": 240, "n_features": 8, "n_informative": 4, "random_state": 0}
GRID = {"max_depth": [1, 2, 3, 4, None], "min_samples_leaf": [1, 4, 16]}


def spec(search, grid=GRID):
    return copy.deepcopy({
        "data": {"generator": "sklearn.datasets.make_classification", "params": DATA},
        "cv": {"splitter": "StratifiedKFold", "n_splits": 3, "shuffle": True, "random_state": 0},
        "search": search,
        "models": {"tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                            "params": {"random_state": 0}, "grid": grid}}})


def sklearn_fit(search):
    return search.fit(*make_classification(**DATA))


def assert_same(ours, theirs, columns=("iter", "n_resources")):
    assert ours["params"] == theirs["params"]
    for key in (*columns, "mean_test_score", "rank_test_score",
                *(f"split{k}_test_score" for k in range(3))):
        np.testing.assert_array_equal(np.asarray(ours[key]), np.asarray(theirs[key]),
                                      err_msg=key)


def test_halving_spec_equals_halving_grid_search_cv(comm, shared_tmp):
    res = run_experiment(spec({"strategy": "halving", "factor": 2, "random_state": 0}),
                         out=shared_tmp / "halving", comm=comm, progress=False)
    sk = sklearn_fit(HalvingGridSearchCV(
        DecisionTreeClassifier(random_state=0), GRID, factor=2, random_state=0,
        cv=StratifiedKFold(3, shuffle=True, random_state=0)))
    assert_same(res.cv_results, sk.cv_results_)
    assert res.best["index"] == sk.best_index_ and res.best["params"] == sk.best_params_
    if comm.Get_rank() == 0:
        assert (shared_tmp / "halving" / "best.json").exists()
        lines = "".join(p.read_text() for p in (shared_tmp / "halving" / "journal").glob(
            "*.jsonl"))
        assert lines.count("\n") == len(res.cv_results["params"]) * 3


def test_random_spec_equals_randomized_search_cv(comm):
    grid = {"max_depth": "randint(1, 8)", "min_samples_leaf": [1, 4, 16]}
    res = run_experiment(spec({"strategy": "random", "n_iter": 6, "random_state": 2}, grid),
                         comm=comm, progress=False)
    sk = sklearn_fit(RandomizedSearchCV(
        DecisionTreeClassifier(random_state=0),
        {"max_depth": scipy.stats.randint(1, 8), "min_samples_leaf": [1, 4, 16]}, n_iter=6,
        random_state=2, cv=StratifiedKFold(3, shuffle=True, random_state=0)))
    assert_same(res.cv_results, sk.cv_results_, columns=())
    assert res.best["index"] == sk.best_index_


def test_stop_mid_halving_then_resume_is_identical(comm, shared_tmp):
    raw = spec({"strategy": "halving", "factor": 2, "random_state": 0})
    out = shared_tmp / "stopped"

    def stop() -> bool:  # round 0 has 45 fits: the stop lands in a later round
        return _records(out) >= 50

    first = run_experiment(raw, out=out, comm=comm, progress=False, stop=stop)
    assert first.interrupted and not first.complete
    second = run_experiment(raw, out=out, comm=comm, progress=False)
    assert second.complete and second.n_resumed >= 45
    whole = run_experiment(raw, comm=comm, progress=False)
    assert second.cv_results["params"] == whole.cv_results["params"]
    for key in ("iter", "n_resources", "mean_test_score", "rank_test_score"):
        np.testing.assert_array_equal(np.asarray(second.cv_results[key]),
                                      np.asarray(whole.cv_results[key]), err_msg=key)
    assert second.best["index"] == whole.best["index"]


def _records(out: Path) -> int:
    folder = out / "journal"
    if not folder.is_dir():
        return 0
    n = 0
    for path in folder.glob("*.jsonl"):
        try:
            n += path.read_text().count("\n")
        except OSError:
            continue
    return n
