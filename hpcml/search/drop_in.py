"""``MPISearchCV``: ``GridSearchCV`` whose fits are spread over MPI ranks.

Swap one import and run the script with ``mpiexec -n P python script.py``: every rank calls
``fit`` with the same data, the fits are shared out, and every rank gets the same
``cv_results_`` and ``best_estimator_``.
"""

from __future__ import annotations

import numbers
import time
from typing import Any

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV, check_cv

from hpcml.core.fitting import Folds, make_scorer_map
from hpcml.core.results import format_cv_results
from hpcml.core.tasks import TaskGrid
from hpcml.core.threads import thread_budget, threads_per_rank, usable_cores
from hpcml.engines import get_engine
from hpcml.search.evaluate import evaluate_grid, share_folds

__all__ = ["MPISearchCV"]


class MPISearchCV(GridSearchCV):
    """Exhaustive search over a parameter grid, with the fits spread over MPI ranks.

    Follows :class:`sklearn.model_selection.GridSearchCV`: same parameters, same
    ``cv_results_`` (equal scores for the same folds), same ``best_*`` attributes and
    ``predict``/``score`` delegation. All ranks of ``comm`` must call :meth:`fit` with the same
    data; all of them get the results.

    Parameters
    ----------
    estimator, param_grid, scoring, refit, cv, error_score, return_train_score
        As for ``GridSearchCV``.
    n_jobs, pre_dispatch, verbose
        Accepted for compatibility; parallelism comes from the MPI ranks (and
        ``threads_per_rank`` within each), so ``n_jobs`` is ignored.
    comm : mpi4py communicator, optional
        Ranks that share the work (default ``COMM_WORLD``; a single rank runs serially).
    threads_per_rank : int, optional
        Thread budget of each fit; default from Slurm, ``OMP_NUM_THREADS`` or
        cores ÷ ranks on the node.
    progress : bool
        Show a progress line on rank 0.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = make_classification(n_samples=200, random_state=0)
    >>> search = MPISearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3, progress=False)
    >>> search.fit(X, y).best_params_
    {'C': 0.1}
    """

    def __init__(
        self,
        estimator: Any,
        param_grid: Any,
        *,
        scoring: Any = None,
        n_jobs: int | None = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        error_score: Any = np.nan,
        return_train_score: bool = False,
        comm: Any = None,
        threads_per_rank: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(
            estimator,
            param_grid,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.comm = comm
        self.threads_per_rank = threads_per_rank
        self.progress = progress

    def fit(self, X: Any, y: Any = None, *, groups: Any = None, **params: Any) -> MPISearchCV:
        """Run fit with all sets of parameters, on every rank of ``comm``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
        groups : array-like, optional
            Group labels for group splitters.

        Returns
        -------
        self
        """
        if params:
            raise TypeError(
                f"MPISearchCV.fit does not route fit parameters yet: {sorted(params)}; "
                "set them on the estimator or use GridSearchCV"
            )
        if not (self.error_score == "raise" or isinstance(self.error_score, numbers.Number)):
            raise ValueError("error_score must be the string 'raise' or a numeric value.")
        engine = get_engine("mpi", world=self.comm)
        world = engine.world
        try:
            return self._fit(engine, world, X, y, groups)
        finally:
            engine.close()
            world.close()

    def _fit(self, engine: Any, world: Any, X: Any, y: Any, groups: Any) -> MPISearchCV:
        estimator = self.estimator
        scorers, names = make_scorer_map(self.scoring, estimator)
        multimetric = not (self.scoring is None or isinstance(self.scoring, str)
                           or callable(self.scoring))
        if multimetric:
            self._check_refit_for_multimetric(names)
            refit_metric = self.refit
        else:
            refit_metric = "score"
        self.multimetric_ = multimetric
        self.scorer_ = scorers if multimetric else scorers["score"]

        _check_same_shape(world, X, y)
        folds = None
        if world.is_root:
            cv = check_cv(self.cv, y, classifier=is_classifier(estimator))
            folds = Folds(list(cv.split(X, y, groups)))
        folds = share_folds(world, folds)
        self.n_splits_ = len(folds)

        layout_ranks = world.layout()["ranks_on_node"]
        threads, _ = threads_per_rank(layout_ranks, cli=self.threads_per_rank)
        grid = TaskGrid([("", self.param_grid)], len(folds))
        results = evaluate_grid(
            engine, grid, folds, X, y, {"": estimator}, {"": scorers}, threads=threads,
            return_train_score=self.return_train_score, error_score=self.error_score,
            progress=self.progress and self.verbose >= 0,
        )
        payload = None
        if world.is_root:
            cv_results = format_cv_results(
                grid.candidates, grid.n_splits, results, names,
                self.return_train_score, with_model=False,
            )
            del cv_results["n_finished_splits"]
            failed = [r.error for r in results.values() if r.error is not None]
            payload = (cv_results, len(failed), failed[:1])
        cv_results, n_failed, first_error = world.bcast(payload)
        _warn_like_sklearn(cv_results, n_failed, first_error, len(grid))

        if self.refit or not multimetric:
            self.best_index_ = self._select_best_index(self.refit, refit_metric, cv_results)
            if not callable(self.refit):
                self.best_score_ = cv_results[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = cv_results["params"][self.best_index_]

        if self.refit:
            payload = None
            if world.is_root:
                best = clone(estimator).set_params(**clone(self.best_params_, safe=False))
                cores = usable_cores()
                start = time.time()
                with thread_budget(cores):
                    best.fit(X, y) if y is not None else best.fit(X)
                payload = (best, time.time() - start)
                world.release()
            else:
                world.wait_for_root()
            self.best_estimator_, self.refit_time_ = world.bcast(payload)
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_
        self.cv_results_ = cv_results
        return self


def _check_same_shape(world, X, y) -> None:
    shape = (np.shape(X), None if y is None else np.shape(y))
    root = world.bcast(shape)
    if root != shape:
        raise ValueError(
            f"MPISearchCV.fit: rank {world.rank} has data of shape {shape} but rank 0 has "
            f"{root}; every rank must call fit with the same X and y"
        )


def _warn_like_sklearn(cv_results, n_failed: int, first_error: list, n_total: int) -> None:
    """The warnings ``GridSearchCV`` gives for failed fits and non-finite scores (every rank)."""
    import warnings

    from sklearn.exceptions import FitFailedWarning

    if n_failed:
        warnings.warn(
            f"\n{n_failed} fits failed out of a total of {n_total}.\n"
            "The score on these train-test partitions for these parameters will be set to "
            f"nan.\nFirst failure:\n{first_error[0]}",
            FitFailedWarning,
            stacklevel=3,
        )
    for key, values in cv_results.items():
        if key.startswith(("mean_test_", "mean_train_")) and not np.all(np.isfinite(values)):
            kind = key.split("_")[1]
            warnings.warn(
                f"One or more of the {kind} scores are non-finite: {values}",
                UserWarning,
                stacklevel=3,
            )
