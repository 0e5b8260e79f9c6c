"""``hpcml plan``: what a run would do, before any fit (tasks, layout, estimated cost)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hpcml.core.costs import task_costs
from hpcml.core.prefix_cache import prefix_cache_bytes
from hpcml.core.prefixes import grid_prefixes, task_units
from hpcml.core.progress import format_duration
from hpcml.core.schedule import plan_chunks
from hpcml.core.threads import threads_per_rank, usable_cores
from hpcml.spec.data import load_data
from hpcml.spec.schema import load_spec

__all__ = ["describe_plan", "lower_bound"]


def lower_bound(costs, n_ranks: int) -> float:
    """No schedule of ``costs`` on ``n_ranks`` ranks ends before this.

    Examples
    --------
    >>> lower_bound([4.0, 1.0, 1.0], 2), lower_bound([4.0, 1.0, 1.0], 1)
    (4.0, 6.0)
    """
    c = np.asarray(costs, dtype=np.float64)
    return float(max(c.sum() / max(n_ranks, 1), c.max(initial=0.0)))


def describe_plan(spec_path: str | os.PathLike, ranks: int, threads: int | None = None) -> str:
    """The text ``hpcml plan`` prints."""
    spec = load_spec(spec_path)
    data = load_data(spec.data, spec.source)
    estimators = {m.name: m.make() for m in spec.models}
    n_splits = spec.cv.make(False, data.y).get_n_splits(data.X, data.y, data.groups)
    grid = spec.task_grid(n_splits)
    n_train = int(data.n_samples * (n_splits - 1) / n_splits) if n_splits > 1 else data.n_samples
    costs = task_costs(grid, estimators, n_train, data.X.shape[1])
    cores = usable_cores()
    per_node = min(ranks, cores)
    t, source = threads_per_rank(per_node, cli=threads)
    units = None
    if prefix_cache_bytes() > 0:
        units = task_units(grid, grid_prefixes(grid, estimators), np.arange(len(grid)), costs,
                           ranks)
    plan = plan_chunks(costs, ranks, units=units)
    sizes = np.diff(plan.bounds)
    per_model = {}
    for cand in grid.candidates:
        per_model[cand.model] = per_model.get(cand.model, 0) + 1
    models = ", ".join(f"{name} {n}" for name, n in per_model.items())
    warn = ""
    if len(grid) < ranks:
        warn = f"\nwarning:           {ranks - len(grid)} of {ranks} ranks would have no task"
    return (
        f"spec:              {spec.source}\n"
        f"data:              {data.n_samples} rows x {data.X.shape[1]} features\n"
        f"tasks:             {len(grid)} = {grid.n_candidates} candidates ({models}) "
        f"x {n_splits} folds\n"
        f"ranks:             {ranks} (usable cores on this node: {cores})\n"
        f"threads per rank:  {t} (from {source})\n"
        f"estimated cost:    {format_duration(float(costs.sum()))} in all, largest task "
        f"{format_duration(float(costs.max(initial=0.0)))}\n"
        f"lower bound:       {format_duration(lower_bound(costs, ranks))} on {ranks} ranks "
        "(max(total / ranks, largest task))\n"
        f"chunks:            {plan.n_chunks} claims; tasks per claim from {sizes.min() if sizes.size else 0} "
        f"to {sizes.max(initial=0)}\n"
        + _schedule_line(ranks)
        + _prefix_line(units)
        + _nested_line(spec, grid, n_splits)
        + warn
    )


def _prefix_line(units: np.ndarray | None) -> str:
    if units is None:
        return ""
    sizes = np.bincount(units)
    shared = sizes[sizes > 1]
    return (f"\nshared prefixes:   {int(shared.sum())} tasks in {len(shared)} groups sharing a "
            "pipeline prefix on a fold: each group on one rank, its prefix fitted once")


def _nested_line(spec: Any, grid: Any, n_splits: int) -> str:
    """What ``outer_cv`` adds (nested CV): its fits are not in the estimates above."""
    if getattr(spec, "outer_cv", None) is None:
        return ""
    n_outer = spec.outer_cv.known_n_splits()
    if n_outer is None:
        return "\nnested CV:         outer_cv adds inner fits and outer refits (not counted above)"
    extra = grid.n_candidates * n_splits * n_outer + len(grid.model_names) * n_outer
    return (f"\nnested CV:         {extra} more fits (not in the estimates above): {n_outer} "
            f"outer folds x {grid.n_candidates} candidates x {n_splits} inner folds, and "
            f"{len(grid.model_names)} refit(s) per outer fold")


def _schedule_line(ranks: int) -> str:
    if ranks <= 1:
        return "schedule:          one rank: every task in turn"
    return (
        "schedule:          longest first by these estimates; the tasks not yet claimed are "
        f"re-ordered with measured costs at claims {2 * ranks}, {4 * ranks}, {8 * ranks}, ..."
    )
