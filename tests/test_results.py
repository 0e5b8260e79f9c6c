"""cv_results_ built from hpcml's fits equals scikit-learn's GridSearchCV on the same folds."""

import csv
import io
import json
import math
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from hpcml.core.fitting import FitResult, fit_and_score, make_scorer_map
from hpcml.core.results import best_index, cv_results_to_csv, format_cv_results
from hpcml.core.tasks import Candidate, TaskGrid

SCORING = ["roc_auc", "accuracy"]
LOGIT_GRID = {"C": [0.001, 0.1, 1.0, 100.0]}
# list of dicts with a None value: masked param_* columns of object dtype
TREE_GRID = [{"max_depth": [None, 2, 4]}, {"min_samples_leaf": [1, 8]}]


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=120, n_features=8, n_informative=4, random_state=3)
    splits = list(StratifiedKFold(4, shuffle=True, random_state=0).split(X, y))
    return X, y, splits


def hpcml_cv_results(models, X, y, splits, scoring, *, return_train_score=False,
                     error_score=np.nan, with_model=False):
    """Run every task with hpcml.core.fitting and format the results (what an engine does)."""
    grid = TaskGrid([(name, g) for name, _, g in models], len(splits))
    estimators = {name: est for name, est, _ in models}
    metrics = None
    scorers = {}
    for name, est in estimators.items():
        scorers[name], metrics = make_scorer_map(scoring, est)
    results = {}
    # fill in reverse order: the result must not depend on the order fits come back in
    for t in reversed(list(grid)):
        train, test = splits[t.fold]
        model = t.candidate.model
        results[t.index] = fit_and_score(
            estimators[model], X, y, t.candidate.params, train, test, scorers[model],
            task=t.index, return_train_score=return_train_score, error_score=error_score,
        )
    return format_cv_results(
        grid.candidates, grid.n_splits, results, metrics, return_train_score, with_model
    )


def sklearn_cv_results(est, grid, X, y, splits, scoring, **kwargs):
    search = GridSearchCV(est, grid, scoring=scoring, cv=splits, refit=False, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)
        warnings.simplefilter("ignore", UserWarning)
        search.fit(X, y)
    return search.cv_results_


def assert_same_cv_results(ours, theirs, check_params=True):
    ours_keys = [k for k in ours if k not in ("model", "n_finished_splits")]
    assert ours_keys == list(theirs)  # same columns, same order
    for key, want in theirs.items():
        got = ours[key]
        if key.endswith(("fit_time", "score_time")):
            assert np.shape(got) == np.shape(want)
            assert np.all(np.isfinite(got)) and np.all(np.asarray(got) >= 0)
        elif key == "params":
            if check_params:
                assert got == want
        elif key.startswith("param_"):
            if check_params:
                assert isinstance(got, np.ma.MaskedArray)
                assert got.dtype == want.dtype, key
                np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(want))
                keep = ~np.ma.getmaskarray(want)
                assert list(got.data[keep]) == list(want.data[keep]), key
        elif key.startswith("rank_"):
            assert got.dtype == want.dtype == np.int32, key
            np.testing.assert_array_equal(got, want, err_msg=key)
        else:
            assert got.shape == want.shape, key
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.parametrize(
    "name, est, grid",
    [
        ("logit", LogisticRegression(solver="liblinear"), LOGIT_GRID),
        ("tree", DecisionTreeClassifier(random_state=0), TREE_GRID),
    ],
)
@pytest.mark.parametrize("return_train_score", [False, True])
def test_equals_grid_search_cv(data, name, est, grid, return_train_score):
    X, y, splits = data
    ours = hpcml_cv_results([(name, est, grid)], X, y, splits, SCORING,
                            return_train_score=return_train_score)
    theirs = sklearn_cv_results(est, grid, X, y, splits, SCORING,
                                return_train_score=return_train_score)
    assert_same_cv_results(ours, theirs)
    assert "model" not in ours
    assert ours["n_finished_splits"].tolist() == [len(splits)] * len(ours["params"])


def test_single_metric_is_named_score(data):
    X, y, splits = data
    est = DecisionTreeClassifier(random_state=0)
    ours = hpcml_cv_results([("tree", est, TREE_GRID)], X, y, splits, None)
    theirs = sklearn_cv_results(est, TREE_GRID, X, y, splits, None)
    assert_same_cv_results(ours, theirs)
    assert "rank_test_score" in ours


