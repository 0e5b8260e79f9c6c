"""The fold-to-fold spread of the best candidates: each fold's score, and their box."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcml.report.data import RunData
from hpcml.report.style import model_colors, new_figure, params_label

__all__ = ["plot_fold_spread"]


def plot_fold_spread(data: RunData, metric: str | None = None, top: int = 3) -> Any:
    """Per-fold test scores of the ``top`` candidates of each model (a box and the points).

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` when no fold has a score.
    """
    metric = metric or data.metrics[0]
    mean = np.asarray(data.cv[f"mean_test_{metric}"], dtype=float)
    splits = [np.asarray(data.cv[f"split{k}_test_{metric}"], dtype=float)
              for k in range(data.n_splits) if f"split{k}_test_{metric}" in data.cv]
    if not splits:
        return None
    scores = np.column_stack(splits)
    chosen: list[int] = []
    for model in data.models:
        rows = [i for i in data.rows_of(model) if not math.isnan(mean[i])]
        chosen += sorted(rows, key=lambda i: -mean[i])[:top]
    chosen = sorted(chosen, key=lambda i: mean[i])  # best at the top
    if not chosen:
        return None
    colors = model_colors(data.models)
    models = data.cv.get("model", ["model"] * data.n_rows)
    fig = new_figure(7.5, 0.9 + 0.38 * len(chosen))
    ax = fig.add_subplot()
    values = [scores[i][np.isfinite(scores[i])] for i in chosen]
    box = ax.boxplot(values, widths=0.55, patch_artist=True, showfliers=False, **_horizontal())
    for patch, i in zip(box["boxes"], chosen, strict=True):
        patch.set_facecolor(colors[str(models[i])])
        patch.set_alpha(0.35)
    for y, (i, v) in enumerate(zip(chosen, values, strict=True), start=1):
        ax.plot(v, np.full(len(v), y), "o", color=colors[str(models[i])], ms=4)
    ax.set_yticks(range(1, len(chosen) + 1),
                  [f"{models[i]}: {params_label(data.cv['params'][i], 40)}" for i in chosen],
                  fontsize=8)
    ax.set_xlabel(f"test {metric} of each fold")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"fold-to-fold spread ({data.n_splits} folds), top {top} of each model",
                 fontsize=10)
    return fig


def _horizontal() -> dict[str, Any]:
    """``boxplot``'s keyword for horizontal boxes (``vert`` is deprecated in 3.11)."""
    import matplotlib

    major, minor = (int(p) for p in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}
