"""The joblib backend's large arrays: one read-only copy per node, in MPI shared memory.

Rank 0 (which runs the script and keeps its own arrays) sends a large array once to each
node that needs it: to the node's leader (its first worker rank), which receives the bytes
straight into an MPI-3 shared window (``Win.Allocate_shared`` on the communicator of the
node's worker ranks); every worker rank of the node maps the same pages as a read-only numpy
view. Arrays are cached by content key (:func:`~hpcml.core.shipping.array_key`) across
``Parallel`` calls, in a bounded cache per node whose bookkeeping is rank 0's
(:class:`Shipper`): it evicts the least recently used arrays past the capacity, never one a
running task of that node uses.

Allocating and freeing a window is collective over the node's workers, while each worker's
main thread is busy with its own task. So each worker rank has a :class:`NodeStore` thread
that serves rank 0's notices, in order, on a communicator of their own (``data``):

* ``("share", key, shape, dtype, order, nbytes)``: allocate the window (the leader holds the
  bytes), the leader receives them (tag :data:`DATA`, pieces under 2 GiB), then a barrier;
* ``("free", keys)``: forget these arrays; a window is freed (collectively) once no rank of
  the node still holds a view of it (a task that kept a reference), else at a later round;
* ``("stop",)``: free every window and return (before ``MPI_Finalize``).

Rank 0 sends a node's notices to all its workers from one thread, so every worker of the
node runs the same collectives in the same order; the notices of a task's arrays go before
the task. A task's main thread waits (:meth:`NodeStore.get`) until its arrays are mapped.
"""

from __future__ import annotations

import gc
import socket
import sys
import threading
import time
import traceback
import weakref
from collections import Counter
from typing import Any

from hpcml.core.shipping import KeyCache

__all__ = ["NOTICE", "DATA", "NodeStore", "Shipper", "node_comms", "wire_layout"]

NOTICE, DATA = 21, 22
#: Largest piece, in bytes, of one array message (well under MPI's 2 GiB int count).
CHUNK_BYTES = 1 << 30
#: Longest sleep, in seconds, between two polls of the store thread for rank 0's notices.
POLL = 0.005


def node_comms(comm: Any) -> tuple[Any, Any, list[list[int]]]:
    """The store's communicators (collective over ``comm``, every rank).

    Returns
    -------
    data : mpi4py.MPI.Intracomm
        A duplicate of ``comm`` for notices and array bytes (rank 0 and the workers).
    node : mpi4py.MPI.Intracomm or None
        The worker ranks of this node (``None`` on rank 0).
    nodes : list of list of int
        The worker ranks of each node, its leader first (the same on every rank).
    """
    from mpi4py import MPI

    data = comm.Dup()
    rank = comm.Get_rank()
    workers = comm.Split(0 if rank else MPI.UNDEFINED, key=rank)
    node = None
    leader = None
    if rank:
        node = workers.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        leader = node.bcast(rank, root=0)
        workers.Free()
    return data, node, wire_layout(comm.allgather(leader))


def wire_layout(leaders: list[int | None]) -> list[list[int]]:
    """Worker ranks grouped by node from each rank's leader (``None`` for rank 0).

    Examples
    --------
    >>> wire_layout([None, 1, 1, 3, 3, 1])
    [[1, 2, 5], [3, 4]]
    """
    nodes: dict[int, list[int]] = {}
    for rank, leader in enumerate(leaders):
        if leader is not None:
            nodes.setdefault(leader, []).append(rank)
    return [sorted(ranks, key=lambda r: (r != leader, r)) for leader, ranks in nodes.items()]


class Shipper:
    """Rank 0's side: what each node holds, and sending what a task's node misses.

    Used by one thread only (the backend's client thread).

    Parameters
    ----------
    data : mpi4py.MPI.Intracomm
        From :func:`node_comms`.
    nodes : list of list of int
        From :func:`node_comms`.
    capacity : int
        Bytes of arrays each node keeps (least recently used evicted first).

    Attributes
    ----------
    sent : collections.Counter
        How many times each key was sent (once per node that needed it).
    bytes_sent : int
        Array bytes sent, over every node.
    messages : int
        Messages sent by the store (notices and array pieces).
    """

    def __init__(self, data: Any, nodes: list[list[int]], capacity: int) -> None:
        self.data = data
        self.nodes = nodes
        self.node_of = {w: i for i, ranks in enumerate(nodes) for w in ranks}
        self.caches = [KeyCache(capacity) for _ in nodes]
        self.in_use: list[Counter[str]] = [Counter() for _ in nodes]
        self.sent: Counter[str] = Counter()
        self.bytes_sent = 0
        self.messages = 0

    def place(self, worker: int, arrays: dict[str, Any]) -> list[str]:
        """Make ``arrays`` present on ``worker``'s node before its task goes; their keys.

        The keys stay in use (never evicted) until :meth:`release`.
        """
        n = self.node_of[worker]
        refs = [(k, int(a.nbytes)) for k, a in arrays.items()]
        missing, evicted = self.caches[n].admit(refs, keep=self.in_use[n])
        if evicted:
            self._notify(n, ("free", evicted))
        for key in missing:
            self._ship(n, key, arrays[key])
        keys = [k for k, _ in refs]
        self.in_use[n].update(keys)
        return keys

    def release(self, worker: int, keys: list[str]) -> None:
        """The task on ``worker`` that used ``keys`` is over."""
        use = self.in_use[self.node_of[worker]]
        use.subtract(keys)
        for key in keys:
            if use[key] <= 0:
                del use[key]

    def stop(self) -> None:
        """Tell every worker's store to free its windows and return."""
        for n in range(len(self.nodes)):
            self._notify(n, ("stop",))

    def _notify(self, n: int, notice: tuple) -> None:
        for worker in self.nodes[n]:
            self.data.send(notice, dest=worker, tag=NOTICE)
            self.messages += 1

    def _ship(self, n: int, key: str, arr: Any) -> None:
        arr, order = _contiguous(arr)
        self._notify(n, ("share", key, arr.shape, arr.dtype, order, int(arr.nbytes)))
        raw = _raw(arr, order)
        for lo in range(0, raw.size, CHUNK_BYTES):
            self.data.Send(raw[lo : lo + CHUNK_BYTES], dest=self.nodes[n][0], tag=DATA)
            self.messages += 1
        self.sent[key] += 1
        self.bytes_sent += int(arr.nbytes)


