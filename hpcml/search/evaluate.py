"""The distributed core shared by ``run_experiment`` and ``MPISearchCV``: fit every task."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone

from hpcml.core.costs import learn_costs, task_costs
from hpcml.core.fitting import FitResult, Folds, candidate_estimator, fit_and_score, takes_pairwise
from hpcml.core.progress import Progress
from hpcml.core.schedule import CostModel, plan_chunks
from hpcml.core.tasks import TaskGrid
from hpcml.core.threads import thread_budget
from hpcml.engines.base import Engine, Observers, ShouldStop, World
from hpcml.run.timeout import TimeoutRunner

__all__ = ["evaluate_grid", "share_folds"]


def share_folds(world: World, folds: Folds | None) -> Folds:
    """The root's folds on every rank, sent as four index arrays."""
    parts = folds.arrays() if world.is_root else (None,) * 4
    return Folds.from_arrays(*[world.bcast_array(a) for a in parts])


def evaluate_grid(
    engine: Engine,
    grid: TaskGrid,
    folds: Folds,
    X: Any,
    y: Any,
    estimators: Mapping[str, Any],
    scorers: Mapping[str, Mapping[str, Any]],
    *,
    threads: int = 1,
    return_train_score: bool = False,
    error_score: float | str = np.nan,
    progress: bool = True,
    tasks: Sequence[int] | None = None,
    on_result: Any = None,
    should_stop: ShouldStop | None = None,
    fit_timeout: float | None = None,
    oof_methods: Mapping[str, str | None] | None = None,
    measured: Mapping[int, float] | None = None,
    extra_observers: Sequence[Any] = (),
) -> dict[int, FitResult] | None:
    """Fit and score every task of ``grid`` on ``engine``; results on the root.

    Parameters
    ----------
    engine : Engine
        Runs the tasks (every rank must call this).
    grid : TaskGrid
        Candidates by model name, times folds.
    folds : Folds
        The same folds on every rank.
    X, y : array-like
        The same data on every rank.
    estimators : mapping
        Model name to unfitted estimator.
    scorers : mapping
        Model name to ``{metric: scorer}``.
    threads : int
        Thread budget of each fit.
    tasks : sequence of int, optional
        Only these task indices (default: all); e.g. those not yet in the journal.
    on_result : callable, optional
        Called with each result on the rank that made it (the journal).
    should_stop : callable, optional
        Polled between fits; see :meth:`Engine.run`.
    fit_timeout : float, optional
        Seconds a fit may take; longer fits are stopped and scored as failed.
    oof_methods : mapping, optional
        Model name to the prediction method whose out-of-fold output each task keeps.
    measured : mapping, optional
        Task index to seconds measured earlier (the journal): they correct the estimates.
    extra_observers : sequence, optional
        More observers of the run (status, logs): see :class:`~hpcml.engines.base.Observers`.
    """
    n_features = X.shape[1] if getattr(X, "ndim", 1) > 1 else 1
    n_train = int(np.mean(np.diff(folds.train_off))) if len(folds) else 0
    todo = np.arange(len(grid)) if tasks is None else np.asarray(tasks, dtype=np.int64)
    costs = task_costs(grid, estimators, n_train, n_features)
    cand = np.arange(len(grid), dtype=np.int64) // grid.n_splits
    model_ids = {name: i for i, name in enumerate(grid.model_names)}
    model = np.array([model_ids[c.model] for c in grid.candidates], dtype=np.int64)[cand]
    if measured:
        costs = learn_costs(costs, cand, model, dict(measured))
    costs = costs[todo]
    # The engine re-plans the unclaimed tasks with the costs it measures as the run goes.
    plan = plan_chunks(costs, engine.world.size, cost_model=CostModel(costs, cand[todo], model[todo]))

    bases = {name: clone(est) for name, est in estimators.items()}
    candidates, n_splits = grid.candidates, grid.n_splits
    prototypes: OrderedDict[int, tuple[Any, bool]] = OrderedDict()

    def prototype(cand) -> tuple[Any, bool]:
        """The candidate's unfitted estimator and whether it takes a pairwise X (LRU-cached:
        a candidate's folds run together)."""
        entry = prototypes.pop(cand.index, None)
        if entry is None:
            proto = candidate_estimator(bases[cand.model], cand.params)
            entry = (proto, takes_pairwise(proto))
        prototypes[cand.index] = entry
        if len(prototypes) > 256:
            prototypes.popitem(last=False)
        return entry

    def run_task(i: int) -> FitResult:
        t = int(todo[i])
        candidate = candidates[t // n_splits]
        train, test = folds[t % n_splits]
        model = candidate.model
        proto, pairwise = prototype(candidate)
        return fit_and_score(
            proto, X, y, {}, train, test, scorers[model], prototype=True, pairwise=pairwise,
            task=t, return_train_score=return_train_score, error_score=error_score,
            oof_method=None if oof_methods is None else oof_methods.get(model),
        )

    bar = Progress(len(todo), enabled=progress and engine.world.is_root,
                   work=float(costs.sum()))
    observers = Observers([bar if bar.enabled else None,
                           Observers.on_result(on_result) if on_result else None,
                           *(extra_observers or ())])
    with thread_budget(threads):
        if fit_timeout is None:
            return engine.run(plan, run_task, observers, should_stop)
        metrics = list(next(iter(scorers.values())))
        with TimeoutRunner(run_task, fit_timeout, metrics, error_score, return_train_score,
                           task_of=lambda i: int(todo[i])) as tr:
            return engine.run(plan, tr, observers, should_stop)

