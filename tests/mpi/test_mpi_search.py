"""Distributed grid search equals scikit-learn's GridSearchCV, at any world size."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from hpcml import MPISearchCV, run_experiment
from hpcml.core.schedule import plan_chunks
from hpcml.engines import get_engine, open_world
from hpcml.engines.mpi.world import MPIWorld

pytestmark = pytest.mark.mpi

TIME_KEYS = ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time")


def assert_cv_results_equal(ours, theirs, atol=1e-12):
    keys = [k for k in theirs if k not in TIME_KEYS]
    assert [k for k in ours if k not in TIME_KEYS and k != "model"] == keys
    for key in keys:
        a, b = ours[key], theirs[key]
        if key == "params":
            assert a == b
        elif key.startswith("param_"):
            mask = np.ma.getmaskarray(b)
            assert list(np.ma.getmaskarray(a)) == list(mask), key
            assert list(np.ma.getdata(a)[~mask]) == list(np.ma.getdata(b)[~mask]), key
            assert np.ma.getdata(a).dtype == np.ma.getdata(b).dtype, key
        elif key.startswith("rank_"):
            np.testing.assert_array_equal(a, b, err_msg=key)
        else:
            np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=key)


def test_engine_runs_every_task_once(comm):
    engine = get_engine("mpi", world=comm)
    costs = np.r_[np.full(5, 0.5), np.full(300, 1e-4)]
    plan = plan_chunks(costs, engine.world.size, grain=0.001)
    from hpcml.core.fitting import FitResult

    def run_task(t):
        return FitResult(t, {"score": float(t)}, None, 0.0, 0.0)

    results = engine.run(plan, run_task)
    if comm.Get_rank() == 0:
        assert sorted(results) == list(range(len(costs)))
        assert all(results[t].test_scores["score"] == t for t in results)
        if comm.Get_size() > 1:
            assert {r.rank for r in results.values()} <= set(range(comm.Get_size()))
    else:
        assert results is None


def test_bcast_array_sends_root_data(comm):
    world = MPIWorld(comm) if comm.Get_size() == 1 else open_world(comm)
    rng = np.random.default_rng(comm.Get_rank())
    mine = rng.normal(size=(37, 5))
    got = world.bcast_array(mine)
    expected = comm.bcast(mine if comm.Get_rank() == 0 else None, root=0)
    np.testing.assert_array_equal(got, expected)
    labels = world.bcast_array(np.array(["a", "bb", None], dtype=object))
    assert list(labels) == ["a", "bb", None]
    world.close()


def test_mpisearchcv_equals_gridsearchcv_multimetric(comm):
    X, y = make_classification(n_samples=300, n_features=8, random_state=3)
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    grid = [{"C": [0.01, 0.1, 1.0]}, {"C": [10.0], "fit_intercept": [False]}]
    scoring = ["roc_auc", "accuracy"]
    ours = MPISearchCV(
        LogisticRegression(max_iter=500), grid, cv=cv, scoring=scoring, refit="accuracy",
        comm=comm, progress=False,
    ).fit(X, y)
    ref = GridSearchCV(
        LogisticRegression(max_iter=500), grid, cv=cv, scoring=scoring, refit="accuracy"
    ).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    assert ours.best_params_ == ref.best_params_
    assert ours.best_index_ == ref.best_index_
    assert ours.best_score_ == pytest.approx(ref.best_score_, abs=1e-12)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.score(X, y) == pytest.approx(ref.score(X, y), abs=1e-12)
    assert ours.n_splits_ == 4


def test_mpisearchcv_pipeline_single_metric_and_train_scores(comm):
    X, y = make_classification(n_samples=200, n_features=6, random_state=7)
    pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC())])
    grid = {"svc__C": [0.1, 1.0, 10.0], "svc__kernel": ["rbf", "linear"]}
    ours = MPISearchCV(pipe, grid, cv=3, return_train_score=True, comm=comm, progress=False)
    ours.fit(X, y)
    ref = GridSearchCV(pipe, grid, cv=3, return_train_score=True).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    assert ours.best_params_ == ref.best_params_


def test_mpisearchcv_regression_and_failing_fits(comm):
    X, y = make_regression(n_samples=150, n_features=5, noise=1.0, random_state=0)
    grid = {"alpha": [0.1, 1.0, -1.0]}  # alpha < 0 makes Ridge raise: error_score=nan
    with pytest.warns(Warning):
        ours = MPISearchCV(Ridge(), grid, cv=KFold(3), scoring="r2", comm=comm,
                           progress=False).fit(X, y)
    with pytest.warns(Warning):
        ref = GridSearchCV(Ridge(), grid, cv=KFold(3), scoring="r2").fit(X, y)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    assert np.isnan(ours.cv_results_["mean_test_score"][2])
    assert ours.cv_results_["rank_test_score"][2] == 3


def test_run_experiment_equals_gridsearchcv_over_models(comm, shared_tmp):
    spec = {
        "data": {
            "generator": "sklearn.datasets.make_classification",
            "params": {"n_samples": 240, "n_features": 10, "random_state": 11},
        },
        "cv": {"splitter": "StratifiedKFold", "n_splits": 3, "shuffle": True, "random_state": 0},
        "scoring": ["roc_auc", "accuracy"],
        "refit": "roc_auc",
        "models": {
            "logit": {
                "estimator": "sklearn.linear_model.LogisticRegression",
                "params": {"max_iter": 1000},
                "grid": {"C": [0.01, 1.0]},
            },
            "rf": {
                "estimator": "sklearn.ensemble.RandomForestClassifier",
                "params": {"random_state": 0},
                "grid": {"n_estimators": [5, 10], "max_depth": [None, 3]},
            },
            "tree": {
                "estimator": "sklearn.tree.DecisionTreeClassifier",
                "params": {"random_state": 0},
                "grid": [{"max_depth": [2]}, {"min_samples_leaf": [5]}],
            },
        },
    }
    out = shared_tmp / "exp"
    result = run_experiment(spec, out=out, comm=comm, progress=False)
    X, y = make_classification(n_samples=240, n_features=10, random_state=11)
    pipe = Pipeline([("model", LogisticRegression())])
    ref_grid = [
        {"model": [LogisticRegression(max_iter=1000)], "model__C": [0.01, 1.0]},
        {"model": [RandomForestClassifier(random_state=0)],
         "model__max_depth": [None, 3], "model__n_estimators": [5, 10]},
        {"model": [DecisionTreeClassifier(random_state=0)], "model__max_depth": [2]},
        {"model": [DecisionTreeClassifier(random_state=0)], "model__min_samples_leaf": [5]},
    ]
    ref = GridSearchCV(
        pipe, ref_grid, cv=StratifiedKFold(3, shuffle=True, random_state=0),
        scoring=["roc_auc", "accuracy"], refit="roc_auc",
    ).fit(X, y)
    cv = result.cv_results
    assert list(cv["model"]) == ["logit"] * 2 + ["rf"] * 4 + ["tree"] * 2
    for metric in ("roc_auc", "accuracy"):
        for key in [f"split{k}_test_{metric}" for k in range(3)] + [f"mean_test_{metric}"]:
            np.testing.assert_allclose(cv[key], ref.cv_results_[key], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(cv[f"rank_test_{metric}"], ref.cv_results_[f"rank_test_{metric}"])
    best = ref.best_params_
    assert result.best["index"] == ref.best_index_
    assert {f"model__{k}": v for k, v in result.best["params"].items()} == {
        k: v for k, v in best.items() if k != "model"
    }
    if comm.Get_rank() == 0:
        assert (out / "cv_results.csv").exists()
        assert (out / "best_model.joblib").exists()
        assert result.best_estimator is not None
        import json

        run = json.loads((out / "run.json").read_text())
        assert run["ranks"] == comm.Get_size()
        assert run["n_tasks"] == 8 * 3
        # re-plans land only between claims 2P and the end: at most one per point 2P, 4P, ...
        assert 0 <= run["replans"] <= 3
