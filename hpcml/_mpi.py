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
from .schedule import Plan

__all__ = [
    "MPIEngine",
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
        return {"engine": "MPIEngine", "ranks": self.size, "mpi": mpi_library_version()}

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
        with WorkCounter(comm, progress) as counter:
            while not counter.stopped and (c := counter.claim()) < plan.n_chunks:
                chunk = plan.chunk(c)
                n = 0
                for t in chunk:
                    if stop() or counter.poll_stop():
                        counter.stop()
                        break
                    start = time.time() - t0
                    r = run_task(int(t))
                    r.rank, r.start, r.end = rank, start, time.time() - t0
                    mine.append(r)
                    n += 1
                    if on_result is not None:
                        on_result(r)
                counter.add_done(n)
                if stop():
                    counter.stop()
        self.interrupted = bool(comm.allreduce(counter.stopped, op=_mpi_max()))
        gathered = comm.gather(mine, root=0)
        if rank != 0:
            return None
        return {r.task: r for part in gathered for r in part}


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


def _mpi_max():
    from mpi4py import MPI

    return MPI.MAX


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

    def __init__(self, comm: Any, progress: Progress | None = None) -> None:
        import numpy as np
        from mpi4py import MPI

        self.comm, self.rank = comm, comm.Get_rank()
        self._MPI, self._np = MPI, np
        itemsize = MPI.INT64_T.Get_size()
        self._claim = MPI.Win.Allocate(itemsize if self.rank == 0 else 0, itemsize, comm=comm)
        self._done = MPI.Win.Allocate(itemsize if self.rank == 0 else 0, itemsize, comm=comm)
        if self.rank == 0:
            for win in (self._claim, self._done):
                np.frombuffer(win.tomemory(), dtype=np.int64)[:] = 0
        comm.Barrier()
        self._claim.Lock_all()
        self._done.Lock_all()
        self._one = np.ones(1, dtype=np.int64)
        self._got = np.zeros(1, dtype=np.int64)
        self._local_done = [0]
        self.stopped = False
        self._last_poll = time.monotonic()
        self._watcher = None
        if self.rank == 0 and progress is not None:
            self._watcher = _Watcher(self._done, self._local_done, progress)
            self._watcher.start()

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

    def add_done(self, n: int) -> None:
        """Count ``n`` more finished tasks (for the progress display)."""
        if self.rank == 0:
            self._local_done[0] += n
            return
        MPI = self._MPI
        count = self._np.array([n], dtype=self._np.int64)
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


class _Watcher(threading.Thread):
    """Rank 0's progress thread: reads the shared done counter and redraws the display.

    Its MPI calls also drive rank 0's progress engine, so other ranks' atomic claims complete
    while rank 0's main thread is busy in a long native fit.
    """

    def __init__(self, win: Any, local_done: list[int], progress: Progress) -> None:
        super().__init__(name="hpcml-progress", daemon=True)
        self.win, self.local_done, self.progress = win, local_done, progress
        self._stop_event = threading.Event()

    def read(self) -> int:
        import numpy as np
        from mpi4py import MPI

        zero = np.zeros(1, dtype=np.int64)
        got = np.zeros(1, dtype=np.int64)
        self.win.Fetch_and_op([zero, MPI.INT64_T], [got, MPI.INT64_T], 0, 0, MPI.NO_OP)
        self.win.Flush(0)
        return int(got[0]) + self.local_done[0]

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            self.progress.update(self.read())

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def finish(self) -> None:
        self.progress.update(self.read())
        self.progress.close()
