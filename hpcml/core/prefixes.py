"""Pipeline prefixes that candidates share: which steps to fit once per fold, and the units of
work that keep the tasks sharing one together. Pure: every rank computes the same answer.

A candidate of a :class:`~sklearn.pipeline.Pipeline` model sets params of some steps
(``pca__n_components``, ``svc__C``, or a whole step: ``reduce``). Its first ``k`` steps are
fitted the same way as another candidate's when both set the same params on them; on one fold
their fitted prefix (and the data it outputs) is then the same, so it can be fitted once
(:mod:`hpcml.core.pipefit`). Each candidate gets the longest prefix, short of the final step,
that at least one other candidate of its model shares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Prefix", "grid_prefixes", "prefix_plan", "prefix_units", "split_units",
           "step_of_param", "task_units"]

#: Pipeline-level params a candidate may set and still share a prefix (they change no fit).
_NEUTRAL = frozenset({"memory", "verbose"})


@dataclass(frozen=True)
class Prefix:
    """The shared prefix of one candidate: its first ``k`` steps, fitted as ``key`` says.

    Attributes
    ----------
    k : int
        Number of leading steps fitted once (at least 1, fewer than the pipeline's steps).
    key : str
        Equal for the candidates of one model whose first ``k`` steps are set the same way.
    """

    k: int
    key: str


def step_of_param(name: str, steps: Sequence[str]) -> int | None:
    """The index of the step a pipeline param sets, ``None`` for a pipeline-level one.

    Examples
    --------
    >>> step_of_param("svc__C", ["pca", "svc"]), step_of_param("pca", ["pca", "svc"])
    (1, 0)
    >>> step_of_param("memory", ["pca", "svc"]) is None
    True
    """
    head = name.split("__", 1)[0]
    return steps.index(head) if head in steps else None


def _steps_of(estimator: Any) -> list[str] | None:
    """Step names of a plain scikit-learn ``Pipeline`` that can share prefixes, else ``None``."""
    try:
        from sklearn.pipeline import Pipeline
    except ImportError:  # pragma: no cover
        return None
    if type(estimator) is not Pipeline or getattr(estimator, "transform_input", None) is not None:
        return None
    steps = getattr(estimator, "steps", None)
    if not isinstance(steps, list) or len(steps) < 2:
        return None
    return [name for name, _ in steps]


_ATOMIC = (type(None), bool, int, float, str)


def _value_key(items: list[tuple[str, Any]]) -> str:
    """A key of ``(param, value)`` pairs: equal values (estimators too) give equal keys.

    Plain values (``None``, numbers, strings) by their type and ``repr``; anything else by
    joblib's hash of its pickle (32 hex digits, never equal to a plain key).

    >>> _value_key([("a__C", 1.0)]) == _value_key([("a__C", 1.0)]) != _value_key([("a__C", 1)])
    True
    """
    if all(type(v) in _ATOMIC for _, v in items):
        return "v:" + repr([(p, type(v).__name__, v) for p, v in items])
    import joblib

    return joblib.hash(items)


def prefix_plan(estimator: Any, candidates: Sequence[Mapping[str, Any]]) -> list[Prefix | None]:
    """The shared prefix of each candidate of one model, or ``None`` for no sharing.

    Only a plain ``Pipeline`` (no ``transform_input``) whose candidates set no pipeline-level
    param but ``memory`` or ``verbose`` shares prefixes. A candidate's prefix is the longest
    run of leading steps (not the final one) whose params it sets as another candidate does.

    Parameters
    ----------
    estimator : estimator
        The model's unfitted estimator, its fixed params set.
    candidates : sequence of mapping
        The params of each candidate, in candidate order.

    Examples
    --------
    >>> from sklearn.pipeline import Pipeline
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.svm import SVC
    >>> pipe = Pipeline([("pca", PCA()), ("svc", SVC())])
    >>> grid = [{"pca__n_components": n, "svc__C": c} for n in (2, 3) for c in (1, 10)]
    >>> got = prefix_plan(pipe, grid)
    >>> [p.k for p in got], got[0].key == got[1].key != got[2].key == got[3].key
    ([1, 1, 1, 1], True)
    >>> prefix_plan(pipe, [{"pca__n_components": 2}, {"pca__n_components": 3}])
    [None, None]
    """
    names = _steps_of(estimator)
    n = len(candidates)
    if names is None or n < 2:
        return [None] * n
    # the step of each param of each candidate (a pipeline-level param counts for every step)
    placed: list[list[tuple[int, str, Any]]] = []
    for params in candidates:
        row = []
        for key in sorted(params):
            step = step_of_param(key, names)
            if step is None:
                if key not in _NEUTRAL:
                    return [None] * n
                step = 0
            row.append((step, key, params[key]))
        placed.append(row)
    out: list[Prefix | None] = [None] * n
    for k in range(len(names) - 1, 0, -1):  # the longest prefix first
        keys = [_value_key([(p, v) for s, p, v in row if s < k]) for row in placed]
        counts: dict[str, int] = {}
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
        for i, key in enumerate(keys):
            if out[i] is None and counts[key] > 1:
                out[i] = Prefix(k, key)
    return out


def prefix_units(
    prefixes: Sequence[Prefix | None],
    candidate_of: np.ndarray,
    model_of: np.ndarray,
    fold_of: np.ndarray,
) -> np.ndarray | None:
    """Unit number of each item: items with the same model, prefix and fold share one.

    Parameters
    ----------
    prefixes : sequence of Prefix or None
        The prefix of each candidate (:func:`prefix_plan`, all models).
    candidate_of, model_of, fold_of : ndarray of int
        Candidate, model and fold of each item.

    Returns
    -------
    ndarray of int64 or None
        Units numbered by first appearance (an item that shares nothing is a unit of its
        own); ``None`` when no two items share a unit: plan them as usual.

    Examples
    --------
    >>> p = [Prefix(1, "a"), Prefix(1, "a"), None]
    >>> cand, fold = np.repeat([0, 1, 2], 2), np.tile([0, 1], 3)
    >>> prefix_units(p, cand, np.zeros(6, int), fold).tolist()
    [0, 1, 0, 1, 2, 3]
    >>> prefix_units([None] * 3, cand, np.zeros(6, int), fold) is None
    True
    """
    seen: dict[tuple, int] = {}
    units = np.empty(len(candidate_of), dtype=np.int64)
    for i, (c, m, f) in enumerate(zip(candidate_of.tolist(), model_of.tolist(),
                                      fold_of.tolist(), strict=True)):
        p = prefixes[c]
        key: tuple = ("item", i) if p is None else (m, p.k, p.key, f)
        units[i] = seen.setdefault(key, len(seen))
    return None if len(seen) == len(units) else units


def split_units(units: np.ndarray, costs: np.ndarray, n_workers: int) -> np.ndarray:
    """``units`` with each unit larger than 1.5 workers' share of the work cut in pieces.

    A unit runs on one worker; one that holds more than a worker's share of the work (few
    folds, many ranks) would leave the others idle. It is cut into ``round(cost / share)``
    pieces of consecutive items (each fits the shared prefix once more), at most one per item.

    Examples
    --------
    >>> split_units(np.array([0, 0, 0, 0, 1]), np.ones(5), 2).tolist()
    [0, 0, 1, 1, 2]
    >>> split_units(np.array([0, 0, 1, 1]), np.ones(4), 2).tolist()
    [0, 0, 1, 1]
    """
    u = np.asarray(units, dtype=np.int64)
    c = np.asarray(costs, dtype=np.float64)
    total = float(c.sum())
    if len(u) == 0 or total <= 0:
        return u.copy()
    share = total / max(int(n_workers), 1)
    ucost = np.bincount(u, weights=c)
    out = np.empty_like(u)
    members: dict[int, list[int]] = {}
    for i, unit in enumerate(u.tolist()):
        members.setdefault(unit, []).append(i)
    nxt = 0
    for unit in sorted(members, key=lambda x: members[x][0]):  # first appearance
        items = members[unit]
        pieces = min(len(items), max(1, int(math.floor(ucost[unit] / share + 0.5))))
        for j, part in enumerate(np.array_split(np.asarray(items), pieces)):
            out[part] = nxt + j
        nxt += pieces
    return out


def grid_prefixes(grid: Any, estimators: Mapping[str, Any]) -> list[Prefix | None]:
    """:func:`prefix_plan` of every model of a :class:`~hpcml.core.tasks.TaskGrid`, by
    candidate index."""
    out: list[Prefix | None] = [None] * grid.n_candidates
    by_model: dict[str, list[int]] = {}
    for c in grid.candidates:
        by_model.setdefault(c.model, []).append(c.index)
    for name, idx in by_model.items():
        plans = prefix_plan(estimators[name], [grid.candidates[i].params for i in idx])
        for i, p in zip(idx, plans, strict=True):
            out[i] = p
    return out


def task_units(grid: Any, prefixes: Sequence[Prefix | None], todo: np.ndarray,
               costs: np.ndarray, n_workers: int) -> np.ndarray | None:
    """Units of the tasks ``todo`` of ``grid`` (:func:`prefix_units`, then :func:`split_units`
    by their ``costs`` for ``n_workers``), or ``None`` when no two tasks share a prefix."""
    todo = np.asarray(todo, dtype=np.int64)
    cand = todo // grid.n_splits
    model_ids = {name: i for i, name in enumerate(grid.model_names)}
    model = np.array([model_ids[c.model] for c in grid.candidates], dtype=np.int64)
    units = prefix_units(prefixes, cand, model[cand] if len(cand) else cand,
                         todo % grid.n_splits)
    return None if units is None else split_units(units, costs, n_workers)
