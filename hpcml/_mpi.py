"""All MPI plumbing of hpcml: the only module that imports mpi4py.

numpy is imported lazily here, so a rank can size its thread pools (``OMP_NUM_THREADS``)
from the node layout before numpy loads its BLAS.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

from .engine import Engine, OnResult, RunTask, ShouldStop
from .errors import UsageError
from .fitting import FitResult
from .progress import Progress
from .schedule import Plan, replan_due

__all__ = [
    "MPIEngine",
    "PlanBoard",
    "WorkCounter",
    "join_world",
    "abort_on_error",
    "check_launch",
    "node_layout",
    "world",
]

#: Largest message, in bytes, of one broadcast piece (well under MPI's 2 GiB int count).
CHUNK_BYTES = 1 << 30
#: Seconds between polls while a rank waits without spinning its core.
POLL = 0.002
#: Claim-counter value that means "stop": far past any chunk number.
STOPPED = 1 << 60


def world() -> Any:
    """``MPI.COMM_WORLD`` (initialising MPI on first use)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def check_launch(environ: dict | None = None, size: int | None = None) -> None:
    """Refuse a world of one rank when Slurm started several tasks (``srun`` with no MPI plugin).

    Raises
    ------
    UsageError
        Naming ``srun --mpi=pmi2`` (MPICH), ``srun --mpi=pmix`` (Open MPI) or ``mpiexec``.
    """
    from .launch import srun_message

    env = os.environ if environ is None else environ
    step_tasks = env.get("SLURM_STEP_NUM_TASKS") or ""
    if not step_tasks.isdigit() or int(step_tasks) <= 1 or not env.get("SLURM_STEP_ID", "").isdigit():
        return
    if size is None:
        size = world().Get_size()
    if size == 1:
        raise UsageError(srun_message(step_tasks))


def node_layout(comm: Any = None) -> dict[str, Any]:
    """Where the ranks are: this rank's node communicator size and the host list.

    Collective over ``comm``.
    """
    from mpi4py import MPI

    comm = world() if comm is None else comm
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    host = socket.gethostname()
    hosts = comm.allgather(host)
    layout = {
        "rank": comm.Get_rank(),
        "size": comm.Get_size(),
        "ranks_on_node": node.Get_size(),
        "node_rank": node.Get_rank(),
        "host": host,
        "hosts": sorted(set(hosts)),
        "n_nodes": len(set(hosts)),
    }
    node.Free()
    return layout


def join_world(threads_cli: int | None = None) -> tuple[Any, int]:
    """Start MPI for a rank of an ``hpcml`` command: ``(COMM_WORLD, threads per rank)``.

    Refuses ``srun`` without an MPI plugin (:class:`UsageError`), and sets
    ``OMP_NUM_THREADS`` and friends from the node layout before numpy is imported.
    """
    from .threads import thread_env, threads_per_rank

    comm = world()
    check_launch()
    layout = node_layout(comm)
    threads, _ = threads_per_rank(layout["ranks_on_node"], cli=threads_cli)
    os.environ.update(thread_env(threads))
    return comm, threads


def mpi_library_version() -> str:
    """The MPI library's own version line."""
    from mpi4py import MPI

    return MPI.Get_library_version().strip().splitlines()[0]


@contextlib.contextmanager
def abort_on_error(comm: Any = None) -> Iterator[None]:
    """Abort every rank when this one raises, after printing its traceback with rank and host.

    In a world of one rank the exception propagates normally (nobody else would hang).
    """
    comm = world() if comm is None else comm
    try:
        yield
    except BaseException as exc:
        if comm.Get_size() == 1 or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            raise
        rank, size = comm.Get_rank(), comm.Get_size()
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stdout.flush()
        sys.stderr.write(
            f"### hpcml: rank {rank} of {size} on {socket.gethostname()} failed; "
            f"aborting all ranks\n{text}"
        )
        sys.stderr.flush()
        comm.Abort(1)


def sleepy_barrier(comm: Any, poll: float = POLL) -> None:
    """A barrier that sleeps between polls instead of spinning the core (MPICH spins)."""
    req = comm.Ibarrier()
    delay = 1e-5
    while not req.Test():
        time.sleep(delay)
        delay = min(delay * 2, poll)


