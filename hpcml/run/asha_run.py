"""A spec run with ``search: {strategy: asha}``: the stages of a run, with tasks made as it goes.

After the data and folds (as any run): the candidates are sampled on the root and shared,
each model gets its :class:`~hpcml.search.asha.ASHA` rule, and the task grid of every
(candidate, rung, fold) is fixed (:func:`~hpcml.search.asha_tasks.asha_grid`), so the
journal, resume and the per-fit timeout work as for a grid. The root's
:class:`~hpcml.search.asha_tasks.AshaSource` hands tasks to free workers through
:meth:`~hpcml.engines.base.Engine.run_source`; a resume replays the journal's results to the
rules first. ``cv_results.csv`` has a row per (candidate, rung) that finished, with ``iter``
(the rung) and ``n_resources``; the best is the best of each model's highest rung reached.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.core.fitting import FitResult, Folds
from hpcml.core.tasks import TaskGrid
from hpcml.engines.base import Engine
from hpcml.errors import SpecError, UsageError
from hpcml.run.experiment import ExperimentResult, Placed, Work, fit_tasks, plan_work
from hpcml.run.finalize import finalize, run_info
from hpcml.search.asha_tasks import (
    AshaModel,
    AshaSource,
    asha_grid,
    fold_sets,
    make_rules,
    sample_candidates,
)
from hpcml.spec.data import fingerprint
from hpcml.spec.schema import ExperimentSpec

__all__ = ["run_asha", "check_asha_spec", "asha_outputs", "write_asha", "collect_asha"]


def check_asha_spec(spec: ExperimentSpec, shard: tuple[int, int] | None) -> None:
    """Refuse what an asha run cannot do, naming the key and the fix."""
    strategies = {m.name: m.search.strategy for m in spec.models}
    others = [n for n, s in strategies.items() if s != "asha"]
    if others:
        raise SpecError(f"models.{others[0]}.search", "an asha search cannot share a run with "
                        f"other strategies ({', '.join(others)} use "
                        f"{strategies[others[0]]}); give every model search: "
                        "{strategy: asha, ...}, or run them in separate specs", spec.source)
    if shard is not None:
        raise UsageError("--shard splits a fixed task list; an asha search decides its tasks "
                         "as it goes: run it without --shard")
    if spec.save_oof:
        raise SpecError("save_oof", "is not supported with search: {strategy: asha}; drop it",
                        spec.source)


def data_info(y: Any, estimators: Mapping[str, Any], n_splits: int) -> dict[str, Any]:
    """What the resource ``n_samples`` needs: rows, classes (of a classifier) and folds."""
    from sklearn.base import is_classifier

    classes = (len(np.unique(y)) if y is not None
               and any(is_classifier(e) for e in estimators.values()) else None)
    return {"n_samples": int(len(y)), "n_classes": classes, "n_splits": int(n_splits)}


def run_asha(engine: Engine, spec: ExperimentSpec, placed: Placed, folds: Folds,
             out: str | os.PathLike | None, force: bool, shard: tuple[int, int] | None,
             threads: int | None, progress: bool, fit_timeout: float | None,
             stop: Callable[[], bool] | None, observers: tuple[Any, ...],
             wall0: float) -> ExperimentResult:
    """Stages 3 to 5 of :func:`~hpcml.run.experiment.run_experiment` for an asha spec."""
    world = engine.world
    world.agree(lambda: check_asha_spec(spec, shard))
    candidates = world.agree(lambda: sample_candidates(spec), on_root=True)
    info = data_info(placed.y, placed.estimators, len(folds))
    rules = world.agree(lambda: make_rules(spec, candidates, info))
    grid, models = asha_grid(rules, len(folds))
    work = plan_work(world, spec, placed, folds, out, force, None, progress, grid=grid)
    seeds = {m.name: m.search.options["random_state"] for m in spec.models}
    work.fold_sets, work.fold_set = fold_sets(models, folds, info["n_samples"], seeds)
    work.level = np.asarray([m.job_of(c)[1] for m in models
                             for c in range(m.offset, m.offset + m.n * len(m.asha.resources))],
                            dtype=np.int64)  # each grid candidate's rung
    metric = spec.refit_metric or spec.metric_names[0]
    source = AshaSource(models, grid.n_splits, metric, work.resumed) if world.is_root else None
    if source is not None and work.resumed and source.done and progress:
        sys.stderr.write("resuming: the asha search in the journal is finished\n")
    _, interrupted = fit_tasks(
        engine, spec, placed, folds, work, out, None, threads, progress, fit_timeout, stop,
        observers, dynamic=True, source=source,
        expected=source.expected_tasks() if source is not None else None)
    result = asha_outputs(engine, spec, placed, folds, work, source, models, out, threads,
                          wall0)
    result.interrupted = interrupted
    return result


def asha_outputs(engine: Engine, spec: ExperimentSpec, placed: Placed, folds: Folds,
                 work: Work, source: AshaSource | None, models: list[AshaModel],
                 out: str | os.PathLike | None, threads: int | None,
                 wall0: float) -> ExperimentResult:
    """Stage 5: ``cv_results`` of the finished (candidate, rung) jobs, the best at each
    model's highest rung, its refit and the files (root); the result on every rank."""
    from hpcml.core.threads import threads_per_rank

    world = engine.world
    layout = world.layout()
    threads, threads_source = threads_per_rank(layout["ranks_on_node"], cli=threads)
    best_est = None

    def finish() -> tuple:
        nonlocal best_est
        data = placed.data
        n_failed = sum(r.error is not None for r in source.results.values())
        run = run_info(
            spec, engine_info=engine.info(), layout=layout, threads=threads,
            threads_source=threads_source, data_fingerprint=fingerprint(data.X, data.y),
            n_samples=int(data.X.shape[0]), n_features=int(data.X.shape[1]),
            n_tasks=len(source.results), wall0=wall0, n_resumed=len(work.resumed),
            n_failed=n_failed, complete=source.done,
        )
        cv, best, best_est = write_asha(spec, source, work.grid, placed.X, placed.y,
                                        placed.estimators, out, run, folds)
        return cv, best, run, source.done, len(work.resumed), n_failed

    cv, best, run, complete, n_resumed, n_failed = world.agree(finish, on_root=True)
    return ExperimentResult(cv, best, best_est, Path(out) if out is not None else None, run,
                            complete=complete, n_resumed=n_resumed, n_failed=n_failed)


