"""ASHA against synchronous successive halving: the wall time to the same best score.

    python benchmarks/bench_asha.py [-n 2] [--n-iter 27] [--samples 3000]

The same random forest search (``n_iter`` candidates drawn by ``ParameterSampler`` with the
same seed; resource ``n_estimators`` from 4 to 108, factor 3; 3 folds) run three ways, each a
fresh command on P workers:

- ``sklearn``: ``HalvingRandomSearchCV(n_jobs=P)`` (loky); its best is known when ``fit``
  ends: the time is ``fit()`` minus ``refit_time_``;
- ``halving``: ``hpcml run -n P`` with ``search: {strategy: halving, ...}`` (round barriers);
  the time is the run's ``wall_time`` (data, folds, fits) without the refit: its best (the
  last rung's) is known at the end;
- ``asha``: ``hpcml run -n P`` with ``search: {strategy: asha, ...}`` (no barrier); the time
  is when a candidate at the top rung (108 trees) first has a mean score at least the
  target's (scikit-learn's best), from the journal, on the same clock; else the time of its
  own best there.

Printed: each one's best score and time, and the ratios to ``asha``. Timings on a shared
machine are noisy; the sizes are small on purpose. Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import BIN, PYTHON, make_data, timed_run  # noqa: E402

RESOURCE = {"resource": "n_estimators", "min_resources": 4, "max_resources": 108, "factor": 3}
GRID = {"max_depth": "randint(2, 16)", "max_features": "uniform(0.1, 0.8)",
        "min_samples_leaf": [1, 2, 4, 8]}


def make_spec(strategy: str, n_iter: int, samples: int) -> dict:
    """The hpcml spec of one of the two hpcml searches."""
    search = {"strategy": strategy, **RESOURCE, "random_state": 0}
    search["n_iter" if strategy == "asha" else "n_candidates"] = n_iter
    return {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": samples, "n_features": 20, "n_informative": 8,
                            "random_state": 0}},
        "cv": {"splitter": "StratifiedKFold", "n_splits": 3, "shuffle": True,
               "random_state": 0},
        "scoring": ["accuracy"],
        "refit": "accuracy",
        "search": search,
        "models": {"rf": {"estimator": "sklearn.ensemble.RandomForestClassifier",
                          "params": {"random_state": 0}, "grid": GRID}},
    }


def _sklearn(n: int, n_iter: int, samples: int, result: str) -> int:
    """scikit-learn's HalvingRandomSearchCV on the same search (in a fresh process)."""
    from scipy.stats import randint, uniform
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV, StratifiedKFold

    spec = make_spec("halving", n_iter, samples)
    X, y = make_data(spec)
    dists = {"max_depth": randint(2, 16), "max_features": uniform(0.1, 0.8),
             "min_samples_leaf": [1, 2, 4, 8]}
    search = HalvingRandomSearchCV(
        RandomForestClassifier(random_state=0), dists, n_candidates=n_iter,
        cv=StratifiedKFold(3, shuffle=True, random_state=0), scoring="accuracy",
        random_state=0, n_jobs=n, **RESOURCE)
    t = time.perf_counter()
    search.fit(X, y)
    seconds = time.perf_counter() - t - search.refit_time_
    Path(result).write_text(json.dumps({"best": float(search.best_score_),
                                        "seconds": seconds,
                                        "fits": int(sum(search.n_candidates_)) * 3}))
    return 0


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((out / "journal").glob("*.jsonl"))
            for line in p.read_text().splitlines() if line.strip()]


def _hpcml(strategy: str, n: int, n_iter: int, samples: int, folder: Path) -> dict:
    spec = make_spec(strategy, n_iter, samples)
    path = folder / f"{strategy}.json"
    path.write_text(json.dumps(spec))
    out = folder / strategy
    wall = timed_run([str(BIN / "hpcml"), "run", "-n", str(n), str(path), "--out", str(out),
                      "--no-progress", "-q"]).wall
    best = json.loads((out / "best.json").read_text())
    run = json.loads((out / "run.json").read_text())
    recs = _records(out)
    # The search: the run's wall time (data, folds and fits) without the refit.
    search = run["wall_time"] - best.get("refit_time", 0.0)
    info = {"best": best["scores"]["accuracy"], "wall": wall, "fits": len(recs),
            "seconds": search}
    if strategy == "asha":  # journal times count from the start of the fits
        lead = search - max(r["end"] for r in recs)
        info["top"] = [(lead + t, s) for t, s in _top_rung_times(spec, recs)]
    return info


def _top_rung_times(spec: dict, recs: list[dict]) -> list[tuple[float, float]]:
    """When each top-rung job finished (its last fold's end) and its mean score."""
    from hpcml.spec.schema import parse_spec

    grid = parse_spec(spec, source="<bench>").task_grid(3)
    jobs: dict[int, list[dict]] = {}
    for r in recs:
        slot = r["task"] // 3
        if grid.candidates[slot].params["n_estimators"] == RESOURCE["max_resources"]:
            jobs.setdefault(slot, []).append(r)
    return sorted((max(r["end"] for r in rs), sum(r["test"]["accuracy"] for r in rs) / 3)
                  for rs in jobs.values() if len(rs) == 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2, help="workers (ranks / n_jobs)")
    ap.add_argument("--n-iter", type=int, default=27, help="candidates")
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer:
        return _sklearn(args.n, args.n_iter, args.samples, args.peer)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        peer = folder / "sklearn.json"
        wall = timed_run([PYTHON, __file__, "-n", str(args.n), "--n-iter", str(args.n_iter),
                          "--samples", str(args.samples), "--peer", str(peer)]).wall
        sk = {**json.loads(peer.read_text()), "wall": wall}
        halving = _hpcml("halving", args.n, args.n_iter, args.samples, folder)
        asha = _hpcml("asha", args.n, args.n_iter, args.samples, folder)
    target = sk["best"]
    reached = [t for t, s in asha["top"] if s >= target - 1e-12]
    if reached:
        asha_t, note = reached[0], "reached the target"
    else:
        own = max(asha["top"], key=lambda ts: (ts[1], -ts[0])) if asha["top"] else (
            asha["seconds"], asha["best"])
        asha_t, note = own[0], f"did not reach it: its best at the top rung {own[1]:.4f}"
    print(f"P={args.n}, {args.n_iter} candidates, {args.samples} samples, resource "
          f"n_estimators {RESOURCE['min_resources']}..{RESOURCE['max_resources']} x"
          f"{RESOURCE['factor']}, 3 folds; target = scikit-learn's best {target:.4f}")
    print(f"{'':22}{'best':>8}{'to best s':>11}{'fits':>6}{'command s':>11}")
    print(f"{'sklearn HalvingRandom':22}{sk['best']:8.4f}{sk['seconds']:11.2f}{sk['fits']:6d}"
          f"{sk['wall']:11.2f}")
    print(f"{'hpcml halving':22}{halving['best']:8.4f}{halving['seconds']:11.2f}"
          f"{halving['fits']:6d}{halving['wall']:11.2f}")
    print(f"{'hpcml asha':22}{asha['best']:8.4f}{asha_t:11.2f}{asha['fits']:6d}"
          f"{asha['wall']:11.2f}   ({note}; all fits done at {asha['seconds']:.2f} s)")
    what = "the target" if reached else "each one's best (asha's is lower)"
    print(f"time to {what}: sklearn / asha = {sk['seconds'] / asha_t:.2f}x, "
          f"hpcml halving / asha = {halving['seconds'] / asha_t:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