class MPIEngine(Engine):
    """Dynamic self-scheduling over MPI ranks; every rank fits, none dispatches.

    Rank 0 holds a shared counter in an MPI-3 window. A free rank takes the next chunk of the
    plan with one atomic fetch-and-add, runs its tasks, and adds its count to a second
    counter that rank 0 reads for the progress display. Results are gathered at the end.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        Defaults to ``COMM_WORLD``. It is duplicated, so hpcml's traffic never mixes with
        the caller's.
    """

    def __init__(self, comm: Any = None) -> None:
        self.comm = (world() if comm is None else comm).Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._windows: list[Any] = []
        self._node: Any = None
        self._leaders: Any = None
        #: Re-plans with measured costs that landed in the last :meth:`run` (every rank).
        self.replans = 0

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            from mpi4py import MPI

            if not MPI.Is_finalized():
                self.comm.Free()

    def bcast(self, obj: Any) -> Any:
        return self.comm.bcast(obj, root=0)

    def bcast_array(self, arr: Any) -> Any:
        """The root's array on every rank: one read-only copy per node, in shared memory.

        The node leaders receive the raw buffer (in pieces under 2 GiB) straight into an
        MPI-3 shared window (``Win.Allocate_shared`` on the node communicator); every rank
        of the node gets a read-only numpy view of the same pages. Object arrays (e.g. string
        labels) are pickled instead.
        """
        import numpy as np
        from mpi4py import MPI

        meta = None
        if self.rank == 0:
            if not isinstance(arr, np.ndarray):
                arr = np.asarray(arr)  # (keeps a memory map a memory map: see _fill)
            meta = (arr.shape, arr.dtype.str if arr.dtype.kind != "O" else None)
        shape, dtype = self.comm.bcast(meta, root=0)
        if dtype is None:  # object arrays: pickled
            return self.comm.bcast(arr if self.rank == 0 else None, root=0)
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes == 0:
            return np.empty(shape, dtype=dtype)
        node, leaders = self._node_comms()
        win = MPI.Win.Allocate_shared(nbytes if node.Get_rank() == 0 else 0, 1, comm=node)
        self._windows.append(win)
        buf, _ = win.Shared_query(0)
        out = np.ndarray(shape, dtype=dtype, buffer=buf)
        if node.Get_rank() == 0:
            if self.rank == 0:
                _fill(out, arr)
            raw = out.reshape(-1).view(np.uint8)
            for lo in range(0, raw.size, CHUNK_BYTES):
                leaders.Bcast(raw[lo : lo + CHUNK_BYTES], root=0)
        sleepy_barrier(node)
        out.flags.writeable = False
        return out

    def _node_comms(self) -> tuple[Any, Any]:
        """This node's communicator, and the communicator of node leaders (or ``None``)."""
        if self._node is None:
            from mpi4py import MPI

            self._node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
            leader = self._node.Get_rank() == 0
            self._leaders = self.comm.Split(0 if leader else MPI.UNDEFINED, key=self.rank)
        return self._node, self._leaders

    def close(self) -> None:
        """Free the shared-memory windows (collective; arrays from :meth:`bcast_array` die)."""
        for win in self._windows:
            win.Free()
        self._windows.clear()

    def wait_for_root(self) -> None:
        if self.rank != 0:
            sleepy_barrier(self.comm)

    def release(self) -> None:
        if self.rank == 0:
            sleepy_barrier(self.comm)

    def layout(self) -> dict[str, Any]:
        return node_layout(self.comm)

    def info(self) -> dict[str, Any]:
        return {"engine": "MPIEngine", "ranks": self.size, "mpi": mpi_library_version(),
                "replans": self.replans}

    def run(
        self,
        plan: Plan,
        run_task: RunTask,
        progress: Progress | None = None,
        on_result: OnResult | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult] | None:
        comm, rank = self.comm, self.rank
        t0 = comm.bcast(time.time() if rank == 0 else None, root=0)
        mine: list[FitResult] = []
        stop = should_stop or (lambda: False)
        with PlanBoard(comm, plan, progress, t0) as board:
            while not board.stopped and (chunk := board.next_chunk()) is not None:
                seconds = []
                for t in chunk:
                    if stop() or board.poll_stop():
                        board.stop()
                        break
                    start = time.time() - t0
                    r = run_task(int(t))
                    r.rank, r.start, r.end = rank, start, time.time() - t0
                    mine.append(r)
                    seconds.append(r.end - r.start)
                    if on_result is not None:
                        on_result(r)
                board.publish(seconds)
                board.add_done(len(seconds), _estimated(plan, chunk[: len(seconds)]))
                if stop():
                    board.stop()
        states = comm.allgather((board.stopped, board.replans))
        self.interrupted = any(stopped for stopped, _ in states)
        self.replans = sum(n for _, n in states)
        gathered = comm.gather(mine, root=0)
        if rank != 0:
            return None
        return {r.task: r for part in gathered for r in part}


def _estimated(plan: Plan, tasks: Any) -> float:
    """Estimated seconds of ``tasks`` (0 for a plan without a cost model)."""
    return float(plan.costs.estimates[tasks].sum()) if plan.costs is not None else 0.0


def _fill(out: Any, arr: Any) -> None:
    """Copy ``arr`` into ``out``; a C-ordered ``.npy`` memory map is read from its file in
    pieces instead, so its pages never count in this process's memory."""
    import numpy as np

    filename = getattr(arr, "filename", None)
    if isinstance(arr, np.memmap) and filename and arr.flags.c_contiguous \
            and arr.dtype == out.dtype and arr.shape == out.shape:
        raw = memoryview(out.reshape(-1).view(np.uint8))
        with open(filename, "rb") as f:
            f.seek(arr.offset)
            done = 0
            while done < len(raw):
                n = f.readinto(raw[done : done + CHUNK_BYTES])
                if not n:
                    raise OSError(f"{filename}: file ends before its array does")
                done += n
        return
    out[...] = arr


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
    """Claims of a :class:`~hpcml.schedule.Plan` that re-plans itself with measured costs.

    Rank 0's window holds the claim word (plan version << 40 | next chunk), a re-plan flag
    and two copies of the plan (chunk count, bounds, order); another window holds each
    claimed position's measured seconds. A claim is a fetch-and-add on the word, then a read
    of the chunk from the copy of that version. No locks, so claims never wait for rank 0 to
    call MPI (MPICH's passive-target locks do).

    At claims ``2P, 4P, 8P, ...`` (:func:`~hpcml.schedule.replan_due`) the claiming rank
    re-plans, if no other rank is re-planning (a compare-and-swap on the flag) and its claim
    is of the current version. It reads the plan and the times measured so far, re-plans the
    chunks from ``q`` on (:func:`~hpcml.schedule.replan`; ``q`` is past the chunks it
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
        from .schedule import replan, replan_start

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