def write_asha(spec: ExperimentSpec, source: AshaSource, grid: TaskGrid, X: Any, y: Any,
               estimators: dict[str, Any], out: str | os.PathLike | None, run: dict[str, Any],
               folds: Folds | None = None) -> tuple[dict[str, Any], dict[str, Any] | None, Any]:
    """``cv_results`` (and the files in ``out``) of what ``source`` knows; when its search is
    done, the best of each model's highest rung and its refit (without ``X``: no refit).

    Returns ``(cv_results, best or None, refit estimator or None)``.
    """
    small, results, rungs, resources = compact(source, grid, source.models)
    run.update(search="asha", asha={
        m.name: {"resources": m.asha.resources, "rungs": [len(r) for r in m.asha.rungs]}
        for m in source.models})
    columns = {"iter": np.asarray(rungs, dtype=np.int64),
               "n_resources": np.asarray(resources, dtype=np.int64)}
    target = Path(out) if out is not None else None
    if not source.done:  # stopped: the finished jobs' scores, no best and no refit yet
        cv, _, _ = finalize(spec, small, results, None, None, estimators, out=None, run=run,
                            refit=False, columns=columns)
        if target is not None:
            from hpcml.core.results import cv_results_to_csv
            from hpcml.run.outputs import atomic_write_text

            atomic_write_text(target / "cv_results.csv", cv_results_to_csv(cv))
        return cv, None, None
    cv, best, best_est = finalize(
        spec, small, results, X, y, estimators, out=target, run=run, refit=X is not None,
        folds=folds, columns=columns, best_among=top_rows(small, rungs))
    if best is not None:
        best.update(iter=int(rungs[best["index"]]), n_resources=int(resources[best["index"]]))
        if target is not None:
            from hpcml.run.outputs import atomic_write_json

            atomic_write_json(target / "best.json", best)
    return cv, best, best_est


def collect_asha(out: Path, spec: ExperimentSpec, manifest: Mapping[str, Any],
                 load_xy: Callable[[], tuple[Any, Any]], refit: bool,
                 info: Callable[[dict, int], dict[str, Any]]) -> dict[str, Any]:
    """``hpcml collect`` of an asha run: its journal replayed to the rules.

    ``load_xy`` gives the data (for the refit, and for the rungs of ``n_samples``);
    ``info(results, n)`` the ``run.json`` of a collect.
    """
    from hpcml.run.journal import read_journal, task_keys

    estimators = {m.name: m.make() for m in spec.models}
    data = None
    if any(m.search.options["resource"] == "n_samples" for m in spec.models):
        data = load_xy()
    sizes = data_info(data[1], estimators, manifest["n_splits"]) if data else None
    rules = make_rules(spec, sample_candidates(spec), sizes)
    grid, models = asha_grid(rules, manifest["n_splits"])
    keys = task_keys(grid, manifest["folds"], manifest["data_fingerprint"])
    results = read_journal(out, keys)
    source = AshaSource(models, grid.n_splits, spec.refit_metric or spec.metric_names[0],
                        results)
    X = y = None
    if source.done and refit and spec.refit_metric is not None:
        X, y = data or load_xy()
    run = info(results, len(results)) if source.done else {}
    _, best, _ = write_asha(spec, source, grid, X, y, estimators, out, run)
    return {"done": len(results), "total": len(results) if source.done else None,
            "complete": source.done, "best": best}


def compact(source: AshaSource, grid: TaskGrid, models: list[AshaModel],
            ) -> tuple[TaskGrid, dict[int, FitResult], list[int], list[int]]:
    """The finished jobs as a grid of their own (rows: model, rung, candidate), their
    results renumbered, and each row's rung and resource."""
    n_splits = grid.n_splits
    slots = source.finished_slots()
    rows, results, rungs, resources = [], {}, [], []
    for row, slot in enumerate(slots):
        cand = grid.candidates[slot]
        m = source.model_of(slot)
        _, rung = m.job_of(slot)
        rows.append((cand.model, cand.params))
        rungs.append(rung)
        resources.append(m.asha.resources[rung])
        for k in range(n_splits):
            r = source.results[slot * n_splits + k]
            results[row * n_splits + k] = FitResult(
                row * n_splits + k, r.test_scores, r.train_scores, r.fit_time, r.score_time,
                r.error, r.rank, r.start, r.end, r.oof)
    return TaskGrid.from_candidates(rows, n_splits), results, rungs, resources


def top_rows(grid: TaskGrid, rungs: list[int]) -> list[int]:
    """Rows at their model's highest rung reached: where the best is taken."""
    top: dict[str, int] = {}
    for cand, rung in zip(grid.candidates, rungs, strict=True):
        top[cand.model] = max(top.get(cand.model, 0), rung)
    return [i for i, (cand, rung) in enumerate(zip(grid.candidates, rungs, strict=True))
            if rung == top[cand.model]]
