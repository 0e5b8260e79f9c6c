"""The distributed core shared by ``run_experiment`` and ``MPISearchCV``: fit every task."""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone

from hpcml.core.costs import learn_costs, task_costs
from hpcml.core.fitting import FitResult, Folds, candidate_estimator, fit_and_score, takes_pairwise
from hpcml.core.pipefit import fit_and_score_prefixed, prefix_is_trivial
from hpcml.core.prefix_cache import PrefixCache, prefix_cache_bytes
from hpcml.core.prefixes import Prefix, grid_prefixes, task_units
from hpcml.core.progress import Progress
from hpcml.core.schedule import DEFAULT_GRAIN, CostModel, plan_chunks
from hpcml.core.tasks import TaskGrid
from hpcml.core.threads import thread_budget
from hpcml.engines.base import Engine, Observers, ShouldStop, World
from hpcml.errors import UsageError
from hpcml.run.timeout import TimeoutRunner

__all__ = ["evaluate_grid", "evaluate_source", "share_folds", "FitTasks", "BoundTasks"]


def share_folds(world: World, folds: Folds | None) -> Folds:
    """The root's folds on every rank, sent as four index arrays."""
    parts = folds.arrays() if world.is_root else (None,) * 4
    return Folds.from_arrays(*[world.bcast_array(a) for a in parts])


