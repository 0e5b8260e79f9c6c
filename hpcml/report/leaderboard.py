"""The leaderboard: the top candidates of each model, mean ± std of every metric."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcml.report.data import RunData

__all__ = ["leaderboard"]


def leaderboard(data: RunData, top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` candidates of each model by the first metric, best model first.

    Returns
    -------
    list of dict
        ``{"model", "rank", "params", "scores": {metric: (mean, std)}, "folds", "fit_time"}``;
        ``rank`` is the overall rank by the first metric, as ``rank_test_<metric>`` (``None``
        when no fold finished).
    """
    metric = data.metrics[0]
    means = np.asarray(data.cv[f"mean_test_{metric}"], dtype=float)
    order = sorted(range(len(means)), key=lambda i: (math.isnan(means[i]), -np.nan_to_num(means[i])))
    ranks = data.cv.get(f"rank_test_{metric}")  # scikit-learn's: ties share a rank
    overall = {i: int(ranks[i]) if ranks is not None else pos + 1
               for pos, i in enumerate(order) if not math.isnan(means[i])}
    per_model: dict[str, list[int]] = {}
    models = data.cv.get("model", ["model"] * data.n_rows)
    for i in order:
        rows = per_model.setdefault(str(models[i]), [])
        if len(rows) < top:
            rows.append(i)
    done = data.cv.get("n_finished_splits")
    out = []
    for model, rows in sorted(per_model.items(), key=lambda kv: order.index(kv[1][0])):
        for i in rows:
            scores = {m: (float(data.cv[f"mean_test_{m}"][i]), float(data.cv[f"std_test_{m}"][i]))
                      for m in data.metrics}
            folds = f"{int(done[i])}/{data.n_splits}" if done is not None else f"{data.n_splits}"
            fit = data.cv.get("mean_fit_time")
            out.append({"model": model, "rank": overall.get(i), "params": data.cv["params"][i],
                        "scores": scores, "folds": folds,
                        "fit_time": None if fit is None else float(fit[i])})
    return out