def test_two_models_rank_together(data):
    """Candidates of several models are ranked together, like one search over a pipeline step."""
    X, y, splits = data
    logit = LogisticRegression(solver="liblinear")
    tree = DecisionTreeClassifier(random_state=0)
    ours = hpcml_cv_results(
        [("logit", logit, LOGIT_GRID), ("tree", tree, TREE_GRID)], X, y, splits, SCORING,
        with_model=True,
    )
    pipe_grid = [{"clf": [logit], **{f"clf__{k}": v for k, v in LOGIT_GRID.items()}}]
    pipe_grid += [{"clf": [tree], **{f"clf__{k}": v for k, v in g.items()}} for g in TREE_GRID]
    theirs = sklearn_cv_results(Pipeline([("clf", logit)]), pipe_grid, X, y, splits, SCORING)
    # params are named differently (C vs clf__C); every score, mean, std and rank is equal
    theirs = {k: v for k, v in theirs.items() if not k.startswith("param")}
    ours_cmp = {k: v for k, v in ours.items() if not k.startswith("param")}
    ours_cmp["params"] = theirs["params"] = None
    assert_same_cv_results(ours_cmp, theirs, check_params=False)
    assert ours["model"].tolist() == ["logit"] * 4 + ["tree"] * 5
    assert ours["params"][0] == {"C": 0.001}
    assert ours["params"][4] == {"max_depth": None}
    # C is masked for the tree rows, max_depth for the logit rows
    assert ours["param_C"].mask.tolist() == [False] * 4 + [True] * 5
    assert ours["param_max_depth"].mask.tolist() == [True] * 4 + [False] * 3 + [True] * 2


def test_failed_fits_rank_last_like_sklearn(data):
    X, y, splits = data
    est = LogisticRegression(solver="liblinear")
    grid = {"C": [1.0, -1.0, 0.01, -2.0]}  # a negative C fails to fit
    ours = hpcml_cv_results([("logit", est, grid)], X, y, splits, SCORING)
    theirs = sklearn_cv_results(est, grid, X, y, splits, SCORING, error_score=np.nan)
    assert_same_cv_results(ours, theirs)
    for m in SCORING:
        means = ours[f"mean_test_{m}"]
        assert np.isnan(means[1]) and np.isnan(means[3])
        assert ours[f"rank_test_{m}"].tolist()[1] == ours[f"rank_test_{m}"].tolist()[3] == 3
        assert sorted(ours[f"rank_test_{m}"].tolist()[::2]) == [1, 2]


def test_nan_ranks():
    cands = [Candidate(i, "m", {"k": i}) for i in range(4)]
    scores = [0.5, math.nan, 0.9, 0.5]
    results = {i: FitResult(i, {"s": v}, None, 0.1, 0.01) for i, v in enumerate(scores)}
    cv = format_cv_results(cands, 1, results, ["s"])
    assert cv["rank_test_s"].tolist() == [2, 4, 1, 2]
    assert best_index(cv, "s") == 2
    # all NaN: every candidate is rank 1, as in scikit-learn
    results = {i: FitResult(i, {"s": math.nan}, None, 0.1, 0.01) for i in range(4)}
    cv = format_cv_results(cands, 1, results, ["s"])
    assert cv["rank_test_s"].tolist() == [1, 1, 1, 1]
    assert cv["rank_test_s"].dtype == np.int32


def test_best_index_first_among_ties():
    cands = [Candidate(i, "m", {}) for i in range(3)]
    results = {i: FitResult(i, {"s": v}, None, 0.0, 0.0) for i, v in enumerate([0.1, 0.7, 0.7])}
    assert best_index(format_cv_results(cands, 1, results, ["s"]), "s") == 1


def test_missing_tasks_are_nan_and_counted():
    cands = [Candidate(0, "m", {"a": 1}), Candidate(1, "m", {"a": 2})]
    results = {0: FitResult(0, {"s": 1.0}, None, 0.0, 0.0),
               1: FitResult(1, {"s": 0.5}, None, 0.0, 0.0),
               2: FitResult(2, {"s": 0.2}, None, 0.0, 0.0)}
    cv = format_cv_results(cands, 2, results, ["s"])
    assert cv["n_finished_splits"].tolist() == [2, 1]
    assert cv["mean_test_s"][0] == 0.75
    assert np.isnan(cv["split1_test_s"][1]) and np.isnan(cv["mean_test_s"][1])
    assert cv["rank_test_s"].tolist() == [1, 2]


def test_candidates_not_starting_at_zero_use_their_index():
    """Rows follow the candidate list; each candidate's tasks are found by its own index."""
    cands = [Candidate(3, "m", {"a": 3})]
    results = {6: FitResult(6, {"s": 0.25}, None, 0, 0), 7: FitResult(7, {"s": 0.75}, None, 0, 0)}
    cv = format_cv_results(cands, 2, results, ["s"])
    assert cv["mean_test_s"].tolist() == [0.5]


