"""Timeline of an hpcml run: which rank ran which fit task when, as a PNG.

    python benchmarks/timeline.py SPEC [-n 2] [--png timeline.png] [--json tasks.json]
    python benchmarks/timeline.py --from-json tasks.json --png timeline.png

The first form runs ``hpcml run SPEC`` on P ranks (``mpiexec -n P``, the same rank code as
``hpcml run -n P``) with ``hpcml.run.experiment.evaluate_grid`` wrapped to keep its
``FitResult`` objects (rank, start, end), writes them as JSON and draws them. Needs
matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # noqa: E402
    BIN,
    PYTHON,
    CallTimer,
    Timed,
    lower_bound,
    thread_env,
    timed_run,
)

Record = tuple[int, float, float, str]

#: Calls on a rank's path between fits whose durations are recorded: name -> where.
WAITS = {
    "claim": ("hpcml.engines.mpi.board", "PlanBoard", "next_chunk"),  # a re-plan is part of its claim
    "publish": ("hpcml.engines.mpi.board", "PlanBoard", "publish"),
    "add_done": ("hpcml.engines.mpi.board", "WorkCounter", "add_done"),
    "poll_stop": ("hpcml.engines.mpi.board", "WorkCounter", "poll_stop"),
    "journal_append": ("hpcml.run.journal", "Journal", "append"),
    "journal_sync": ("hpcml.run.journal", "Journal", "sync"),
}


def plot_timeline(
    records: Iterable[Record],
    path: str | Path,
    *,
    title: str = "",
    lower: float | None = None,
    n_ranks: int | None = None,
) -> Path:
    """Draw one row per rank and one bar per task, coloured by label.

    Parameters
    ----------
    records : iterable of (rank, start, end, label)
        Seconds since the run started.
    path : path
        PNG file to write.
    title : str
        Figure title.
    lower : float, optional
        The lower bound ``max(sum(c) / P, max(c))``, drawn as a dashed line.
    n_ranks : int, optional
        Rows to draw (default: the highest rank seen + 1).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    records = list(records)
    ranks = n_ranks or (max(r for r, *_ in records) + 1 if records else 1)
    labels: list[str] = []
    for *_, label in records:
        if label not in labels:
            labels.append(label)
    cmap = plt.get_cmap("tab10")
    colour = {label: cmap(i % 10) for i, label in enumerate(labels)}
    edge = "white" if len(records) <= 300 else "none"
    fig, ax = plt.subplots(figsize=(12, 1.4 + 0.45 * min(ranks, 40)))
    for label in labels:
        for rank in range(ranks):
            bars = [(s, e - s) for r, s, e, lab in records if r == rank and lab == label]
            if bars:
                ax.broken_barh(bars, (rank - 0.4, 0.8), facecolors=colour[label],
                               edgecolor=edge, linewidth=0.4)
    makespan = max((e for _, _, e, _ in records), default=0.0)
    ax.axvline(makespan, color="black", linewidth=1)
    handles = [Patch(color=colour[label], label=label) for label in labels]
    handles.append(plt.Line2D([], [], color="black", label=f"makespan {makespan:.2f} s"))
    if lower:
        ax.axvline(lower, color="black", linestyle="--", linewidth=1)
        handles.append(plt.Line2D([], [], color="black", linestyle="--",
                                  label=f"LB {lower:.2f} s (ratio {makespan / lower:.3f})"))
    ax.set_yticks(range(ranks))
    ax.set_yticklabels([f"rank {r}" for r in range(ranks)])
    ax.set_ylim(ranks - 0.5, -0.5)
    ax.set_xlim(0, makespan * 1.02 if makespan else 1)
    ax.set_xlabel("seconds since the fits started")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=9)
    ax.set_title(title or f"{len(records)} tasks on {ranks} ranks")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_records(path: str | Path) -> dict:
    """A JSON file written by :func:`record_run`."""
    return json.loads(Path(path).read_text())


def summary(data: dict) -> dict:
    """Makespan, LB and overheads of a recorded run.

    ``cost`` of a task is its fit + score time (what ``cv_results_`` reports); ``span`` is
    end - start on its rank (the cost plus clone, data split and bookkeeping).
    """
    tasks = data["tasks"]
    p = data["n_ranks"]
    costs = [t["fit_time"] + t["score_time"] for t in tasks]
    spans = [t["end"] - t["start"] for t in tasks]
    makespan = max(t["end"] for t in tasks)
    lb = lower_bound(costs, p)
    claims = [w for rank in data.get("waits") or [] for w in rank["claim"]]
    dones = [w for rank in data.get("waits") or [] for w in rank["add_done"]]
    other = {name: sum(w for rank in data.get("waits") or [] for w in rank.get(name, []))
             for name in ("poll_stop", "publish", "journal_append", "journal_sync")}
    return {
        **{f"{name}_s": v for name, v in other.items()},
        "n_claims": len(claims),
        "claim_s": sum(claims),
        "claim_max": max(claims, default=0.0),
        "done_s": sum(dones),
        "done_max": max(dones, default=0.0),
        "n_tasks": len(tasks),
        "makespan": makespan,
        "lb": lb,
        "ratio": makespan / lb if lb else float("nan"),
        "work": sum(costs),
        "max_cost": max(costs),
        "span_overhead": sum(spans) - sum(costs),
        "idle": p * makespan - sum(spans),
        "simulated": simulated(data),
        "eval_s": data.get("eval_s"),
        "run_s": data.get("run_s"),
    }


