"""What every plot shares: a figure without pyplot (no global state), colours, labels."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["new_figure", "model_colors", "params_label", "value_label"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f")


def new_figure(width: float = 7.0, height: float = 3.6) -> Any:
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches, not registered with pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def model_colors(models: list[str]) -> dict[str, str]:
    """One colour per model, the same in every plot of a page."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}


def value_label(v: Any) -> str:
    """A parameter value as a short label.

    Examples
    --------
    >>> value_label(None), value_label(0.001), value_label("gini")
    ('None', '0.001', 'gini')
    """
    if v is None:
        return "None"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v) if not isinstance(v, (dict, list)) else json.dumps(v)


def params_label(params: Mapping[str, Any], width: int = 48) -> str:
    """``C=0.1, penalty=l2`` (shortened to ``width`` characters).

    Examples
    --------
    >>> params_label({"C": 0.1, "max_depth": None})
    'C=0.1, max_depth=None'
    """
    text = ", ".join(f"{k.split('__')[-1]}={value_label(v)}" for k, v in sorted(params.items()))
    return text if len(text) <= width else text[: width - 1] + "…"
