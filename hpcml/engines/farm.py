"""What the engines that farm tasks out (loky, Dask, Ray, Spark) share: one loop, four hooks.

These engines are not SPMD: the run lives in one process (a
:class:`~hpcml.engines.base.SerialWorld`) and sends chunks of the plan to workers, longest
first. :class:`FarmEngine` owns the loop: it submits a window of chunks, records each chunk's
results as it lands (journal, progress), polls the stop request between completions and
cancels the rest on a stop. A subclass says only how to start its workers, give them the
data once, and submit, wait for and cancel a chunk, the way joblib's ``ParallelBackendBase``
leaves those hooks to each backend. The workers run
:meth:`hpcml.search.evaluate.FitTasks.run_items`, which is picklable.

Nothing here imports numpy at module level, nor any optional package: each engine module
imports its own (``dask``, ``ray``, ``pyspark``), only when chosen.
"""

from __future__ import annotations

import concurrent.futures
import signal
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hpcml.engines.base import Engine, Observers, SerialWorld, ShouldStop, SourceStuck
from hpcml.errors import UsageError

if TYPE_CHECKING:
    from hpcml.core.fitting import FitResult
    from hpcml.core.schedule import Plan
    from hpcml.engines.base import RunTask, TaskSource
    from hpcml.search.evaluate import FitTasks

__all__ = ["FarmEngine", "keep_signal_handlers", "local_workers"]

#: Seconds between two looks at the stop request while no chunk completes.
POLL = 0.2
_HANDLED = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGUSR1", "SIGINT"))
                 if s is not None)


@contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Put back this process's signal handlers after the block (a cluster's start-up).

    ``ray.init()`` and ``SparkContext`` install their own SIGTERM/SIGINT handlers; the stop
    request of ``hpcml run`` (SIGTERM, SIGUSR1) must keep setting the stop flag.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in _HANDLED}
    try:
        yield
    finally:
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(s, handler)


def local_workers(workers: int | None) -> int:
    """Workers of a local cluster: ``workers``, else the usable cores of this machine."""
    if workers is not None:
        if int(workers) < 1:
            raise UsageError(f"workers must be at least 1 (got {workers})")
        return int(workers)
    from hpcml.core.threads import usable_cores

    return usable_cores()


