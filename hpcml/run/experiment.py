"""Run an experiment spec, as a pipeline of stages that each hand one value to the next::

    spec → Placed (data on every rank) → Folds → Work (tasks, journal, plan) → results → files

Every stage that can fail on one rank runs through :meth:`~hpcml.engines.base.World.agree`,
so it fails on every rank with the same error, or on none.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.core.costs import task_costs
from hpcml.core.fitting import FitResult, Folds, make_scorer_map
from hpcml.core.nested import NestedLayout
from hpcml.core.oof import check_oof_folds, oof_methods, save_test_folds
from hpcml.core.schedule import shard_tasks
from hpcml.core.tasks import TaskGrid
from hpcml.core.threads import threads_per_rank
from hpcml.engines import get_engine
from hpcml.engines.base import Engine, World
from hpcml.errors import SpecError, UsageError
from hpcml.run.finalize import finalize, is_classifier_spec, run_info
from hpcml.run.journal import JOURNAL_DIR, Journal, Manifest, array_id, read_journal, task_keys
from hpcml.run.lock import hold_lock, release_lock
from hpcml.run.nested import NestedOutputs, finish_nested, plan_nested
from hpcml.run.outputs import RESULT_FILES, check_out_dir
from hpcml.search.evaluate import evaluate_grid, evaluate_source, share_folds
from hpcml.spec.checks import check_nan_support, check_splits_vs_classes, check_target_classes
from hpcml.spec.data import Dataset, fingerprint, load_data
from hpcml.spec.schema import ExperimentSpec, load_spec, parse_spec
from hpcml.spec.search import unseeded, with_seed

__all__ = ["ExperimentResult", "run_experiment", "finalize"]


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns (on every rank).

    Attributes
    ----------
    cv_results : dict
        ``cv_results_`` of all models' candidates, with a ``model`` column. When the run is
        not complete (stopped, or one shard), means and ranks are over the finished splits.
    best : dict or None
        ``{"model", "params", "index", "scores"}`` of the best candidate by ``refit``
        (``None`` without refit or before the run is complete); with ``outer_cv``, also
        ``nested`` (and ``nested_by_model``), as in ``best.json``.
    best_estimator : estimator or None
        The best candidate refit on all data (``None`` without refit, and on ranks > 0).
    out : Path or None
        The output folder, when one was given.
    run : dict
        Layout, versions, wall time and the spec hash (what ``run.json`` holds).
    complete : bool
        Every task has a result (this run's or the journal's).
    interrupted : bool
        A stop request (SIGTERM/SIGUSR1) ended the run early; run again to resume.
    n_resumed : int
        Results taken from the journal of an earlier run.
    n_failed : int
        Fits that raised (scored ``error_score``).
    """

    cv_results: dict[str, Any]
    best: dict[str, Any] | None
    best_estimator: Any = None
    out: Path | None = None
    run: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
    interrupted: bool = False
    n_resumed: int = 0
    n_failed: int = 0


@dataclass
class Placed:
    """Stage 1: the data on every rank (one read-only copy per node) and the estimators."""

    data: Dataset
    X: Any
    y: Any
    estimators: dict[str, Any]


@dataclass
class Work:
    """Stage 3: the task grid, the journal's keys and results, and the tasks still to run."""

    grid: TaskGrid
    manifest: Manifest
    keys: list[str]
    resumed: dict[int, FitResult]
    todo: np.ndarray
    #: Other folds of some candidates (halving on n_samples; see ``FitTasks``).
    fold_sets: list[Folds] | None = None
    fold_set: np.ndarray | None = None
    #: More ``cv_results`` columns (``iter``, ``n_resources``) and the candidates the best is
    #: taken from (the last rung of a halving), for a search of several rounds.
    columns: dict[str, Any] | None = None
    best_among: list[int] | None = None
    #: Rounds are left to run (a stop between rounds): not complete, whatever the grid holds.
    unfinished: bool = False
    #: Per candidate of ``grid``, its round or rung (a search of several rungs; ``None``
    #: else): the status file's best so far is taken at each model's highest one.
    level: np.ndarray | None = None


