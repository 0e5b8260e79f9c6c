"""random and halving searches in a spec give scikit-learn's candidates, rungs and scores."""

import copy
import json

import numpy as np
import pytest
import scipy.stats
from hpcmlcmd import hpcml
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import (
    HalvingGridSearchCV,
    HalvingRandomSearchCV,
    RandomizedSearchCV,
    StratifiedKFold,
)
from sklearn.tree import DecisionTreeClassifier

from hpcml.run.experiment import run_experiment
from hpcml.search.rounds import RoundDriver
from hpcml.search.strategy import GridStrategy

pytestmark = pytest.mark.timeout(120)

DATA = {"n_samples": 240, "n_features": 8, "n_informative": 4, "random_state": 0}
CV = {"splitter": "StratifiedKFold", "n_splits": 3, "shuffle": True, "random_state": 0}
TREE_GRID = {"max_depth": [1, 2, 3, 4, None], "min_samples_leaf": [1, 4, 16]}


def spec(search, models=None, **extra):
    raw = {"data": {"generator": "sklearn.datasets.make_classification", "params": DATA},
           "cv": CV, "search": search,
           "models": models or {"tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                                         "params": {"random_state": 0}, "grid": TREE_GRID}}}
    raw.update(extra)
    return copy.deepcopy(raw)


def xy():
    return make_classification(**DATA)


def sk_cv():
    return StratifiedKFold(3, shuffle=True, random_state=0)


def same(ours, theirs, rows=None, columns=("iter", "n_resources")):
    """hpcml's cv_results (rows of one model) equal scikit-learn's, timings aside."""
    rows = np.arange(len(ours["params"])) if rows is None else np.asarray(rows)
    assert [ours["params"][i] for i in rows] == theirs["params"]
    for key in [*columns, "mean_test_score", "std_test_score",
                *(f"split{k}_test_score" for k in range(3))]:
        np.testing.assert_allclose(np.asarray(ours[key])[rows].astype(float),
                                   np.asarray(theirs[key]).astype(float), err_msg=key)


def test_random_is_randomized_search_cv():
    grid = {"max_depth": "randint(1, 8)", "min_samples_leaf": [1, 4, 16],
            "min_impurity_decrease": "uniform(0, 0.01)"}
    models = {"tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                       "params": {"random_state": 0}, "grid": grid}}
    res = run_experiment(spec({"strategy": "random", "n_iter": 7, "random_state": 3}, models),
                         progress=False)
    dists = {"max_depth": scipy.stats.randint(1, 8), "min_samples_leaf": [1, 4, 16],
             "min_impurity_decrease": scipy.stats.uniform(0, 0.01)}
    sk = RandomizedSearchCV(DecisionTreeClassifier(random_state=0), dists, n_iter=7,
                            random_state=3, cv=sk_cv()).fit(*xy())
    same(res.cv_results, sk.cv_results_, columns=("rank_test_score",))
    assert res.best["index"] == sk.best_index_ and res.best["params"] == sk.best_params_
    assert "iter" not in res.cv_results


@pytest.mark.parametrize("options", [
    {"factor": 2, "random_state": 0},
    {"factor": 3, "min_resources": "smallest", "random_state": 1},
    {"factor": 2, "min_resources": 30, "max_resources": 200, "aggressive_elimination": True,
     "random_state": 0},
])
def test_halving_grid_is_halving_grid_search_cv(options):
    res = run_experiment(spec({"strategy": "halving", **options}), progress=False)
    sk = HalvingGridSearchCV(DecisionTreeClassifier(random_state=0), TREE_GRID, cv=sk_cv(),
                             **options).fit(*xy())
    same(res.cv_results, sk.cv_results_)
    assert res.best["index"] == sk.best_index_ and res.best["params"] == sk.best_params_
    rungs = sorted(set(res.cv_results["iter"].tolist()))
    assert len(rungs) == sk.n_iterations_
    assert [int(np.max(res.cv_results["n_resources"][res.cv_results["iter"] == i]))
            for i in rungs] == sk.n_resources_
    assert [int(np.sum(res.cv_results["iter"] == i)) for i in rungs] == sk.n_candidates_


def test_halving_over_distributions_is_halving_random_search_cv_with_a_param_resource():
    grid = {"max_depth": "randint(1, 6)", "max_features": "uniform(0.2, 0.8)"}
    models = {"rf": {"estimator": "sklearn.ensemble.RandomForestClassifier",
                     "params": {"random_state": 0}, "grid": grid}}
    options = {"factor": 2, "resource": "n_estimators", "min_resources": 2,
               "max_resources": 16, "n_candidates": 8, "random_state": 5}
    res = run_experiment(spec({"strategy": "halving", **options}, models), progress=False)
    dists = {"max_depth": scipy.stats.randint(1, 6),
             "max_features": scipy.stats.uniform(0.2, 0.8)}
    sk = HalvingRandomSearchCV(RandomForestClassifier(random_state=0), dists, cv=sk_cv(),
                               **options).fit(*xy())
    same(res.cv_results, sk.cv_results_)
    assert res.best["params"] == sk.best_params_  # n_estimators of the last rung included
    assert res.best_estimator.n_estimators == sk.best_estimator_.n_estimators


def test_two_models_advance_together_and_each_is_its_own_search():
    models = {"tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                       "params": {"random_state": 0}, "grid": TREE_GRID},
              "logit": {"estimator": "sklearn.linear_model.LogisticRegression",
                        "grid": {"C": [0.01, 1.0]},
                        "search": {"strategy": "grid"}}}
    res = run_experiment(spec({"strategy": "halving", "factor": 2, "random_state": 0}, models),
                         progress=False)
    cv = res.cv_results
    tree = np.flatnonzero(cv["model"] == "tree")
    logit = np.flatnonzero(cv["model"] == "logit")
    sk = HalvingGridSearchCV(DecisionTreeClassifier(random_state=0), TREE_GRID, cv=sk_cv(),
                             factor=2, random_state=0).fit(*xy())
    same(cv, sk.cv_results_, rows=tree)
    assert list(logit) == [15, 16]  # round 0 holds both models' first proposals
    assert np.ma.getmaskarray(cv["iter"])[logit].all()  # no rung for the grid model
    last = tree[cv["iter"][tree] == cv["iter"][tree].max()]
    eligible = np.concatenate([last, logit])
    best = eligible[np.argmax(np.asarray(cv["mean_test_score"])[eligible])]
    assert res.best["index"] == best


@pytest.mark.parametrize("after", [45, 50])  # round 0 has 45 fits: between rounds, in round 1
def test_resume_after_a_stop_mid_halving_is_identical(tmp_path, after):
    raw = spec({"strategy": "halving", "factor": 2, "random_state": 0})
    whole = run_experiment(raw, out=tmp_path / "whole", progress=False)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > after

    out = tmp_path / "stopped"
    first = run_experiment(raw, out=out, progress=False, stop=stop)
    assert first.interrupted and not first.complete and first.best is None
    assert "finished_splits" in (out / "cv_results.csv").read_text().splitlines()[0]
    second = run_experiment(raw, out=out, progress=False)
    assert second.complete and second.n_resumed >= 45
    for key in ("params", "iter", "n_resources", "mean_test_score", "rank_test_score"):
        a, b = whole.cv_results[key], second.cv_results[key]
        assert (a == b if key == "params" else np.array_equal(np.asarray(a), np.asarray(b)))
    assert second.best == {**whole.best, "refit_time": second.best["refit_time"]}
    head = (out / "cv_results.csv").read_text().splitlines()[0].split(",")
    assert head[:3] == ["model", "iter", "n_resources"]
    assert json.loads((out / "best.json").read_text())["index"] == whole.best["index"]
    (out / "run.json").unlink()  # a rerun of the finished run: every fit from the journal
    third = run_experiment(raw, out=out, progress=False)
    assert third.n_resumed == len(whole.cv_results["params"]) * 3
    assert np.array_equal(third.cv_results["mean_test_score"], whole.cv_results["mean_test_score"])


def test_halving_on_the_loky_engine_is_the_same(tmp_path):
    from hpcml.engines import get_engine

    raw = spec({"strategy": "halving", "factor": 2, "random_state": 0})
    serial = run_experiment(raw, progress=False)
    engine = get_engine("loky", workers=2)
    try:
        res = run_experiment(raw, out=tmp_path / "loky", progress=False, engine=engine)
    finally:
        engine.close()
    assert res.cv_results["params"] == serial.cv_results["params"]
    np.testing.assert_array_equal(res.cv_results["mean_test_score"],
                                  serial.cv_results["mean_test_score"])
    assert res.best["index"] == serial.best["index"]


def test_round_driver_cancels_a_strategy_that_is_not_done():
    class TwoRounds(GridStrategy):
        def run(self, evaluate):
            evaluate([])
            evaluate([])

    driver = RoundDriver({"a": TwoRounds({}), "b": GridStrategy({"C": [1]})})
    assert [m for m, _ in driver.next_round()] == ["b"]
    driver.feed({"a": [], "b": [None]})
    driver.close()
    assert all(not r.thread.is_alive() for r in driver.runners)


@pytest.mark.parametrize("search, extra, expected", [
    ({"strategy": "halving", "min_resources": 10000}, {},
     "search: min_resources_=10000 is greater than max_resources_=240"),
    ({"strategy": "halving"}, {"save_oof": True}, "save_oof: is not supported"),
])
def test_bad_halving_is_one_line_exit_2(tmp_path, search, extra, expected):
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(search, **extra)))
    proc = hpcml("run", str(path), "--out", str(tmp_path / "out"), "-n", "1", "--no-progress",
                 cwd=tmp_path, timeout=100)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpcml: error: ") and expected in lines[0], \
        proc.stderr


def test_random_state_null_draws_one_seed_that_a_resume_keeps(tmp_path):
    raw = spec({"strategy": "random", "n_iter": 5},
               {"tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                         "params": {"random_state": 0},
                         "grid": {"max_depth": "randint(1, 30)",
                                  "min_samples_leaf": "randint(1, 30)"}}})
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 4

    out = tmp_path / "out"
    first = run_experiment(raw, out=out, progress=False, stop=stop)
    assert first.interrupted
    second = run_experiment(raw, out=out, progress=False)
    assert second.complete and second.n_resumed >= 4
    seed = json.loads((out / "manifest.json").read_text())["spec"]["search"]["random_state"]
    sk = RandomizedSearchCV(DecisionTreeClassifier(random_state=0),
                            {"max_depth": scipy.stats.randint(1, 30),
                             "min_samples_leaf": scipy.stats.randint(1, 30)},
                            n_iter=5, random_state=seed, cv=sk_cv()).fit(*xy())
    same(second.cv_results, sk.cv_results_, columns=())
    other = run_experiment(raw, progress=False)  # a fresh run: another seed
    assert other.cv_results["params"] != second.cv_results["params"]


