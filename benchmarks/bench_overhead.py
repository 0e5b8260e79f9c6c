"""hpcml's overhead per fit task: 10,000 ``DummyClassifier`` fits, where the fits cost nothing.

    python benchmarks/bench_overhead.py [--fits 10000] [-n 2] [--repeat 2]

Each variant runs ``search.fit(X, y)`` (refit off) on 2,000 candidates x 5 folds of a
100-row data set, timed with ``time.perf_counter`` once the workers are up (MPI started,
loky pool warmed), so fixed start-up is left out:

- ``hpcml``: ``MPISearchCV`` under ``mpiexec -n P``;
- ``hpcml serial``: ``MPISearchCV`` under ``mpiexec -n 1`` (``SerialEngine``: no claims);
- ``sklearn``: ``GridSearchCV(n_jobs=P)``; ``sklearn serial``: ``n_jobs=1``.

Overhead per task = (P x wall - sum of fit+score times) / fits: everything a rank spends on
a task besides ``fit`` and ``score`` (clone, set_params, data split, claims, results,
``cv_results_``). Target for hpcml: < 0.2 ms. For hpcml at P > 1 it is split into: inside
the task (clone, split, bookkeeping), between tasks on a rank (claims, counters, loop),
inside ``engine.run`` but outside the ranks' busy windows (window set-up, tail, gather), and
outside ``engine.run`` (folds, cost estimates and plan, ``cv_results_``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import BIN, PYTHON, CallTimer, machine, thread_env, timed_run  # noqa: E402


def _data():
    from sklearn.datasets import make_classification

    return make_classification(n_samples=100, n_features=5, random_state=0)


def _grid(fits: int) -> dict:
    return {"random_state": list(range(fits // 5))}


def _worker_hpcml(fits: int, result: str) -> int:
    from sklearn.dummy import DummyClassifier

    import hpcml.search.spmd as spmd
    from hpcml import MPISearchCV
    from hpcml.engines.mpi import board as _board
    from hpcml.engines.mpi import engine as _engine
    from hpcml.engines.mpi import world as _mpi

    comm = _mpi.world()
    rank, size = comm.Get_rank(), comm.Get_size()
    captured: dict = {}
    timer = CallTimer(("claim", "add_done", "publish"))
    spread = spmd.FitRunner._spread
    engine_run = _engine.MPIEngine.run

    def recording_spread(self, calls):
        t = time.perf_counter()
        out = spread(self, calls)
        captured.update(eval_s=time.perf_counter() - t)
        return out

    def recording_run(self, *args, **kwargs):
        out = engine_run(self, *args, **kwargs)
        captured.update(results=out)
        return out

    spmd.FitRunner._spread = recording_spread
    _engine.MPIEngine.run = recording_run
    timer.patch(_engine.MPIEngine, "run", "engine_run")
    # The engine claims with PlanBoard.next_chunk (plan board) or WorkCounter.claim (before it).
    board = getattr(_board, "PlanBoard", None)
    if board is not None and hasattr(board, "next_chunk"):
        timer.patch(board, "next_chunk", "claim")
        timer.patch(board, "publish")
    else:
        timer.patch(_board.WorkCounter, "claim")
    timer.patch(_board.WorkCounter, "add_done")
    waits = timer.waits

    X, y = _data()
    search = MPISearchCV(DummyClassifier(), _grid(fits), cv=5, refit=False, progress=False)
    comm.Barrier()
    t = time.perf_counter()
    search.fit(X, y)
    wall = time.perf_counter() - t
    all_waits = comm.gather(waits, root=0)
    if rank == 0 and "results" not in captured:  # one rank: the fits ran in scikit-learn's loop
        cv = search.cv_results_
        work = float(sum(cv["mean_fit_time"] + cv["mean_score_time"]) * search.n_splits_)
        Path(result).write_text(json.dumps({"wall": wall, "ranks": size, "work": work}))
    elif rank == 0:
        tasks = [(r.rank, r.start, r.end, r.value["fit_time"] + r.value["score_time"])
                 for r in captured["results"].values()]
        Path(result).write_text(json.dumps({
            "wall": wall, "ranks": size, "eval_s": captured["eval_s"],
            "run_s": (timer.waits["engine_run"] or [None])[-1], "tasks": tasks,
            "waits": all_waits,
        }))
    return 0


def _worker_sklearn(fits: int, n_jobs: int, result: str) -> int:
    from joblib import Parallel, delayed
    from sklearn.dummy import DummyClassifier
    from sklearn.model_selection import GridSearchCV

    X, y = _data()
    Parallel(n_jobs=n_jobs)(delayed(abs)(i) for i in range(4 * n_jobs))  # start the workers
    search = GridSearchCV(DummyClassifier(), _grid(fits), cv=5, refit=False, n_jobs=n_jobs)
    t = time.perf_counter()
    search.fit(X, y)
    wall = time.perf_counter() - t
    cv = search.cv_results_
    work = float(sum(cv["mean_fit_time"] + cv["mean_score_time"]) * search.n_splits_)
    Path(result).write_text(json.dumps({"wall": wall, "ranks": n_jobs, "work": work}))
    return 0


def measure(variant: str, fits: int, n: int, folder: Path) -> dict:
    """Run one variant in a fresh process tree; return wall, work and overhead per task."""
    result = folder / f"{variant.replace(' ', '-')}.json"
    me = str(Path(__file__).resolve())
    if variant.startswith("hpcml"):
        p = 1 if variant.endswith("serial") else n
        cmd = [str(BIN / "mpiexec"), "-n", str(p), PYTHON, me, "--worker", "hpcml",
               "--fits", str(fits), "--result", str(result)]
        env = thread_env(p)
    else:
        p = 1 if variant.endswith("serial") else n
        cmd = [PYTHON, me, "--worker", "sklearn", "--fits", str(fits), "-n", str(p),
               "--result", str(result)]
        env = None
    done = timed_run(cmd, env=env)
    if done.returncode != 0:
        return {"variant": variant, "ok": False}
    data = json.loads(result.read_text())
    row = {"variant": variant, "ok": True, "ranks": p, "wall": data["wall"],
           "command_wall": done.wall, "other": done.other_cores}
    if "tasks" in data:
        tasks = data["tasks"]
        row["work"] = sum(c for *_, c in tasks)
        spans = sum(e - s for _, s, e, _ in tasks)
        windows = 0.0
        for r in range(p):
            mine = [(s, e) for rk, s, e, _ in tasks if rk == r]
            if mine:
                windows += max(e for _, e in mine) - min(s for s, _ in mine)
        run_s = data["run_s"] if data["run_s"] is not None else data["eval_s"]
        row["split"] = {
            "in task (clone, split, bookkeeping)": (spans - row["work"]) / fits,
            "between tasks (claims, counters, loop)": (windows - spans) / fits,
            "engine.run outside busy windows": (p * run_s - windows) / fits,
            "fit() outside engine.run": p * (data["wall"] - run_s) / fits,
        }
        claims = [w for rank in data["waits"] or [] for w in rank["claim"]]
        row["claims"] = (len(claims), sum(claims))
        row["publish_s"] = sum(w for rank in data["waits"] or [] for w in rank.get("publish", []))
    else:
        row["work"] = data["work"]
    row["overhead_ms"] = (p * row["wall"] - row["work"]) / fits * 1e3
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fits", type=int, default=10_000)
    ap.add_argument("-n", "--ranks", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--variants", nargs="+",
                    default=["hpcml", "hpcml serial", "sklearn", "sklearn serial"])
    ap.add_argument("--worker", choices=("hpcml", "sklearn"), help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "hpcml":
        return _worker_hpcml(args.fits, args.result)
    if args.worker == "sklearn":
        return _worker_sklearn(args.fits, args.ranks, args.result)

    folder = Path(tempfile.mkdtemp(prefix="hpcml-overhead-"))
    print(f"hpcml bench_overhead, {dt.datetime.now():%Y-%m-%d %H:%M}; {machine()}")
    print(f"{args.fits} DummyClassifier fits ({args.fits // 5} candidates x 5 folds, 100 rows, "
          f"refit off), start-up excluded")
    head = ("variant", "rep", "ranks", "fit() s", "fit+score s", "ms/task", "other")
    print("  ".join(f"{h:>14}" for h in head))
    for rep in range(1, args.repeat + 1):
        for variant in args.variants:
            row = measure(variant, args.fits, args.ranks, folder)
            if not row["ok"]:
                print(f"{variant:>14}  {rep:>14}  failed")
                continue
            cells = (variant, rep, row["ranks"], f"{row['wall']:.3f}", f"{row['work']:.3f}",
                     f"{row['overhead_ms']:.3f}", f"{row['other']:.2f}")
            print("  ".join(f"{c:>14}" for c in cells))
            if "split" in row and row["ranks"] > 1:
                n_claims, claim_s = row["claims"]
                print(f"{'':>14}  of which, ms per task: " + "; ".join(
                    f"{k} {v * 1e3:.3f}" for k, v in row["split"].items())
                    + f"; {n_claims} claims took {claim_s * 1e3:.2f} ms in all"
                    + (f", publishing times {row['publish_s'] * 1e3:.2f} ms"
                       if row["publish_s"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