def run_experiment(
    spec: str | os.PathLike | dict | ExperimentSpec,
    out: str | os.PathLike | None = None,
    *,
    comm: Any = None,
    engine: Engine | None = None,
    threads: int | None = None,
    progress: bool = True,
    force: bool = False,
    shard: tuple[int, int] | None = None,
    fit_timeout: float | None = None,
    stop: Callable[[], bool] | None = None,
    observers: tuple[Any, ...] = (),
) -> ExperimentResult:
    """Run a grid-search experiment on every rank of ``comm`` (or serially).

    Call it on every rank (e.g. a script under ``mpiexec -n P``); all ranks return the same
    ``cv_results``. With ``out``, every finished fit goes to a journal there at once, and a
    later call with the same spec and data resumes: it runs only the missing fits and gives
    the same results (timings aside).

    Parameters
    ----------
    spec : path, dict or ExperimentSpec
        A YAML spec file, or its content as a dict (relative data paths from the cwd).
    out : path, optional
        Folder for ``cv_results.csv``, ``best.json``, ``best_model.joblib``, ``run.json`` and
        the journal.
    comm : mpi4py communicator, optional
        Defaults to ``COMM_WORLD`` (serial when it has one rank).
    engine : Engine, optional
        Overrides ``comm``: the engine (and its world) that runs the fits.
    threads : int, optional
        Threads for each fit (per rank); default from Slurm, ``OMP_NUM_THREADS`` or cores ÷ ranks.
    progress : bool
        Show progress on rank 0 (standard error).
    force : bool
        Discard what ``out`` holds (results, journal) and start over.
    shard : (i, n), optional
        Run only shard ``i`` of ``n`` (0-based) of the tasks, balanced by estimated cost;
        ``hpcml collect`` merges the shards' journals.
    fit_timeout : float, optional
        Seconds a fit may take (overrides the spec's ``fit_timeout``).
    stop : callable, optional
        Polled between fits; when it returns true, every rank stops and the journal is kept.
    observers : tuple, optional
        More observers of the fits (see :class:`~hpcml.engines.base.Observers`).

    Returns
    -------
    ExperimentResult

    Raises
    ------
    UsageError
        Bad spec, data or output folder, on every rank, before anything is written.
    """
    wall0 = time.time()
    own_engine = engine is None
    engine = engine or get_engine("mpi", world=comm)
    world = engine.world
    try:
        spec = world.agree(lambda: _as_spec(spec))
        if out is not None:
            world.agree(lambda: check_out_dir(out, force))
        if unseeded(spec):  # random_state: null: the root's seed, the journal's on a resume
            spec = with_seed(spec, world.agree(lambda: _search_seed(spec, out, force),
                                               on_root=True))
        placed = place_data(world, spec)
        folds = make_folds(world, spec, placed)
        extra = None
        runner = _async_runner(spec)
        if runner is not None:  # tasks made as the run goes (asha): stages 3-5 of its own
            return runner(engine, spec, placed, folds, out, force, shard, threads, progress,
                          fit_timeout, stop, observers, wall0)
        if spec.multi_round:
            from hpcml.run.rounds import fit_rounds

            work, results, interrupted = fit_rounds(
                engine, spec, placed, folds, out, force, shard, threads, progress,
                fit_timeout, stop, observers, stages=sys.modules[__name__])
        else:
            nested = plan_nested(world, spec, placed, folds, shard)  # None without outer_cv
            run_folds = folds if nested is None else nested.folds
            work = plan_work(world, spec, placed, run_folds, out, force, shard, progress,
                             nested=None if nested is None else nested.layout)

            results, interrupted = fit_tasks(
                engine, spec, placed, run_folds, work, out, shard, threads, progress,
                fit_timeout, stop, observers,
                next_round=None if nested is None else nested.refits(spec, work),
            )
            if nested is not None:  # nested_cv.csv; the search's own results for the files
                work, results, extra = finish_nested(engine, spec, nested, work, results)
        result = write_outputs(engine, spec, placed, folds, work, results, out, shard,
                               threads, wall0, extra)
        result.interrupted = interrupted
        return result
    finally:
        placed = folds = nested = run_folds = None  # shared-memory views die with the world
        release_lock(out, shard)
        if own_engine:
            engine.close()
            world.close()


#: Strategies whose tasks are made as the run goes -> "module:function" that runs stages 3
#: to 5 (by name, like the engines: the module builds on this one).
ASYNC_RUNNERS: dict[str, str] = {"asha": "hpcml.run.asha_run:run_asha"}