class FitTasks:
    """The fit tasks of one run, as plain picklable data: a remote worker runs them.

    Holds what a task needs except the data (the engine gives ``X`` and ``y`` to its workers
    once, see :meth:`~hpcml.engines.base.Engine.share`): the task indices, candidates, folds,
    unfitted estimators and scorers. Item ``i`` is task ``todo[i]`` of the grid.

    Parameters
    ----------
    todo : ndarray of int64
        Grid task index of each item.
    grid : TaskGrid
        Candidates by model name, times folds.
    folds : Folds
        The folds.
    estimators : mapping
        Model name to unfitted estimator.
    scorers : mapping
        Model name to ``{metric: scorer}``.
    threads : int
        Thread budget of each fit on a worker (:meth:`run_items`).
    return_train_score, error_score, oof_methods
        As :func:`evaluate_grid` takes them.
    prefix_cache : int
        Bytes of fitted pipeline prefixes' output each process keeps (0: none, every
        candidate fits its whole pipeline). See :mod:`hpcml.core.pipefit`.
    prefixes : sequence of Prefix or None, optional
        The shared prefix of each candidate (default :func:`~hpcml.core.prefixes.grid_prefixes`).
    fold_sets, fold_set : sequence of Folds and ndarray of int, optional
        Other folds for some candidates: candidate ``c`` is fitted on
        ``fold_sets[fold_set[c]]`` (a halving rung on ``n_samples`` subsamples each fold).
    """

    def __init__(self, todo: np.ndarray, grid: TaskGrid, folds: Folds,
                 estimators: Mapping[str, Any], scorers: Mapping[str, Mapping[str, Any]], *,
                 threads: int = 1, return_train_score: bool = False,
                 error_score: float | str = np.nan,
                 oof_methods: Mapping[str, str | None] | None = None,
                 prefix_cache: int = 0,
                 prefixes: Sequence[Prefix | None] | None = None,
                 fold_sets: Sequence[Folds] | None = None,
                 fold_set: np.ndarray | None = None) -> None:
        self.todo = np.asarray(todo, dtype=np.int64)
        self.fold_sets = list(fold_sets) if fold_set is not None else None
        self.fold_set = None if fold_set is None else np.asarray(fold_set, dtype=np.int64)
        self.candidates, self.n_splits = list(grid.candidates), grid.n_splits
        self.folds = folds
        self.bases = {name: clone(est) for name, est in estimators.items()}
        self.scorers = dict(scorers)
        self.threads = threads
        self.return_train_score, self.error_score = return_train_score, error_score
        self.oof_methods = dict(oof_methods) if oof_methods is not None else None
        self._prototypes: OrderedDict[int, tuple[Any, bool]] = OrderedDict()
        self.prefix_cache_bytes = int(prefix_cache)
        if self.prefix_cache_bytes <= 0:
            self.prefixes: list[Prefix | None] = [None] * len(self.candidates)
        else:
            self.prefixes = list(grid_prefixes(grid, estimators) if prefixes is None
                                 else prefixes)
        self._prefix_cache = PrefixCache(self.prefix_cache_bytes)
        self._prefix_uses: dict[tuple, int] | None = None

    def __len__(self) -> int:
        return len(self.todo)

    def __getstate__(self) -> dict[str, Any]:
        # the caches stay in this process; each worker fills its own
        return {**self.__dict__, "_prototypes": OrderedDict(),
                "_prefix_cache": PrefixCache(self.prefix_cache_bytes), "_prefix_uses": None}

    @property
    def prefix_cache(self) -> PrefixCache:
        """This process's cache of fitted pipeline prefixes' output."""
        return self._prefix_cache

    def prefix_key(self, t: int) -> tuple | None:
        """The cache key of grid task ``t``'s shared prefix (model, k, key, fold set, fold),
        or ``None``."""
        candidate = self.candidates[t // self.n_splits]
        prefix = self.prefixes[candidate.index]
        if prefix is None:
            return None
        fold_set = 0 if self.fold_set is None else int(self.fold_set[candidate.index])
        return (candidate.model, prefix.k, prefix.key, fold_set, t % self.n_splits)

    def _used(self, key: tuple) -> None:
        """One task of ``key`` ran here; the last of them drops its entry from the cache
        (tasks of one key run together, so an entry is seldom needed after its group)."""
        uses = self._prefix_uses
        if uses is None:
            uses = self._prefix_uses = {}
            for t in self.todo.tolist():
                k = self.prefix_key(t)
                if k is not None:
                    uses[k] = uses.get(k, 0) + 1
        left = uses.get(key, 0) - 1
        uses[key] = left
        if left <= 0:
            self._prefix_cache.pop(key)

    def prototype(self, cand: Any) -> tuple[Any, bool]:
        """The candidate's unfitted estimator and whether it takes a pairwise X (LRU-cached:
        a candidate's folds run together)."""
        prototypes = self._prototypes
        entry = prototypes.pop(cand.index, None)
        if entry is None:
            proto = candidate_estimator(self.bases[cand.model], cand.params)
            entry = (proto, takes_pairwise(proto))
        prototypes[cand.index] = entry
        if len(prototypes) > 256:
            prototypes.popitem(last=False)
        return entry

    def run(self, i: int, X: Any, y: Any) -> FitResult:
        """Fit and score item ``i`` on ``X, y`` (in the caller's thread budget)."""
        t = int(self.todo[i])
        candidate = self.candidates[t // self.n_splits]
        folds = self.folds if self.fold_set is None else (
            self.fold_sets[self.fold_set[t // self.n_splits]])  # type: ignore[index]
        train, test = folds[t % self.n_splits]
        model = candidate.model
        proto, pairwise = self.prototype(candidate)
        prefix = self.prefixes[candidate.index]
        if prefix is not None and not prefix_is_trivial(proto, prefix.k):
            key = self.prefix_key(t)
            try:
                return fit_and_score_prefixed(
                    proto, prefix.k, X, y, train, test, self.scorers[model],
                    self._prefix_cache, key, task=t, pairwise=pairwise,
                    return_train_score=self.return_train_score, error_score=self.error_score,
                    oof_method=None if self.oof_methods is None else self.oof_methods.get(model),
                )
            finally:
                self._used(key)
        return fit_and_score(
            proto, X, y, {}, train, test, self.scorers[model], prototype=True,
            pairwise=pairwise, task=t, return_train_score=self.return_train_score,
            error_score=self.error_score,
            oof_method=None if self.oof_methods is None else self.oof_methods.get(model),
        )

    def run_items(self, items: Sequence[int], X: Any, y: Any, t0: float) -> list[FitResult]:
        """Run ``items`` in :attr:`threads` threads (on a worker), with their start and end in
        seconds since ``t0`` (the driver's clock) and the worker's pid as their ``rank``."""
        rank = os.getpid()
        out = []
        with thread_budget(self.threads):
            for i in items:
                start = time.time() - t0
                r = self.run(int(i), X, y)
                r.rank, r.start, r.end = rank, start, time.time() - t0
                out.append(r)
        return out


class BoundTasks:
    """``run_task(i)`` of an engine: :class:`FitTasks` and the handles of the shared data.

    The SPMD engines (serial, MPI) call it; the engines that farm tasks out send
    :attr:`tasks` and :attr:`data` to their workers their own way and call
    :meth:`FitTasks.run_items` there.
    """

    def __init__(self, tasks: FitTasks, data: Mapping[str, Any]) -> None:
        self.tasks = tasks
        self.data = dict(data)

    def __call__(self, i: int) -> FitResult:
        return self.tasks.run(i, self.data["X"], self.data["y"])


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
    prefix_cache: int | str | None = None,
    fold_sets: Sequence[Folds] | None = None,
    fold_set: np.ndarray | None = None,
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
    prefix_cache : int or str, optional
        Bytes (or ``"512M"``, ``"4G"``) of fitted pipeline prefixes' output each rank keeps
        in memory; default ``$HPCML_PREFIX_CACHE``, else 1 GiB; 0 turns prefix sharing off.
        Candidates of a ``Pipeline`` that set their first steps alike fit those steps once
        per fold, and the tasks sharing them run on one rank (:mod:`hpcml.core.prefixes`).
    fold_sets, fold_set : optional
        Other folds for some candidates (see :class:`FitTasks`).
    """
    _check_timeout(engine, fit_timeout)
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
    # the root's bound on every rank (the plan depends on it), or its error on every rank
    cache_bytes = engine.world.agree(lambda: prefix_cache_bytes(prefix_cache), on_root=True)
    runner = FitTasks(todo, grid, folds, estimators, scorers, threads=threads,
                      return_train_score=return_train_score, error_score=error_score,
                      oof_methods=oof_methods, prefix_cache=cache_bytes,
                      fold_sets=fold_sets, fold_set=fold_set)
    # Tasks that share a fitted pipeline prefix (model, prefix params, fold) form one unit,
    # which one worker runs; a unit of more than a worker's share is cut.
    units = task_units(grid, runner.prefixes, todo, costs, engine.workers)
    # The engine re-plans the unclaimed tasks with the costs it measures as the run goes.
    plan = plan_chunks(costs, engine.workers, engine.grain or DEFAULT_GRAIN,
                       cost_model=CostModel(costs, cand[todo], model[todo], units), units=units)
    run_task = BoundTasks(runner, engine.share(X=X, y=y))

    bar = Progress(len(todo), enabled=progress and engine.world.is_root,
                   work=float(costs.sum()))
    observers = Observers([bar if bar.enabled else None,
                           Observers.on_result(on_result) if on_result else None,
                           *(extra_observers or ())])
    return _run_tasks(lambda rt: engine.run(plan, rt, observers, should_stop), run_task,
                      todo, observers, threads, fit_timeout, scorers, error_score,
                      return_train_score)


def evaluate_source(
    engine: Engine,
    grid: TaskGrid,
    folds: Folds,
    X: Any,
    y: Any,
    estimators: Mapping[str, Any],
    scorers: Mapping[str, Mapping[str, Any]],
    source: Any,
    *,
    threads: int = 1,
    return_train_score: bool = False,
    error_score: float | str = np.nan,
    progress: bool = True,
    expected: int | None = None,
    on_result: Any = None,
    should_stop: ShouldStop | None = None,
    fit_timeout: float | None = None,
    extra_observers: Sequence[Any] = (),
    fold_sets: Sequence[Folds] | None = None,
    fold_set: np.ndarray | None = None,
) -> dict[int, FitResult] | None:
    """Fit and score the tasks of ``grid`` that ``source`` hands out, as it hands them out.

    Like :func:`evaluate_grid`, with the tasks chosen as the run goes by ``source`` (a
    :class:`~hpcml.engines.base.TaskSource` on the root, ``None`` on the other ranks; an
    asynchronous search such as ASHA) instead of all at once: see
    :meth:`~hpcml.engines.base.Engine.run_source`. ``expected`` is the number of tasks the
    progress line counts towards (an estimate); ``fold_sets`` and ``fold_set`` as for
    :class:`FitTasks`.
    """
    _check_timeout(engine, fit_timeout)
    todo = np.arange(len(grid), dtype=np.int64)  # item i is grid task i
    runner = FitTasks(todo, grid, folds, estimators, scorers, threads=threads,
                      return_train_score=return_train_score, error_score=error_score,
                      fold_sets=fold_sets, fold_set=fold_set)
    run_task = BoundTasks(runner, engine.share(X=X, y=y))
    bar = _OpenProgress(expected or len(grid), enabled=progress and engine.world.is_root,
                        label="fits (of about)")
    observers = Observers([bar if bar.enabled else None,
                           Observers.on_result(on_result) if on_result else None,
                           *(extra_observers or ())])
    return _run_tasks(lambda rt: engine.run_source(source, rt, observers, should_stop),
                      run_task, todo, observers, threads, fit_timeout, scorers, error_score,
                      return_train_score)


def _check_timeout(engine: Engine, fit_timeout: float | None) -> None:
    if fit_timeout is not None and not engine.supports_timeout:
        raise UsageError(
            f"fit_timeout is not supported on the {engine.name} engine (its workers are not "
            "child processes hpcml can stop); drop fit_timeout, or use --engine mpi"
        )


def _run_tasks(launch: Any, run_task: Any, todo: np.ndarray, observers: Observers,
               threads: int, fit_timeout: float | None, scorers: Mapping[str, Any],
               error_score: float | str, return_train_score: bool) -> Any:
    """``launch(task runner)`` in the thread budget, the fits in a :class:`TimeoutRunner`'s
    child when there is a ``fit_timeout``; the observers hear each task start."""
    with thread_budget(threads):
        if fit_timeout is None:
            return launch(_announced(run_task, todo, observers))
        metrics = list(next(iter(scorers.values())))
        with TimeoutRunner(run_task, fit_timeout, metrics, error_score, return_train_score,
                           task_of=lambda i: int(todo[i])) as tr:
            return launch(_announced(tr, todo, observers))


class _OpenProgress(Progress):
    """Progress towards an estimated total, raised when the run makes more tasks."""

    def update(self, done: int, force: bool = False, work: float | None = None) -> None:
        self.total = max(self.total, done)
        super().update(done, force=force, work=work)


def _announced(run_task: Any, todo: np.ndarray, observers: Observers) -> Any:
    """``run_task`` that tells the observers with a ``task_started(task)`` which task starts,
    and those with a ``task_failed(task, exc)`` what raised out of it (the engine aborts every
    rank next); in this process, not in a fit's worker."""
    starts = [o.task_started for o in observers.observers if hasattr(o, "task_started")]
    fails = [o.task_failed for o in observers.observers if hasattr(o, "task_failed")]
    if not starts and not fails:
        return run_task

    def run(i: int) -> FitResult:
        task = int(todo[i])
        for start in starts:
            start(task)
        try:
            return run_task(i)
        except BaseException as exc:
            for fail in fails:
                fail(task, exc)
            raise

    return run
