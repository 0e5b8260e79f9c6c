"""Nested CV (``outer_cv``): the same outer scores and choices as
``cross_validate(GridSearchCV(...), cv=outer_cv)``, resume after a stop, status, collect, and
bad ``outer_cv`` blocks refused in one line."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    StratifiedKFold,
    cross_validate,
)
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from hpcml import run_experiment
from hpcml.errors import SpecError, UsageError
from hpcml.run.collect import collect
from hpcml.run.status import RunStatus
from hpcml.spec.schema import parse_spec

pytestmark = pytest.mark.timeout(120)

DATA = {"n_samples": 160, "n_features": 6, "random_state": 3}
CV = {"splitter": "KFold", "n_splits": 3, "shuffle": True, "random_state": 0}
OUTER = {"splitter": "StratifiedKFold", "n_splits": 4, "shuffle": True, "random_state": 1}
LR_GRID = {"C": [0.001, 0.03, 1.0]}
TREE_GRID = {"max_depth": [1, 3, None]}


def clf_spec(**extra):
    spec = {
        "data": {"generator": "sklearn.datasets.make_classification", "params": DATA},
        "cv": CV, "outer_cv": OUTER,
        "scoring": ["roc_auc", "accuracy"], "refit": "accuracy",
        "models": {
            "lr": {"estimator": "sklearn.linear_model.LogisticRegression", "grid": LR_GRID},
            "tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                     "params": {"random_state": 0}, "grid": TREE_GRID},
        },
    }
    spec.update(extra)
    return spec


def read_rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def sklearn_nested(estimator, grid, X, y, inner, outer, scoring, refit):
    gs = GridSearchCV(estimator, grid, cv=inner, scoring=scoring, refit=refit)
    return cross_validate(gs, X, y, cv=outer, scoring=scoring, return_estimator=True)


def check_rows(rows, model, ref, metrics):
    mine = [r for r in rows if r["model"] == model]
    assert [int(r["outer_fold"]) for r in mine] == list(range(len(ref["estimator"])))
    assert [json.loads(r["params"]) for r in mine] == [e.best_params_ for e in ref["estimator"]]
    assert [float(r["inner_best_score"]) for r in mine] == [e.best_score_
                                                             for e in ref["estimator"]]
    for m in metrics:
        assert [float(r[f"test_{m}"]) for r in mine] == list(ref[f"test_{m}"])


def test_outer_scores_and_choices_equal_cross_validate_of_grid_search(tmp_path):
    out = tmp_path / "out"
    status = RunStatus(out, interval=60)
    result = run_experiment(clf_spec(), out=out, progress=False, observers=(status,))
    status.finish("finished")
    assert result.complete
    X, y = make_classification(**DATA)
    inner, outer = KFold(3, shuffle=True, random_state=0), StratifiedKFold(
        4, shuffle=True, random_state=1)
    scoring = ["roc_auc", "accuracy"]
    rows = read_rows(out / "nested_cv.csv")
    assert len(rows) == 8 and list(rows[0])[:5] == ["outer_fold", "model", "params",
                                                     "test_roc_auc", "test_accuracy"]
    ref_lr = sklearn_nested(LogisticRegression(), LR_GRID, X, y, inner, outer, scoring,
                            "accuracy")
    ref_tree = sklearn_nested(DecisionTreeClassifier(random_state=0), TREE_GRID, X, y, inner,
                              outer, scoring, "accuracy")
    check_rows(rows, "lr", ref_lr, scoring)
    check_rows(rows, "tree", ref_tree, scoring)

    # 'selected': the whole search's pick (over both models, as one GridSearchCV over a
    # pipeline whose step is each model in turn); best.json's 'nested' is its mean and std
    pipe = Pipeline([("m", LogisticRegression())])
    both = [{"m": [LogisticRegression()], "m__C": LR_GRID["C"]},
            {"m": [DecisionTreeClassifier(random_state=0)], "m__max_depth": TREE_GRID["max_depth"]}]
    ref_all = sklearn_nested(pipe, both, X, y, inner, outer, scoring, "accuracy")
    picked = [r for r in rows if r["selected"] == "True"]
    assert [int(r["outer_fold"]) for r in picked] == [0, 1, 2, 3]
    assert [float(r["test_accuracy"]) for r in picked] == list(ref_all["test_accuracy"])
    best = json.loads((out / "best.json").read_text())
    acc = ref_all["test_accuracy"]
    assert best["nested"]["accuracy"] == {"mean": float(np.mean(acc)), "std": float(np.std(acc))}
    tree_auc = ref_tree["test_roc_auc"]
    assert best["nested_by_model"]["tree"]["roc_auc"]["mean"] == float(np.mean(tree_auc))

    # the ordinary search on all data is as without outer_cv
    plain = run_experiment(clf_spec(outer_cv=None), progress=False)
    for key in ("mean_test_accuracy", "split2_test_roc_auc", "rank_test_accuracy"):
        np.testing.assert_array_equal(result.cv_results[key], plain.cv_results[key])
    assert result.best["params"] == plain.best["params"]
    run = json.loads((out / "run.json").read_text())
    assert run["n_tasks"] == 6 * (3 + 4 * 3) + 2 * 4

    # status.json counts every fit of the run, and its best so far is the search's
    status = json.loads((out / "status.json").read_text())
    assert status["fits"]["total"] == status["fits"]["done"] == run["n_tasks"]
    best_lr = status["best"]["lr"]
    assert best_lr["folds"] == "3/3"
    i = int(np.argmax(plain.cv_results["mean_test_accuracy"][:3]))
    assert best_lr["mean"] == pytest.approx(plain.cv_results["mean_test_accuracy"][i])

    # one journal file for both pools; the refits' times follow the first pool's
    [journal] = (out / "journal").glob("*.jsonl")
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(records) == run["n_tasks"]
    refit_fold = {r["task"] % 19 >= 15 for r in records}
    assert refit_fold == {False, True}
    first_end = max(r["end"] for r in records if r["task"] % 19 < 15)
    assert min(r["start"] for r in records if r["task"] % 19 >= 15) >= first_end

    # hpcml collect rebuilds the same files from the journal
    before = (out / "nested_cv.csv").read_text()
    for name in ("nested_cv.csv", "best.json", "run.json"):
        (out / name).unlink()
    info = collect(out, refit=False)
    assert info["complete"] and info["done"] == info["total"] == run["n_tasks"]
    assert (out / "nested_cv.csv").read_text() == before
    assert json.loads((out / "best.json").read_text())["nested"] == best["nested"]


def test_regression_with_default_splitters():
    """outer_cv: 3 is scikit-learn's default splitter (KFold for a regressor), like cv: 3."""
    params = {"n_samples": 90, "n_features": 4, "noise": 5.0, "random_state": 0}
    spec = {"data": {"generator": "sklearn.datasets.make_regression", "params": params},
            "cv": 3, "outer_cv": 3,
            "models": {"ridge": {"estimator": "sklearn.linear_model.Ridge",
                                 "grid": {"alpha": [0.1, 10.0, 1000.0]}}}}
    result = run_experiment(spec, progress=False)
    X, y = make_regression(**params)
    ref = sklearn_nested(Ridge(), {"alpha": [0.1, 10.0, 1000.0]}, X, y, 3, 3, None, True)
    assert result.best["nested"]["score"]["mean"] == float(np.mean(ref["test_score"]))
    assert "nested_by_model" not in result.best