def _async_runner(spec: ExperimentSpec) -> Callable[..., ExperimentResult] | None:
    import importlib

    for m in spec.models:
        target = ASYNC_RUNNERS.get(m.search.strategy)
        if target is not None:
            module, _, name = target.partition(":")
            return getattr(importlib.import_module(module), name)
    return None


def place_data(world: World, spec: ExperimentSpec) -> Placed:
    """Stage 1: load the data on the root, share it (one copy per node), check NaN support."""
    estimators = world.agree(lambda: {m.name: m.make() for m in spec.models})
    data = world.agree(lambda: load_data(spec.data, spec.source), on_root=True)
    X = world.bcast_array(data.X if world.is_root else None)
    y = world.bcast_array(data.y if world.is_root else None)
    if world.is_root:
        data.X, data.y = X, y  # drop the private copy: one copy of the data per node
    world.agree(lambda: check_nan_support(X, estimators, data.feature_names, spec.source))
    world.agree(lambda: check_target_classes(y, estimators, spec.source))
    return Placed(data, X, y, estimators)


def make_folds(world: World, spec: ExperimentSpec, placed: Placed) -> Folds:
    """Stage 2: the splitter's folds, made on the root and shared as index arrays."""
    first = next(iter(placed.estimators.values()))

    def split() -> Folds:
        folds = _split(spec, first, placed.data)
        if spec.save_oof:
            check_oof_folds(folds, placed.data.n_samples, spec.source)
        return folds

    return share_folds(world, world.agree(split, on_root=True))


def plan_work(world: World, spec: ExperimentSpec, placed: Placed, folds: Folds,
              out: str | os.PathLike | None, force: bool, shard: tuple[int, int] | None,
              progress: bool, nested: NestedLayout | None = None,
              grid: TaskGrid | None = None) -> Work:
    """Stage 3: the task grid, the journal of an earlier run, and what is left to fit.

    With ``nested`` (nested CV), ``folds`` are the run's search, inner and outer folds and the
    tasks to fit are the first pool's (:meth:`~hpcml.core.nested.NestedLayout.phase1_tasks`).
    ``grid`` is the task grid when the spec's own is not (an asynchronous search's).
    """
    grid = grid if grid is not None else spec.task_grid(len(folds))
    manifest = world.agree(lambda: _manifest(spec, placed.data, folds, grid, nested),
                           on_root=True)
    keys = task_keys(grid, manifest["folds"], manifest["data_fingerprint"])
    resumed: dict[int, FitResult] = {}
    if out is not None:
        def prepare() -> dict[int, FitResult]:
            found = prepare_out(Path(out), manifest, keys, force, shard)
            if spec.save_oof:
                _keep_test_folds(Path(out), folds, placed.y, placed.estimators)
            return found

        def keep() -> None:  # the journal's results stay on the root: only it needs them
            resumed.update(prepare())

        world.agree(keep, on_root=True)
    done = world.bcast(sorted(resumed) if world.is_root else None)
    runnable = np.arange(len(grid)) if nested is None else nested.phase1_tasks(grid.n_candidates)
    todo = np.setdiff1d(runnable, np.asarray(done, dtype=np.int64))
    if shard is not None:
        n_train = int(np.mean(np.diff(folds.train_off)))
        owner = shard_tasks(task_costs(grid, placed.estimators, n_train, placed.X.shape[1]),
                            shard[1])
        todo = todo[owner[todo] == shard[0]]
    if world.is_root and progress and done:
        total = len(grid) if nested is None else nested.n_tasks(grid.n_candidates,
                                                                len(grid.model_names))
        sys.stderr.write(f"resuming: {len(done)} of {total} fits are in the journal\n")
    return Work(grid, manifest, keys, resumed, todo)


