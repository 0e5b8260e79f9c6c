"""Shared helpers of the benchmarks: workloads, timed subprocesses, summed PSS of a process tree.

Benchmark code only (run by hand, not in CI); nothing here is imported by hpcml.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent

# -- workloads -------------------------------------------------------------------------------
# Each is an hpcml spec (as a dict); the scikit-learn and dask peers are built from the same
# dict, so model x grid x folds x data are the same for every tool.

_CV5 = {"splitter": "StratifiedKFold", "n_splits": 5, "shuffle": True, "random_state": 0}
_METRICS = ["roc_auc", "accuracy"]

WORKLOADS: dict[str, dict[str, Any]] = {
    # Fixed costs only: 4 trivial fits. Shows process and MPI / loky / dask start-up.
    "startup": {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": 100, "n_features": 5, "random_state": 0}},
        "cv": {**_CV5, "n_splits": 2},
        "scoring": _METRICS,
        "refit": "roc_auc",
        "models": {"dummy": {"estimator": "sklearn.dummy.DummyClassifier",
                             "params": {"random_state": 0},
                             "grid": {"strategy": ["prior", "stratified"]}}},
    },
    # Issue 3's mixed grid: 14 candidates x 5 folds = 70 fits of 0.02-2.7 s.
    "mixed": {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": 4000, "n_features": 30, "n_informative": 10,
                            "random_state": 11}},
        "cv": _CV5,
        "scoring": _METRICS,
        "refit": "roc_auc",
        "models": {
            "logit": {"estimator": "sklearn.linear_model.LogisticRegression",
                      "params": {"max_iter": 2000}, "grid": {"C": [0.01, 0.1, 1.0, 10.0]}},
            "rf": {"estimator": "sklearn.ensemble.RandomForestClassifier",
                   "params": {"random_state": 0},
                   "grid": {"n_estimators": [15, 30], "max_depth": [None, 8]}},
            "gb": {"estimator": "sklearn.ensemble.GradientBoostingClassifier",
                   "params": {"random_state": 0}, "grid": {"n_estimators": [8, 16, 28]}},
            "svc": {"estimator": "sklearn.svm.SVC", "grid": {"C": [0.1, 1.0, 10.0]}},
        },
    },
    # Many tiny fits: 200 decision trees x 5 folds = 1,000 fits on 400 rows, two metrics.
    "tiny": {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": 400, "n_features": 20, "random_state": 3}},
        "cv": _CV5,
        "scoring": _METRICS,
        "refit": "roc_auc",
        "models": {"tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                            "params": {"random_state": 0},
                            "grid": {"max_depth": list(range(1, 11)),
                                     "min_samples_leaf": list(range(1, 21))}}},
    },
    # A large X (200,000 x 50 float64 = 80 MB) with cheap models: 6 candidates x 3 folds.
    "large": {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": 200_000, "n_features": 50, "n_informative": 10,
                            "random_state": 0}},
        "cv": {**_CV5, "n_splits": 3},
        "scoring": _METRICS,
        "refit": "roc_auc",
        "models": {
            "logit": {"estimator": "sklearn.linear_model.LogisticRegression",
                      "grid": {"C": [0.01, 0.1, 1.0, 10.0]}},
            "nb": {"estimator": "sklearn.naive_bayes.GaussianNB",
                   "grid": {"var_smoothing": [1e-9, 1e-6]}},
        },
    },
}


def resolve(path: str) -> Any:
    """``"package.module.name"`` → the object."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def make_data(spec: dict[str, Any]):
    """The spec's (X, y), generated the way hpcml generates it."""
    X, y = resolve(spec["data"]["generator"])(**spec["data"]["params"])[:2]
    return X, y