class CountResults:
    """An observer that counts the fits of this run (for a stop after ``n``)."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def result(self, r):
        self.seen += 1

    def update(self, *a, **k):
        pass

    def close(self):
        pass

    def stop(self):
        return self.seen >= self.n


@pytest.mark.parametrize("after", [10, 6 * 15 + 3], ids=["inner fits", "outer refits"])
def test_resume_after_a_stop_gives_the_same_results(tmp_path, after):
    whole = tmp_path / "whole"
    run_experiment(clf_spec(), out=whole, progress=False)
    out = tmp_path / "out"
    counter = CountResults(after)
    first = run_experiment(clf_spec(), out=out, progress=False, stop=counter.stop,
                           observers=(counter,))
    assert first.interrupted and not first.complete
    assert not (out / "run.json").exists() and not (out / "nested_cv.csv").exists()
    from hpcml.report.data import load_run
    from hpcml.report.page import render_report

    partial = load_run(out)  # from the journal: the search's own fits only
    assert partial.n_splits == 3 and len(partial.cv["params"]) == 6 and not partial.complete
    assert partial.task_splits == 3 + 4 * 3 + 4
    again = run_experiment(clf_spec(), out=out, progress=False)
    assert again.complete and again.n_resumed >= after

    def scores(path):
        return [{k: v for k, v in r.items() if not k.endswith("_time")}
                for r in read_rows(path / "nested_cv.csv")]

    assert scores(out) == scores(whole)
    page = render_report(load_run(out))
    assert "<h2>Nested cross-validation</h2>" in page and "Per-rank timeline" in page
    assert json.loads((out / "best.json").read_text())["nested"] == \
        json.loads((whole / "best.json").read_text())["nested"]
    run = json.loads((out / "run.json").read_text())
    assert run["n_resumed"] == again.n_resumed and run["n_tasks"] == 6 * 15 + 8


@pytest.mark.parametrize("outer, key", [
    ({"splitter": "KFlod"}, "outer_cv.splitter"),
    ({"n_splits": 1}, "outer_cv.n_splits"),
    ("five", "outer_cv"),
    ({"splitter": "KFold", "n_split": 3}, "outer_cv"),
    ({"splitter": "GroupKFold", "groups": "site"}, "outer_cv.groups"),
])
def test_bad_outer_cv_names_its_key(outer, key):
    with pytest.raises(SpecError) as err:
        parse_spec(clf_spec(outer_cv=outer))
    assert err.value.key == key and "\n" not in str(err.value)


def test_outer_cv_needs_refit_and_no_oof():
    with pytest.raises(SpecError, match="needs refit") as err:
        parse_spec(clf_spec(refit=False))
    assert err.value.key == "outer_cv"
    with pytest.raises(SpecError, match="not supported with outer_cv") as err:
        parse_spec(clf_spec(save_oof=True))
    assert err.value.key == "save_oof"
    assert parse_spec(clf_spec()).outer_cv.kwargs["n_splits"] == 4
    assert parse_spec(clf_spec(outer_cv=None)).outer_cv is None


def test_bad_outer_cv_through_the_command_line(tmp_path):
    """Too many stratified outer folds for a class: exit 2, one line, nothing written."""
    from hpcmlcmd import hpcml

    spec = clf_spec(outer_cv={"splitter": "StratifiedKFold", "n_splits": 200})
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    proc = hpcml("run", "-n", "1", "s.yaml", "--out", "out", cwd=tmp_path, timeout=100)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpcml: error: s.yaml: outer_cv.n_splits: "
                                                   "200 folds but the smallest class"), lines
    assert not (tmp_path / "out").exists()


def test_fit_timeout_covers_the_nested_fits_and_shards_are_refused(tmp_path):
    timed = run_experiment(clf_spec(fit_timeout=60), progress=False)
    plain = run_experiment(clf_spec(), progress=False)
    assert timed.best["nested"] == plain.best["nested"]
    with pytest.raises(UsageError, match="--shard: not supported with outer_cv"):
        run_experiment(clf_spec(), out=tmp_path / "o", shard=(0, 2), progress=False)
    assert not (tmp_path / "o").exists()


def test_task_counts_for_job_requests_include_the_nested_fits():
    from hpcml.slurm.render import count_tasks

    # 6 candidates x (3 search + 4 x 3 inner folds) + 2 models x 4 outer refits
    assert count_tasks(parse_spec(clf_spec())) == 6 * 15 + 8
    assert count_tasks(parse_spec(clf_spec(outer_cv=None))) == 6 * 3


def test_group_splitters_get_each_outer_training_part_s_groups(tmp_path):
    """GroupKFold inside and outside: the inner search splits the outer training rows by
    their groups (GridSearchCV.fit(X[train], y[train], groups=groups[train]))."""
    X, y = make_classification(n_samples=120, n_features=4, random_state=0)
    groups = np.arange(120) % 12
    header = "f0,f1,f2,f3,site,label\n"
    lines = [",".join([*(repr(float(v)) for v in X[i]), str(groups[i]), str(y[i])])
             for i in range(120)]
    (tmp_path / "g.csv").write_text(header + "\n".join(lines) + "\n")
    spec = {"data": {"path": str(tmp_path / "g.csv"), "target": "label", "groups": "site"},
            "cv": {"splitter": "GroupKFold", "n_splits": 3},
            "outer_cv": {"splitter": "GroupKFold", "n_splits": 4}, "scoring": "accuracy",
            "models": {"lr": {"estimator": "sklearn.linear_model.LogisticRegression",
                              "grid": {"C": [0.01, 1.0]}}}}
    result = run_experiment(spec, progress=False)
    from sklearn.model_selection import GroupKFold

    scores = []
    for train, test in GroupKFold(4).split(X, y, groups):
        gs = GridSearchCV(LogisticRegression(), {"C": [0.01, 1.0]}, cv=GroupKFold(3),
                          scoring="accuracy")
        gs.fit(X[train], y[train], groups=groups[train])
        scores.append(gs.score(X[test], y[test]))
    assert result.best["nested"]["accuracy"] == {"mean": float(np.mean(scores)),
                                                 "std": float(np.std(scores))}


def test_random_search_inside_equals_cross_validate_of_randomized_search(tmp_path):
    from scipy.stats import loguniform
    from sklearn.model_selection import RandomizedSearchCV

    spec = clf_spec(search={"strategy": "random", "n_iter": 4, "random_state": 5})
    spec["models"] = {"lr": {"estimator": "sklearn.linear_model.LogisticRegression",
                             "grid": {"C": "loguniform(1e-3, 1e2)"}}}
    run_experiment(spec, out=tmp_path / "out", progress=False)
    rows = read_rows(tmp_path / "out" / "nested_cv.csv")
    X, y = make_classification(**DATA)
    scoring = ["roc_auc", "accuracy"]
    search = RandomizedSearchCV(LogisticRegression(), {"C": loguniform(1e-3, 1e2)}, n_iter=4,
                                random_state=5, cv=KFold(3, shuffle=True, random_state=0),
                                scoring=scoring, refit="accuracy")
    ref = cross_validate(search, X, y, cv=StratifiedKFold(4, shuffle=True, random_state=1),
                         scoring=scoring, return_estimator=True)
    check_rows(rows, "lr", ref, scoring)


def test_outer_cv_with_halving_is_refused_in_one_line():
    spec = clf_spec(search={"strategy": "halving", "random_state": 0})
    with pytest.raises(SpecError, match="search.strategy.*grid or random"):
        parse_spec(spec)
