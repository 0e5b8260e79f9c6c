"""Nested cross-validation in a run (``outer_cv``): the stages that :mod:`hpcml.run.experiment`
calls when the spec has one.

- :func:`plan_nested` (after ``make_folds``): the root splits the data into outer folds and
  each outer training part into inner folds (the spec's ``cv``), and every rank gets the
  folds of the run's one task grid (:class:`~hpcml.core.nested.NestedLayout`): search,
  inner, outer.
- ``plan_work`` and ``fit_tasks`` then run as for any spec, on that grid: every (outer fold
  × candidate × inner fold) fit and the ordinary search share one pool, one journal (keys by
  content: the candidate, its fold's position and a hash of all folds) and one progress.
- :meth:`NestedPlan.refits` is ``fit_tasks``'s next round: once the first pool is done, the
  root picks each (outer fold, model)'s candidate as ``GridSearchCV`` would, and their
  refits on the outer training parts run as a second pool in the same journal.
- :func:`finish_nested` hands ``write_outputs`` the ordinary search's results and
  ``nested_cv.csv``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hpcml.core.fitting import FitResult, Folds
from hpcml.core.nested import (
    NestedLayout,
    choose,
    nested_csv,
    nested_rows,
    nested_summary,
    refit_tasks,
)
from hpcml.engines.base import Engine, World
from hpcml.errors import SpecError, UsageError
from hpcml.search.evaluate import share_folds
from hpcml.spec.checks import check_splits_vs_classes
from hpcml.spec.schema import ExperimentSpec

__all__ = ["NestedPlan", "NestedOutputs", "plan_nested", "finish_nested", "nested_outputs"]

NESTED_FILE = "nested_cv.csv"


@dataclass
class NestedPlan:
    """The folds of a nested run's task grid (on every rank) and where each kind sits."""

    layout: NestedLayout
    folds: Folds
    world: World

    def refits(self, spec: ExperimentSpec, work: Any
               ) -> Callable[[dict[int, FitResult]], list[int]]:
        """``next_round`` of ``fit_tasks``: once every inner fit has a result, the outer
        refits of the chosen candidates not yet in the journal (chosen on the root), then
        nothing."""
        asked = []

        def next_round(results: dict[int, FitResult]) -> list[int]:
            if asked:
                return []
            asked.append(True)
            merged = {**work.resumed, **results}

            def todo() -> list[int]:
                choices = choose(work.grid, self.layout, merged, spec.metric_names,
                                 spec.refit_metric)
                return [] if choices is None else [
                    t for t in refit_tasks(choices, self.layout) if t not in merged]

            return self.world.agree(todo, on_root=True)

        return next_round


@dataclass
class NestedOutputs:
    """What ``write_outputs`` adds for nested CV (root; ``complete`` on every rank).

    Attributes
    ----------
    complete : bool
        Every inner fit and every outer refit has a result.
    files : dict
        File name to text, written before ``run.json`` (``nested_cv.csv``).
    best : dict
        Entries for ``best.json`` (``nested``, ``nested_by_model``).
    n_tasks, n_resumed, n_failed : int
        Counts over every fit of the run, for ``run.json``.
    """

    complete: bool
    files: dict[str, str] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    n_tasks: int = 0
    n_resumed: int = 0
    n_failed: int = 0


def plan_nested(world: World, spec: ExperimentSpec, placed: Any, folds: Folds,
                shard: tuple[int, int] | None = None) -> NestedPlan | None:
    """The outer and inner folds, made on the root and shared (``None`` without outer_cv)."""
    if spec.outer_cv is None:
        return None
    made: dict[str, Folds] = {}

    def split() -> NestedLayout:
        if shard is not None:
            raise UsageError("--shard: not supported with outer_cv (each outer fold's "
                             "choice needs all its inner fits); run without --shard")
        first = next(iter(placed.estimators.values()))
        layout, made["folds"] = nested_folds(spec, first, placed.data, folds)
        return layout

    layout = world.agree(split, on_root=True)
    return NestedPlan(layout, share_folds(world, made.get("folds")), world)