def _contiguous(arr: Any) -> tuple[Any, str]:
    """``arr`` (or a C-ordered copy) and its order: Fortran-ordered arrays stay so."""
    import numpy as np

    if arr.flags.c_contiguous:
        return arr, "C"
    if arr.flags.f_contiguous:
        return arr, "F"
    return np.ascontiguousarray(arr), "C"


def _raw(arr: Any, order: str) -> Any:
    """The bytes of a contiguous array as a flat ``uint8`` view (no copy)."""
    import numpy as np

    flat = (arr if order == "C" else arr.T).reshape(-1)
    return flat.view(np.uint8) if flat.size else np.empty(0, np.uint8)


class NodeStore:
    """A worker rank's side: the node's shared arrays, kept by a thread serving rank 0.

    Parameters
    ----------
    data, node : mpi4py.MPI.Intracomm
        From :func:`node_comms` (``node``: this node's worker ranks).
    """

    def __init__(self, data: Any, node: Any) -> None:
        self.data, self.node = data, node
        self.leader = node.Get_rank() == 0
        self.arrays: dict[str, tuple[Any, Any]] = {}
        #: Forgotten arrays whose window waits for the last view to die: (key, ref, win).
        self.pending: list[tuple[str, Any, Any]] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="hpcml-node-store", daemon=True)
        self._thread.start()

    def get(self, key: str) -> Any:
        """The array of ``key``, once this node has it (its notice came before the task)."""
        with self._cond:
            while key not in self.arrays:
                if self.error is not None:
                    raise RuntimeError("hpcml's node store failed") from self.error
                self._cond.wait(1.0)
            return self.arrays[key][0]

    def close(self) -> None:
        """Wait for the thread (after rank 0's ``stop``) and free the communicators."""
        self._thread.join()
        for comm in (self.node, self.data):
            comm.Free()

    # -- the store thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                notice = _wait_notice(self.data)
                if notice[0] == "share":
                    self._share(*notice[1:])
                elif notice[0] == "free":
                    self._free(notice[1])
                else:
                    self._free_all()
                    return
        except BaseException as exc:  # noqa: B036 (a rank must not wait forever: abort)
            with self._cond:
                self.error = exc
                self._cond.notify_all()
            _abort(self.data, exc)

    def _share(self, key: str, shape: tuple, dtype: Any, order: str, nbytes: int) -> None:
        import numpy as np
        from mpi4py import MPI

        from hpcml.engines.mpi.world import sleepy_barrier

        win = MPI.Win.Allocate_shared(nbytes if self.leader else 0, 1, comm=self.node)
        buf, _ = win.Shared_query(0)
        if self.leader:
            raw = np.ndarray((nbytes,), dtype=np.uint8, buffer=buf)
            for lo in range(0, nbytes, CHUNK_BYTES):
                self.data.Recv(raw[lo : lo + CHUNK_BYTES], source=0, tag=DATA)
            del raw
        sleepy_barrier(self.node)  # the leader has the bytes
        arr = np.ndarray(shape, dtype=dtype, buffer=buf, order=order)
        arr.flags.writeable = False  # shared by every task of every rank of the node
        with self._cond:
            old = self.arrays.pop(key, None)
            if old is not None:  # still mapped from before a free not yet agreed on
                self.pending.append((key, weakref.ref(old[0]), old[1]))
            self.arrays[key] = (arr, win)
            self._cond.notify_all()

    def _free(self, keys: list[str]) -> None:
        with self._cond:
            for key in keys:
                arr, win = self.arrays.pop(key)
                self.pending.append((key, weakref.ref(arr), win))
                del arr
        alive = [ref() is not None for _, ref, _ in self.pending]
        if any(alive):  # a view held by a cycle only: collect it
            gc.collect()
            alive = [ref() is not None for _, ref, _ in self.pending]
        anywhere = [any(col) for col in zip(*self.node.allgather(alive), strict=True)]
        keep = []
        for (key, ref, win), held in zip(self.pending, anywhere, strict=True):
            if held:
                keep.append((key, ref, win))
            else:
                win.Free()  # collective: the same windows in the same order on every rank
        self.pending = keep

    def _free_all(self) -> None:
        with self._cond:
            wins = [win for _, win in self.arrays.values()] + [w for _, _, w in self.pending]
            self.arrays.clear()
            self.pending = []
        for win in wins:
            win.Free()


def _wait_notice(comm: Any) -> tuple:
    """Rank 0's next notice, polled with a growing sleep (a blocking receive spins a core)."""
    delay = 1e-5
    while not comm.Iprobe(source=0, tag=NOTICE):
        time.sleep(delay)
        delay = min(delay * 2, POLL)
    return comm.recv(source=0, tag=NOTICE)


def _abort(comm: Any, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write(f"### hpcml: the node store of rank {comm.Get_rank()} of "
                     f"{comm.Get_size()} on {socket.gethostname()} failed; aborting all "
                     f"ranks\n{text}")
    sys.stderr.flush()
    comm.Abort(1)
