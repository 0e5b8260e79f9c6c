"""The worker ranks of the joblib backend, and how a script's ranks are started.

Protocol (on a duplicate of ``COMM_WORLD``, via ``mpi4py.util.pkl5``: messages may exceed
2 GiB), on :attr:`Channel.tasks`:

* rank 0 -> worker, tag :data:`TASK`: ``(task id, [key], payload, sys.path)``; rank 0's
  ``sys.path`` only when it changed, so that functions pickled by reference (defined in the
  script's folder) import on the workers too. ``payload`` is the joblib batch pickled with
  :func:`~hpcml.core.shipping.dumps_task` (its large arrays replaced by content keys). The
  arrays themselves go once per node, before the task, into the node's shared memory
  (:mod:`hpcml.engines.mpi.nodestore`, on :attr:`Channel.data`); the worker maps them there.
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

import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

__all__ = ["TASK", "RESULT", "STOP", "Channel", "serve", "channel",
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


@dataclass
class Channel:
    """The backend's communicators, from :func:`channel`.

    Attributes
    ----------
    tasks : pkl5 communicator
        Tasks and results (a ``pkl5`` duplicate of the world).
    data : mpi4py.MPI.Intracomm
        The node store's notices and array bytes (another duplicate).
    node : mpi4py.MPI.Intracomm or None
        This node's worker ranks (``None`` on rank 0).
    nodes : list of list of int
        The worker ranks of each node, its leader first.
    """

    tasks: Any
    data: Any
    node: Any
    nodes: list[list[int]]


def channel(comm: Any) -> Channel:
    """The backend's own communicators over ``comm`` (collective, every rank)."""
    from mpi4py.util import pkl5

    from hpcml.engines.mpi.nodestore import node_comms

    return Channel(pkl5.Intracomm(comm.Dup()), *node_comms(comm))


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


def serve(chan: Channel, threads: int) -> int:
    """Run rank 0's tasks until it sends :data:`STOP`; returns the number of tasks run.

    Parameters
    ----------
    chan : Channel
        From :func:`channel` (rank 0 holds the other end).
    threads : int
        This rank's thread budget (nested ``Parallel`` calls and BLAS stay within it).
    """
    import cloudpickle
    from mpi4py import MPI

    from hpcml.core.shipping import loads_task
    from hpcml.engines.mpi.nodestore import NodeStore

    global _THREADS
    _THREADS = max(int(threads), 1)
    comm = chan.tasks
    where = (comm.Get_rank(), socket.gethostname())
    store = NodeStore(chan.data, chan.node)  # maps the node's shared arrays
    done = 0
    while True:
        obj, status = wait_message(comm, 0, MPI.ANY_TAG)
        if status.Get_tag() == STOP:
            store.close()
            comm.Free()
            return done
        tid, _keys, payload, path = obj
        if path is not None:  # functions pickled by reference import as on rank 0
            sys.path[:0] = [p for p in path if p not in sys.path]
        try:
            out = (True, cloudpickle.dumps(loads_task(payload, store.get)()))
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
