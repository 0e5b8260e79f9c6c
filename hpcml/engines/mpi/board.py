"""The MPI-3 windows that schedule work: a claim counter (:class:`WorkCounter`) and a plan
that re-plans itself with measured costs (:class:`PlanBoard`)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from hpcml.core.schedule import Plan, replan_due
from hpcml.engines.mpi.world import abort_on_error, sleepy_barrier

if TYPE_CHECKING:
    from hpcml.core.progress import Progress

__all__ = ["WorkCounter", "PlanBoard", "STOPPED"]

#: Claim-counter value that means "stop": far past any chunk number.
STOPPED = 1 << 60


class WorkCounter:
    """Dynamic self-scheduling: a shared "next item" counter and a "done" counter on rank 0.

    Collective to open (``with WorkCounter(comm, progress) as counter``) and to close. Inside,
    any rank calls :meth:`claim` to take the next item number (one MPI-3 atomic
    fetch-and-add, no dispatcher rank) and :meth:`add_done` when it has finished items; rank 0
    shows the done count on ``progress``. Leaving the block waits (without spinning) for all
    ranks; an exception inside it aborts the whole job with this rank's traceback, since the
    other ranks would otherwise wait for it forever.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        The ranks that share the work.
    progress : Progress, optional
        Shown by rank 0 from a background thread.
    """

    def __init__(self, comm: Any, progress: Progress | None = None, slots: int = 1) -> None:
        import numpy as np
        from mpi4py import MPI

        self.comm, self.rank = comm, comm.Get_rank()
        self._MPI, self._np = MPI, np
        itemsize = MPI.INT64_T.Get_size()
        size = itemsize * slots if self.rank == 0 else 0
        self._claim = MPI.Win.Allocate(size, itemsize, comm=comm)
        # done window: [finished tasks, their estimated cost in microseconds] (progress, ETA)
        self._done = MPI.Win.Allocate(2 * itemsize if self.rank == 0 else 0, itemsize, comm=comm)
        if self.rank == 0:
            for win in (self._claim, self._done):
                np.frombuffer(win.tomemory(), dtype=np.int64)[:] = 0
            self._init_root(np.frombuffer(self._claim.tomemory(), dtype=np.int64))
        comm.Barrier()
        self._claim.Lock_all()
        self._done.Lock_all()
        self._one = np.ones(1, dtype=np.int64)
        self._got = np.zeros(1, dtype=np.int64)
        self._local_done = [0, 0]
        self.stopped = False
        self._last_poll = time.monotonic()
        self._watcher = None
        if self.rank == 0 and progress is not None:
            self._watcher = _Watcher(self._done, self._local_done, progress)
            self._watcher.start()

    def _init_root(self, board: Any) -> None:
        """Fill rank 0's claim window (``board[0]`` is the counter) before anyone claims."""

    def claim(self) -> int:
        """The next unclaimed item number (numbers grow past the end: stop there)."""
        MPI = self._MPI
        self._claim.Fetch_and_op([self._one, MPI.INT64_T], [self._got, MPI.INT64_T], 0, 0, MPI.SUM)
        self._claim.Flush(0)
        value = int(self._got[0])
        if value >= STOPPED:
            self.stopped = True
        return value

    def stop(self) -> None:
        """Stop every rank: push the counter past any item number (each sees it at its next claim)."""
        MPI = self._MPI
        big = self._np.array([STOPPED], dtype=self._np.int64)
        self._claim.Fetch_and_op([big, MPI.INT64_T], [self._got, MPI.INT64_T], 0, 0, MPI.MAX)
        self._claim.Flush(0)
        self.stopped = True

    def poll_stop(self, every: float = 1.0) -> bool:
        """Whether another rank stopped the work (checked at most every ``every`` seconds)."""
        if self.stopped:
            return True
        now = time.monotonic()
        if now - self._last_poll < every:
            return False
        self._last_poll = now
        MPI = self._MPI
        zero = self._np.zeros(1, dtype=self._np.int64)
        self._claim.Fetch_and_op([zero, MPI.INT64_T], [self._got, MPI.INT64_T], 0, 0, MPI.NO_OP)
        self._claim.Flush(0)
        self.stopped = int(self._got[0]) >= STOPPED
        return self.stopped

    def add_done(self, n: int, work: float = 0.0) -> None:
        """Count ``n`` more finished tasks, of estimated cost ``work`` seconds (for progress)."""
        micro = int(round(work * 1e6))
        if self.rank == 0:
            self._local_done[0] += n
            self._local_done[1] += micro
            return
        MPI = self._MPI
        count = self._np.array([n, micro], dtype=self._np.int64)
        self._done.Accumulate([count, MPI.INT64_T], 0, 0, MPI.SUM)
        self._done.Flush(0)

    def __enter__(self) -> WorkCounter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            if self._watcher is not None:
                self._watcher.stop()
            with abort_on_error(self.comm):
                raise exc
        self._claim.Unlock_all()
        sleepy_barrier(self.comm)  # rank 0 keeps showing progress while the last items finish
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.finish()
        self._done.Unlock_all()
        self._claim.Free()
        self._done.Free()
        self._free()

    def _free(self) -> None:
        """Free what a subclass added (called once the ranks are past the final barrier)."""


