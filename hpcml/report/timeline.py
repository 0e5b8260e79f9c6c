"""Which rank ran which task when: one lane per rank, idle time left open, the makespan and
its lower bound written on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpcml.core.progress import format_duration
from hpcml.report.style import model_colors, new_figure

__all__ = ["plot_timeline", "timeline_numbers"]


def timeline_numbers(records: Sequence[Mapping[str, Any]],
                     n_ranks: int | None = None) -> dict[str, float]:
    """Makespan, its lower bound and the idle fraction of one attempt's records.

    The lower bound is ``max(total busy time / ranks, longest task)``: no schedule of these
    tasks on these ranks ends sooner.

    Examples
    --------
    >>> recs = [{"rank": 0, "start": 0, "end": 4}, {"rank": 1, "start": 0, "end": 2}]
    >>> n = timeline_numbers(recs)
    >>> n["makespan"], n["lower_bound"], n["idle_fraction"]
    (4.0, 4.0, 0.25)
    """
    if not records:
        return {"makespan": 0.0, "lower_bound": 0.0, "idle_fraction": 0.0, "busy": 0.0,
                "ranks": float(n_ranks or 0)}
    ranks = n_ranks or (max(int(r.get("rank", 0)) for r in records) + 1)
    t0 = min(float(r["start"]) for r in records)
    makespan = max(float(r["end"]) for r in records) - t0
    durations = [max(float(r["end"]) - float(r["start"]), 0.0) for r in records]
    busy = sum(durations)
    lower = max(busy / ranks, max(durations))
    idle = 1.0 - busy / (ranks * makespan) if makespan > 0 else 0.0
    return {"makespan": makespan, "lower_bound": lower, "idle_fraction": idle, "busy": busy,
            "ranks": float(ranks)}


def plot_timeline(records: Sequence[Mapping[str, Any]], n_ranks: int | None = None,
                  task_model: Mapping[int, str] | None = None) -> Any:
    """A Gantt chart of one attempt: a bar per task on its rank's lane (failed fits hatched
    red), the idle gaps open on a pale red lane, lines at the lower bound and the makespan.

    Parameters
    ----------
    records : sequence of dict
        Journal records (``rank``, ``start``, ``end``, ``task``, ``error``) of one attempt.
    n_ranks : int, optional
        Ranks of the attempt (default: the highest rank seen + 1).
    task_model : mapping, optional
        Task index to model name, to colour the bars by model.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` without records.
    """
    if not records:
        return None
    nums = timeline_numbers(records, n_ranks)
    ranks = int(nums["ranks"])
    t0 = min(float(r["start"]) for r in records)
    task_model = task_model or {}
    models = list(dict.fromkeys(task_model[t] for t in sorted(task_model)))  # grid order
    colors = model_colors(models) if models else {}
    fig = new_figure(8.0, 1.3 + 0.42 * ranks)
    ax = fig.add_subplot()
    for r in range(ranks):
        ax.broken_barh([(0, nums["makespan"])], (r - 0.4, 0.8), color="#f4d6d6", zorder=0)
    for rec in records:
        rank = int(rec.get("rank", 0))
        start, end = float(rec["start"]) - t0, float(rec["end"]) - t0
        model = task_model.get(int(rec.get("task", -1)))
        failed = bool(rec.get("error"))
        ax.broken_barh([(start, max(end - start, 1e-6))], (rank - 0.35, 0.7),
                       facecolor="#d62728" if failed else colors.get(model, "#1f77b4"),
                       edgecolor="white", linewidth=0.3, hatch="///" if failed else None,
                       zorder=2)
    ax.axvline(nums["lower_bound"], color="black", ls="--", lw=1, zorder=3)
    ax.axvline(nums["makespan"], color="black", lw=1.5, zorder=3)
    ax.set_yticks(range(ranks), [f"rank {r}" for r in range(ranks)])
    ax.set_ylim(ranks - 0.5, -0.5)
    ax.set_xlim(0, nums["makespan"] * 1.02 or 1.0)
    ax.set_xlabel("seconds since the attempt started")
    ratio = nums["makespan"] / nums["lower_bound"] if nums["lower_bound"] > 0 else float("nan")
    ax.set_title(
        f"makespan {format_duration(nums['makespan'])} (solid), lower bound "
        f"{format_duration(nums['lower_bound'])} (dashed): {ratio:.2f}x; "
        f"idle {100 * nums['idle_fraction']:.0f}% (pale red)", fontsize=10)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colors[m], label=m) for m in models]
    if any(rec.get("error") for rec in records):
        handles.append(Patch(facecolor="#d62728", hatch="///", label="failed"))
    handles.append(Patch(facecolor="#f4d6d6", label="idle"))
    fig.legend(handles=handles, fontsize=8, loc="outside lower center",
               ncol=min(len(handles), 6), frameon=False)
    return fig
