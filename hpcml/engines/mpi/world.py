"""The MPI world: starting MPI, the node layout, collectives and one copy of arrays per node.

numpy is imported lazily here, and nothing this module imports at the top loads it: a rank
starts MPI and sizes its thread pools (``OMP_NUM_THREADS``) from the node layout before
numpy loads its BLAS, or scipy and scikit-learn anything.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from hpcml.engines.base import SerialWorld, World
from hpcml.errors import UsageError, exit_status

__all__ = [
    "MPIWorld",
    "world_of",
    "join_world",
    "mpi_env_defaults",
    "start_watchdog",
    "abort_on_error",
    "check_launch",
    "node_layout",
    "world",
]

#: Largest message, in bytes, of one broadcast piece (well under MPI's 2 GiB int count).
CHUNK_BYTES = 1 << 30
#: Seconds between polls while a rank waits without spinning its core.
POLL = 0.002


#: Seconds a rank may take to start MPI and find the other ranks (``HPCML_MPI_START_TIMEOUT``).
START_TIMEOUT = 300.0


def mpi_env_defaults(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment defaults for MPI that must be set before ``MPI_Init`` (none usually).

    Under ``srun --mpi=pmi2`` on more than one node, MPICH's UCX netmod puts each rank's
    address into the PMI key-value space as 4 KiB business cards whose unused bytes are
    uninitialised heap memory (hex-encoded, zero runs compressed). Once Python has allocated
    and freed memory (numpy, scikit-learn, any import), these lines grow past the 1024 bytes
    that Slurm's pmi2 plugin reads per PMI-1 request: it splits them, answers garbage or
    nothing, and ``MPI_Init`` fails or hangs. The OFI netmod sends fixed-length addresses:
    ``MPIR_CVAR_CH4_NETMOD=ofi``. A value the user set wins; other launchers (``mpiexec``,
    one node, Open MPI with PMIx) get nothing.

    Examples
    --------
    >>> mpi_env_defaults({"PMI_FD": "5", "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_ID": "0"})
    {'MPIR_CVAR_CH4_NETMOD': 'ofi'}
    >>> mpi_env_defaults({"PMI_FD": "5", "SLURM_STEP_NUM_NODES": "1", "SLURM_STEP_ID": "0"})
    {}
    """
    env = os.environ if environ is None else environ
    nodes = env.get("SLURM_STEP_NUM_NODES", "")
    srun_pmi = "PMI_FD" in env and "MPI_LOCALNRANKS" not in env and "PMIX_RANK" not in env
    if not (srun_pmi and nodes.isdigit() and int(nodes) > 1):
        return {}
    if "MPIR_CVAR_CH4_NETMOD" in env or "MPICH_CH4_NETMOD" in env:
        return {}
    return {"MPIR_CVAR_CH4_NETMOD": "ofi"}


def world() -> Any:
    """``MPI.COMM_WORLD`` (initialising MPI on first use, after :func:`mpi_env_defaults`)."""
    if "mpi4py.MPI" not in sys.modules:
        for key, value in mpi_env_defaults().items():
            os.environ.setdefault(key, value)
    from mpi4py import MPI

    return MPI.COMM_WORLD


@contextlib.contextmanager
def start_watchdog(timeout: float | None = None) -> Iterator[None]:
    """End this process (exit 1, with a traceback) if the block takes over ``timeout`` s.

    For MPI start-up: a rank that cannot reach the others would wait in ``MPI_Init`` or the
    first collective forever (until the wall time). The watchdog is a C thread
    (:func:`faulthandler.dump_traceback_later`), so it fires while MPI holds the GIL; with
    ``srun --kill-on-bad-exit=1`` the whole step ends. ``timeout`` defaults to
    ``HPCML_MPI_START_TIMEOUT`` (else :data:`START_TIMEOUT`); ``0`` disables it.
    """
    if timeout is None:
        try:
            timeout = float(os.environ.get("HPCML_MPI_START_TIMEOUT") or START_TIMEOUT)
        except ValueError:
            timeout = START_TIMEOUT
    if timeout <= 0:
        yield
        return
    sys.stderr.flush()
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def world_rank() -> int:
    """This process's rank in ``COMM_WORLD``; 0 before MPI starts (it does not start it)."""
    if "mpi4py.MPI" not in sys.modules:
        return 0
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() and not MPI.Is_finalized() else 0


def check_launch(environ: dict | None = None, size: int | None = None) -> None:
    """Refuse a world of one rank when Slurm started several tasks (``srun`` with no MPI plugin).

    Raises
    ------
    UsageError
        Naming ``srun --mpi=pmi2`` (MPICH), ``srun --mpi=pmix`` (Open MPI) or ``mpiexec``.
    """
    from hpcml.run.launch import srun_message

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
    from hpcml.core.threads import thread_env, threads_per_rank

    with start_watchdog():  # prints "Timeout (h:mm:ss)!" and where this rank waited
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


def mpi_versions() -> dict[str, str]:
    """mpi4py's version, and the MPI library's once MPI has started (it is not started here)."""
    import mpi4py

    out = {"mpi4py": mpi4py.__version__}
    if "mpi4py.MPI" in sys.modules:
        out["mpi"] = mpi_library_version()
    return out


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
        if isinstance(exc, UsageError):  # a known cause: its one line, not a traceback
            sys.stdout.flush()
            sys.stderr.write(f"hpcml: error: rank {rank} of {size} on {socket.gethostname()}: "
                             f"{exc}\n")
            sys.stderr.flush()
            with contextlib.suppress(OSError):  # not MPICH's "Abort(1) on node..." after it
                os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            comm.Abort(exit_status(exc))
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


class MPIWorld(World):
    """The MPI ranks of a communicator, as a :class:`~hpcml.engines.base.World`.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        Defaults to ``COMM_WORLD``. It is duplicated, so hpcml's traffic never mixes with
        the caller's; :meth:`close` frees the duplicate, the node communicators and every
        shared window (MPI_Finalize fails on some fabrics when they are left).
    """

    def __init__(self, comm: Any = None) -> None:
        self.comm = (world() if comm is None else comm).Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._windows: list[Any] = []
        self._node: Any = None
        self._leaders: Any = None
        self._layout: dict[str, Any] | None = None

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

    def allgather(self, obj: Any) -> list[Any]:
        return self.comm.allgather(obj)

    def gather(self, obj: Any) -> list[Any] | None:
        return self.comm.gather(obj, root=0)

    def barrier(self) -> None:
        sleepy_barrier(self.comm)

    def close(self) -> None:
        """Free the shared windows, the node communicators and the duplicate (collective).

        Arrays from :meth:`bcast_array` die with it. Idempotent.
        """
        for win in self._windows:
            win.Free()
        self._windows.clear()
        for name in ("_leaders", "_node", "comm"):
            c = getattr(self, name, None)
            if c is not None:
                from mpi4py import MPI

                if c != MPI.COMM_NULL:
                    c.Free()
                setattr(self, name, None)

    def layout(self) -> dict[str, Any]:
        if self._layout is None:
            self._layout = node_layout(self.comm)
        return dict(self._layout)


def world_of(comm: Any = None) -> World:
    """An :class:`MPIWorld` over ``comm`` (default ``COMM_WORLD``, refusing plain ``srun``),
    or a :class:`~hpcml.engines.base.SerialWorld` when the world has one rank."""
    if comm is None:
        check_launch()
        comm = world()
    if comm.Get_size() == 1:
        return SerialWorld()
    return MPIWorld(comm)


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