#: Bits of the claim word that count chunks; the bits above them number the plan's version.
_GEN_SHIFT = 40
_COUNT_MASK = (1 << _GEN_SHIFT) - 1


class PlanBoard(WorkCounter):
    """Claims of a :class:`~hpcml.core.schedule.Plan` that re-plans itself with measured costs.

    Rank 0's window holds the claim word (plan version << 40 | next chunk), a re-plan flag
    and two copies of the plan (chunk count, bounds, order); another window holds each
    claimed position's measured seconds. A claim is a fetch-and-add on the word, then a read
    of the chunk from the copy of that version. No locks, so claims never wait for rank 0 to
    call MPI (MPICH's passive-target locks do).

    At claims ``2P, 4P, 8P, ...`` (:func:`~hpcml.core.schedule.replan_due`) the claiming rank
    re-plans, if no other rank is re-planning (a compare-and-swap on the flag) and its claim
    is of the current version. It reads the plan and the times measured so far, re-plans the
    chunks from ``q`` on (:func:`~hpcml.core.schedule.replan`; ``q`` is past the chunks it
    expects to be claimed meanwhile), writes the chunks from its own claim ``c`` on into the
    other copy, and switches versions with a compare-and-swap on the word that succeeds only
    while the counter has not passed ``q``. Claims of the new version are of chunks ``>= c``,
    all written; a claim made before the switch reads the old copy, untouched; the other
    copy's chunks below ``c`` are read by no one (claims two versions old were all below
    ``c``). If the counter got to ``q`` first, the re-plan is dropped. Plans without a cost
    model (``plan.costs is None``) never re-plan.
    """

    def __init__(self, comm: Any, plan: Plan, progress: Progress | None = None,
                 t0: float | None = None) -> None:
        n = len(plan.order)
        self.plan, self.n = plan, n
        self.learn = plan.costs is not None
        self._copy = 1 + (n + 1) + n  # n_chunks, bounds, order
        self.t0 = time.time() if t0 is None else t0
        self.replans = 0
        super().__init__(comm, progress, slots=2 + 2 * self._copy)
        MPI, np = self._MPI, self._np
        itemsize = MPI.DOUBLE.Get_size()
        size = itemsize * max(n, 1) if (self.rank == 0 and self.learn) else 0
        self._times = MPI.Win.Allocate(size, itemsize, comm=comm)
        if self.rank == 0 and self.learn:
            np.frombuffer(self._times.tomemory(), dtype=np.float64)[:] = -1.0
        comm.Barrier()
        self._times.Lock_all()
        self._head = np.zeros(3, dtype=np.int64)  # chunk count, chunk start, chunk end
        self._last: tuple[int, int] | None = None

    def _base(self, gen: int) -> int:
        """Where the copy of plan version ``gen`` starts in the window."""
        return 2 + (gen % 2) * self._copy

    def _init_root(self, board: Any) -> None:
        n, plan = self.n, self.plan
        for gen in (0, 1):
            base = self._base(gen)
            board[base] = plan.n_chunks
            board[base + 1 : base + 1 + len(plan.bounds)] = plan.bounds
            board[base + 2 + n : base + 2 + 2 * n] = plan.order

    def next_chunk(self) -> Any:
        """The task numbers of the next chunk, or ``None`` when none is left (or stopped)."""
        MPI, np = self._MPI, self._np
        win, n = self._claim, self.n
        win.Fetch_and_op([self._one, MPI.INT64_T], [self._got, MPI.INT64_T], 0, 0, MPI.SUM)
        win.Flush(0)
        word = int(self._got[0])
        if word >= STOPPED:
            self.stopped = True
            return None
        gen, c = word >> _GEN_SHIFT, word & _COUNT_MASK
        base = self._base(gen)
        head = self._head
        win.Get([head[:1], MPI.INT64_T], 0, base)
        if c < n:
            win.Get([head[1:], MPI.INT64_T], 0, base + 1 + c)
        win.Flush(0)
        if c >= head[0]:
            return None
        lo, hi = int(head[1]), int(head[2])
        chunk = np.empty(hi - lo, dtype=np.int64)
        win.Get([chunk, MPI.INT64_T], 0, base + 2 + n + lo)
        win.Flush(0)
        self._last = (lo, hi)
        if self.learn and replan_due(c, self.comm.Get_size()) and self._swap(1, 0, 1) == 0:
            try:
                self._replan(gen, c)
            finally:
                self._swap(1, 1, 0)
        return chunk

    def publish(self, seconds: Any) -> None:
        """Measured seconds of the tasks of the chunk last returned, in its order."""
        if not self.learn or self._last is None:
            return
        MPI, np = self._MPI, self._np
        lo, hi = self._last
        secs = np.ascontiguousarray(seconds, dtype=np.float64)[: hi - lo]
        self._times.Accumulate([secs, MPI.DOUBLE], 0, lo, MPI.REPLACE)
        self._times.Flush_local(0)  # no wait for rank 0: a re-plan may miss the newest times

    def _swap(self, slot: int, expect: int, value: int) -> int:
        """Compare-and-swap on rank 0's ``slot``: what it held (``expect`` if it swapped)."""
        MPI, np = self._MPI, self._np
        got = np.zeros(1, dtype=np.int64)
        self._claim.Compare_and_swap(
            [np.array([value], dtype=np.int64), MPI.INT64_T],
            [np.array([expect], dtype=np.int64), MPI.INT64_T],
            [got, MPI.INT64_T], 0, slot,
        )
        self._claim.Flush(0)
        return int(got[0])

    def _replan(self, gen: int, c: int) -> None:
        """Re-plan from past claim ``c`` of version ``gen`` (holding the re-plan flag)."""
        from hpcml.core.schedule import replan, replan_start

        MPI, np = self._MPI, self._np
        win, n = self._claim, self.n
        word = self._swap(0, -1, -1)  # a read: the word is never -1
        if word >= STOPPED or word >> _GEN_SHIFT != gen:
            return  # another rank switched versions since this claim
        base = self._base(gen)
        head = np.zeros(1, dtype=np.int64)
        win.Get([head, MPI.INT64_T], 0, base)
        win.Flush(0)
        n_chunks = int(head[0])
        bounds = np.empty(n_chunks + 1, dtype=np.int64)
        order = np.empty(n, dtype=np.int64)
        times = np.empty(n, dtype=np.float64)
        win.Get([bounds, MPI.INT64_T], 0, base + 1)
        win.Get([order, MPI.INT64_T], 0, base + 2 + n)
        win.Flush(0)
        unused = np.zeros(n, dtype=np.float64)  # NO_OP ignores it, but its count is the count
        self._times.Get_accumulate([unused, MPI.DOUBLE], [times, MPI.DOUBLE], 0, 0, MPI.NO_OP)
        self._times.Flush(0)
        plan = Plan(order, bounds, self.plan.costs, self.plan.n_workers, self.plan.grain)
        q = replan_start(plan, c, time.time() - self.t0, self.comm.Get_size())
        if q is None:
            return
        done = np.flatnonzero(times >= 0)
        new = replan(plan, q, plan.costs.learn(order[done], times[done]))
        # The other copy, from this rank's own chunk c on (see the class docstring).
        other, lo = self._base(gen + 1), int(new.bounds[c])
        win.Put([np.array([new.n_chunks], dtype=np.int64), MPI.INT64_T], 0, other)
        win.Put([np.ascontiguousarray(new.bounds[c:]), MPI.INT64_T], 0, other + 1 + c)
        win.Put([np.ascontiguousarray(new.order[lo:]), MPI.INT64_T], 0, other + 2 + n + lo)
        win.Flush(0)
        # Switch versions while nobody has claimed chunk q.
        while not (word >= STOPPED or word >> _GEN_SHIFT != gen or word & _COUNT_MASK > q):
            seen = self._swap(0, word, ((gen + 1) << _GEN_SHIFT) | (word & _COUNT_MASK))
            if seen == word:
                self.replans += 1
                return
            word = seen

    def _free(self) -> None:
        self._times.Unlock_all()
        self._times.Free()


class _Watcher(threading.Thread):
    """Rank 0's progress thread: reads the shared done counter and redraws the display.

    Its MPI calls also drive rank 0's progress engine, so other ranks' atomic claims complete
    while rank 0's main thread is busy in a long native fit.
    """

    def __init__(self, win: Any, local_done: list[int], progress: Progress) -> None:
        super().__init__(name="hpcml-progress", daemon=True)
        self.win, self.local_done, self.progress = win, local_done, progress
        self._stop_event = threading.Event()

    def read(self) -> tuple[int, float]:
        """Finished tasks and their estimated seconds, over all ranks."""
        import numpy as np
        from mpi4py import MPI

        unused = np.zeros(2, dtype=np.int64)
        got = np.zeros(2, dtype=np.int64)
        self.win.Get_accumulate([unused, MPI.INT64_T], [got, MPI.INT64_T], 0, 0, MPI.NO_OP)
        self.win.Flush(0)
        return (int(got[0]) + self.local_done[0],
                (int(got[1]) + self.local_done[1]) / 1e6)

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            done, work = self.read()
            self.progress.update(done, work=work)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def finish(self) -> None:
        done, work = self.read()
        self.progress.update(done, work=work)
        self.progress.close()
