"""Pipeline prefixes fitted once per fold: the grouping, the plan, the cache and the scores
(equal to GridSearchCV's, which refits every prefix)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import factories
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from hpcml import run_experiment
from hpcml.core.fitting import fit_and_score, make_scorer_map
from hpcml.core.pipefit import fit_and_score_prefixed
from hpcml.core.prefix_cache import (
    DEFAULT_PREFIX_CACHE_BYTES,
    PrefixCache,
    nbytes,
    prefix_cache_bytes,
)
from hpcml.core.prefixes import Prefix, prefix_plan, prefix_units, split_units
from hpcml.core.schedule import CostModel, plan_chunks, replan
from hpcml.engines import get_engine
from hpcml.errors import UsageError

pytestmark = pytest.mark.timeout(240)

TESTS = Path(__file__).parent
N_SPLITS = 3
DATA = {"generator": "sklearn.datasets.make_classification",
        "params": {"n_samples": 150, "n_features": 8, "random_state": 3}}
CV = {"splitter": "StratifiedKFold", "n_splits": N_SPLITS, "shuffle": True, "random_state": 0}
SCORING = ["roc_auc", "accuracy"]


def three_steps():
    return Pipeline([("scale", StandardScaler()), ("pca", PCA()), ("clf", LogisticRegression())])


# -- which candidates share a prefix (pure) ----------------------------------------------------

def test_each_candidate_gets_the_longest_prefix_another_shares():
    grid = [{"pca__n_components": n, "clf__C": c} for n in (2, 3) for c in (1.0, 10.0)]
    got = prefix_plan(three_steps(), grid)
    assert [p.k for p in got] == [2] * 4  # scale and pca, set alike by two candidates each
    assert got[0].key == got[1].key != got[2].key == got[3].key
    # only clf varies: every candidate shares the whole prefix
    same = prefix_plan(three_steps(), [{"clf__C": c} for c in (1.0, 2.0, 3.0)])
    assert len({p.key for p in same}) == 1 and {p.k for p in same} == {2}
    # pca differs everywhere: only the scaler (step 1) is shared
    alone = prefix_plan(three_steps(), [{"pca__n_components": n, "scale__with_mean": True}
                                        for n in (2, 3)])
    assert [p.k for p in alone] == [1, 1] and alone[0].key == alone[1].key


def test_equal_step_values_share_and_other_params_or_estimators_do_not():
    a = prefix_plan(three_steps(), [{"pca": PCA(2), "clf__C": 1.0}, {"pca": PCA(2), "clf__C": 2.0},
                                    {"pca": PCA(3), "clf__C": 1.0}])
    assert a[0].k == 2 and a[0].key == a[1].key and a[2].k == 1  # a[2] shares the scaler
    # a pipeline-level param other than memory/verbose: no sharing in this model
    assert prefix_plan(three_steps(), [{"clf__C": 1.0, "transform_input": None},
                                       {"clf__C": 2.0, "transform_input": None}]) == [None, None]
    assert prefix_plan(three_steps(), [{"clf__C": 1.0, "verbose": False},
                                       {"clf__C": 2.0, "verbose": False}])[0] is not None
    # not a Pipeline, or a single candidate
    assert prefix_plan(LogisticRegression(), [{"C": 1.0}, {"C": 2.0}]) == [None, None]
    assert prefix_plan(three_steps(), [{"clf__C": 1.0}]) == [None]


def test_units_are_model_prefix_and_fold():
    prefixes = [Prefix(2, "a"), Prefix(2, "a"), Prefix(2, "b"), None]
    cand = np.repeat(np.arange(4), 2)
    fold = np.tile([0, 1], 4)
    units = prefix_units(prefixes, cand, np.zeros(8, np.int64), fold)
    assert units.tolist() == [0, 1, 0, 1, 2, 3, 4, 5]
    # the same prefix key in another model is another unit
    model = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    units = prefix_units([Prefix(2, "a")] * 4, cand, model, fold)
    assert units.tolist() == [0, 1, 0, 1, 2, 3, 2, 3]
    assert prefix_units([None] * 4, cand, model, fold) is None


# -- the plan: units in one chunk, longest first; ordinary grids unchanged (pure) -------------

def test_units_stay_in_one_chunk_and_longest_unit_goes_first():
    rng = np.random.default_rng(0)
    costs = rng.uniform(0.01, 1.0, 60)
    units = np.repeat(np.arange(12), 5)
    plan = plan_chunks(costs, 4, grain=0.0, units=units)
    assert sorted(plan.order.tolist()) == list(range(60))
    owner = {}
    for c in range(plan.n_chunks):
        for t in plan.chunk(c):
            assert owner.setdefault(units[t], c) == c  # a unit never spans two chunks
    sums = np.bincount(units, weights=costs)
    seen = list(dict.fromkeys(units[plan.order].tolist()))
    assert np.all(np.diff(sums[seen]) <= 0)  # units longest first


def test_ordinary_grids_plan_as_before():
    rng = np.random.default_rng(1)
    costs = rng.exponential(0.1, 500)
    plain = plan_chunks(costs, 8)
    singles = plan_chunks(costs, 8, units=np.arange(500))
    np.testing.assert_array_equal(plain.order, singles.order)
    np.testing.assert_array_equal(plain.bounds, singles.bounds)


def test_replan_keeps_units_together():
    costs = np.ones(40)
    units = np.repeat(np.arange(8), 5)
    model = CostModel(costs, np.arange(40), np.zeros(40, np.int64), units)
    plan = plan_chunks(costs, 2, grain=0.0, cost_model=model, units=units)
    learnt = np.where(units == 7, 9.0, 1.0)
    new = replan(plan, 2, learnt)
    np.testing.assert_array_equal(new.order[: new.bounds[2]], plan.order[: plan.bounds[2]])
    assert units[new.chunk(2)].tolist() == [7] * 5  # the now longest unit, whole, first
    assert sorted(new.order.tolist()) == list(range(40))
    for c in range(new.n_chunks):
        for u in set(units[new.chunk(c)].tolist()):
            assert np.isin(np.flatnonzero(units == u), new.chunk(c)).all()


def test_a_unit_larger_than_a_share_is_cut():
    units = np.zeros(10, np.int64)
    assert split_units(units, np.ones(10), 1).tolist() == [0] * 10
    cut = split_units(units, np.ones(10), 4)
    assert len(set(cut.tolist())) == 4 and np.all(np.diff(cut) >= 0)
    three = np.repeat(np.arange(3), 4)
    assert split_units(three, np.ones(12), 3).tolist() == three.tolist()


# -- the cache: a bound in bytes, least recently used out (pure) ------------------------------

def test_cache_evicts_least_recently_used_within_its_bound():
    cache = PrefixCache(capacity=1000)
    blocks = {k: np.zeros(40, dtype=np.float64) for k in "abcde"}  # 320 bytes each
    for k in "abc":
        assert cache.put(k, blocks[k])
    assert cache.nbytes == 960 and len(cache) == 3
    assert cache.get("a") is blocks["a"]  # a is now the most recent
    assert cache.put("d", blocks["d"])  # over 1000: b (least recent) goes
    assert sorted(cache) == ["a", "c", "d"] and cache.evictions == 1 and cache.nbytes == 960
    assert cache.get("b") is None and cache.misses == 1 and cache.hits == 1
    assert not cache.put("big", np.zeros(200))  # 1600 bytes: never kept, nothing evicted
    assert sorted(cache) == ["a", "c", "d"]
    assert not PrefixCache(0).put("a", blocks["a"])
    from scipy import sparse

    m = sparse.random(50, 50, density=0.1, format="csr", random_state=0)
    assert nbytes(m) == m.data.nbytes + m.indices.nbytes + m.indptr.nbytes


def test_cache_bound_from_argument_environment_or_default():
    assert prefix_cache_bytes(None, {}) == DEFAULT_PREFIX_CACHE_BYTES
    assert prefix_cache_bytes(None, {"HPCML_PREFIX_CACHE": "256M"}) == 256 << 20
    assert prefix_cache_bytes(4096, {"HPCML_PREFIX_CACHE": "256M"}) == 4096
    with pytest.raises(UsageError, match="HPCML_PREFIX_CACHE: not a size: 'lots'"):
        prefix_cache_bytes(None, {"HPCML_PREFIX_CACHE": "lots"})


# -- scores equal GridSearchCV's ---------------------------------------------------------------

def spec(models, **more):
    return {"data": DATA, "cv": CV, "scoring": SCORING, "refit": False, **more,
            "models": models}


def reference(estimator, grid, return_train_score=False):
    X, y = make_classification(**DATA["params"])
    cv = StratifiedKFold(N_SPLITS, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GridSearchCV(estimator, grid, cv=cv, scoring=SCORING, refit=False,
                            return_train_score=return_train_score).fit(X, y).cv_results_


def assert_scores_equal(ours, model, ref):
    rows = np.asarray(ours["model"]) == model
    keys = [k for k in ref if k.startswith(("split", "mean_test", "mean_train", "std_test",
                                            "std_train", "rank_"))]
    assert keys
    for key in keys:
        np.testing.assert_array_equal(np.asarray(ours[key])[rows] if not key.startswith("rank_")
                                      else np.asarray(ours[key])[rows], ref[key], err_msg=key)


PCA_GRID = {"pca__n_components": [2, 4], "clf__C": [0.1, 1.0, 10.0]}
COUNTED_GRID = {"proj__fail": [False, True], "clf__C": [0.1, 1.0, 10.0]}


def run_serial(raw, monkeypatch, cache=None, out=None):
    if cache is None:
        monkeypatch.delenv("HPCML_PREFIX_CACHE", raising=False)
    else:
        monkeypatch.setenv("HPCML_PREFIX_CACHE", cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_experiment(raw, out, progress=False, engine=get_engine("serial"))


def test_scores_equal_gridsearchcv_with_train_scores_and_two_metrics(monkeypatch):
    raw = spec({"p": {"estimator": "factories:pca_logit", "grid": PCA_GRID}},
               return_train_score=True)
    result = run_serial(raw, monkeypatch)
    assert_scores_equal(result.cv_results, "p", reference(factories.pca_logit(), PCA_GRID, True))


def test_prefix_fitted_once_per_fold_and_failures_score_as_gridsearchcv(monkeypatch):
    """clf fails for C > 1 (a later step), proj for fail=True (the prefix): NaN there, as in
    GridSearchCV, which fits proj 3 x 6 = 18 times; hpcml once per prefix and fold: 2 x 3."""
    raw = spec({"c": {"estimator": "factories:counted_pipeline", "grid": COUNTED_GRID}},
               return_train_score=True)
    factories.CountingProjection.fits = 0
    result = run_serial(raw, monkeypatch)
    assert factories.CountingProjection.fits == 2 * N_SPLITS
    factories.CountingProjection.fits = 0
    ref = reference(factories.counted_pipeline(), COUNTED_GRID, True)
    assert factories.CountingProjection.fits == 6 * N_SPLITS
    assert_scores_equal(result.cv_results, "c", ref)
    mean = np.asarray(result.cv_results["mean_test_accuracy"])
    # candidates (ParameterGrid order: clf__C, proj__fail): C=10 and every fail=True are NaN
    assert np.isnan(mean).tolist() == [False, True, False, True, True, True]
    # with the cache off every candidate fits its whole pipeline: the same scores
    factories.CountingProjection.fits = 0
    off = run_serial(raw, monkeypatch, cache="0")
    assert factories.CountingProjection.fits == 6 * N_SPLITS
    assert_scores_equal(off.cv_results, "c", ref)


def test_a_cache_too_small_for_one_prefix_refits_it_and_scores_the_same(monkeypatch):
    raw = spec({"p": {"estimator": "factories:counted_pipeline",
                      "grid": {"clf__C": [0.1, 0.5, 1.0]}}})
    factories.CountingProjection.fits = 0
    result = run_serial(raw, monkeypatch, cache="1K")  # ~100 rows x 2 floats: 1.6 KiB
    assert factories.CountingProjection.fits == 3 * N_SPLITS
    assert_scores_equal(result.cv_results, "p",
                        reference(factories.counted_pipeline(), {"clf__C": [0.1, 0.5, 1.0]}))


def test_a_prefix_whose_transform_fails_and_error_score_raise():
    X, y = make_classification(n_samples=60, n_features=5, random_state=0)
    train, test = np.arange(40), np.arange(40, 60)
    scorers, _ = make_scorer_map(SCORING, None)
    pipe = factories.counted_pipeline().set_params(proj__fail_transform=True)
    cache = PrefixCache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = fit_and_score_prefixed(pipe, 2, X, y, train, test, scorers, cache, "k",
                                   return_train_score=True)
        plain = fit_and_score(pipe, X, y, {}, train, test, scorers, return_train_score=True)
    assert r.error is None is plain.error  # the fit worked; scoring (predict) failed
    assert all(np.isnan(v) for v in [*r.test_scores.values(), *r.train_scores.values()])
    assert all(np.isnan(v) for v in [*plain.test_scores.values(), *plain.train_scores.values()])
    with pytest.raises(ValueError, match="told to fail in transform"):
        fit_and_score_prefixed(pipe, 2, X, y, train, test, scorers, cache, "k",
                               error_score="raise")
    failing = factories.counted_pipeline().set_params(proj__fail=True)
    with pytest.raises(ValueError, match="told to fail"):
        fit_and_score_prefixed(failing, 2, X, y, train, test, scorers, PrefixCache(), "f",
                               error_score="raise")
    r = fit_and_score_prefixed(failing, 2, X, y, train, test, scorers, cache, "f")
    assert "told to fail" in r.error and np.isnan(r.test_scores["accuracy"])


def test_loky_engine_same_scores_and_one_prefix_fit_per_fold(monkeypatch, tmp_path):
    """On two loky workers: each (prefix, fold) unit runs on one worker, fitting it once."""
    log = tmp_path / "fits.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("HPCML_PREFIX_CACHE", raising=False)
    grid = {"clf__C": [0.1, 0.3, 1.0, 3.0]}
    raw = spec({"c": {"estimator": "factories:counted_pipeline", "params": {"proj__log": str(log)},
                      "grid": grid}})
    engine = get_engine("loky", workers=2)
    engine.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_experiment(raw, progress=False, engine=engine)
    finally:
        engine.close()
    assert len(log.read_text().splitlines()) == N_SPLITS
    ref_pipe = factories.counted_pipeline()
    assert_scores_equal(result.cv_results, "c", reference(ref_pipe, grid))


def test_a_bad_cache_size_is_one_line_and_exit_2_before_any_rank_starts(tmp_path):
    import yaml
    from hpcmlcmd import env, hpcml

    raw = spec({"p": {"estimator": "factories:pca_logit", "grid": PCA_GRID}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    proc = hpcml("run", "-n", "2", "spec.yaml", "--out", "out", "--no-progress", cwd=tmp_path,
                 environ=env(HPCML_PREFIX_CACHE="lots"), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "hpcml: error: HPCML_PREFIX_CACHE: not a size: 'lots' (write e.g. 512M, 4G or 0)"]
    assert not (tmp_path / "out").exists()


def test_hpcml_plan_counts_the_groups_sharing_a_prefix(tmp_path, monkeypatch):
    import yaml

    from hpcml.run.plan import describe_plan

    monkeypatch.delenv("HPCML_PREFIX_CACHE", raising=False)
    raw = spec({"p": {"estimator": "factories:pca_logit", "grid": PCA_GRID},
                "lr": {"estimator": "sklearn.linear_model.LogisticRegression",
                       "grid": {"C": [1.0, 2.0]}}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    text = describe_plan(tmp_path / "spec.yaml", 2)
    assert "shared prefixes:   18 tasks in 6 groups" in text  # 2 PCAs x 3 folds, 3 C each
    monkeypatch.setenv("HPCML_PREFIX_CACHE", "0")
    assert "shared prefixes" not in describe_plan(tmp_path / "spec.yaml", 2)


def test_an_entry_goes_when_the_last_task_sharing_it_ran():
    from hpcml.core.fitting import Folds
    from hpcml.core.tasks import TaskGrid
    from hpcml.search.evaluate import FitTasks

    X, y = make_classification(**DATA["params"])
    grid = TaskGrid([("c", {"clf__C": [0.1, 0.5, 1.0]})], N_SPLITS)
    folds = Folds(list(StratifiedKFold(N_SPLITS).split(X, y)))
    scorers, _ = make_scorer_map(SCORING, None)
    tasks = FitTasks(np.arange(len(grid)), grid, folds, {"c": factories.counted_pipeline()},
                     {"c": scorers}, prefix_cache=1 << 20)
    factories.CountingProjection.fits = 0
    tasks.run(0, X, y)  # candidate 0, fold 0: the prefix of fold 0 is fitted and kept
    assert len(tasks.prefix_cache) == 1 and factories.CountingProjection.fits == 1
    tasks.run(3, X, y)  # candidate 1, fold 0: from the cache
    assert len(tasks.prefix_cache) == 1 and factories.CountingProjection.fits == 1
    tasks.run(6, X, y)  # the last task of fold 0: its entry goes
    assert len(tasks.prefix_cache) == 0 and tasks.prefix_cache.nbytes == 0
    for i in (1, 4, 7, 2, 5, 8):
        tasks.run(i, X, y)
    assert factories.CountingProjection.fits == N_SPLITS and len(tasks.prefix_cache) == 0
    assert tasks.prefix_cache.hits == 2 * N_SPLITS


def test_with_fit_timeout_the_forked_fit_worker_keeps_the_cache(tmp_path, monkeypatch):
    log = tmp_path / "fits.log"
    grid = {"clf__C": [0.1, 0.3, 1.0]}
    raw = spec({"c": {"estimator": "factories:counted_pipeline",
                      "params": {"proj__log": str(log)}, "grid": grid}}, fit_timeout=60)
    result = run_serial(raw, monkeypatch)
    assert len(log.read_text().splitlines()) == N_SPLITS
    assert_scores_equal(result.cv_results, "c", reference(factories.counted_pipeline(), grid))


def test_train_scores_use_transform_not_fit_transform(monkeypatch):
    """A step whose fit_transform differs from its transform: the later steps are fitted on
    the first and scored (train and test) on the second, as Pipeline does."""
    grid = {"clf__C": [0.01, 1.0, 100.0]}
    raw = spec({"s": {"estimator": "factories:shifted_logit", "grid": grid}},
               return_train_score=True)
    result = run_serial(raw, monkeypatch)
    assert_scores_equal(result.cv_results, "s", reference(factories.shifted_logit(), grid, True))


def test_passthrough_steps_and_out_of_fold_predictions(monkeypatch, tmp_path):
    """A grid that swaps PCA for 'passthrough' (each half shares its own prefix), with every
    candidate's out-of-fold probabilities: the same with and without the cache."""
    grid = [{"pca": ["passthrough"], "clf__C": [0.1, 1.0]},
            {"pca__n_components": [3], "clf__C": [0.1, 1.0]}]
    raw = spec({"p": {"estimator": "factories:pca_logit", "grid": grid}},
               save_oof={"candidates": "all", "method": "predict_proba"})
    shared = run_serial(raw, monkeypatch, out=tmp_path / "shared")
    assert_scores_equal(shared.cv_results, "p", reference(factories.pca_logit(), grid))
    alone = run_serial(raw, monkeypatch, cache="0", out=tmp_path / "alone")
    assert_scores_equal(alone.cv_results, "p", reference(factories.pca_logit(), grid))
    a = (tmp_path / "shared" / "oof_predictions.csv").read_text()
    assert a == (tmp_path / "alone" / "oof_predictions.csv").read_text()
    lines = a.splitlines()
    assert len(lines) == DATA["params"]["n_samples"] + 1
    assert lines[0].split(",")[2:] == [f"p#{c}:{k}" for c in range(4) for k in (0, 1)]
