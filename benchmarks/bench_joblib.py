"""joblib backends side by side: ``"mpi"`` (hpcml), loky, and dask on a ``LocalCluster``.

``python benchmarks/bench_joblib.py [--workers W] [--repeat R]`` starts itself under
``mpiexec -n W+1 python -m hpcml.joblib`` (rank 0 times everything; the other ranks are the
mpi backend's workers), then, in that same run, loky with ``n_jobs=W`` and dask with W
single-threaded worker processes. Two figures per backend:

* per-task overhead: ``Parallel(batch_size=1)`` over 400 no-op tasks, seconds per task;
* ``GridSearchCV(SVC(), 12 candidates, cv=5, n_jobs=-1).fit(X, y)``, X 2000 x 40, seconds.

Ratios are printed against the mpi backend (below 1: the peer is faster). Each figure is
the best of ``--repeat`` runs, after one warm-up run (pools started, arrays cached).

Then the bytes of X the mpi backend sends for a ``GridSearchCV`` whose X (4000 x 40,
1.28 MB) is over ``max_nbytes``: on the first call (once per node) and on a second call
(cached: none), next to what once per worker (the backend before the node store) and once
per task (inline) would send.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def _noop(i):
    return i


def overhead(n: int = 400) -> float:
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    Parallel(batch_size=1)(delayed(_noop)(i) for i in range(n))
    return (time.perf_counter() - t0) / n


def grid_search() -> float:
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = make_classification(n_samples=2000, n_features=40, random_state=0)
    grid = {"C": [0.1, 1.0, 10.0, 100.0], "gamma": ["scale", 0.01, 0.001]}
    t0 = time.perf_counter()
    GridSearchCV(SVC(), grid, cv=5, n_jobs=-1).fit(X, y)
    return time.perf_counter() - t0


def measure(backend: str, n_jobs: int, repeat: int) -> dict[str, float]:
    import joblib

    out = {}
    with joblib.parallel_config(backend=backend, n_jobs=n_jobs):
        for name, fn in (("overhead", overhead), ("grid_search", grid_search)):
            fn()  # warm-up
            out[name] = min(fn() for _ in range(repeat))
    return out


def shipping() -> dict[str, int]:
    """Array bytes the mpi backend sends for two ``GridSearchCV`` fits on the same large X."""
    import joblib
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    from hpcml.engines.mpi.joblib_backend import get_client

    client = get_client()
    X, y = make_classification(n_samples=4000, n_features=40, random_state=5)
    out = {"nbytes": int(X.nbytes), "workers": client.n_workers, "nodes": len(client.nodes)}
    grid = {"C": [0.01, 0.1, 1.0, 10.0]}
    for call in ("first", "second"):
        sent, tasks = client.bytes_sent, client.tasks_sent
        with joblib.parallel_config(backend="mpi", n_jobs=-1):
            GridSearchCV(LogisticRegression(max_iter=200), grid, cv=5, n_jobs=-1).fit(X, y)
        out[call], out[f"{call}_tasks"] = client.bytes_sent - sent, client.tasks_sent - tasks
    return out


def inner(workers: int, repeat: int) -> None:
    import hpcml.joblib  # noqa: F401  (MPI already started by -m hpcml.joblib)

    results = {"mpi": measure("mpi", -1, repeat), "loky": measure("loky", workers, repeat)}
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        results["dask"] = measure("dask", -1, repeat)
    ref = results["mpi"]
    print(f"workers: {workers}  (cores: {os.cpu_count()}; best of {repeat})")
    print(f"{'backend':8s} {'per task (ms)':>14s} {'ratio':>7s} {'GridSearchCV (s)':>17s} "
          f"{'ratio':>7s}")
    for name, r in results.items():
        print(f"{name:8s} {r['overhead'] * 1e3:14.3f} {r['overhead'] / ref['overhead']:7.2f} "
              f"{r['grid_search']:17.3f} {r['grid_search'] / ref['grid_search']:7.2f}")
    ship = shipping()
    mb = 1e-6
    print(f"mpi: bytes of X (4000 x 40, {ship['nbytes'] * mb:.2f} MB) sent per GridSearchCV "
          f"call, {ship['nodes']} node(s), {ship['workers']} worker(s):")
    print(f"  first call {ship['first'] * mb:.2f} MB ({ship['first_tasks']} batches), "
          f"second call {ship['second'] * mb:.2f} MB; once per worker would be "
          f"{ship['workers'] * ship['nbytes'] * mb:.2f} MB, once per batch "
          f"{ship['first_tasks'] * ship['nbytes'] * mb:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.workers, args.repeat)
        return
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = dict(os.environ, OMP_NUM_THREADS="1", UCX_LOG_LEVEL="error",
               PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]))
    cmd = [str(mpiexec), "-n", str(args.workers + 1), sys.executable, "-m", "hpcml.joblib",
           str(HERE), "--inner", "--workers", str(args.workers), "--repeat", str(args.repeat)]
    sys.exit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    main()
