"""Each model's score against each of its hyperparameters, with ± std bands."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from hpcml.report.data import RunData, is_log_scale, varying_params
from hpcml.report.style import new_figure, value_label

__all__ = ["plot_param_scores"]


def plot_param_scores(data: RunData, model: str, metric: str | None = None) -> Any:
    """One panel per hyperparameter of ``model``: the best mean score at each value.

    With several parameters, a value's point is the best candidate that has it (the profile
    over the other parameters), and the band its fold-to-fold std. Numeric values spread
    over orders of magnitude get a log axis; other values are categories in grid order.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` when ``model`` has no parameter that varies.
    """
    metric = metric or data.metrics[0]
    rows = data.rows_of(model)
    params = [data.cv["params"][i] for i in rows]
    names = varying_params(params)
    if not names:
        return None
    mean = np.asarray(data.cv[f"mean_test_{metric}"], dtype=float)[rows]
    std = np.asarray(data.cv[f"std_test_{metric}"], dtype=float)[rows]
    fig = new_figure(min(3.4 * len(names), 10.5) + 0.6, 3.0)
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        values = _ordered_values(p.get(name) for p in params)
        best_m, best_s = [], []
        for v in values:
            at = [j for j, p in enumerate(params) if _same(p.get(name), v) and not math.isnan(mean[j])]
            j = max(at, key=lambda j: mean[j]) if at else None
            best_m.append(mean[j] if j is not None else math.nan)
            best_s.append(std[j] if j is not None else math.nan)
        m, s = np.array(best_m), np.array(best_s)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        x = np.array(values, dtype=float) if numeric else np.arange(len(values))
        ax.fill_between(x, m - s, m + s, alpha=0.25, color="#1f77b4", linewidth=0,
                        label="± std over folds")
        ax.plot(x, m, "o-", color="#1f77b4", label="best mean")
        if numeric and is_log_scale(values):
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(x, [value_label(v) for v in values], rotation=30 if len(values) > 4 else 0)
        ax.set_xlabel(name.split("__")[-1] + (" (log)" if numeric and is_log_scale(values) else ""))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"mean test {metric}")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{model}: {metric} against each hyperparameter", fontsize=11)
    return fig


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=repr)


def _same(a: Any, b: Any) -> bool:
    return _key(a) == _key(b)


def _ordered_values(values: Any) -> list[Any]:
    """Distinct values: numbers sorted (None last), others in first-seen order."""
    seen: dict[str, Any] = {}
    for v in values:
        seen.setdefault(_key(v), v)
    vals = list(seen.values())
    nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) == len(vals):
        return sorted(nums)
    return vals
