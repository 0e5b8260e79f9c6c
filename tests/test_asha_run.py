"""An asha spec on the serial and loky engines, under a fit timeout, and what it refuses."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hpcml import run_experiment
from hpcml.engines import get_engine
from hpcml.errors import SpecError, UsageError
from hpcml.run.journal import iter_records
from hpcml.spec.schema import parse_spec

pytestmark = pytest.mark.timeout(180)

SPEC = {
    "data": {"generator": "sklearn.datasets.make_classification",
             "params": {"n_samples": 200, "n_features": 6, "random_state": 1}},
    "cv": {"n_splits": 2},
    "scoring": ["accuracy"],
    "search": {"strategy": "asha", "factor": 2, "resource": "n_estimators",
               "min_resources": 2, "max_resources": 8, "n_iter": 8, "random_state": 0},
    "models": {"rf": {"estimator": "sklearn.ensemble.RandomForestClassifier",
                      "params": {"random_state": 0},
                      "grid": {"max_depth": "randint(1, 6)"}}},
}


def spec(**changes) -> dict:
    s = copy.deepcopy(SPEC)
    s.update(changes)
    return s


def check_run(result, out) -> None:
    cv = result.cv_results
    assert result.complete and result.best is not None
    assert set(cv["iter"]) == {0, 1, 2} and sum(k == 0 for k in cv["iter"]) == 8
    assert result.best["n_resources"] == 8 and result.best["params"]["n_estimators"] == 8
    keys = [rec["key"] for rec in iter_records(out)]
    assert len(keys) == len(set(keys)) == 2 * len(cv["params"])
    assert (out / "best_model.joblib").exists()


def test_serial_and_loky_give_the_same_candidates_and_scores_per_job(tmp_path):
    serial = run_experiment(spec(), tmp_path / "serial", engine=get_engine("serial"),
                            progress=False)
    check_run(serial, tmp_path / "serial")
    engine = get_engine("loky", workers=2)
    try:
        loky = run_experiment(spec(), tmp_path / "loky", engine=engine, progress=False)
    finally:
        engine.close()
    check_run(loky, tmp_path / "loky")
    # Each (candidate, resource) scores the same on any engine; which ones ran may differ.
    mine = {(json_key(p)): s for p, s in zip(serial.cv_results["params"],
                                             serial.cv_results["mean_test_accuracy"],
                                             strict=True)}
    theirs = {(json_key(p)): s for p, s in zip(loky.cv_results["params"],
                                               loky.cv_results["mean_test_accuracy"],
                                               strict=True)}
    both = set(mine) & set(theirs)
    assert len(both) >= 8
    for k in both:
        assert mine[k] == theirs[k]


def test_loky_asha_stops_then_resumes(tmp_path):
    out = tmp_path / "ls"
    n = []
    engine = get_engine("loky", workers=2)
    try:
        first = run_experiment(spec(), out, engine=engine, progress=False,
                               stop=lambda: len(n) >= 6, observers=(_Count(n),))
        assert first.interrupted and not first.complete and first.best is None
        second = run_experiment(spec(), out, engine=engine, progress=False)
    finally:
        engine.close()
    assert second.n_resumed >= 6 and not second.interrupted
    check_run(second, out)


def json_key(params: dict) -> str:
    import json

    return json.dumps(params, sort_keys=True)


def test_asha_under_a_fit_timeout_and_a_resume_of_a_finished_search(tmp_path):
    out = tmp_path / "t"
    result = run_experiment(spec(fit_timeout=60), out, engine=get_engine("serial"),
                            progress=False)
    check_run(result, out)
    from hpcml.run.collect import collect

    (out / "best_model.joblib").unlink()
    got = collect(out)  # the journal replayed to the rules: the same outputs
    assert got["complete"] and got["best"]["params"] == result.best["params"]
    assert got["best"]["iter"] == result.best["iter"] and (out / "best_model.joblib").exists()
    (out / "run.json").unlink()  # as if the run died after its last fit
    again = run_experiment(spec(fit_timeout=60), out, engine=get_engine("serial"),
                           progress=False)
    assert again.n_resumed == 2 * len(result.cv_results["params"])
    assert again.cv_results["params"] == result.cv_results["params"]
    np.testing.assert_array_equal(again.cv_results["mean_test_accuracy"],
                                  result.cv_results["mean_test_accuracy"])


def test_collect_of_a_stopped_asha_run_is_partial(tmp_path):
    from hpcml.run.collect import collect

    out = tmp_path / "p"
    n = []
    first = run_experiment(spec(), out, engine=get_engine("serial"), progress=False,
                           stop=lambda: len(n) >= 5, observers=(_Count(n),))
    assert first.interrupted and not first.complete
    got = collect(out)
    assert not got["complete"] and got["best"] is None and got["done"] == 5
    text = (out / "cv_results.csv").read_text().splitlines()
    assert len(text) == 1 + 5 // 2 and "iter" in text[0].split(",")
    assert not (out / "run.json").exists()


class _Count:
    def __init__(self, n: list) -> None:
        self.n = n

    def result(self, r) -> None:
        self.n.append(r.task)


def test_what_an_asha_run_refuses(tmp_path):
    mixed = spec()
    mixed["models"]["lr"] = {"estimator": "sklearn.linear_model.LogisticRegression",
                             "search": {"strategy": "grid"}, "grid": {"C": [1.0]}}
    with pytest.raises(SpecError, match=r"models.lr.search: an asha search cannot share"):
        run_experiment(mixed, tmp_path / "m", engine=get_engine("serial"), progress=False)
    small = spec(search={**SPEC["search"], "min_resources": 9, "max_resources": 8})
    with pytest.raises(SpecError, match=r"search.min_resources: 9 is greater"):
        run_experiment(small, tmp_path / "s", engine=get_engine("serial"), progress=False)
    with pytest.raises(UsageError, match="--shard"):
        run_experiment(spec(), tmp_path / "h", engine=get_engine("serial"), progress=False,
                       shard=(0, 2))
    assert not (tmp_path / "m" / "journal").exists()


def test_asha_on_n_samples_fits_each_rung_on_its_share_of_each_fold(tmp_path):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold
    from sklearn.utils import resample

    from hpcml.spec.data import load_data

    s = spec(search={"strategy": "asha", "factor": 2, "n_iter": 8, "random_state": 0})
    out = tmp_path / "n"
    result = run_experiment(s, out, engine=get_engine("serial"), progress=False)
    cv = result.cv_results
    # scikit-learn's defaults: smallest = n_splits * 2 * n_classes = 8, auto = 200 rows
    assert set(cv["n_resources"]) <= {8, 16, 32, 64, 128} and min(cv["n_resources"]) == 8
    assert result.best["n_resources"] == max(cv["n_resources"])
    assert "n_samples" not in cv["params"][0]
    data = load_data(parse_spec(s, source="<dict>").data, None)
    folds = list(StratifiedKFold(2).split(data.X, data.y))
    i = int(np.argmax(cv["iter"]))  # a row of the top rung
    r = int(cv["n_resources"][i])
    scores = []
    for train, test in folds:
        tr = resample(train, replace=False, random_state=0, n_samples=int(r / 200 * len(train)))
        te = resample(test, replace=False, random_state=0, n_samples=int(r / 200 * len(test)))
        est = RandomForestClassifier(random_state=0, **cv["params"][i]).fit(data.X[tr],
                                                                             data.y[tr])
        scores.append(est.score(data.X[te], data.y[te]))
    assert cv["mean_test_accuracy"][i] == pytest.approx(np.mean(scores), abs=1e-12)
    keys = [rec["key"] for rec in iter_records(out)]
    assert len(keys) == len(set(keys)) == 2 * len(cv["params"])  # a key per rung
    from hpcml.run.collect import collect

    (out / "run.json").unlink()
    got = collect(out)
    assert got["complete"] and got["best"]["n_resources"] == result.best["n_resources"]


def test_the_spec_grid_of_an_asha_search_is_every_candidate_at_every_rung():
    grid = parse_spec(spec(), source="<dict>").task_grid(2)
    assert grid.n_candidates == 8 * 3 and len(grid) == 48
    params = [dict(c.params) for c in grid.candidates]
    assert [p["n_estimators"] for p in params] == [2] * 8 + [4] * 8 + [8] * 8
    assert [{k: v for k, v in p.items() if k != "n_estimators"} for p in params[:8]] == \
        [{k: v for k, v in p.items() if k != "n_estimators"} for p in params[16:]]