def test_halving_through_the_command_line_on_two_ranks(tmp_path):
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec({"strategy": "halving", "factor": 2, "random_state": 0})))
    out = tmp_path / "out"
    proc = hpcml("run", str(path), "--out", str(out), "-n", "2", "--no-progress", cwd=tmp_path,
                 timeout=150)
    assert proc.returncode == 0, proc.stderr
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished"
    n_rows = len((out / "cv_results.csv").read_text().splitlines()) - 1
    assert status["fits"]["done"] == n_rows * 3 and status["fits"]["total"] is None
    assert json.loads((out / "run.json").read_text())["ranks"] == 2
    sk = HalvingGridSearchCV(DecisionTreeClassifier(random_state=0), TREE_GRID, cv=sk_cv(),
                             factor=2, random_state=0).fit(*xy())
    assert n_rows == len(sk.cv_results_["params"])
    assert json.loads((out / "best.json").read_text())["params"] == sk.best_params_
    assert hpcml("status", str(out), cwd=tmp_path).returncode == 0
    proc = hpcml("collect", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and "several rounds" in proc.stderr
    proc = hpcml("run", str(path), "--out", str(tmp_path / "o2"), "-n", "1", "--shard", "0/2",
                 cwd=tmp_path)
    assert proc.returncode == 2 and "--shard: models.tree searches by strategy halving" in \
        proc.stderr, proc.stderr


def test_halving_keeps_survivors_by_the_refit_metric_and_runs_under_fit_timeout():
    raw = spec({"strategy": "halving", "factor": 3, "random_state": 0},
               scoring=["accuracy", "roc_auc"], refit="roc_auc", fit_timeout=60)
    res = run_experiment(raw, progress=False)
    sk = HalvingGridSearchCV(DecisionTreeClassifier(random_state=0), TREE_GRID, cv=sk_cv(),
                             factor=3, random_state=0, scoring="roc_auc").fit(*xy())
    cv = res.cv_results
    assert cv["params"] == sk.cv_results_["params"]
    np.testing.assert_array_equal(cv["iter"], sk.cv_results_["iter"])
    np.testing.assert_allclose(cv["mean_test_roc_auc"], sk.cv_results_["mean_test_score"])
    assert res.best["params"] == sk.best_params_ and "accuracy" in res.best["scores"]


def test_halving_a_pipeline_with_shared_prefixes_is_halving_grid_search_cv():
    from factories import pca_logit

    grid = {"pca__n_components": [2, 4], "clf__C": [0.01, 0.1, 1.0, 10.0]}
    models = {"pipe": {"estimator": "factories:pca_logit", "grid": grid}}
    res = run_experiment(spec({"strategy": "halving", "factor": 2, "random_state": 0}, models),
                         progress=False)
    sk = HalvingGridSearchCV(pca_logit(), grid, cv=sk_cv(), factor=2,
                             random_state=0).fit(*xy())
    same(res.cv_results, sk.cv_results_)
    assert res.best["index"] == sk.best_index_


@pytest.mark.parametrize("example", ["halving.yaml", "asha.yaml"])
def test_status_file_shows_each_model_s_best_at_its_highest_rung(tmp_path, example):
    import json
    from pathlib import Path

    from hpcml.run.status import RunStatus

    out = tmp_path / "out"
    status = RunStatus(out, interval=60)
    path = Path(__file__).resolve().parent.parent / "examples" / example
    result = run_experiment(path, out=out, progress=False, observers=(status,))
    status.finish("finished")
    best = json.loads((out / "status.json").read_text())["best"]
    top = best[result.best["model"]]  # the run's best is the best of its highest rung
    assert top["params"] == result.best["params"]
    assert top["mean"] == pytest.approx(result.best["scores"][result.best["refit_metric"]])
    assert top["iter"] == int(result.cv_results["iter"].max())
