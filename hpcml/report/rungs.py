"""Successive halving and ASHA: the candidates' scores rung by rung, as resources grow."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import numpy as np

from hpcml.report.data import RunData
from hpcml.report.style import model_colors, new_figure

__all__ = ["plot_rungs"]


def plot_rungs(data: RunData, metric: str | None = None) -> Any:
    """Each candidate's mean score at every rung it reached (``iter`` and ``n_resources``
    columns of ``cv_results``); the candidates of the last rung stand out.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` for a run without rungs.
    """
    if "iter" not in data.cv or "n_resources" not in data.cv:
        return None
    metric = metric or data.metrics[0]
    it = np.asarray(data.cv["iter"], dtype=float)
    res = np.asarray(data.cv["n_resources"], dtype=float)
    mean = np.asarray(data.cv[f"mean_test_{metric}"], dtype=float)
    models = data.cv.get("model", ["model"] * data.n_rows)
    colors = model_colors(data.models)
    paths: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for i, p in enumerate(data.cv["params"]):
        if math.isfinite(it[i]) and math.isfinite(mean[i]):
            paths[(str(models[i]), json.dumps(p, sort_keys=True, default=repr))].append(
                (it[i], mean[i]))
    last = np.nanmax(it)
    fig = new_figure(7.5, 3.6)
    ax = fig.add_subplot()
    for (model, _), pts in paths.items():
        pts.sort()
        x, y = zip(*pts, strict=True)
        top = x[-1] == last
        ax.plot(x, y, "o-", color=colors[model], alpha=0.9 if top else 0.25,
                lw=2 if top else 1, ms=5 if top else 3)
    rungs = sorted({int(v) for v in it if math.isfinite(v)})
    labels = []
    for r in rungs:
        at = res[it == r]
        labels.append(f"{r}\n{int(np.nanmax(at))} res.\n{int((it == r).sum())} cand.")
    ax.set_xticks(rungs, labels, fontsize=8)
    ax.set_xlabel("rung (iter), resources per candidate, candidates")
    ax.set_ylabel(f"mean test {metric}")
    ax.grid(alpha=0.3)
    for model, color in colors.items():
        ax.plot([], [], "o-", color=color, label=model)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("successive halving: scores by rung (bold: reached the last rung)", fontsize=10)
    return fig
