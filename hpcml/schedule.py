"""Scheduling policy: task cost estimates, longest-first order and guided chunks.

Pure functions of the task list and the world size, so every rank computes the same plan
without talking, and a simulator can replay the same policy without MPI. The engines only
claim chunk numbers (``0, 1, 2, ...``) from a shared counter: whoever is free takes the next
chunk, which is dynamic self-scheduling with no dispatcher rank.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Plan",
    "estimate_cost",
    "learn_costs",
    "plan_chunks",
    "shard_tasks",
    "DEFAULT_GRAIN",
]

#: Smallest estimated work (seconds) worth one claim of the shared counter.
DEFAULT_GRAIN = 0.02
#: Fixed seconds of any fit + score (clone, input validation, scorer calls).
BASE_COST = 1.5e-3

# Rough seconds per unit of work for a class-name pattern; only the ratios matter much.
# The first pattern found in the class name wins, so a more specific name comes first
# (HistGradientBoosting before GradientBoosting, LinearSVC before SVC).
_KIND_COST: tuple[tuple[str, str, float], ...] = (
    ("Dummy", "const", 2e-5),
    ("HistGradientBoosting", "boost", 2e-8),
    ("GradientBoosting", "boost", 6e-8),
    ("RandomForest", "forest", 1.2e-8),
    ("ExtraTrees", "forest", 6e-9),
    ("DecisionTree", "tree", 5e-8),
    ("ExtraTree", "tree", 3e-8),
    ("LinearSVC", "linear", 1e-7),
    ("LinearSVR", "linear", 1e-7),
    ("SVC", "kernel", 4e-9),
    ("SVR", "kernel", 4e-9),
    ("KNeighbors", "lazy", 2e-8),
    ("MLP", "linear", 2e-6),
    ("Logistic", "linear", 1.5e-7),
)


@dataclass(frozen=True)
class Plan:
    """A schedule: tasks in claim order, cut into chunks.

    Attributes
    ----------
    order : ndarray of int64
        Task indices, most expensive first.
    bounds : ndarray of int64
        Chunk ``c`` is ``order[bounds[c]:bounds[c + 1]]``.
    """

    order: np.ndarray
    bounds: np.ndarray

    @property
    def n_chunks(self) -> int:
        return len(self.bounds) - 1

    def chunk(self, c: int) -> np.ndarray:
        """Task indices of chunk ``c``."""
        return self.order[self.bounds[c] : self.bounds[c + 1]]


def estimate_cost(
    estimator: Any, params: Mapping[str, Any], n_samples: int, n_features: int
) -> float:
    """A rough fit + score time in seconds, from the model kind and the data size.

    Parameters
    ----------
    estimator : estimator or str
        The estimator (or its class name); a ``Pipeline`` is costed by its last step.
    params : mapping
        Candidate params; ``n_estimators`` and ``max_iter`` scale the cost.
    n_samples, n_features : int
        Size of the training data.

    Examples
    --------
    >>> a = estimate_cost("RandomForestClassifier", {"n_estimators": 200}, 4000, 30)
    >>> b = estimate_cost("RandomForestClassifier", {"n_estimators": 60}, 4000, 30)
    >>> a > b > estimate_cost("DummyClassifier", {}, 4000, 30)
    True
    """
    return BASE_COST + _variable_cost(estimator, params, n_samples, n_features)


def _variable_cost(estimator: Any, params: Mapping[str, Any], n_samples: int, n_features: int
                   ) -> float:
    name = _final_name(estimator)
    all_params = dict(_safe_params(estimator))
    all_params.update({k.rsplit("__", 1)[-1]: v for k, v in params.items()})
    n, d = max(int(n_samples), 1), max(int(n_features), 1)
    kind, unit = "linear", 1e-7
    for pattern, k, u in _KIND_COST:
        if pattern in name:
            kind, unit = k, u
            break
    logn = math.log2(n + 1)
    if kind == "const":
        return unit
    if kind == "tree":
        return unit * n * d * logn
    if kind in ("forest", "boost"):
        trees = _num(all_params.get("n_estimators"), 100 if kind == "forest" else 100)
        if kind == "boost":
            trees = _num(all_params.get("max_iter"), trees)
        depth = all_params.get("max_depth")
        depth_factor = 1.0 if depth is None else min(1.0, 0.25 + _num(depth, 8) / 16)
        return unit * trees * n * d * logn * depth_factor
    if kind == "kernel":
        return unit * n * n * d / 10 + 1e-4
    if kind == "lazy":
        return unit * n * d * 4 + 1e-4
    iters = _num(all_params.get("max_iter"), 100)
    return unit * n * d * max(1.0, math.log2(iters)) / 4 + 1e-4


def plan_chunks(
    costs: Sequence[float] | np.ndarray, n_workers: int, grain: float = DEFAULT_GRAIN
) -> Plan:
    """Order tasks longest first and cut them into guided chunks.

    A chunk takes tasks while its cost stays under ``max(grain, remaining / (2 * n_workers))``
    (at least one task), so long tasks go one at a time and early, and tiny tasks travel in
    batches whose size shrinks towards the end of the run.

    Parameters
    ----------
    costs : sequence of float
        Estimated cost of task ``i``.
    n_workers : int
        Number of ranks claiming chunks.
    grain : float
        Smallest chunk cost worth one claim.

    Returns
    -------
    Plan

    Examples
    --------
    >>> p = plan_chunks([1.0, 5.0, 0.01, 0.01, 0.01, 0.01], n_workers=2, grain=0.05)
    >>> [p.chunk(c).tolist() for c in range(p.n_chunks)]
    [[1], [0], [2, 3, 4, 5]]
    """
    c = np.asarray(costs, dtype=np.float64)
    n = len(c)
    # Stable sort: ties keep task order, so the plan is the same on every rank.
    order = np.argsort(-c, kind="stable").astype(np.int64)
    sorted_costs = c[order]
    suffix = np.concatenate([np.cumsum(sorted_costs[::-1])[::-1], [0.0]])
    bounds = [0]
    i = 0
    workers = max(int(n_workers), 1)
    while i < n:
        limit = max(grain, suffix[i] / (2 * workers))
        j, acc = i + 1, sorted_costs[i]
        while j < n and acc + sorted_costs[j] <= limit:
            acc += sorted_costs[j]
            j += 1
        bounds.append(j)
        i = j
    return Plan(order, np.asarray(bounds, dtype=np.int64))


def learn_costs(
    estimates: Sequence[float] | np.ndarray,
    candidate_of: Sequence[int] | np.ndarray,
    model_of: Sequence[int] | np.ndarray,
    measured: dict[int, float],
) -> np.ndarray:
    """Task costs corrected by measured ones (e.g. from the journal of an earlier attempt).

    A task of a candidate with measured folds costs their mean; a task of an unmeasured
    candidate costs its estimate times its model's median measured/estimated ratio.

    Parameters
    ----------
    estimates : sequence of float
        Estimated cost per task.
    candidate_of, model_of : sequence of int
        Candidate and model number of each task.
    measured : dict
        Task index to measured seconds (fit + score).

    Examples
    --------
    >>> learn_costs([1.0, 1.0, 2.0, 2.0], [0, 0, 1, 1], [0, 0, 0, 0], {0: 3.0}).tolist()
    [3.0, 3.0, 6.0, 6.0]
    """
    est = np.asarray(estimates, dtype=np.float64).copy()
    cand = np.asarray(candidate_of)
    model = np.asarray(model_of)
    if not measured:
        return est
    by_cand: dict[int, list[float]] = {}
    ratios: dict[int, list[float]] = {}
    for t, seconds in measured.items():
        by_cand.setdefault(int(cand[t]), []).append(float(seconds))
        if est[t] > 0:
            ratios.setdefault(int(model[t]), []).append(float(seconds) / est[t])
    out = est.copy()
    for t in range(len(est)):
        c = int(cand[t])
        if c in by_cand:
            out[t] = float(np.mean(by_cand[c]))
        elif int(model[t]) in ratios:
            out[t] = est[t] * float(np.median(ratios[int(model[t])]))
    return out


def shard_tasks(costs: Sequence[float] | np.ndarray, n_shards: int) -> np.ndarray:
    """Split tasks into ``n_shards`` shards of about equal estimated cost (greedy, longest first).

    Returns the shard number of each task. Deterministic: every job of an array computes
    the same split.

    Examples
    --------
    >>> shard_tasks([5.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2).tolist()
    [0, 1, 1, 1, 1, 1]
    """
    import heapq

    c = np.asarray(costs, dtype=np.float64)
    owner = np.zeros(len(c), dtype=np.int64)
    heap = [(0.0, s) for s in range(max(int(n_shards), 1))]
    for t in np.argsort(-c, kind="stable"):
        load, s = heapq.heappop(heap)
        owner[t] = s
        heapq.heappush(heap, (load + c[t], s))
    return owner


def _final_name(estimator: Any) -> str:
    if isinstance(estimator, str):
        return estimator
    steps = getattr(estimator, "steps", None)
    if steps:
        return _final_name(steps[-1][1])
    inner = getattr(estimator, "estimator", None)
    if inner is not None and not isinstance(inner, str) and hasattr(inner, "fit"):
        return type(estimator).__name__ + "/" + _final_name(inner)
    return type(estimator).__name__


def _safe_params(estimator: Any) -> Mapping[str, Any]:
    if isinstance(estimator, str):
        return {}
    try:
        return {k.rsplit("__", 1)[-1]: v for k, v in estimator.get_params(deep=True).items()}
    except Exception:  # an odd third-party estimator: cost it as a default
        return {}


def _num(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
