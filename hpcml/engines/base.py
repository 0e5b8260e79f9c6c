"""The two seams of where work runs: a :class:`World` and an :class:`Engine`.

A **world** is the set of SPMD processes that run the same program: its rank and size,
broadcasts, a barrier, where the ranks are (:meth:`World.layout`) and :meth:`World.agree`,
which makes a step fail on every rank or on none. :class:`SerialWorld` is one process;
:class:`hpcml.engines.mpi.world.MPIWorld` is the MPI ranks.

An **engine** executes a :class:`~hpcml.core.schedule.Plan` of fit tasks and reports to
observers (journal, progress, status) as results land. :class:`SerialEngine` runs every task
in this process; the MPI engine spreads chunks over the ranks of its world; engines that are
not SPMD (Dask, Ray, Spark) run in one process of a :class:`SerialWorld` and farm the tasks
out. An engine is found by name through :func:`hpcml.engines.get_engine`.

Nothing here imports numpy: a rank imports this module before MPI starts.
"""

from __future__ import annotations

import pickle
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:  # numpy-free at run time: see the module docstring
    from hpcml.core.fitting import FitResult
    from hpcml.core.schedule import Plan

__all__ = ["World", "SerialWorld", "Engine", "SerialEngine", "Observers", "RankError",
           "TaskSource", "SourceStuck", "report_error", "rebuild_error"]

T = TypeVar("T")
RunTask = Callable[[int], "FitResult"]
ShouldStop = Callable[[], bool]


class TaskSource(Protocol):
    """Tasks made while others run (an asynchronous search such as ASHA); on the root only.

    An engine's :meth:`Engine.run_source` asks :meth:`next_task` whenever a worker is free
    and hands each result back to :meth:`report` as it lands, from one thread at a time.
    """

    def next_task(self) -> int | None:
        """The next task for a free worker (an argument of ``run_task``); ``None``: none
        now (ask again after the next :meth:`report`)."""

    def report(self, result: FitResult) -> None:
        """A task handed out by :meth:`next_task` has finished."""

    @property
    def done(self) -> bool:
        """Nothing running and nothing left to start: the run is over."""


class SourceStuck(RuntimeError):
    """A task source that has nothing to start while nothing runs, yet is not done."""


class RankError(RuntimeError):
    """An exception of another rank that could not be rebuilt here (same message)."""


