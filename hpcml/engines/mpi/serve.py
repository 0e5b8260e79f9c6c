"""The worker ranks of the joblib backend, and how a script's ranks are started.

Protocol (on a duplicate of ``COMM_WORLD``, via ``mpi4py.util.pkl5``: arrays travel as
out-of-band buffers, messages may exceed 2 GiB):

* rank 0 -> worker, tag :data:`TASK`: ``(task id, [(key, nbytes)], {key: array}, payload,
  cache capacity, sys.path)``; rank 0's ``sys.path`` only when it changed, so that functions
  pickled by reference (defined in the script's folder) import on the workers too.
  ``payload`` is the joblib batch pickled with :func:`~hpcml.core.shipping.dumps_task`
  (its large arrays replaced by content keys); the dict holds only the arrays this worker
  does not have yet. Rank 0 mirrors each worker's :class:`~hpcml.core.shipping.KeyCache`,
  and the worker runs the same cache steps in the same order, so both agree on what is
  cached (least recently used evicted first).
* worker -> rank 0, tag :data:`RESULT`: ``(task id, ok, blob, (rank, host, traceback))``:
  the batch's results (cloudpickled), or its exception.
* rank 0 -> worker, tag :data:`STOP`: the script is over; the worker returns.

A worker runs one task at a time and waits for the next without spinning its core. Its
nested ``Parallel`` calls use the thread budget of the rank (see
:class:`~hpcml.engines.mpi.joblib_backend.BudgetThreadingBackend`).

Starting: :func:`run_script` is ``python -m hpcml.joblib script.py`` (rank 0 runs the
script, the others serve until it ends); :func:`join_from_import` is ``import hpcml.joblib``
in a script started by ``mpiexec`` itself (ranks > 0 serve, then exit). Both start MPI and
size the thread pools before numpy loads (as :mod:`hpcml.run.rank`), and both end every rank
when rank 0 fails: an uncaught exception aborts the job with rank 0's traceback.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from typing import Any

__all__ = ["TASK", "RESULT", "STOP", "serve", "channel", "run_script", "join_from_import",
           "worker_threads", "is_worker"]

TASK, RESULT, STOP = 11, 12, 13
#: Longest sleep, in seconds, between two polls of a waiting rank.
POLL = 0.002

#: Threads of this worker rank (``None`` outside a worker).
_THREADS: int | None = None


def is_worker() -> bool:
    """Whether this process is a worker rank serving tasks."""
    return _THREADS is not None


def worker_threads() -> int:
    """The thread budget of this rank: as set by the launcher, else from the allocation."""
    if _THREADS is not None:
        return _THREADS
    from hpcml.core.threads import threads_per_rank

    return threads_per_rank(1)[0]


def channel(comm: Any) -> Any:
    """The backend's own communicator: a ``pkl5`` duplicate of ``comm`` (collective)."""
    from mpi4py.util import pkl5

    return pkl5.Intracomm(comm.Dup())


def wait_message(comm: Any, source: int, tag: int) -> tuple[Any, Any]:
    """The next message matching ``source``/``tag``, polled with a growing sleep (MPICH's
    blocking receive spins a core). Returns ``(object, status)``."""
    from mpi4py import MPI

    status = MPI.Status()
    delay = 1e-5
    while not probe(comm, source, tag, status):
        time.sleep(delay)
        delay = min(delay * 2, POLL)
    return receive(comm, status), status


def probe(comm: Any, source: int, tag: int, status: Any) -> bool:
    """Whether a message is waiting (``MPI_Iprobe``; only one thread receives on ``comm``).

    ``pkl5``'s matched probe (``improbe``) can hang on a message with several large
    buffers; a plain probe followed by a blocking receive of that message does not.
    """
    return bool(comm.Iprobe(source=source, tag=tag, status=status))


def receive(comm: Any, status: Any) -> Any:
    """The message ``probe`` found (blocking ``pkl5`` receive: it has arrived)."""
    return comm.recv(source=status.Get_source(), tag=status.Get_tag())


