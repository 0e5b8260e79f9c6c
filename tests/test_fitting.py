"""The cheap paths of one fit task give what scikit-learn's own clone, deepcopy and split give."""

import copy
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import pairwise_distances
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from hpcml.core.fitting import (
    FitResult,
    Folds,
    _split,
    candidate_estimator,
    make_scorer_map,
    unfitted_copy,
)
from hpcml.core.results import format_cv_results
from hpcml.core.tasks import TaskGrid
from hpcml.engines.base import SerialEngine
from hpcml.search.evaluate import evaluate_grid


class WithHooks(BaseEstimator, ClassifierMixin):
    """Copies itself its own way: the plain copy must not be used."""

    copies = 0

    def __init__(self, a=1):
        self.a = a

    def __deepcopy__(self, memo):
        WithHooks.copies += 1
        return WithHooks(a=self.a)


class Plain:
    def __init__(self):
        self.x, self.name = 1.5, "plain"


def same_state(a, b):
    assert type(a) is type(b) and a is not b and a.__dict__ is not b.__dict__
    assert list(vars(a)) == list(vars(b))
    assert repr(sorted(vars(a).items())) == repr(sorted(vars(b).items()))


@pytest.mark.parametrize("est", [
    DummyClassifier(strategy="stratified", random_state=3),
    LogisticRegression(C=0.5, class_weight=None),
    Pipeline([("s", StandardScaler()), ("m", LogisticRegression())]),  # nested: deepcopy
    LogisticRegression(class_weight={0: 1.0, 1: 2.0}),  # a dict param: deepcopy
    Plain(),
])
def test_unfitted_copy_equals_deepcopy(est):
    same_state(unfitted_copy(est), copy.deepcopy(est))


def test_unfitted_copy_is_independent_and_keeps_hooks():
    est = LogisticRegression(C=2.0)
    dup = unfitted_copy(est)
    dup.C = 3.0
    assert est.C == 2.0
    before = WithHooks.copies
    unfitted_copy(WithHooks(a=4))
    assert WithHooks.copies == before + 1


def test_unfitted_copy_of_a_random_state_copies_the_generator():
    est = DummyClassifier(random_state=np.random.RandomState(0))
    dup = unfitted_copy(est)
    assert dup.random_state is not est.random_state
    assert dup.random_state.randint(1000) == est.random_state.randint(1000)


@pytest.mark.parametrize("est, params", [
    (DummyClassifier(), {"strategy": "uniform", "random_state": 7}),
    (LogisticRegression(), {"C": 0.1, "penalty": None}),
    (LogisticRegression(), {}),
    (Pipeline([("s", StandardScaler()), ("m", LogisticRegression())]), {"m__C": 3.0}),
    (LogisticRegression(), {"class_weight": {0: 2.0, 1: 1.0}}),
])
def test_candidate_estimator_equals_clone_then_set_params(est, params):
    base = clone(est)
    got = candidate_estimator(base, params)
    want = clone(base).set_params(**clone(dict(params), safe=False))
    assert got is not base
    assert type(got) is type(want) and list(vars(got)) == list(vars(want))
    assert repr(got.get_params(deep=True)) == repr(want.get_params(deep=True))
    assert "class_weight" not in params or got.class_weight is not params["class_weight"]


def test_candidate_estimator_refuses_unknown_params_like_set_params():
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        candidate_estimator(clone(DummyClassifier()), {"nope": 1})


def test_fit_result_pickles_every_field():
    r = FitResult(3, {"s": 0.5}, {"s": 0.75}, 0.1, 0.2, error="boom", rank=2, start=1.0,
                  end=2.5, oof=np.arange(4.0))
    back = pickle.loads(pickle.dumps(r))
    for name in ("task", "test_scores", "train_scores", "fit_time", "score_time", "error",
                 "rank", "start", "end"):
        assert getattr(back, name) == getattr(r, name)
    np.testing.assert_array_equal(back.oof, r.oof)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("writeable", [True, False])
def test_numpy_split_equals_indexing(order, writeable):
    X = np.asarray(np.arange(60.0).reshape(20, 3), order=order)
    X.flags.writeable = writeable
    y = np.arange(20) % 2
    idx = np.array([5, 1, 19, 0, 7])
    X_part, y_part = _split(None, X, y, idx, pairwise=False)
    want = X[idx]
    np.testing.assert_array_equal(X_part, want)
    assert X_part.flags.c_contiguous == want.flags.c_contiguous and X_part.flags.writeable
    np.testing.assert_array_equal(y_part, y[idx])
    mask = np.zeros(20, dtype=bool)
    mask[idx] = True
    np.testing.assert_array_equal(_split(None, X, y, mask, pairwise=False)[0], X[mask])


def sklearn_results(est, grid, X, y, splits, scoring):
    search = GridSearchCV(est, grid, scoring=scoring, cv=splits, refit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (FitFailedWarning, UserWarning))
        search.fit(X, y)
    return search.cv_results_


def hpcml_results(est, grid, X, y, splits, scoring):
    tasks = TaskGrid([("m", grid)], len(splits))
    scorers, names = make_scorer_map(scoring, est)
    results = evaluate_grid(SerialEngine(), tasks, Folds(splits), X, y, {"m": est},
                            {"m": scorers}, progress=False)
    return format_cv_results(tasks.candidates, tasks.n_splits, results, names,
                             with_model=False)


@pytest.mark.parametrize("case", ["dummy", "pipeline", "pairwise"])
def test_evaluate_grid_scores_equal_grid_search_cv(case):
    X, y = make_classification(n_samples=90, n_features=6, random_state=1)
    splits = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    scoring = ["accuracy", "roc_auc"]
    if case == "dummy":
        est, grid = DummyClassifier(), {"strategy": ["prior", "stratified", "uniform"],
                                        "random_state": [0, 1]}
    elif case == "pipeline":
        est = Pipeline([("s", StandardScaler()), ("m", LogisticRegression())])
        grid = {"m__C": [0.01, 1.0], "m__class_weight": [None, "balanced"]}
    else:  # pairwise for some candidates only: the folds cut rows and columns for those
        X = pairwise_distances(X)
        est = KNeighborsClassifier()
        grid = {"metric": ["precomputed", "euclidean"], "n_neighbors": [3, 7]}
    ours = hpcml_results(est, grid, X, y, splits, scoring)
    theirs = sklearn_results(est, grid, X, y, splits, scoring)
    assert ours["params"] == theirs["params"]
    for key, want in theirs.items():
        if key.startswith(("split", "mean_test", "std_test", "rank_test")):
            np.testing.assert_array_equal(ours[key], want, err_msg=key)
