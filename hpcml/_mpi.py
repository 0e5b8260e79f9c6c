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

from .engine import Engine, RunTask
from .errors import UsageError
from .fitting import FitResult
from .progress import Progress
from .schedule import Plan

__all__ = [
    "MPIEngine",
    "abort_on_error",
    "check_launch",
    "node_layout",
    "world",
]

#: Largest message, in bytes, of one broadcast piece (well under MPI's 2 GiB int count).
CHUNK_BYTES = 1 << 30
#: Seconds between polls while a rank waits without spinning its core.
POLL = 0.002


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

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            from mpi4py import MPI

            if not MPI.Is_finalized():
                self.comm.Free()

    def bcast(self, obj: Any) -> Any:
        return self.comm.bcast(obj, root=0)

    def bcast_array(self, arr: Any) -> Any:
        import numpy as np

        meta = None
        if self.rank == 0:
            arr = np.ascontiguousarray(arr)
            meta = (arr.shape, arr.dtype.str if arr.dtype.kind != "O" else None)
        shape, dtype = self.comm.bcast(meta, root=0)
        if dtype is None:  # object arrays (e.g. string labels): pickled
            return self.comm.bcast(arr if self.rank == 0 else None, root=0)
        out = arr if self.rank == 0 else np.empty(shape, dtype=np.dtype(dtype))
        raw = out.reshape(-1).view(np.uint8)
        for lo in range(0, raw.size, CHUNK_BYTES):
            self.comm.Bcast(raw[lo : lo + CHUNK_BYTES], root=0)
        return out

    def wait_for_root(self) -> None:
        if self.rank != 0:
            sleepy_barrier(self.comm)

    def release(self) -> None:
        if self.rank == 0:
            sleepy_barrier(self.comm)

    def info(self) -> dict[str, Any]:
        return {"engine": "MPIEngine", "ranks": self.size, "mpi": mpi_library_version()}

    def run(
        self, plan: Plan, run_task: RunTask, progress: Progress | None = None
    ) -> dict[int, FitResult] | None:
        import numpy as np
        from mpi4py import MPI

        comm, rank = self.comm, self.rank
        t0 = comm.bcast(time.time() if rank == 0 else None, root=0)
        itemsize = MPI.INT64_T.Get_size()
        claim = MPI.Win.Allocate(itemsize if rank == 0 else 0, itemsize, comm=comm)
        done = MPI.Win.Allocate(itemsize if rank == 0 else 0, itemsize, comm=comm)
        if rank == 0:
            for win in (claim, done):
                np.frombuffer(win.tomemory(), dtype=np.int64)[:] = 0
        comm.Barrier()
        claim.Lock_all()
        done.Lock_all()
        mine: list[FitResult] = []
        local_done = [0]
        watcher = None
        if rank == 0 and progress is not None:
            watcher = _Watcher(done, local_done, progress)
            watcher.start()
        try:
            one = np.ones(1, dtype=np.int64)
            got = np.zeros(1, dtype=np.int64)
            while True:
                claim.Fetch_and_op([one, MPI.INT64_T], [got, MPI.INT64_T], 0, 0, MPI.SUM)
                claim.Flush(0)
                c = int(got[0])
                if c >= plan.n_chunks:
                    break
                chunk = plan.chunk(c)
                for t in chunk:
                    start = time.time() - t0
                    r = run_task(int(t))
                    r.rank, r.start, r.end = rank, start, time.time() - t0
                    mine.append(r)
                if rank == 0:
                    local_done[0] += len(chunk)
                else:
                    n = np.array([len(chunk)], dtype=np.int64)
                    done.Accumulate([n, MPI.INT64_T], 0, 0, MPI.SUM)
                    done.Flush(0)
        except BaseException:
            # The other ranks would wait for this one forever: stop them all, with the cause.
            if watcher is not None:
                watcher.stop()
            with abort_on_error(comm):
                raise
        claim.Unlock_all()
        sleepy_barrier(comm)  # rank 0 keeps showing progress while the last chunks finish
        if watcher is not None:
            watcher.stop()
            watcher.finish()
        done.Unlock_all()
        claim.Free()
        done.Free()
        gathered = comm.gather(mine, root=0)
        if rank != 0:
            return None
        return {r.task: r for part in gathered for r in part}


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
