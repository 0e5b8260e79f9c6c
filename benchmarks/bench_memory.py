"""Memory with a large X: one copy per node (shared window) against a copy per rank.

Run by hand: ``.venv/bin/python benchmarks/bench_memory.py [--gib 2] [-n 4]``. Writes X
(float64, GIB GiB) and y as .npy under /tmp, runs a cheap grid (DummyClassifier, no refit,
two 1 % splits, so that what is measured is where X lives, not the fold copies that every fit
makes, hpcml and GridSearchCV alike) with ``hpcml run -n P`` and, as the baseline, P ranks
that each load their own X;
prints the peak of the summed proportional set size (PSS) of all processes, as a multiple
of the size of X. Target (issue 3): hpcml < 1.3 x X at P = 4.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _harness import machine, process_tree, pss_bytes, thread_env  # noqa: E402

SPEC = """\
data: {{path: {x}, target: {y}}}
cv: {{splitter: ShuffleSplit, n_splits: 2, train_size: 0.01, test_size: 0.01, random_state: 0}}
scoring: [accuracy]
refit: false
models:
  dummy:
    estimator: sklearn.dummy.DummyClassifier
    grid: {{strategy: [prior, most_frequent, uniform, stratified]}}
"""

BASELINE = """\
import sys, time
import numpy as np
from mpi4py import MPI
X = np.load(sys.argv[1])      # what a naive script does: every rank its own copy
X.sum()
MPI.COMM_WORLD.Barrier()
time.sleep(2)
"""


def is_rank(pid: int) -> bool:
    try:
        return b"PMI_RANK=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def measure(cmd: list[str], env: dict) -> tuple[float, int, int, int]:
    """Wall time, peak summed PSS of all processes and of the MPI ranks alone, exit status."""
    import subprocess
    import time

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_all = peak_ranks = 0
    while proc.poll() is None:
        pids = process_tree(proc.pid)
        sizes = {pid: pss_bytes(pid)[0] for pid in pids}  # all of the PSS
        peak_all = max(peak_all, sum(sizes.values()))
        peak_ranks = max(peak_ranks, sum(v for pid, v in sizes.items() if is_rank(pid)))
        time.sleep(0.1)
    if proc.returncode:
        sys.stderr.write(proc.stderr.read().decode()[-2000:])
    return time.perf_counter() - t0, peak_all, peak_ranks, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("-n", type=int, default=4)
    ap.add_argument("--folder", default="/tmp/hpcml-bench-memory")
    args = ap.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_features = 256
    n_rows = int(args.gib * 2**30 / 8 / n_features)
    x, y = folder / "X.npy", folder / "y.npy"
    if not x.exists() or np.load(x, mmap_mode="r").shape != (n_rows, n_features):
        out = np.lib.format.open_memmap(x, mode="w+", dtype=np.float64, shape=(n_rows, n_features))
        rng = np.random.default_rng(0)
        for lo in range(0, n_rows, 65536):
            out[lo : lo + 65536] = rng.random((min(65536, n_rows - lo), n_features))
        out.flush()
        del out
        np.save(y, (np.arange(n_rows) % 2).astype(np.int64))
    size = n_rows * n_features * 8
    (folder / "spec.yaml").write_text(SPEC.format(x=x, y=y))
    (folder / "baseline.py").write_text(BASELINE)
    env = thread_env(args.n)
    exe = str(Path(sys.executable).parent)
    print(f"machine: {machine()}")
    print(f"X: {n_rows} x {n_features} float64 = {size / 2**30:.2f} GiB; P = {args.n}")
    hp = measure([f"{exe}/hpcml", "run", "-n", str(args.n), str(folder / "spec.yaml"),
                    "--out", str(folder / "out"), "--force", "--no-progress"], env=env)
    base = measure([f"{exe}/mpiexec", "-n", str(args.n), sys.executable,
                      str(folder / "baseline.py"), str(x)], env=env)
    for name, (wall, peak_all, peak_ranks, code) in (
        ("hpcml (one copy per node)", hp), ("a copy per rank", base)
    ):
        print(f"{name:26s} wall {wall:5.1f} s | peak summed PSS: the {args.n} ranks "
              f"{peak_ranks / 2**30:5.2f} GiB = {peak_ranks / size:4.2f} x X, all processes "
              f"{peak_all / 2**30:5.2f} GiB = {peak_all / size:4.2f} x X (exit {code})")


if __name__ == "__main__":
    main()