class FarmEngine(Engine):
    """Runs a plan's chunks on workers outside this process and collects them as they land.

    Parameters
    ----------
    workers : int, optional
        Workers of a local cluster (default: the usable cores); with a remote cluster, its
        own size.
    threads : int, optional
        BLAS/OpenMP/joblib threads of each task on its worker (default 1).

    Attributes
    ----------
    interrupted : bool
        The last :meth:`run` stopped on a stop request; the chunks not finished were
        cancelled (their tasks are not in the results, and a resume runs them).
    """

    name = "farm"
    supports_timeout = False
    #: Chunks in flight per worker: enough to keep them busy, few to cancel on a stop.
    window_per_worker = 2

    def __init__(self, *, workers: int | None = None, threads: int | None = None) -> None:
        super().__init__(SerialWorld())
        if threads is not None and int(threads) < 1:
            raise UsageError(f"threads per task must be at least 1 (got {threads})")
        self.threads = int(threads) if threads is not None else 1
        self._workers = workers
        self.started = False
        self._shared: dict[str, Any] | None = None

    # -- hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _start(self) -> None:
        """Start or connect to the workers (called once, signal handlers kept)."""

    @abstractmethod
    def _share(self, arrays: dict[str, Any]) -> dict[str, Any]:
        """Give the workers ``arrays`` once; return handles that :meth:`_submit` can send."""

    @abstractmethod
    def _submit(self, tasks: Any, items: Sequence[int], data: dict[str, Any], t0: float) -> Any:
        """Start ``tasks.run_items(items, X, y, t0)`` on a worker; return a handle.

        ``tasks`` is what :meth:`_prepare` returned for the :class:`FitTasks`.
        """

    @abstractmethod
    def _wait(self, pending: list[Any], timeout: float) -> list[Any]:
        """The handles of ``pending`` that are done, waiting at most ``timeout`` seconds."""

    @abstractmethod
    def _result(self, handle: Any) -> list[FitResult]:
        """The results of a finished handle (raises the worker's exception)."""

    @abstractmethod
    def _cancel(self, pending: list[Any]) -> None:
        """Cancel the handles not done (a stop request, or an error)."""

    def _prepare(self, tasks: FitTasks) -> Any:
        """Give the workers the :class:`FitTasks` once (default: send it with each chunk)."""
        return tasks

    def _stop_workers(self) -> None:
        """Shut down what :meth:`_start` started (not a cluster this engine only joined)."""
        return None

    # -- the engine ------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """Tasks running at once: the cluster's slots once started, else the local count."""
        return local_workers(self._workers)

    def start(self) -> None:
        """Start (or join) the workers, keeping this process's signal handlers."""
        if not self.started:
            with keep_signal_handlers():
                self._start()
            self.started = True

    def share(self, **arrays: Any) -> dict[str, Any]:
        """Give the workers the arrays once (scatter, ``ray.put``, a broadcast); handles."""
        self.start()
        return self._share(arrays)

    def options(self) -> dict[str, Any]:
        """The engine's settings, for ``run.json``."""
        return {"workers": self.workers, "threads_per_task": self.threads}

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, "ranks": self.workers, "options": self.options()}

    def close(self) -> None:
        if self.started:
            self.started = False
            self._stop_workers()

    def run(  # noqa: D102 - see Engine.run
        self,
        plan: Plan,
        run_task: RunTask,
        observers: Observers | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult]:
        from hpcml.search.evaluate import BoundTasks

        if not isinstance(run_task, BoundTasks):
            raise UsageError(
                f"the {self.name} engine runs hpcml's own fit tasks only (a BoundTasks from "
                "evaluate_grid), not an arbitrary callable"
            )
        self.start()
        obs = observers or Observers()
        stop = should_stop or (lambda: False)
        self.interrupted = False
        est = plan.costs.estimates if plan.costs is not None else None
        tasks = run_task.tasks
        tasks.threads = self.threads
        out: dict[int, FitResult] = {}
        slots: dict[int, int] = {}
        work = 0.0
        try:
            if stop():
                self.interrupted = True
                return out
            chunks = [plan.chunk(c) for c in range(plan.n_chunks)]
            for items, results in self._stream(tasks, chunks, run_task.data, stop):
                for r in results:
                    r.rank = slots.setdefault(r.rank, len(slots))  # worker pid -> 0, 1, ...
                    out[r.task] = r
                    obs.result(r)
                work += float(est[items].sum()) if est is not None else 0.0
                obs.update(len(out), work=work)
                if stop():
                    break
            # A stop seen here or while waiting (the stream then ends early).
            self.interrupted = stop() and len(out) < sum(len(c) for c in chunks)
        finally:
            obs.close()
        return out

    def run_source(  # noqa: D102 - see Engine.run_source
        self,
        source: TaskSource | None,
        run_task: RunTask,
        observers: Observers | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult]:
        """One task per worker in flight: each result goes to ``source`` as it lands and the
        freed worker gets ``source.next_task()`` (so the source decides with every result
        known that can be)."""
        from hpcml.search.evaluate import BoundTasks

        if not isinstance(run_task, BoundTasks):
            raise UsageError(f"the {self.name} engine runs hpcml's own fit tasks only")
        self.start()
        obs = observers or Observers()
        stop = should_stop or (lambda: False)
        self.interrupted = False
        tasks = run_task.tasks
        tasks.threads = self.threads
        remote = self._prepare(tasks)
        t0 = time.time()
        out: dict[int, FitResult] = {}
        slots: dict[int, int] = {}
        pending: dict[Any, int] = {}
        try:
            while True:
                while not stop() and len(pending) < max(self.workers, 1):
                    t = source.next_task()
                    if t is None:
                        break
                    pending[self._submit(remote, [int(t)], run_task.data, t0)] = int(t)
                if stop():
                    self.interrupted = not source.done
                    return out
                if not pending:
                    if source.done:
                        return out
                    raise SourceStuck("the task source has nothing to start, nothing is "
                                      "running, and it is not done")
                for handle in self._wait(list(pending), POLL):
                    pending.pop(handle)
                    for r in self._result(handle):
                        r.rank = slots.setdefault(r.rank, len(slots))
                        out[r.task] = r
                        obs.result(r)
                        source.report(r)
                    obs.update(len(out))
        finally:
            if pending:
                self._cancel(list(pending))
            obs.close()

    def _stream(self, tasks: FitTasks, chunks: list[Any], data: dict[str, Any],
                stop: ShouldStop) -> Iterator[tuple[Any, list[FitResult]]]:
        """``(items, results)`` of each chunk as it completes; cancels the rest when closed.

        A window of chunks is in flight, submitted in plan order (longest first); between
        completions the stop request is polled every :data:`POLL` seconds.
        """
        remote = self._prepare(tasks)
        t0 = time.time()
        window = max(self.workers * self.window_per_worker, 1)
        pending: dict[Any, Any] = {}  # handle -> its items, in submission order
        following = iter(chunks)
        try:
            while True:
                while len(pending) < window:
                    items = next(following, None)
                    if items is None:
                        break
                    pending[self._submit(remote, [int(i) for i in items], data, t0)] = items
                if not pending:
                    return
                done = self._wait(list(pending), POLL)
                if not done and stop():
                    return
                for handle in done:
                    yield pending.pop(handle), self._result(handle)
        finally:
            if pending:
                self._cancel(list(pending))


class FuturesFarm(FarmEngine):
    """A farm whose handles are :class:`concurrent.futures.Future` objects (loky, Spark)."""

    def _wait(self, pending: list[Any], timeout: float) -> list[Any]:
        done, _ = concurrent.futures.wait(pending, timeout=timeout,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        return [f for f in pending if f in done]

    def _result(self, handle: Any) -> list[FitResult]:
        return handle.result()

    def _cancel(self, pending: list[Any]) -> None:
        for f in pending:
            f.cancel()  # running ones finish (or end with the pool or session at close)
