"""The report page: the plots laid out on one self-contained HTML page, with no state.

Every image is an inline base64 PNG and the page has no script and no link to fetch, so it
opens from a login node, a mail attachment or a browser without network.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpcml.report.data import RunData, load_run
from hpcml.report.folds import plot_fold_spread
from hpcml.report.heatmap import plot_heatmap
from hpcml.report.leaderboard import leaderboard
from hpcml.report.nested import plot_nested
from hpcml.report.params import plot_param_scores
from hpcml.report.rungs import plot_rungs
from hpcml.report.style import params_label
from hpcml.report.timeline import plot_timeline, timeline_numbers

__all__ = ["render_report", "write_report", "figure_png"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; font-size: 0.9em; } .partial { color: #b35900; font-weight: bold; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.first td { border-top: 2px solid #999; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.85em; }
"""


def figure_png(fig: Any) -> bytes:
    """``fig`` as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    return buf.getvalue()


def _img(fig: Any, alt: str, caption: str = "") -> str:
    if fig is None:
        return ""
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"{cap}</figure>")


def _fmt(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _leaderboard_html(data: RunData, top: int) -> str:
    rows = leaderboard(data, top)
    head = "".join(f"<th>{html.escape(m)}</th>" for m in data.metrics)
    out = [f"<table><tr><th>rank</th><th>model</th><th>parameters</th>{head}"
           "<th>folds</th><th>fit time</th></tr>"]
    previous = None
    for r in rows:
        cls = ' class="first"' if r["model"] != previous and previous is not None else ""
        previous = r["model"]
        cells = "".join(f'<td class="num">{_fmt(m)} ± {_fmt(s)}</td>'
                        for m, s in r["scores"].values())
        fit = "—" if r["fit_time"] is None or math.isnan(r["fit_time"]) else f"{r['fit_time']:.3g}s"
        out.append(f"<tr{cls}><td class=\"num\">{r['rank'] or '—'}</td>"
                   f"<td>{html.escape(r['model'])}</td>"
                   f"<td>{html.escape(params_label(r['params'], 90))}</td>{cells}"
                   f"<td class=\"num\">{r['folds']}</td><td class=\"num\">{fit}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _header(data: RunData) -> str:
    info = data.info
    done = data.cv.get("n_finished_splits")
    n_fits = int(sum(done)) if done is not None else data.n_rows * data.n_splits
    total = data.n_rows * data.n_splits
    state = ("complete" if data.complete else
             f'<span class="partial">partial: {n_fits} of {total} fits done; means are over '
             "the finished folds</span>")
    facts = [state, f"{data.n_rows} candidates × {data.n_splits} folds",
             f"metrics: {', '.join(data.metrics)} (ranked by {data.metrics[0]})"]
    if info.get("ranks"):
        hosts = info.get("hosts") or []
        facts.append(f"{info['ranks']} rank(s) on {len(hosts) or '?'} host(s)")
    if info.get("wall_time"):
        facts.append(f"wall time {info['wall_time']:.1f}s")
    if info.get("spec"):
        facts.append(f"spec {info['spec']}")
    made = time.strftime("%Y-%m-%d %H:%M:%S")
    return (f"<h1>{html.escape(data.title)}</h1><p class=\"meta\">"
            + " · ".join(f if f.startswith("<span") else html.escape(f) for f in facts)
            + f"<br>made {made}</p>")


def _task_models(data: RunData) -> dict[int, str] | None:
    if "iter" in data.cv or "model" not in data.cv:
        return None
    models = data.cv["model"]
    n = data.task_splits or data.n_splits
    return {int(r["task"]): str(models[int(r["task"]) // n]) for r in data.records
            if "task" in r and 0 <= int(r["task"]) // n < len(models)}


def render_report(data: RunData, top: int = 5) -> str:
    """The HTML page of ``data``: header, leaderboard, then the plots."""
    metric = data.metrics[0]
    parts = [_header(data), "<h2>Leaderboard</h2>",
             f"<p class=\"meta\">The top {top} candidates of each model by {html.escape(metric)};"
             " mean ± std over the folds.</p>", _leaderboard_html(data, top)]
    parts.append("<h2>Scores against hyperparameters</h2>")
    for model in data.models:
        parts.append(_img(plot_param_scores(data, model, metric), f"{model}: scores by parameter",
                          "For each value, the best candidate that has it; the band is its "
                          "fold-to-fold std. Values spread over orders of magnitude are on "
                          "a log axis."))
        parts.append(_img(plot_heatmap(data, model, metric), f"{model}: heatmap"))
    sections: list[tuple[str, Callable[[], Any], str]] = [
        ("Fold-to-fold spread", lambda: plot_fold_spread(data, metric),
         "Each point is one fold's test score; the box spans the middle half."),
        ("Halving rungs", lambda: plot_rungs(data, metric), ""),
        ("Nested cross-validation", lambda: plot_nested(data.nested), ""),
    ]
    for title, make, caption in sections:
        img = _img(make(), title, caption)
        if img:
            parts += [f"<h2>{title}</h2>", img]
    fig = plot_timeline(data.records, data.n_ranks, _task_models(data))
    if fig is not None:
        nums = timeline_numbers(data.records, data.n_ranks)
        parts += ["<h2>Per-rank timeline</h2>",
                  _img(fig, "per-rank timeline",
                       f"The latest attempt: {len(data.records)} fits on {int(nums['ranks'])} "
                       f"rank(s). Lower bound = max(busy time / ranks, longest fit).")]
    body = "\n".join(p for p in parts if p)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(data.title)}</title><style>{CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def write_report(out: str | os.PathLike, path: str | os.PathLike | None = None,
                 top: int = 5) -> Path:
    """Write the report of the run in ``out`` to ``path`` (default ``out/report.html``)."""
    from hpcml.run.outputs import atomic_write_text

    target = Path(path) if path is not None else Path(out) / "report.html"
    atomic_write_text(target, render_report(load_run(out), top))
    return target
