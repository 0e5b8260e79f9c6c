"""A pipeline with an expensive transformer and cheap classifier candidates: hpcml, which fits
the shared prefix once per fold, against ``GridSearchCV(n_jobs=P)`` with and without
``memory=`` (joblib's disk cache of fitted transformers, in a temporary folder).

    python benchmarks/bench_pipeline.py [-n 2] [--candidates 12] [--folds 5] [--work 1.0]

Workload: 4000 x 100, ``StandardScaler`` -> ``CostlyPCA`` (a PCA after ``--work`` s of CPU
per fit) -> ``LogisticRegression`` over ``--candidates`` values of ``C``, ``--folds``
stratified folds, accuracy, refit. Each tool runs as a fresh command (start-up, imports, refit
included), timed around the subprocess: ``hpcml run -n P``; a script running
``GridSearchCV(..., n_jobs=P)``; the same with ``Pipeline(memory=tmpdir)``. ``prefix fits``
counts the costly fits (refit included) from the step's log. Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from _harness import BIN, PYTHON, machine, timed_run  # noqa: E402

N_SAMPLES, N_FEATURES = 4000, 100


def spec(n_candidates: int, folds: int, work: float, log: str) -> dict:
    return {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": N_SAMPLES, "n_features": N_FEATURES,
                            "n_informative": 20, "random_state": 0}},
        "cv": {"splitter": "StratifiedKFold", "n_splits": folds, "shuffle": True,
               "random_state": 0},
        "scoring": ["accuracy"],
        "refit": "accuracy",
        "models": {"pipe": {"estimator": "pipeline_steps:costly_pipeline",
                            "params": {"pca__work": work, "pca__log": log},
                            "grid": {"clf__C": list(np.logspace(-3, 2, n_candidates).tolist())}}},
    }



def _peer(args: argparse.Namespace) -> int:
    """GridSearchCV on the spec's workload (in a fresh process); scores and times as JSON."""
    from pipeline_steps import costly_pipeline
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    s = json.loads(Path(args.spec_json).read_text())
    X, y = make_classification(**s["data"]["params"])
    body = s["models"]["pipe"]
    with tempfile.TemporaryDirectory() as tmp:
        pipe = costly_pipeline(log=body["params"]["pca__log"], work=body["params"]["pca__work"],
                               memory=tmp if args.memory else None)
        cv = StratifiedKFold(s["cv"]["n_splits"], shuffle=True, random_state=0)
        search = GridSearchCV(pipe, body["grid"], cv=cv, scoring="accuracy", n_jobs=args.n)
        t = time.perf_counter()
        search.fit(X, y)
        fit_s = time.perf_counter() - t
    Path(args.result).write_text(json.dumps({
        "search": fit_s - float(search.refit_time_), "refit": float(search.refit_time_),
        "scores": search.cv_results_["mean_test_score"].tolist(),
    }))
    return 0


def run(args: argparse.Namespace) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), os.environ.get("PYTHONPATH", "")]), "UCX_LOG_LEVEL": "error"}
    print(f"machine: {machine()}; P = {args.n}")
    print(f"workload: {N_SAMPLES} x {N_FEATURES}, scale -> CostlyPCA ({args.work:g} s CPU per "
          f"fit) -> LogisticRegression, {args.candidates} candidates x {args.folds} folds")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for tool in ("hpcml", "sklearn", "sklearn memory="):
            log = folder / f"{len(rows)}.log"
            s = spec(args.candidates, args.folds, args.work, str(log))
            row = {"tool": tool}
            if tool == "hpcml":
                import yaml

                spec_path = folder / "spec.yaml"
                spec_path.write_text(yaml.safe_dump(s))
                out = folder / "out"
                done = timed_run([str(BIN / "hpcml"), "run", "-n", str(args.n), str(spec_path),
                                  "--out", str(out), "--force", "--no-progress"], env=env)
                if done.returncode == 0:
                    import csv

                    run_json = json.loads((out / "run.json").read_text())
                    best = json.loads((out / "best.json").read_text())
                    with open(out / "cv_results.csv", newline="") as f:
                        scores = [float(r["mean_test_accuracy"]) for r in csv.DictReader(f)]
                    row.update(search=run_json["wall_time"] - best["refit_time"],
                               refit=best["refit_time"], scores=scores)
            else:
                spec_json, result = folder / "spec.json", folder / "peer.json"
                spec_json.write_text(json.dumps(s))
                cmd = [PYTHON, str(Path(__file__).resolve()), "--peer", "--spec-json",
                       str(spec_json), "--result", str(result), "-n", str(args.n)]
                done = timed_run(cmd + (["--memory"] if "memory" in tool else []), env=env)
                if done.returncode == 0:
                    row.update(json.loads(result.read_text()))
            fits = len(log.read_text().splitlines()) if log.exists() else 0
            row.update(wall=done.wall, ok=done.returncode == 0, fits=fits,
                       other=done.other_cores)
            rows.append(row)
    ref = rows[0]
    head = ("tool", "wall s", "search s", "refit s", "prefix fits", "hpcml/x wall",
            "hpcml/x search", "other", "scores")
    print("  ".join(f"{h:>15}" for h in head))
    for r in rows:
        same = ("same" if r.get("scores") == ref.get("scores") else "DIFF") if r.get("ok") else "-"
        vals = (r["tool"], f"{r['wall']:.2f}", f"{r.get('search', float('nan')):.2f}",
                f"{r.get('refit', float('nan')):.2f}", str(r["fits"]),
                f"{ref['wall'] / r['wall']:.2f}",
                f"{ref.get('search', float('nan')) / r.get('search', float('nan')):.2f}",
                f"{r['other']:.2f}", same)
        print("  ".join(f"{v:>15}" for v in vals))
    print("other = CPU cores used by the rest of the machine meanwhile (load, noise)")
    return 0 if all(r["ok"] for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=2, help="ranks / n_jobs (default 2)")
    p.add_argument("--candidates", type=int, default=12)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--work", type=float, default=1.0, help="CPU seconds per costly fit")
    p.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--spec-json", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return _peer(args) if args.peer else run(args)


if __name__ == "__main__":
    sys.exit(main())