def record_run(spec: str | Path, n_ranks: int, json_path: str | Path, out: str | Path) -> Timed:
    """Run ``spec`` on ``n_ranks`` ranks under the venv's ``mpiexec``, recording every task."""
    cmd = [str(BIN / "mpiexec"), "-n", str(n_ranks), PYTHON, str(Path(__file__).resolve()),
           "--record", str(json_path), "--out", str(out), str(spec)]
    return timed_run(cmd, env=thread_env(n_ranks))


def _record(spec: str, out: str, json_path: str) -> int:
    """On every rank: ``hpcml run SPEC`` with ``evaluate_grid`` wrapped; rank 0 writes JSON."""
    import hpcml.run.experiment as experiment
    from hpcml.cli.main import main as hpcml_main
    from hpcml.engines.mpi import engine as _engine
    from hpcml.engines.mpi import world as _mpi

    captured: dict = {}
    evaluate_grid = experiment.evaluate_grid

    def recording_evaluate_grid(engine, grid, *args, **kwargs):
        t = time.perf_counter()
        results = evaluate_grid(engine, grid, *args, **kwargs)
        captured.update(grid=grid, results=results, eval_s=time.perf_counter() - t,
                        estimates=_estimates(grid, *args))
        return results

    experiment.evaluate_grid = recording_evaluate_grid
    timer = CallTimer(tuple(WAITS))
    timer.patch(_engine.MPIEngine, "run", "engine_run")
    for name, (module, cls, method) in WAITS.items():
        owner = getattr(importlib.import_module(module), cls, None)
        if owner is not None and hasattr(owner, method):
            timer.patch(owner, method, name)
    waits = {name: timer.waits[name] for name in WAITS}
    status = hpcml_main(["run", spec, "--out", out, "--force", "--no-progress"])
    comm = _mpi.world()
    all_waits = comm.gather(waits, root=0) if comm.Get_size() > 1 else [waits]
    results = captured.get("results")
    if results:
        grid = captured["grid"]
        tasks = [
            {"task": t, "rank": r.rank, "start": r.start, "end": r.end,
             "fit_time": r.fit_time, "score_time": r.score_time,
             "label": grid[t].candidate.model or "task"}
            for t, r in sorted(results.items())
        ]
        estimates = captured.get("estimates")
        if estimates is not None:
            for task in tasks:
                task["estimate"] = float(estimates[task["task"]])
        n_ranks = _mpi.world().Get_size()
        Path(json_path).write_text(json.dumps(
            {"spec": spec, "n_ranks": n_ranks, "eval_s": captured["eval_s"],
             "run_s": (timer.waits["engine_run"] or [None])[-1], "waits": all_waits,
             "tasks": tasks}))
    return status


def _estimates(grid, folds, X, y, estimators, *_):
    """hpcml's own cost estimate of every task (what its plan was built from), if it says."""
    try:
        import numpy as np

        from hpcml.core.costs import task_costs

        n_train = int(np.mean(np.diff(folds.train_off)))
        return task_costs(grid, estimators, n_train, X.shape[1] if X.ndim > 1 else 1)
    except Exception:  # another hpcml version: no estimates, no simulation
        return None


def simulated(data: dict, latency: float | None = None) -> float | None:
    """Makespan of the recorded tasks replayed by :mod:`hpcml.simulate` (the run's plan,
    each task costing its recorded span, each claim the mean recorded claim time)."""
    tasks = data["tasks"]
    if not tasks or "estimate" not in tasks[0]:
        return None
    from hpcml.core.simulate import simulate

    if latency is None:
        claims = [w for rank in data.get("waits") or [] for w in rank["claim"]]
        latency = sum(claims) / len(claims) if claims else 0.0
    order = sorted(tasks, key=lambda t: t["task"])
    r = simulate([t["end"] - t["start"] for t in order], data["n_ranks"],
                 estimates=[t["estimate"] for t in order], latency=latency)
    return r.makespan


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="?", help="hpcml spec (YAML)")
    ap.add_argument("-n", "--ranks", type=int, default=2)
    ap.add_argument("--png", default="timeline.png")
    ap.add_argument("--json", help="also keep the task records here")
    ap.add_argument("--from-json", help="draw a JSON file written earlier; run nothing")
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--record", help=argparse.SUPPRESS)  # rank mode, under mpiexec
    args = ap.parse_args(argv)
    if args.record:
        return _record(args.spec, args.out, args.record)
    if args.from_json:
        data = load_records(args.from_json)
    elif args.spec:
        with tempfile.TemporaryDirectory(prefix="hpcml-timeline-") as tmp:
            json_path = args.json or str(Path(tmp) / "tasks.json")
            done = record_run(args.spec, args.ranks, json_path, Path(tmp) / "out")
            if done.returncode != 0:
                return done.returncode
            data = load_records(json_path)
        print(f"whole command: {done.wall:.2f} s")
    else:
        ap.error("give a SPEC to run, or --from-json")
    s = summary(data)
    records = [(t["rank"], t["start"], t["end"], t["label"]) for t in data["tasks"]]
    name = Path(data.get("spec", "")).stem
    plot_timeline(records, args.png, lower=s["lb"], n_ranks=data["n_ranks"],
                  title=f"{name}: {s['n_tasks']} tasks on {data['n_ranks']} ranks")
    print(f"makespan {s['makespan']:.3f} s, LB {s['lb']:.3f} s, ratio {s['ratio']:.3f}; "
          f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