def fit_tasks(engine: Engine, spec: ExperimentSpec, placed: Placed, folds: Folds, work: Work,
              out: str | os.PathLike | None, shard: tuple[int, int] | None,
              threads: int | None, progress: bool, fit_timeout: float | None,
              stop: Callable[[], bool] | None, observers: tuple[Any, ...],
              next_round: Callable[[dict[int, FitResult]], np.ndarray] | None = None,
              dynamic: bool = False, source: Any = None, expected: int | None = None,
              ) -> tuple[dict[int, FitResult] | None, bool]:
    """Stage 4: fit the tasks left on the engine; every result goes to the journal at once.

    ``next_round(results)`` (collective; the results so far on the root, ``{}`` elsewhere)
    gives tasks that depend on them (nested CV's outer refits): they run next, in the same
    journal, their times counted from the first round's start; empty: done.

    ``dynamic`` (on every rank): the tasks are those ``source`` hands out as the run goes
    (a :class:`~hpcml.engines.base.TaskSource` on the root, ``None`` elsewhere: an
    asynchronous search), at most ``expected`` of them.
    """
    world = engine.world
    threads, _ = threads_per_rank(world.layout()["ranks_on_node"], cli=threads)
    metric_arg = list(spec.metric_names) if spec.scoring else None
    scorers = {name: make_scorer_map(metric_arg, est)[0]
               for name, est in placed.estimators.items()}
    journal = None
    if out is not None:
        label = f"{shard[0]}/{shard[1]}" if shard else ""
        journal = world.agree(lambda: Journal(out, world.rank, shard=label))
    results: dict[int, FitResult] | None = {} if world.is_root else None
    todo, t_start, offset = work.todo, time.time(), 0.0
    if world.is_root:  # which candidate each key is (the status file of a search in rounds)
        for o in observers:
            if hasattr(o, "tasks_known"):
                o.tasks_known(work.grid, work.keys, work.level)

    def record(r: FitResult) -> None:
        r.start, r.end = r.start + offset, r.end + offset  # since the first round began
        journal.append(work.keys[r.task], r)

    try:
        if dynamic:
            found = evaluate_source(
                engine, work.grid, folds, placed.X, placed.y, placed.estimators, scorers,
                source, threads=threads, return_train_score=spec.return_train_score,
                error_score=spec.error_score, progress=progress, expected=expected,
                on_result=None if journal is None else record, should_stop=stop,
                fit_timeout=fit_timeout or spec.fit_timeout, extra_observers=observers,
                fold_sets=work.fold_sets, fold_set=work.fold_set,
            )
            return found, engine.interrupted
        while True:
            measured = world.bcast({t: r.fit_time + r.score_time
                                    for t, r in {**work.resumed, **(results or {})}.items()}
                                   if world.is_root else None)
            found = evaluate_grid(
                engine, work.grid, folds, placed.X, placed.y, placed.estimators, scorers,
                threads=threads, return_train_score=spec.return_train_score,
                error_score=spec.error_score, progress=progress, tasks=todo,
                on_result=None if journal is None else record,
                should_stop=stop, fit_timeout=fit_timeout or spec.fit_timeout,
                oof_methods=oof_methods(spec.save_oof, placed.estimators, spec.source),
                measured=measured, extra_observers=observers,
                fold_sets=work.fold_sets, fold_set=work.fold_set,
            )
            if results is not None:
                results.update(found or {})
            if next_round is None or engine.interrupted:
                break
            todo = np.asarray(next_round(results if results is not None else {}),
                              dtype=np.int64)
            if not len(todo):
                break
            offset = world.bcast(time.time() - t_start if world.is_root else None)
    finally:
        if journal is not None:
            journal.close()
    return results, engine.interrupted


def write_outputs(engine: Engine, spec: ExperimentSpec, placed: Placed, folds: Folds,
                  work: Work, results: dict[int, FitResult] | None,
                  out: str | os.PathLike | None, shard: tuple[int, int] | None,
                  threads: int | None, wall0: float,
                  extra: NestedOutputs | None = None) -> ExperimentResult:
    """Stage 5: ``cv_results_``, the refit and the files, on the root; the result everywhere.

    ``extra``: more outputs of the run (nested CV), see :func:`~hpcml.run.finalize.finalize`.
    """
    world = engine.world
    layout = world.layout()
    threads, source = threads_per_rank(layout["ranks_on_node"], cli=threads)
    grid = work.grid

    best_est = None

    def finish() -> tuple:
        nonlocal best_est
        merged = {**work.resumed, **(results or {})}
        complete = (len(merged) == len(grid) and not work.unfinished
                    and (extra is None or extra.complete))
        n_failed = sum(r.error is not None for r in merged.values())
        n_tasks, n_resumed = len(grid), len(work.resumed)
        if extra is not None:  # every fit of the run, nested ones too
            n_tasks, n_resumed, n_failed = extra.n_tasks, extra.n_resumed, extra.n_failed
        data = placed.data
        run = run_info(
            spec, engine_info=engine.info(), layout=layout, threads=threads,
            threads_source=source, data_fingerprint=fingerprint(data.X, data.y),
            n_samples=int(data.X.shape[0]), n_features=int(data.X.shape[1]),
            n_tasks=n_tasks, wall0=wall0, n_resumed=n_resumed, n_failed=n_failed,
            complete=complete, shard=None if shard is None else f"{shard[0]}/{shard[1]}",
        )
        target = None if out is None or (shard is not None and not complete) else Path(out)
        cv, best, best_est = finalize(spec, grid, merged, placed.X, placed.y,
                                      placed.estimators, out=target, run=run, refit=complete,
                                      folds=folds, extra=extra, columns=work.columns,
                                      best_among=work.best_among)
        return cv, best, run, complete, n_resumed, n_failed

    cv, best, run, complete, n_resumed, n_failed = world.agree(finish, on_root=True)
    return ExperimentResult(
        cv, best, best_est,
        Path(out) if out is not None else None, run, complete=complete,
        n_resumed=n_resumed, n_failed=n_failed,
    )