def sklearn_search(spec: dict[str, Any], n_jobs: int):
    """``GridSearchCV`` over a one-step ``Pipeline`` whose step is in the grid: the same
    candidates as the spec, in the same order (models in spec order, ``ParameterGrid``
    order within a model), the same folds, metrics and refit."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    grid = []
    first = None
    for body in spec["models"].values():
        est = resolve(body["estimator"])(**body.get("params", {}))
        first = first or est
        grids = body.get("grid") or [{}]
        for g in grids if isinstance(grids, list) else [grids]:
            grid.append({"model": [est], **{f"model__{k}": v for k, v in g.items()}})
    cv = {k: v for k, v in spec["cv"].items() if k != "splitter"}
    assert spec["cv"]["splitter"] == "StratifiedKFold"
    return GridSearchCV(
        Pipeline([("model", first)]), grid, cv=StratifiedKFold(**cv), scoring=spec["scoring"],
        refit=spec["refit"], n_jobs=n_jobs,
    )


def model_name(spec: dict[str, Any], estimator: Any) -> str:
    """The spec's name of a model, from an estimator instance."""
    cls = type(estimator).__module__.split(".")[0] + "." + type(estimator).__name__
    for name, body in spec["models"].items():
        path = body["estimator"]
        if path.split(".")[0] + "." + path.rsplit(".", 1)[1] == cls:
            return name
    return type(estimator).__name__


# -- processes and memory ----------------------------------------------------------------------


def thread_env(ranks: int) -> dict[str, str]:
    """The environment ``hpcml run -n P`` gives its ranks (one BLAS thread per core share)."""
    from hpcml.core.threads import thread_env as env_for
    from hpcml.core.threads import threads_per_rank, usable_cores

    threads, _ = threads_per_rank(min(ranks, usable_cores()))
    return {**os.environ, **env_for(threads), "UCX_LOG_LEVEL": "error"}


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    kids = _children()
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, []))
    return out


def pss_bytes(pid: int) -> tuple[int, int]:
    """Proportional set size of one process, all of it and its anonymous + shared-memory part
    (heap, arrays, MPI windows: the part that other programs' use of the same library files
    does not change). ``(0, 0)`` if the process is gone."""
    pss = anon = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith(("Pss_Anon:", "Pss_Shmem:")):
                    anon += int(line.split()[1]) * 1024
    except OSError:
        pass
    return pss, anon


class PssSampler(threading.Thread):
    """Every ``interval`` s, sum the PSS of a process tree; keep the peak sums."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak = self.peak_anon = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            sizes = [pss_bytes(p) for p in process_tree(self.root)]
            self.peak = max(self.peak, sum(s[0] for s in sizes))
            self.peak_anon = max(self.peak_anon, sum(s[1] for s in sizes))
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


@dataclass
class Timed:
    """A finished command: wall seconds (perf_counter), peak summed PSS, output, and how
    busy the rest of the machine was meanwhile (``other_cores``: CPU time of processes that
    are not the command's, per second of wall time; ``steal_cores``: the hypervisor's)."""

    wall: float
    peak_pss: int
    returncode: int
    stdout: str
    stderr: str
    other_cores: float = 0.0
    steal_cores: float = 0.0
    peak_anon: int = 0


def _cpu_jiffies() -> tuple[float, float]:
    """Busy and steal CPU seconds of the whole machine so far (from /proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / hz, steal / hz


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> Timed:
    """Run ``cmd``; time it with ``perf_counter`` and sample its process tree's PSS."""
    busy0, steal0 = _cpu_jiffies()
    own0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    sampler = PssSampler(proc.pid)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    peak = sampler.stop()
    busy1, steal1 = _cpu_jiffies()
    other = max(busy1 - busy0 - (_children_cpu() - own0), 0.0) / wall
    if proc.returncode != 0:
        sys.stderr.write(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}\n")
    return Timed(wall, peak, proc.returncode, out, err, other, (steal1 - steal0) / wall,
                 sampler.peak_anon)


class CallTimer:
    """Records how long chosen methods take, on this rank.

    ``timer.patch(owner, "method", "name")`` replaces ``owner.method`` with a wrapper that
    appends each call's seconds to ``timer.waits["name"]``.
    """

    def __init__(self, names: tuple[str, ...] = ()) -> None:
        self.waits: dict[str, list[float]] = {name: [] for name in names}

    def patch(self, owner: Any, method: str, name: str | None = None) -> None:
        original = getattr(owner, method)
        waits = self.waits.setdefault(name or method, [])

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                waits.append(time.perf_counter() - t)

        setattr(owner, method, wrapper)


def lower_bound(costs, n_ranks: int) -> float:
    """``max(sum(c) / P, max(c))``."""
    costs = list(costs)
    return max(sum(costs) / n_ranks, max(costs)) if costs else 0.0


def machine() -> str:
    """One line naming this machine: CPU model, usable cores, memory."""
    from hpcml.core.threads import usable_cores

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {usable_cores()} usable cores{mem}, Python {sys.version.split()[0]}"
