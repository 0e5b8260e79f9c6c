"""Task cost estimates from the model kind and the data size, and their correction by
measured times. Pure: every rank computes the same numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["estimate_cost", "estimate_costs", "learn_costs", "task_costs", "BASE_COST"]

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
    return float(estimate_costs(estimator, [params], n_samples, n_features)[0])


def estimate_costs(
    estimator: Any, candidates: Sequence[Mapping[str, Any]], n_samples: int, n_features: int
) -> np.ndarray:
    """:func:`estimate_cost` of each params of ``candidates`` (the estimator read once).

    Examples
    --------
    >>> estimate_costs("SVC", [{}, {"C": 10.0}], 1000, 10).tolist() == [
    ...     estimate_cost("SVC", {}, 1000, 10)] * 2
    True
    """
    name, defaults = _final_name(estimator), _safe_params(estimator)
    return np.array([BASE_COST + _variable_cost(name, defaults, p, n_samples, n_features)
                     for p in candidates], dtype=np.float64)


def _variable_cost(name: str, defaults: Mapping[str, Any], params: Mapping[str, Any],
                   n_samples: int, n_features: int) -> float:
    all_params = dict(defaults)
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

def task_costs(grid: Any, estimators: Mapping[str, Any], n_train: int,
               n_features: int) -> np.ndarray:
    """Estimated cost of every task of a :class:`~hpcml.core.tasks.TaskGrid` (the same on
    every rank): each candidate's estimate, repeated for its folds."""
    per_candidate = np.zeros(grid.n_candidates, dtype=np.float64)
    by_model: dict[str, list[int]] = {}
    for i, c in enumerate(grid.candidates):
        by_model.setdefault(c.model, []).append(i)
    for name, idx in by_model.items():
        params = [grid.candidates[i].params for i in idx]
        per_candidate[idx] = estimate_costs(estimators[name], params, n_train, n_features)
    return np.repeat(per_candidate, grid.n_splits)


def learn_costs(
    estimates: Sequence[float] | np.ndarray,
    candidate_of: Sequence[int] | np.ndarray,
    model_of: Sequence[int] | np.ndarray,
    measured: Mapping[int, float] | tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Task costs corrected by measured ones (this run's, or the journal of an earlier one).

    A task of a candidate with measured folds costs their mean; a task of an unmeasured
    candidate costs its estimate times its model's median measured/estimated ratio.

    Parameters
    ----------
    estimates : sequence of float
        Estimated cost per task.
    candidate_of, model_of : sequence of int
        Candidate and model number of each task.
    measured : dict or (tasks, seconds)
        Task index to measured seconds (fit + score), as a dict or two arrays.

    Examples
    --------
    >>> learn_costs([1.0, 1.0, 2.0, 2.0], [0, 0, 1, 1], [0, 0, 0, 0], {0: 3.0}).tolist()
    [3.0, 3.0, 6.0, 6.0]
    """
    est = np.asarray(estimates, dtype=np.float64)
    if isinstance(measured, Mapping):
        tasks = np.fromiter(measured.keys(), dtype=np.int64, count=len(measured))
        secs = np.fromiter(measured.values(), dtype=np.float64, count=len(measured))
    else:
        tasks = np.asarray(measured[0], dtype=np.int64)
        secs = np.asarray(measured[1], dtype=np.float64)
    if tasks.size == 0:
        return est.copy()
    cand = np.asarray(candidate_of, dtype=np.int64)
    model = np.asarray(model_of, dtype=np.int64)
    out = est.copy()
    # model ratios first; a measured candidate's own mean then overrides them
    ok = est[tasks] > 0
    ratios = secs[ok] / est[tasks][ok]
    m_of = model[tasks][ok]
    for m in np.unique(m_of):
        out[model == m] = est[model == m] * float(np.median(ratios[m_of == m]))
    n_cand = int(cand.max()) + 1 if cand.size else 0
    sums = np.bincount(cand[tasks], weights=secs, minlength=n_cand)
    counts = np.bincount(cand[tasks], minlength=n_cand)
    seen = counts[cand] > 0
    out[seen] = (sums / np.maximum(counts, 1))[cand[seen]]
    return out


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