def serve(comm: Any, threads: int, cache_bytes: int | None = None) -> int:
    """Run rank 0's tasks until it sends :data:`STOP`; returns the number of tasks run.

    Parameters
    ----------
    comm : pkl5 communicator
        From :func:`channel` (rank 0 holds the other end).
    threads : int
        This rank's thread budget (nested ``Parallel`` calls and BLAS stay within it).
    cache_bytes : int, optional
        Capacity of the array cache (the same as rank 0's mirror of it); rank 0 sends its
        value with each task.
    """
    import cloudpickle
    from mpi4py import MPI

    from hpcml.core.shipping import DEFAULT_CACHE_BYTES, KeyCache, loads_task

    global _THREADS
    _THREADS = max(int(threads), 1)
    where = (comm.Get_rank(), socket.gethostname())
    cache = KeyCache(cache_bytes or DEFAULT_CACHE_BYTES)
    arrays: dict[str, Any] = {}
    done = 0
    while True:
        obj, status = wait_message(comm, 0, MPI.ANY_TAG)
        if status.Get_tag() == STOP:
            return done
        tid, refs, new, payload, capacity, path = obj
        if path is not None:  # functions pickled by reference import as on rank 0
            sys.path[:0] = [p for p in path if p not in sys.path]
        cache.capacity = capacity
        missing, evicted = cache.admit(refs)
        for key in evicted:
            arrays.pop(key, None)
        for key in missing:
            arr = new[key]
            arr.flags.writeable = False  # shared by every task of this rank
            arrays[key] = arr
        try:
            out = (True, cloudpickle.dumps(loads_task(payload, arrays.__getitem__)()))
        except BaseException as exc:  # noqa: B036 (an interrupt in a task is the task's)
            out = (False, pack_error(exc))
        comm.send((tid, *out, (*where, comm.Get_size())), dest=0, tag=RESULT)
        done += 1


def pack_error(exc: BaseException) -> tuple[bytes | None, str, str]:
    """A task's exception for rank 0: ``(pickled or None, type name, traceback text)``."""
    import cloudpickle

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob: bytes | None = cloudpickle.dumps(exc)
        cloudpickle.loads(blob)
    except Exception:
        blob = None
    return blob, f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}", text


def run_script(argv: list[str]) -> int:
    """``python -m hpcml.joblib script.py [args]``: rank 0 runs the script, the others serve.

    Returns the script's exit status (``sys.exit(n)`` in the script); any other exception
    escaping the script aborts every rank after printing rank 0's traceback.
    """
    from hpcml.run.rank import Rank, on_rank

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mpiexec -n P python -m hpcml.joblib script.py [args]\n"
              "Rank 0 runs script.py; the other ranks run its joblib tasks "
              "(parallel_config(backend='mpi')).")
        return 0 if argv else 2

    def work(rank: Rank) -> int:
        _STATE["launched"] = True
        from hpcml.engines.mpi.joblib_backend import register  # MPI is up: numpy may load

        register()
        if rank.size == 1:
            return _run_path(argv)
        chan = channel(rank.comm)
        if rank.rank != 0:
            serve(chan, rank.threads)
            return 0
        from hpcml.engines.mpi.joblib_backend import start_client

        client = start_client(chan)
        code = _run_path(argv)  # an exception here aborts every rank (on_rank)
        client.close()
        return code

    return on_rank(work, stop_signals=())


def _run_path(argv: list[str]) -> int:
    import runpy

    path = argv[0]
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    return 0


#: ``launched``: the ranks were started by :func:`run_script` (the import does nothing).
_STATE: dict[str, Any] = {"launched": False, "joined": False}


def launched_by_mpi(environ: dict[str, str] | None = None) -> bool:
    """Whether an MPI launcher started several processes (MPICH/Open MPI/PMIx/Slurm).

    Examples
    --------
    >>> launched_by_mpi({"PMI_SIZE": "3"}), launched_by_mpi({"PMI_SIZE": "1"})
    (True, False)
    >>> launched_by_mpi({})
    False
    """
    env = os.environ if environ is None else environ
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if env.get(var, "").isdigit() and int(env[var]) > 1:
            return True
    return False


def join_from_import() -> None:
    """``import hpcml.joblib`` in a script started by ``mpiexec``: ranks > 0 serve, then exit.

    Rank 0 returns and goes on with the script, with the client running, an ``atexit``
    hook that stops the workers, and an exception hook that aborts every rank on an
    uncaught exception. Does nothing under :func:`run_script`, in a plain ``python``
    process, or when called again.
    """
    if _STATE["launched"] or _STATE["joined"] or not launched_by_mpi():
        return
    _STATE["joined"] = True
    import atexit

    from hpcml.engines.mpi.world import abort_on_error, join_world

    comm, threads = join_world()
    if comm.Get_size() == 1:
        return
    chan = channel(comm)
    if comm.Get_rank() != 0:
        with abort_on_error(comm):
            serve(chan, threads)
        sys.exit(0)
    from hpcml.engines.mpi.joblib_backend import start_client

    client = start_client(chan)
    atexit.register(client.close)
    previous = sys.excepthook

    def abort_hook(kind: Any, exc: Any, tb: Any) -> None:
        sys.stdout.flush()
        sys.stderr.write(f"### hpcml: rank 0 of {comm.Get_size()} on {socket.gethostname()} "
                         "failed; aborting all ranks\n")
        previous(kind, exc, tb)
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = abort_hook
