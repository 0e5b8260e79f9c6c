"""The four drop-ins at any world size: scikit-learn's results, fits on every rank, and an
error on one rank raised on every rank (same type and message), never a hang."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import loguniform
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    HalvingGridSearchCV,
    HalvingRandomSearchCV,
    RandomizedSearchCV,
)
from sklearn.tree import DecisionTreeClassifier

from hpcml import (
    MPIHalvingGridSearchCV,
    MPIHalvingRandomSearchCV,
    MPIRandomizedSearchCV,
    MPISearchCV,
)

pytestmark = pytest.mark.mpi

TIME_KEYS = ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time")


def data(n=120):
    return make_classification(n_samples=n, n_features=6, random_state=0)


def assert_same_results(ours, theirs):
    a, b = ours.cv_results_, theirs.cv_results_
    assert list(a) == list(b)
    for key in b:
        if key in TIME_KEYS:
            continue
        if key == "params" or key.startswith("param_"):
            assert list(a[key]) == list(b[key]), key
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-12, err_msg=key)
    for attr in ("best_index_", "best_params_", "n_resources_", "n_candidates_",
                 "n_iterations_", "n_possible_iterations_", "n_required_iterations_"):
        assert getattr(ours, attr, None) == getattr(theirs, attr, None), attr


def same_everywhere(comm, value):
    """``value`` is the same on every rank."""
    values = comm.allgather(value)
    assert all(v == values[0] for v in values), values


def raised_everywhere(comm, make, exc_type=Exception):
    """Run ``make()``; it raises on every rank, the same type and message."""
    with pytest.raises(exc_type) as info:
        make()
    same_everywhere(comm, (type(info.value).__name__, str(info.value)))
    return info.value


def on_last(comm, wrong, right):
    """``wrong`` on the last rank of a world of several, ``right`` elsewhere."""
    last = comm.Get_size() > 1 and comm.Get_rank() == comm.Get_size() - 1
    return wrong if last else right


CASES = [
    (MPIRandomizedSearchCV, RandomizedSearchCV,
     {"param_distributions": {"C": loguniform(1e-3, 1e2)}, "n_iter": 7, "random_state": 0}),
    (MPIHalvingGridSearchCV, HalvingGridSearchCV,
     {"param_grid": {"max_depth": [1, 2, 3, 4, None], "min_samples_leaf": [1, 5]},
      "random_state": 0, "factor": 2}),
    (MPIHalvingRandomSearchCV, HalvingRandomSearchCV,
     {"param_distributions": {"max_depth": list(range(1, 9))}, "n_candidates": 9,
      "random_state": 0, "factor": 3}),
]


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), CASES, ids=lambda c: getattr(
    c, "__name__", ""))
def test_drop_ins_equal_sklearn_and_spread_fits(comm, ours, theirs, kwargs):
    X, y = data(200)
    est = LogisticRegression() if ours is MPIRandomizedSearchCV else \
        DecisionTreeClassifier(random_state=0)
    mine = ours(est, comm=comm, progress=False, cv=3, **kwargs).fit(X, y)
    ref = theirs(est, cv=3, **kwargs).fit(X, y)
    assert_same_results(mine, ref)
    info = mine._hpcml_info
    assert info["calls"] == len(ref.cv_results_["params"]) * ref.n_splits_  # all through hpcml
    if comm.Get_size() > 1:
        assert len(info["ranks_used"]) > 1  # the fits were shared out
    same_everywhere(comm, mine.best_params_)


def test_random_state_none_same_candidates_on_every_rank(comm):
    X, y = data()
    search = MPIRandomizedSearchCV(LogisticRegression(), {"C": loguniform(1e-3, 1e2)},
                                   n_iter=5, cv=3, comm=comm, progress=False).fit(X, y)
    same_everywhere(comm, [p["C"] for p in search.cv_results_["params"]])


def test_fit_params_sample_weight_groups_and_dataframe(comm):
    X, y = data()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    weights = np.linspace(0.5, 2.0, len(y))
    groups = np.arange(len(y)) % 6
    grid = {"C": [0.1, 1.0, 10.0]}
    kw = {"cv": GroupKFold(3), "scoring": "accuracy"}
    mine = MPISearchCV(LogisticRegression(), grid, comm=comm, progress=False, **kw).fit(
        frame, y, sample_weight=weights, groups=groups)
    ref = GridSearchCV(LogisticRegression(), grid, **kw).fit(
        frame, y, sample_weight=weights, groups=groups)
    assert_same_results(mine, ref)
    assert list(mine.feature_names_in_) == list(frame.columns)
    # every fit went through hpcml's backend: fails loudly if scikit-learn stops handing its
    # fits to joblib.Parallel inside ``with parallel:`` (hpcml.search.spmd.SPMDBackend)
    assert mine._hpcml_info["calls"] == 9 and mine._hpcml_info["rounds"] == 1


def test_data_that_differ_on_one_rank(comm):
    X, y = data()
    X = on_last(comm, X + 1.0, X)
    search = MPISearchCV(LogisticRegression(), {"C": [1.0]}, cv=3, comm=comm, progress=False)
    if comm.Get_size() == 1:
        search.fit(X, y)
        return
    exc = raised_everywhere(comm, lambda: search.fit(X, y), ValueError)
    assert "different data on different ranks" in str(exc) and "X" in str(exc)


def test_groups_none_with_a_group_splitter(comm):
    X, y = data()
    groups = on_last(comm, None, np.arange(len(y)) % 4) if comm.Get_size() > 1 else None
    search = MPISearchCV(LogisticRegression(), {"C": [1.0]}, cv=GroupKFold(2), comm=comm,
                         progress=False)
    raised_everywhere(comm, lambda: search.fit(X, y, groups=groups), ValueError)


def test_bad_parameter_on_one_rank(comm):
    X, y = data()
    search = MPISearchCV(LogisticRegression(), {"C": [1.0]}, cv=3, comm=comm, progress=False,
                         error_score=on_last(comm, "bogus", np.nan)
                         if comm.Get_size() > 1 else "bogus")
    raised_everywhere(comm, lambda: search.fit(X, y), ValueError)


class FailsOnRank(ClassifierMixin, BaseEstimator):
    """Fails to fit on ``rank`` (every fit, or only a fit on all of ``n_all`` rows)."""

    def __init__(self, rank=-1, n_all=None):
        self.rank = rank
        self.n_all = n_all

    def fit(self, X, y):
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() == self.rank and self.n_all in (None, len(X)):
            raise RuntimeError(f"fit fails on rank {self.rank}")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_refit_failing_on_one_rank_only(comm):
    X, y = data()
    last = comm.Get_size() - 1
    search = MPISearchCV(FailsOnRank(rank=last, n_all=len(X)), {"n_all": [len(X)]}, cv=3,
                         comm=comm, progress=False)
    exc = raised_everywhere(comm, lambda: search.fit(X, y), RuntimeError)
    assert str(exc) == f"fit fails on rank {last}"


class FailsFor(ClassifierMixin, BaseEstimator):
    """Fails to fit when ``bad`` (on whichever rank runs that fit)."""

    def __init__(self, bad=False):
        self.bad = bad

    def fit(self, X, y):
        if self.bad:
            raise ValueError("never fits")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_every_fit_failing(comm):
    X, y = data()
    search = MPISearchCV(FailsFor(), {"bad": [True]}, cv=3, comm=comm, progress=False)
    exc = raised_everywhere(comm, lambda: search.fit(X, y), ValueError)
    assert "All the 3 fits failed" in str(exc)


def test_some_fits_failing_warn_on_every_rank(comm):
    X, y = data()
    search = MPISearchCV(FailsFor(), {"bad": [False, True, False]}, cv=3, comm=comm,
                         progress=False)
    with pytest.warns(Warning) as record:
        search.fit(X, y)
    failed = [str(w.message).split("\n")[1] for w in record
              if w.category.__name__ == "FitFailedWarning"]
    assert failed == ["3 fits failed out of a total of 9."]
    same_everywhere(comm, np.isnan(search.cv_results_["mean_test_score"]).tolist())


def test_error_score_raise_on_every_rank(comm):
    X, y = data()
    search = MPISearchCV(FailsFor(), {"bad": [False, True]}, cv=3, error_score="raise",
                         comm=comm, progress=False)
    exc = raised_everywhere(comm, lambda: search.fit(X, y), ValueError)
    assert str(exc) == "never fits"


def test_scorer_that_raises(comm):
    X, y = data()

    def scorer(est, X_test, y_test):
        if est.C == 10.0:  # one candidate's folds: on whichever ranks run them
            raise ZeroDivisionError("scorer fails for C=10")
        return 1.0

    search = MPISearchCV(LogisticRegression(), {"C": [0.1, 1.0, 10.0]}, cv=3, scoring=scorer,
                         error_score="raise", comm=comm, progress=False)
    exc = raised_everywhere(comm, lambda: search.fit(X, y), ZeroDivisionError)
    assert str(exc) == "scorer fails for C=10"
    search.set_params(error_score=np.nan)
    with pytest.warns(UserWarning, match="Scoring failed"):
        search.fit(X, y)
    same_everywhere(comm, np.isnan(search.cv_results_["mean_test_score"]).tolist())
