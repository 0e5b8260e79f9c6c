"""Nested cross-validation: the outer folds' scores of the selected models."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpcml.report.style import new_figure

__all__ = ["plot_nested", "outer_scores"]

_NOT_SCORES = ("fold", "outer_fold", "split", "index", "rank", "time", "n_")


def outer_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The numeric score columns of ``nested_cv.csv`` rows (not folds, ranks or times).

    Examples
    --------
    >>> outer_scores([{"outer_fold": "0", "test_r2": "0.5", "model": "ridge"}])
    {'test_r2': array([0.5])}
    """
    if not rows:
        return {}
    out = {}
    for key in rows[0]:
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
    """One bar per outer fold for each score of ``nested_cv.csv``, with the mean ± std.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` without rows or scores.
    """
    scores = outer_scores(rows)
    if not scores:
        return None
    fig = new_figure(min(3.2 * len(scores), 10.0) + 0.5, 3.0)
    axes = fig.subplots(1, len(scores), squeeze=False)[0]
    for ax, (name, values) in zip(axes, scores.items(), strict=True):
        x = np.arange(len(values))
        ax.bar(x, values, color="#2ca02c", alpha=0.7)
        finite = values[np.isfinite(values)]
        if finite.size:
            m, s = float(finite.mean()), float(finite.std())
            ax.axhline(m, color="black", lw=1.5, label=f"mean {m:.4g} ± {s:.2g}")
            ax.axhspan(m - s, m + s, color="black", alpha=0.1)
            lo, hi = float(finite.min()), float(finite.max())
            pad = max((hi - lo) * 0.5, abs(hi) * 0.02, 1e-9)
            ax.set_ylim(lo - pad if lo - pad > 0 or lo < 0 else 0, hi + pad)
            ax.legend(fontsize=8, loc="best")
        ax.set_xticks(x, [str(i) for i in x])
        ax.set_xlabel("outer fold")
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("nested CV: outer-fold scores (unbiased estimate of the whole search)",
                 fontsize=11)
    return fig if not all(math.isnan(v) for vals in scores.values() for v in vals) else None