# -- CSV ---------------------------------------------------------------------------------------


def read_csv(text):
    return list(csv.reader(io.StringIO(text)))


def test_cv_results_to_csv(data):
    X, y, splits = data
    cv = hpcml_cv_results(
        [("logit", LogisticRegression(solver="liblinear"), LOGIT_GRID),
         ("tree", DecisionTreeClassifier(random_state=0), TREE_GRID)],
        X, y, splits, SCORING, with_model=True,
    )
    text = cv_results_to_csv(cv)
    rows = read_csv(text)
    header = rows[0]
    assert header == [k for k in cv if k != "n_finished_splits"]
    assert header[0] == "model"
    assert {"param_C", "param_max_depth", "param_min_samples_leaf", "params",
            "mean_test_roc_auc", "rank_test_accuracy", "split3_test_accuracy"} <= set(header)
    assert len(rows) == 1 + 9
    recs = list(csv.DictReader(io.StringIO(text)))
    assert [r["model"] for r in recs] == ["logit"] * 4 + ["tree"] * 5
    # None is written as 'None', a parameter the candidate does not have as an empty cell
    assert recs[4]["param_max_depth"] == "None"
    assert recs[5]["param_max_depth"] == "2"
    assert recs[0]["param_max_depth"] == ""
    assert recs[4]["param_C"] == ""
    assert recs[0]["param_C"] == "0.001"
    # params is JSON
    assert [json.loads(r["params"]) for r in recs] == cv["params"]
    assert json.loads(recs[4]["params"]) == {"max_depth": None}
    # numbers read back exactly; ranks are integers
    for i, r in enumerate(recs):
        assert float(r["mean_test_roc_auc"]) == cv["mean_test_roc_auc"][i]
        assert int(r["rank_test_roc_auc"]) == cv["rank_test_roc_auc"][i]


def test_csv_nan_cells():
    cands = [Candidate(0, "m", {"a": "x"})]
    cv = format_cv_results(cands, 1, {0: FitResult(0, {"s": math.nan}, None, 0.5, 0.0)}, ["s"])
    rec = next(csv.DictReader(io.StringIO(cv_results_to_csv(cv))))
    assert rec["mean_test_s"] == "nan"
    assert rec["param_a"] == "x"
    assert rec["mean_fit_time"] == "0.5"


# -- error_score -------------------------------------------------------------------------------


class Exploding(ClassifierMixin, BaseEstimator):
    def __init__(self, boom=True):
        self.boom = boom

    def fit(self, X, y):
        if self.boom:
            raise RuntimeError("kaboom in fit")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_error_score_nan_keeps_the_error_text(data):
    X, y, splits = data
    train, test = splits[0]
    scorers, _ = make_scorer_map(["accuracy", "roc_auc"], Exploding())
    r = fit_and_score(Exploding(), X, y, {}, train, test, scorers, task=7,
                      return_train_score=True)
    assert r.task == 7
    assert set(r.test_scores) == {"accuracy", "roc_auc"}
    assert all(math.isnan(v) for v in r.test_scores.values())
    assert all(math.isnan(v) for v in r.train_scores.values())
    assert "RuntimeError: kaboom in fit" in r.error
    assert "Traceback" in r.error


def test_error_score_number(data):
    X, y, splits = data
    train, test = splits[0]
    scorers, _ = make_scorer_map("accuracy", Exploding())
    r = fit_and_score(Exploding(), X, y, {}, train, test, scorers, error_score=-1)
    assert r.test_scores == {"score": -1.0}
    assert r.train_scores is None


def test_error_score_raise(data):
    X, y, splits = data
    train, test = splits[0]
    scorers, _ = make_scorer_map("accuracy", Exploding())
    with pytest.raises(RuntimeError, match="kaboom"):
        fit_and_score(Exploding(), X, y, {}, train, test, scorers, error_score="raise")


def test_successful_fit_has_no_error(data):
    X, y, splits = data
    train, test = splits[0]
    scorers, _ = make_scorer_map("accuracy", Exploding())
    r = fit_and_score(Exploding(), X, y, {"boom": False}, train, test, scorers)
    assert r.error is None
    assert 0.0 <= r.test_scores["score"] <= 1.0
    assert r.fit_time >= 0 and r.score_time >= 0


def test_bad_error_score_value(data):
    X, y, splits = data
    train, test = splits[0]
    scorers, _ = make_scorer_map("accuracy", Exploding())
    with pytest.raises(ValueError, match="error_score"):
        fit_and_score(Exploding(), X, y, {}, train, test, scorers, error_score="ignore")
