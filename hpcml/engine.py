"""Engines run the fit tasks of a plan; the task list and results do not care which one.

An engine knows its place in the job (``rank``, ``size``), can share objects and arrays from
the root, and runs a :class:`~hpcml.schedule.Plan`. :class:`SerialEngine` runs everything in
this process (a laptop, a debugger, a test); :class:`hpcml._mpi.MPIEngine` spreads chunks
over MPI ranks. Future engines (joblib backends: Dask, Ray, Spark) implement the same class.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from .fitting import FitResult
from .progress import Progress
from .schedule import Plan

__all__ = ["Engine", "SerialEngine", "get_engine"]

RunTask = Callable[[int], FitResult]
OnResult = Callable[[FitResult], None]
ShouldStop = Callable[[], bool]


class Engine(ABC):
    """What an experiment needs from the machinery that runs it."""

    rank: int = 0
    size: int = 1
    #: Whether the last :meth:`run` stopped early on a stop request (same on every rank).
    interrupted: bool = False

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @abstractmethod
    def bcast(self, obj: Any) -> Any:
        """The root's ``obj`` on every rank (pickled; keep it small)."""

    @abstractmethod
    def bcast_array(self, arr: Any) -> Any:
        """The root's numpy array on every rank, sent as a raw buffer."""

    @abstractmethod
    def run(
        self,
        plan: Plan,
        run_task: RunTask,
        progress: Progress | None = None,
        on_result: OnResult | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult] | None:
        """Run every task of ``plan``; all results on the root, ``None`` elsewhere.

        ``on_result`` sees each result on the rank that made it, as soon as it is made (the
        journal). When ``should_stop()`` turns true on any rank, every rank stops taking
        tasks, the finished results are still returned and :attr:`interrupted` is set.
        """

    def wait_for_root(self) -> None:
        """Block until the root calls :meth:`release` (without spinning a core)."""
        return None

    def release(self) -> None:
        """Let the ranks waiting in :meth:`wait_for_root` go on (root only)."""
        return None

    def close(self) -> None:
        """Release what the engine holds (e.g. shared memory); collective."""
        return None

    def layout(self) -> dict[str, Any]:
        """Where the ranks are: ``ranks_on_node``, ``host``, ``hosts``, ``n_nodes`` (collective)."""
        import socket

        host = socket.gethostname()
        return {"rank": 0, "size": 1, "ranks_on_node": 1, "host": host, "hosts": [host],
                "n_nodes": 1}

    def info(self) -> dict[str, Any]:
        """Layout facts for ``run.json``."""
        return {"engine": type(self).__name__, "ranks": self.size}


class SerialEngine(Engine):
    """Every task in this process, in plan order."""

    def bcast(self, obj: Any) -> Any:
        return obj

    def bcast_array(self, arr: Any) -> Any:
        return arr

    def run(
        self,
        plan: Plan,
        run_task: RunTask,
        progress: Progress | None = None,
        on_result: OnResult | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult]:
        t0 = time.time()
        out: dict[int, FitResult] = {}
        self.interrupted = False
        est = plan.costs.estimates if plan.costs is not None else None
        work = 0.0
        for c in range(plan.n_chunks):
            for t in plan.chunk(c):
                if should_stop is not None and should_stop():
                    self.interrupted = True
                    break
                start = time.time() - t0
                r = run_task(int(t))
                r.start, r.end = start, time.time() - t0
                out[r.task] = r
                work += float(est[t]) if est is not None else 0.0
                if on_result is not None:
                    on_result(r)
            if progress is not None:
                progress.update(len(out), work=work)
            if self.interrupted:
                break
        if progress is not None:
            progress.close()
        return out


def get_engine(comm: Any = None) -> Engine:
    """An MPI engine over ``comm`` (default: the world), or serial when the world is one rank."""
    from . import _mpi

    if comm is None:
        _mpi.check_launch()
        comm = _mpi.world()
        if comm.Get_size() == 1:
            return SerialEngine()
    return _mpi.MPIEngine(comm)
