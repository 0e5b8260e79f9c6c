"""Tasks made while others run, over MPI: rank 0 serves task requests from a thread.

The static plan of :class:`~hpcml.engines.mpi.board.PlanBoard` cannot hold tasks that do not
exist yet (an ASHA promotion). Here the :class:`~hpcml.engines.base.TaskSource` lives on
rank 0, and

* every other rank loops: ask rank 0 for a task (tag :data:`ASK`, carrying the result of
  its last one and whether it was asked to stop), wait for the answer (tag :data:`GIVE`: a
  task, or ``-1``: no more), fit it, journal it;
* on rank 0 a server thread answers the asks as they come, so a rank never waits for
  rank 0's own fit to end; a request that finds nothing to start now is held until a result
  (of any rank) lets the source start something, or the source is done;
* rank 0's main thread fits too, taking its tasks from the same source under the same lock.

No rank waits at a barrier between tasks: only the ask/answer pair, ~tens of µs plus the
server's poll (at most :data:`POLL` s). The server thread is the only one that calls MPI while
the tasks run, so MPI's ``THREAD_SERIALIZED`` is enough; with a lower thread level rank 0
serves from its main thread and does not fit. A stop request on any rank reaches rank 0 with
that rank's next ask; rank 0 answers every later ask with ``-1``. Results reach rank 0 with
the asks (each rank journals its own first), so no gather is needed at the end.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from hpcml.engines.base import Observers, ShouldStop, SourceStuck, TaskSource

if TYPE_CHECKING:
    from hpcml.core.fitting import FitResult
    from hpcml.engines.base import RunTask

__all__ = ["run_source", "ASK", "GIVE"]

ASK, GIVE = 21, 22
#: Longest sleep, in seconds, of the server between two polls.
POLL = 0.002


class _Server:
    """Rank 0's side: the source, the results, and the ranks waiting for a task."""

    def __init__(self, comm: Any, source: TaskSource, obs: Observers) -> None:
        self.comm, self.source, self.obs = comm, source, obs
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.out: dict[int, FitResult] = {}
        self.stopped = False
        self.error: BaseException | None = None
        self.out_at: dict[int, int] = {}  # rank -> task it runs (rank 0 included)
        self.waiting: list[int] = []  # ranks whose ask is not answered yet
        self.ended: set[int] = set()

    # -- under the lock --------------------------------------------------------------

    def take(self, rank: int) -> int | None:
        """A task for ``rank``; ``None`` for now; ``-1``: no more."""
        if self.stopped or self.error is not None:
            return -1
        t = self.source.next_task()
        if t is not None:
            self.out_at[rank] = int(t)
            return int(t)
        if self.source.done:
            return -1
        if not self.out_at:
            self.error = SourceStuck("the task source has nothing to start, nothing is "
                                     "running, and it is not done")
            return -1
        return None

    def landed(self, rank: int, r: FitResult) -> None:
        self.out_at.pop(rank, None)
        self.out[r.task] = r
        self.source.report(r)
        self.obs.update(len(self.out))
        self.changed.notify_all()

    # -- the thread ------------------------------------------------------------------

    def serve(self) -> None:
        """Answer the other ranks until each has been told ``-1``."""
        from mpi4py import MPI

        from hpcml.engines.mpi.serve import probe, receive

        comm, status = self.comm, MPI.Status()
        others = comm.Get_size() - 1
        delay = 1e-5
        try:
            while len(self.ended) < others:
                busy = False
                while probe(comm, MPI.ANY_SOURCE, ASK, status):
                    result, stopping = receive(comm, status)
                    src = status.Get_source()
                    with self.lock:
                        if result is not None:
                            self.landed(src, result)
                        if stopping:
                            self.stopped = True
                            self.changed.notify_all()
                        self.waiting.append(src)
                    busy = True
                with self.lock:
                    answers = []
                    for src in list(self.waiting):
                        t = self.take(src)
                        if t is not None:
                            self.waiting.remove(src)
                            answers.append((src, t))
                for src, t in answers:
                    comm.send(t, dest=src, tag=GIVE)
                    if t < 0:
                        self.ended.add(src)
                    busy = True
                delay = 1e-5 if busy else min(delay * 2, POLL)
                if not busy:
                    time.sleep(delay)
        except BaseException as exc:  # noqa: B036 - rank 0's main thread re-raises it
            with self.lock:
                self.error = exc
                self.changed.notify_all()


def run_source(comm: Any, source: TaskSource | None, run_task: RunTask, obs: Observers,
               should_stop: ShouldStop | None) -> tuple[dict[int, FitResult] | None, bool]:
    """Run ``source``'s tasks on every rank of ``comm`` (collective).

    Returns the results (on rank 0; ``None`` elsewhere) and whether a stop request ended
    the run early (on every rank).
    """
    from mpi4py import MPI
    from mpi4py.util import pkl5

    chan = pkl5.Intracomm(comm.Dup())  # its own messages (tasks and results), freed at the end
    rank = chan.Get_rank()
    stop = should_stop or (lambda: False)
    t0 = chan.bcast(time.time() if rank == 0 else None, root=0)
    try:
        if rank != 0:
            _work(chan, run_task, obs, stop, t0)
            interrupted = bool(chan.bcast(None, root=0))
            chan.Free()
            return None, interrupted
        server = _Server(chan, source, obs)
        if MPI.Query_thread() >= MPI.THREAD_SERIALIZED:
            thread = threading.Thread(target=server.serve, name="hpcml-source", daemon=True)
            thread.start()
            # A fit that raises here escapes at once (the job's abort handler ends every
            # rank), without waiting for the server thread.
            _fit_on_root(server, run_task, obs, stop, t0)
            thread.join()
        else:  # pragma: no cover - mpi4py asks for THREAD_MULTIPLE; MPICH gives it
            server.serve()
        if server.error is not None:
            raise server.error
        interrupted = server.stopped and not server.source.done
        chan.bcast(interrupted, root=0)
        chan.Free()
        return server.out, interrupted
    finally:
        obs.close()


def _fit_on_root(server: _Server, run_task: RunTask, obs: Observers, stop: ShouldStop,
                 t0: float) -> None:
    """Rank 0's main thread: fit the source's tasks too, until none is left."""
    while True:
        with server.lock:
            if stop():
                server.stopped = True
            t = server.take(0)
            while t is None:  # nothing to start now: wait for a result of another rank
                server.changed.wait(POLL * 25)
                if stop():
                    server.stopped = True
                t = server.take(0)
        if t < 0:
            return
        start = time.time() - t0
        r = run_task(t)
        r.rank, r.start, r.end = 0, start, time.time() - t0
        with server.lock:
            obs.result(r)
            server.landed(0, r)


def _work(chan: Any, run_task: RunTask, obs: Observers, stop: ShouldStop, t0: float) -> None:
    """A rank above 0: ask, fit, journal, until rank 0 answers ``-1``."""
    from hpcml.engines.mpi.serve import wait_message

    rank = chan.Get_rank()
    last = None
    while True:
        chan.send((last, bool(stop())), dest=0, tag=ASK)
        t, _ = wait_message(chan, 0, GIVE)
        if t < 0:
            return
        start = time.time() - t0
        r = run_task(int(t))
        r.rank, r.start, r.end = rank, start, time.time() - t0
        obs.result(r)
        last = r