class World(ABC):
    """The SPMD processes of one job: every method is collective unless it says otherwise."""

    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0 (not collective)."""
        return self.rank == 0

    @abstractmethod
    def bcast(self, obj: Any) -> Any:
        """The root's ``obj`` on every rank (pickled; keep it small)."""

    @abstractmethod
    def bcast_array(self, arr: Any) -> Any:
        """The root's numpy array on every rank (one read-only copy per node where it can)."""

    @abstractmethod
    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""

    @abstractmethod
    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on the root (``None`` elsewhere)."""

    def barrier(self) -> None:
        """Wait for every rank."""
        self.allgather(None)

    def wait_for_root(self) -> None:
        """Block until the root calls :meth:`release` (without spinning a core)."""
        if not self.is_root:
            self.barrier()

    def release(self) -> None:
        """Let the ranks waiting in :meth:`wait_for_root` go on (root only)."""
        if self.is_root:
            self.barrier()

    def layout(self) -> dict[str, Any]:
        """Where the ranks are: ``ranks_on_node``, ``host``, ``hosts``, ``n_nodes``."""
        host = socket.gethostname()
        return {"rank": self.rank, "size": self.size, "ranks_on_node": 1, "node_rank": 0,
                "host": host, "hosts": [host], "n_nodes": 1}

    def close(self) -> None:
        """Release what the world holds (shared memory, communicators); arrays die."""
        return None

    def agree(self, step: Callable[[], T], *, on_root: bool = False) -> T:
        """Run ``step`` so that it fails on every rank or on none.

        Parameters
        ----------
        step : callable
            Run on every rank, or only on the root with ``on_root=True`` (its value is then
            broadcast: keep it small, or share arrays with :meth:`bcast_array` after; the
            other ranks wait without spinning their cores).
        on_root : bool
            Run ``step`` on the root only.

        Returns
        -------
        The step's value (the root's, with ``on_root``).

        Raises
        ------
        Exception
            When ``step`` raised on any rank, the exception of the lowest such rank, on every
            rank: the same type and message (the rank that raised it re-raises its own, with
            its traceback). A ``BaseException`` that is not an ``Exception`` (an interrupt)
            is not caught: the job's abort handler ends every rank.

        Examples
        --------
        >>> SerialWorld().agree(lambda: 41 + 1)
        42
        """
        value: Any = None
        error: BaseException | None = None
        if not on_root or self.is_root:
            try:
                value = step()
            except Exception as exc:
                error = exc
        if on_root and self.size > 1:  # the others wait without spinning (a refit is long)
            self.release() if self.is_root else self.wait_for_root()
        reports = self.allgather(None if error is None else report_error(error, self.rank))
        first = next((r for r in reports if r is not None), None)
        if first is not None:
            exc = error if error is not None and first[0] == self.rank else rebuild_error(first)
            exc.hpcml_collective = True  # raised on every rank: no abort needed (run.rank)
            raise exc
        return self.bcast(value) if on_root and self.size > 1 else value


def report_error(exc: BaseException, rank: int) -> tuple[int, bytes | None, str, str]:
    """What other ranks need to raise the same exception: pickled if it can be."""
    try:
        blob: bytes | None = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:
        blob = None
    return rank, blob, f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc)


def rebuild_error(report: tuple[int, bytes | None, str, str]) -> BaseException:
    rank, blob, kind, message = report
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = pickle.loads(blob)
        except Exception:
            exc = None
    if exc is None:
        exc = RankError(f"{kind} on rank {rank}: {message}")
    return exc


class SerialWorld(World):
    """A world of this one process."""

    def bcast(self, obj: Any) -> Any:
        return obj

    def bcast_array(self, arr: Any) -> Any:
        return arr

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        return None


class Observers:
    """Who watches a run: each result as it lands, and the progress counts on the root.

    An observer is any object with some of ``result(r)`` (on the rank that made ``r``),
    ``update(done, force=False, work=None)`` (the root: finished tasks and their estimated
    seconds) and ``close()``. :class:`~hpcml.core.progress.Progress` is one; the journal is
    a plain callable wrapped with :meth:`on_result`.
    """

    def __init__(self, observers: Iterable[Any] = ()) -> None:
        self.observers = [o for o in observers if o is not None]

    @classmethod
    def on_result(cls, fn: Callable[[FitResult], None]) -> Any:
        """An observer that calls ``fn`` with each result."""
        return _ResultCallback(fn)

    def result(self, r: FitResult) -> None:
        for o in self.observers:
            if hasattr(o, "result"):
                o.result(r)

    def update(self, done: int, force: bool = False, work: float | None = None) -> None:
        for o in self.observers:
            if hasattr(o, "update"):
                o.update(done, force=force, work=work)

    def close(self) -> None:
        for o in self.observers:
            if hasattr(o, "close"):
                o.close()

    @property
    def watches_progress(self) -> bool:
        """Whether any observer wants progress counts."""
        return any(hasattr(o, "update") for o in self.observers)


class _ResultCallback:
    def __init__(self, fn: Callable[[FitResult], None]) -> None:
        self.result = fn


class Engine(ABC):
    """Executes a plan of fit tasks; the task list, journal and results do not care how.

    Attributes
    ----------
    world : World
        The SPMD world the engine runs in (a :class:`SerialWorld` for engines that are not
        SPMD). The run's collectives (data, folds, results) go through it.
    interrupted : bool
        Whether the last :meth:`run` stopped early on a stop request (same on every rank).
    """

    name: str = "engine"
    interrupted: bool = False
    #: Seconds of estimated work per chunk of the plan at least (``None``: the scheduler's
    #: default); engines whose dispatch costs more (a Spark job per chunk) ask for more.
    grain: float | None = None
    #: Whether the run's ``fit_timeout`` works on this engine (a fit stopped in a child).
    supports_timeout: bool = True

    def __init__(self, world: World | None = None) -> None:
        self.world = world if world is not None else SerialWorld()

    @abstractmethod
    def run(
        self,
        plan: Plan,
        run_task: RunTask,
        observers: Observers | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult] | None:
        """Run every task of ``plan``: all results on the root, ``None`` on other ranks.

        ``observers`` see each result on the rank that made it, as soon as it is made (the
        journal), and progress counts on the root. When ``should_stop()`` turns true on any
        rank, every rank stops taking tasks, the finished results are still returned and
        :attr:`interrupted` is set.
        """

    def run_source(
        self,
        source: TaskSource | None,
        run_task: RunTask,
        observers: Observers | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult] | None:
        """Run the tasks ``source`` hands out until it is :attr:`~TaskSource.done`.

        Like :meth:`run`, but the tasks are not known in advance: whenever a worker is free
        it gets ``source.next_task()`` (on the root; ``source`` is ``None`` elsewhere), and
        each result goes to ``source.report`` as soon as it lands, so no worker waits for
        others at a round barrier. Observers, the stop request and the return value are as
        for :meth:`run`.
        """
        raise NotImplementedError(f"the {self.name} engine cannot run tasks made as it runs")

    @property
    def workers(self) -> int:
        """How many tasks run at once (the plan is cut for them): the world's ranks."""
        return self.world.size

    def share(self, **arrays: Any) -> dict[str, Any]:
        """Give the workers the run's arrays once (before :meth:`run`); returns handles.

        Engines that move data to workers (Dask's scatter, ``ray.put``) override this and
        resolve the handles inside tasks; the default keeps the arrays as they are.
        """
        return arrays

    def info(self) -> dict[str, Any]:
        """Facts for ``run.json``."""
        return {"engine": self.name, "ranks": self.world.size}

    def close(self) -> None:
        """Release what the engine holds (workers, clusters); not the world."""
        return None


class SerialEngine(Engine):
    """Every task in this process, in plan order."""

    name = "serial"

    def run(
        self,
        plan: Plan,
        run_task: RunTask,
        observers: Observers | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult]:
        obs = observers or Observers()
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
                obs.result(r)
            obs.update(len(out), work=work)
            if self.interrupted:
                break
        obs.close()
        return out

    def run_source(  # noqa: D102 - see Engine.run_source
        self,
        source: TaskSource | None,
        run_task: RunTask,
        observers: Observers | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult]:
        obs = observers or Observers()
        t0 = time.time()
        out: dict[int, FitResult] = {}
        self.interrupted = False
        try:
            while True:
                if should_stop is not None and should_stop():
                    self.interrupted = not source.done
                    break
                t = source.next_task()
                if t is None:
                    if source.done:
                        break
                    raise SourceStuck("the task source has nothing to start, nothing is "
                                      "running, and it is not done")
                start = time.time() - t0
                r = run_task(int(t))
                r.start, r.end = start, time.time() - t0
                out[r.task] = r
                obs.result(r)
                source.report(r)
                obs.update(len(out))
        finally:
            obs.close()
        return out