def nested_folds(spec: ExperimentSpec, estimator: Any, data: Any, folds: Folds
                 ) -> tuple[NestedLayout, Folds]:
    """Outer folds of ``spec.outer_cv`` on all rows; the spec's ``cv`` on each outer training
    part, mapped back to rows of X; all folds of the grid in :class:`NestedLayout` order."""
    from sklearn.base import is_classifier

    classifier = is_classifier(estimator)
    X, y, groups = data.X, data.y, data.groups
    outer = spec.outer_cv.make(classifier, y)
    check_splits_vs_classes(outer, y, spec.source, key="outer_cv.n_splits")
    try:
        outer_splits = list(outer.split(X, y, groups))
    except ValueError as exc:
        raise SpecError("outer_cv", f"cannot split the data: {exc}", spec.source) from None
    if not outer_splits:
        raise SpecError("outer_cv", "the splitter produced no folds", spec.source)
    splits = [folds[k] for k in range(len(folds))]
    inner_counts = []
    for o, (train, _) in enumerate(outer_splits):
        y_tr = None if y is None else y[train]
        g_tr = None if groups is None else np.asarray(groups)[train]
        inner = spec.cv.make(classifier, y_tr)
        check_splits_vs_classes(inner, y_tr, spec.source,
                                key="cv.n_splits", where=f" in outer fold {o}'s training part")
        try:
            inner_splits = list(inner.split(X[train], y_tr, g_tr))
        except ValueError as exc:
            raise SpecError("cv", f"cannot split outer fold {o}'s training part: {exc}",
                            spec.source) from None
        if not inner_splits:
            raise SpecError("cv", f"the splitter produced no folds in outer fold {o}",
                            spec.source)
        splits += [(train[a], train[b]) for a, b in inner_splits]
        inner_counts.append(len(inner_splits))
    splits += outer_splits
    return NestedLayout(len(folds), tuple(inner_counts)), Folds(splits)


def finish_nested(engine: Engine, spec: ExperimentSpec, plan: NestedPlan, work: Any,
                  results: dict[int, FitResult] | None,
                  ) -> tuple[Any, dict[int, FitResult] | None, NestedOutputs]:
    """After the fits: the nested outputs (root, then on every rank), and the ordinary
    search's work and results, re-indexed on a grid of its own folds, for ``write_outputs``."""
    layout = plan.layout
    merged: dict[int, FitResult] = {**work.resumed, **(results or {})}
    outputs = engine.world.agree(lambda: nested_outputs(spec, work.grid, layout, merged,
                                                        n_resumed=len(work.resumed)),
                                 on_root=True)
    search = replace(work, grid=spec.task_grid(layout.n_search), keys=[],
                     resumed=layout.search_results(work.resumed))
    return search, (None if results is None else layout.search_results(results)), outputs


def nested_outputs(spec: ExperimentSpec, grid: Any, layout: NestedLayout,
                   results: dict[int, FitResult], n_resumed: int = 0) -> NestedOutputs:
    """``nested_cv.csv`` and ``best.json``'s entries when every fit is done (root; also for
    ``hpcml collect``)."""
    n_models = len(grid.model_names)
    n_tasks = layout.n_tasks(grid.n_candidates, n_models)
    n_failed = sum(r.error is not None for r in results.values())
    choices = choose(grid, layout, results, spec.metric_names, spec.refit_metric)
    if choices is None or any(t not in results for t in refit_tasks(choices, layout)):
        return NestedOutputs(False, n_tasks=n_tasks, n_resumed=n_resumed, n_failed=n_failed)
    rows = nested_rows(grid, layout, choices, results, spec.metric_names, spec.error_score)
    return NestedOutputs(True, {NESTED_FILE: nested_csv(rows)},
                         nested_summary(rows, spec.metric_names), n_tasks=n_tasks,
                         n_resumed=n_resumed, n_failed=n_failed)