def _manifest(spec: ExperimentSpec, data: Dataset, folds: Folds, grid: TaskGrid,
              nested: NestedLayout | None = None) -> Manifest:
    manifest = Manifest(
        spec=dict(spec.raw),
        spec_hash=spec.spec_hash(),
        source=spec.source,
        data_fingerprint=fingerprint(data.X, data.y),
        folds=array_id(*folds.arrays()),
        n_splits=grid.n_splits,
        n_samples=data.n_samples,
        n_candidates=grid.n_candidates,
        n_tasks=len(grid),
    )
    if nested is not None:  # where the search, inner and outer folds sit (status, collect)
        manifest["nested"] = nested.to_manifest()
    return manifest


def prepare_out(out: Path, manifest: Manifest, keys: list[str], force: bool,
                shard: tuple[int, int] | None = None):
    """Check ``out`` against this run and read its journal (root only)."""
    hold_lock(out, shard)  # one run (or shard) per folder, until run_experiment ends
    existing = Manifest.read(out)
    if existing is not None and force:
        shutil.rmtree(out / JOURNAL_DIR, ignore_errors=True)
        for name in ("manifest.json", *RESULT_FILES):
            (out / name).unlink(missing_ok=True)
        existing = None
    if existing is not None:
        diffs = existing.differences(manifest)
        if diffs:
            raise UsageError(
                f"--out {out}: holds the journal of another experiment ({'; '.join(diffs)}); "
                "choose another folder, or pass --force to discard it"
            )
    out.mkdir(parents=True, exist_ok=True)
    if existing is None:
        manifest.write(out)
    return read_journal(out, keys)


def _keep_test_folds(out: Path, folds: Folds, y: Any, estimators: dict[str, Any]) -> None:
    (out / JOURNAL_DIR).mkdir(parents=True, exist_ok=True)
    path = out / JOURNAL_DIR / "test_folds.npz"
    if not path.exists():
        classes = np.unique(y) if y is not None and is_classifier_spec(estimators) else None
        save_test_folds(path, folds, classes)


def _search_seed(spec: ExperimentSpec, out: str | os.PathLike | None, force: bool) -> int:
    """The seed of the ``random_state: null`` searches: the earlier run's (its manifest, so
    a resume draws the same candidates), else a fresh one."""
    old = Manifest.read(out) if out is not None and not force else None
    first = next(m for m in spec.models if m.search.options.get("random_state", 0) is None)
    block = (old or {}).get("spec") or {}
    if first.search.key != "search":
        block = ((block.get("models") or {}).get(first.name) or {})
    seed = (block.get("search") or {}).get("random_state")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    return int(np.random.SeedSequence().entropy % 2**32)


def _as_spec(spec: Any) -> ExperimentSpec:
    if isinstance(spec, ExperimentSpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec, source="<dict>")
    return load_spec(spec)


def _split(spec: ExperimentSpec, estimator: Any, data: Dataset) -> Folds:
    from sklearn.base import is_classifier

    splitter = spec.cv.make(is_classifier(estimator), data.y)
    check_splits_vs_classes(splitter, data.y, spec.source)
    try:
        splits = list(splitter.split(data.X, data.y, data.groups))
    except ValueError as exc:
        raise SpecError("cv", f"cannot split the data: {exc}", spec.source) from None
    if not splits:
        raise SpecError("cv", "the splitter produced no folds", spec.source)
    return Folds(splits)
