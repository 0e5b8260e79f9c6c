"""Pipeline prefixes fitted once per fold under MPI: GridSearchCV's scores at any world size,
and each (prefix, fold) fitted once in the whole world (its tasks run on one rank)."""

from __future__ import annotations

import warnings

import factories
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from hpcml import run_experiment

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]

N_SPLITS = 3
PARAMS = {"n_samples": 150, "n_features": 8, "random_state": 5}
SCORING = ["roc_auc", "accuracy"]
COUNTED = {"proj__n_components": [2, 3], "clf__C": [0.1, 0.5, 1.0, 10.0]}
PCA = {"pca__n_components": [2, 4], "clf__C": [0.1, 1.0, 10.0]}


def reference(estimator, grid):
    X, y = make_classification(**PARAMS)
    cv = StratifiedKFold(N_SPLITS, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GridSearchCV(estimator, grid, cv=cv, scoring=SCORING, refit=False,
                            return_train_score=True).fit(X, y).cv_results_


def test_prefixes_fitted_once_and_scores_equal_gridsearchcv(comm, shared_tmp, monkeypatch):
    monkeypatch.delenv("HPCML_PREFIX_CACHE", raising=False)
    log = shared_tmp / "fits.log"
    spec = {
        "data": {"generator": "sklearn.datasets.make_classification", "params": PARAMS},
        "cv": {"splitter": "StratifiedKFold", "n_splits": N_SPLITS, "shuffle": True,
               "random_state": 0},
        "scoring": SCORING, "refit": "roc_auc", "return_train_score": True,
        "models": {
            "counted": {"estimator": "factories:counted_pipeline",
                        "params": {"proj__log": str(log)}, "grid": COUNTED},
            "pca": {"estimator": "factories:pca_logit", "grid": PCA},
        },
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(spec, comm=comm, progress=False)
    comm.Barrier()
    fits = log.read_text().splitlines()
    # 2 prefixes x 3 folds, whatever the world size (GridSearchCV: 8 x 3 = 24)
    assert len(fits) == 2 * N_SPLITS, fits
    cv = result.cv_results
    models = np.asarray(cv["model"])
    for name, estimator, grid in [("counted", factories.counted_pipeline(), COUNTED),
                                  ("pca", factories.pca_logit(), PCA)]:
        ref = reference(estimator, grid)
        keys = [k for k in ref if k.startswith(("split", "mean_test", "mean_train"))]
        for key in keys:
            np.testing.assert_array_equal(np.asarray(cv[key])[models == name], ref[key],
                                          err_msg=f"{name} {key}")
    assert np.isnan(np.asarray(cv["mean_test_accuracy"])[models == "counted"]).sum() == 2
