"""Simulated successive halving at P = 8, 64 and 1,024 workers: ASHA against round barriers.

Run by hand: ``python benchmarks/bench_halving_sim.py [--workers P ...] [--candidates N ...]
[--seeds S ...]``. No fit runs: both schedules replay the same workload of
:func:`hpcml.core.simulate_halving.halving_workload` (a random forest's ``n_estimators`` as
the resource, 10 to 810 by a factor of 3, 5 folds, fit costs from hpcml's cost model with a
lognormal error, seeded scores that rise with the resource), one per seed:

- barriers: scikit-learn's successive halving rounds, each rung's fits spread longest-first
  over the P workers, the next rung after the last fit of this one;
- asha: :class:`hpcml.search.asha.ASHA`, every free worker asks it for a job.

Prints, per P and schedule, the means over the seeds: makespan, utilisation (busy fraction),
time until the run's final best score (the best at its largest resource) was known, the time
until ASHA first knew a score at least the barriers' best at 810, the number of candidates
at the top rung, fits and their summed seconds, and how often the run's answer was the best candidate of all (the
best score at 810 of every candidate). Then the ratios ASHA / barriers (geometric mean over
the seeds, with their range).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import numpy as np

from hpcml.core.simulate_halving import (
    HalvingRun,
    HalvingWorkload,
    halving_workload,
    simulate_async,
    simulate_barriers,
)


def oracle(w: HalvingWorkload) -> float:
    """The best score at ``max_resources`` of any candidate: what a full grid would find."""
    return max(w.score(c, w.max_resources) for c in range(w.n_candidates))


def measure(run: HalvingRun, reference: float, top: float) -> dict[str, float]:
    """The figures of one run; ``reference`` is the barriers' best score at the top rung."""
    best = run.best()
    return {
        "makespan": run.makespan,
        "util": run.utilisation,
        "barrier_idle": run.barrier_idle / (run.n_workers * run.makespan),
        "t_best": best.time,
        "t_ref": run.time_to(reference, run.top_resource),
        "n_top": run.n_top,
        "fits": run.n_fits,
        "work": run.busy,
        "score": best.score,
        "found": float(best.score >= top),
    }


def gmean_range(values: Sequence[float]) -> str:
    """``geometric mean (min-max)`` of finite positive ratios."""
    ok = [v for v in values if math.isfinite(v) and v > 0]
    if not ok:
        return "-"
    g = math.exp(sum(math.log(v) for v in ok) / len(ok))
    missing = len(values) - len(ok)
    note = f", {missing} never" if missing else ""
    return f"{g:.2f} ({min(ok):.2f}-{max(ok):.2f}{note})"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table and the ratios."""
    ap = argparse.ArgumentParser(prog="bench_halving_sim.py", description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 64, 1024], metavar="P")
    ap.add_argument("--candidates", type=int, nargs="+", default=[2187], metavar="N")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], metavar="S")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--factor", type=int, default=3)
    ap.add_argument("--min-resources", type=int, default=10)
    ap.add_argument("--max-resources", type=int, default=810)
    args = ap.parse_args(argv)

    print(f"workload: random forest, n_estimators {args.min_resources} to "
          f"{args.max_resources} by x{args.factor}, {args.folds} folds, 4000 x 30 rows for the "
          f"cost model; seeds {args.seeds}; means over the seeds")
    cols = ("P", "N", "schedule", "makespan s", "util", "idle@barrier", "t best s",
            "t to bar. best", "top rung", "fits", "work s", "best score", "found top", "sim s")
    widths = (5, 5, 9, 10, 6, 12, 9, 14, 8, 7, 8, 10, 9, 6)
    line = "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True))
    print(line)
    print("-" * len(line))
    ratios = []
    for n in args.candidates:
        for p in args.workers:
            rows: dict[str, list[dict[str, float]]] = {"barriers": [], "asha": []}
            wall = {"barriers": 0.0, "asha": 0.0}
            for seed in args.seeds:
                w = halving_workload(n, n_folds=args.folds, factor=args.factor,
                                     min_resources=args.min_resources,
                                     max_resources=args.max_resources, seed=seed)
                top = oracle(w)
                t = time.perf_counter()
                b = simulate_barriers(w, p)
                wall["barriers"] += time.perf_counter() - t
                t = time.perf_counter()
                a = simulate_async(w, p)
                wall["asha"] += time.perf_counter() - t
                ref = b.best().score if b.top_resource == a.top_resource else math.inf
                rows["barriers"].append(measure(b, ref, top))
                rows["asha"].append(measure(a, ref, top))
            for name, ms in rows.items():
                mean = {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}
                reached = [m["t_ref"] for m in ms if math.isfinite(m["t_ref"])]
                t_ref = (f"{np.mean(reached):.1f}" if reached else "never") + (
                    f" ({len(reached)}/{len(ms)})" if len(reached) < len(ms) else "")
                idle = f"{mean['barrier_idle']:.1%}" if name == "barriers" else "-"
                cells = (p, n, name, f"{mean['makespan']:.1f}", f"{mean['util']:.3f}", idle,
                         f"{mean['t_best']:.1f}", t_ref, f"{mean['n_top']:.1f}",
                         f"{mean['fits']:.0f}", f"{mean['work']:.0f}", f"{mean['score']:.4f}",
                         f"{sum(m['found'] for m in ms):.0f}/{len(ms)}",
                         f"{wall[name] / len(ms):.2f}")
                print("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
            pairs = list(zip(rows["asha"], rows["barriers"], strict=True))
            ratios.append((p, n, {
                "makespan": gmean_range([a["makespan"] / b["makespan"] for a, b in pairs]),
                "util": gmean_range([a["util"] / b["util"] for a, b in pairs]),
                "t_best": gmean_range([a["t_best"] / b["t_best"] for a, b in pairs]),
                "t_ref": gmean_range([a["t_ref"] / b["t_best"] for a, b in pairs]),
                "work": gmean_range([a["work"] / b["work"] for a, b in pairs]),
            }))
    print("\nASHA / barriers, geometric mean over the seeds (min-max):")
    head = ("P", "N", "makespan", "utilisation", "time to own best", "time to barriers' best",
            "work (fit-seconds)")
    print("  ".join(f"{h:>22}" if i > 1 else f"{h:>5}" for i, h in enumerate(head)))
    for p, n, r in ratios:
        cells = (r["makespan"], r["util"], r["t_best"], r["t_ref"], r["work"])
        print(f"{p:>5}  {n:>5}  " + "  ".join(f"{c:>22}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
