"""Nested cross-validation: the outer folds' scores of the selected models."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpcml.report.style import new_figure

__all__ = ["plot_nested", "outer_scores"]

_NOT_SCORES = ("fold", "outer_fold", "split", "index", "rank", "time", "n_", "inner")


def outer_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The numeric score columns of ``nested_cv.csv`` rows: its ``test_*`` columns (any
    other numeric column that is not a fold, rank, time or inner score, for other files).

    Examples
    --------
    >>> outer_scores([{"outer_fold": "0", "test_r2": "0.5", "model": "ridge"}])
    {'test_r2': array([0.5])}
    >>> list(outer_scores([{"outer_fold": "0", "test_r2": "0.5", "inner_best_score": "0.6"}]))
    ['test_r2']
    """
    if not rows:
        return {}
    out = {}
    keys = [k for k in rows[0] if k.lower().startswith("test_")] or list(rows[0])
    for key in keys:
        low = key.lower()
        if any(low == s or low.startswith(s) or low.endswith(s) for s in _NOT_SCORES):
            continue
        try:
            values = np.array([float(r[key]) for r in rows])
        except (TypeError, ValueError):
            continue
        out[key] = values
    return out


def plot_nested(rows: Sequence[Mapping[str, Any]]) -> Any:
    """One bar per outer fold for each score of ``nested_cv.csv``, with the mean ± std; with
    several models (a ``model`` column), one bar and one mean per model side by side.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` without rows or scores.
    """
    scores = outer_scores(rows)
    if not scores:
        return None
    models = list(dict.fromkeys(str(r.get("model", "")) for r in rows))
    model_of = np.array([str(r.get("model", "")) for r in rows])
    folds = [str(r.get("outer_fold", i)) for i, r in enumerate(rows)]
    fig = new_figure(min(3.2 * len(scores), 10.0) + 0.5, 3.0)
    axes = fig.subplots(1, len(scores), squeeze=False)[0]
    colors = ["#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
    width = 0.8 / len(models)
    for ax, (name, values) in zip(axes, scores.items(), strict=True):
        finite_all = values[np.isfinite(values)]
        labels: list[str] = []
        for j, model in enumerate(models):
            sel = model_of == model
            vals = values[sel]
            x = np.arange(len(vals)) + (j - (len(models) - 1) / 2) * width
            color = colors[j % len(colors)]
            ax.bar(x, vals, width=width, color=color, alpha=0.7)
            finite = vals[np.isfinite(vals)]
            if finite.size:
                m, s = float(finite.mean()), float(finite.std())
                who = f"{model}: " if len(models) > 1 else ""
                ax.axhline(m, color=color if len(models) > 1 else "black", lw=1.5,
                           label=f"{who}mean {m:.4g} ± {s:.2g}")
                if len(models) == 1:
                    ax.axhspan(m - s, m + s, color="black", alpha=0.1)
            if len(vals) > len(labels):
                labels = [f for f, keep in zip(folds, sel, strict=True) if keep]
        if finite_all.size:
            lo, hi = float(finite_all.min()), float(finite_all.max())
            pad = max((hi - lo) * 0.5, abs(hi) * 0.02, 1e-9)
            ax.set_ylim(lo - pad if lo - pad > 0 or lo < 0 else 0, hi + pad)
            ax.legend(fontsize=8, loc="best")
        ax.set_xticks(np.arange(len(labels)), labels)
        ax.set_xlabel("outer fold")
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("nested CV: outer-fold scores (unbiased estimate of the whole search)",
                 fontsize=11)
    return fig if not all(math.isnan(v) for vals in scores.values() for v in vals) else None
