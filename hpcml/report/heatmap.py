"""A model with two hyperparameters: its mean score on the grid of both, as a heatmap."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcml.report.data import RunData, varying_params
from hpcml.report.params import _ordered_values, _same
from hpcml.report.style import new_figure, value_label

__all__ = ["plot_heatmap"]


def plot_heatmap(data: RunData, model: str, metric: str | None = None) -> Any:
    """Mean test score of ``model`` over its two varying hyperparameters.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` unless exactly two of ``model``'s parameters vary.
    """
    metric = metric or data.metrics[0]
    rows = data.rows_of(model)
    params = [data.cv["params"][i] for i in rows]
    names = varying_params(params)
    if len(names) != 2:
        return None
    a, b = names
    xs = _ordered_values(p.get(a) for p in params)
    ys = _ordered_values(p.get(b) for p in params)
    mean = np.asarray(data.cv[f"mean_test_{metric}"], dtype=float)[rows]
    grid = np.full((len(ys), len(xs)), np.nan)
    for j, p in enumerate(params):
        ix = next(i for i, v in enumerate(xs) if _same(p.get(a), v))
        iy = next(i for i, v in enumerate(ys) if _same(p.get(b), v))
        if math.isnan(grid[iy, ix]) or mean[j] > grid[iy, ix]:
            grid[iy, ix] = mean[j]
    fig = new_figure(1.6 + 0.75 * len(xs) + 1.2, 1.4 + 0.45 * len(ys))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto", origin="lower")
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for iy in range(len(ys)):
        for ix in range(len(xs)):
            v = grid[iy, ix]
            text = "—" if math.isnan(v) else f"{v:.3f}"
            ax.text(ix, iy, text, ha="center", va="center", fontsize=8,
                    color="black" if not math.isnan(v) and v > mid else "white")
    ax.set_xticks(range(len(xs)), [value_label(v) for v in xs])
    ax.set_yticks(range(len(ys)), [value_label(v) for v in ys])
    ax.set_xlabel(a.split("__")[-1])
    ax.set_ylabel(b.split("__")[-1])
    fig.colorbar(image, ax=ax, label=f"mean test {metric}")
    ax.set_title(f"{model}: {metric} by {a.split('__')[-1]} and {b.split('__')[-1]}", fontsize=10)
    return fig
