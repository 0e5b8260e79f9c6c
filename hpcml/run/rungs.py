"""The best so far of a search in rounds or rungs (halving, asha), for ``status.json``.

Pure: journal records by key, and which candidate and rung each key is
(:meth:`hpcml.run.status.RunStatus.tasks_known`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

__all__ = ["best_by_rung"]


def best_by_rung(records: Mapping[str, Mapping[str, Any]],
                 known: Mapping[str, tuple[int, str, dict[str, Any], int]],
                 metric: str, n_splits: int) -> dict[str, Any]:
    """Each model's best so far at its highest rung that has a finished fold.

    Scores at different resources do not compare, so a model's best is taken among its
    candidates of its highest rung reached; the mean is over their finished folds.

    Parameters
    ----------
    records : mapping
        Journal key -> record (``test`` scores, ``error``).
    known : mapping
        Journal key -> ``(candidate id, model, params, rung)``.
    metric : str
        The metric to rank by.
    n_splits : int
        Folds of a candidate.

    Returns
    -------
    dict
        ``{model: {params, mean, std, folds, iter}}``, best model first.

    Examples
    --------
    >>> known = {"a": (0, "m", {"C": 1}, 0), "b": (1, "m", {"C": 2}, 0),
    ...          "c": (2, "m", {"C": 2, "n": 9}, 1)}
    >>> rec = {"a": {"test": {"acc": 0.9}}, "b": {"test": {"acc": 0.5}},
    ...        "c": {"test": {"acc": 0.7}}}
    >>> best_by_rung(rec, known, "acc", 1)["m"]["params"]
    {'C': 2, 'n': 9}
    """
    scores: dict[int, list[float]] = defaultdict(list)
    about: dict[int, tuple[str, dict[str, Any], int]] = {}
    for key, rec in records.items():
        if key not in known:
            continue
        uid, model, params, rung = known[key]
        value = (rec.get("test") or {}).get(metric)
        if rec.get("error") is None and isinstance(value, (int, float)) and math.isfinite(value):
            scores[uid].append(float(value))
            about[uid] = (model, params, rung)
    top: dict[str, int] = {}
    for model, _, rung in about.values():
        top[model] = max(top.get(model, rung), rung)
    best: dict[str, Any] = {}
    for uid in sorted(scores):  # ties: the first candidate
        model, params, rung = about[uid]
        if rung != top[model]:
            continue
        values = scores[uid]
        mean = sum(values) / len(values)
        if model not in best or mean > best[model]["mean"]:
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            best[model] = {"params": params, "mean": mean, "std": std,
                           "folds": f"{len(values)}/{n_splits}", "iter": rung}
    return dict(sorted(best.items(), key=lambda kv: -kv[1]["mean"]))
