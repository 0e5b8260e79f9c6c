"""joblib's ``"mpi"`` backend: rank 0 runs the script, the other ranks run its tasks.

Built on joblib's documented backend API only (``ParallelBackendBase`` with ``submit`` and a
callback, ``retrieve_result_callback``, ``effective_n_jobs``, ``configure``,
``abort_everything``, ``get_nested_backend``), as joblib's own ``_dask.py``.

On rank 0 one :class:`Client` thread owns the backend's communicator: it sends queued
batches to idle workers, receives their results (polling with a growing sleep, so rank 0
does not spin a core), and runs joblib's callback, which registers the outcome and submits
the next batch. joblib itself keeps the results in order (or not, with
``return_as="generator_unordered"``). Large arrays (from Parallel's ``max_nbytes``, 1 MiB
by default) go to each node once, by content key (:mod:`hpcml.core.shipping`), into one
shared-memory copy that the node's workers map read-only, and stay cached there across
``Parallel`` calls (:mod:`hpcml.engines.mpi.nodestore`). The protocol is in
:mod:`hpcml.engines.mpi.serve`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

from joblib.parallel import (
    AutoBatchingMixin,
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
)

from hpcml.core.shipping import DEFAULT_CACHE_BYTES, DEFAULT_THRESHOLD, KeyMemo
from hpcml.core.shipping import dumps_task as _dumps
from hpcml.engines.mpi.nodestore import Shipper
from hpcml.engines.mpi.serve import (
    POLL,
    RESULT,
    STOP,
    TASK,
    is_worker,
    probe,
    receive,
    worker_threads,
)

__all__ = ["register", "MPIBackend", "BudgetThreadingBackend", "Client", "start_client", "get_client",
           "RemoteTaskError"]

_CLIENT: Client | None = None


class RemoteTaskError(RuntimeError):
    """A task's exception that could not be pickled back to rank 0 (same message)."""


def register() -> None:
    """Register this backend with joblib as ``"mpi"``."""
    from joblib import register_parallel_backend

    register_parallel_backend("mpi", MPIBackend)


def get_client() -> Client | None:
    """Rank 0's client, or ``None``: a worker, no MPI world of several ranks, or a process
    forked from rank 0 (by another backend: it must not touch rank 0's MPI channel)."""
    if _CLIENT is None or _CLIENT.pid != os.getpid():
        return None
    return _CLIENT


def start_client(chan: Any, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Client:
    """Start rank 0's client on ``chan`` (from :func:`~hpcml.engines.mpi.serve.channel`)."""
    global _CLIENT
    _CLIENT = Client(chan, cache_bytes=cache_bytes)
    return _CLIENT


class _Job(concurrent.futures.Future):
    """One batch: what is sent, who waits for it, and its outcome."""

    def __init__(self, payload: bytes, arrays: dict[str, Any], callback: Any, owner: int):
        super().__init__()
        self.payload, self.arrays, self.callback, self.owner = payload, arrays, callback, owner
        self.tid = -1
        self.keys: list[str] = []
        self.where: tuple[int, str, int] | None = None

    def get(self, timeout: float | None = None) -> Any:
        return self.result(timeout)


class Client:
    """Rank 0's end: a queue of batches, the idle workers, and one thread doing the MPI.

    Parameters
    ----------
    chan : Channel
        From :func:`~hpcml.engines.mpi.serve.channel`.
    cache_bytes : int
        Bytes of arrays each node keeps (least recently used evicted first).

    Attributes
    ----------
    n_workers : int
        Worker ranks (every rank but 0).
    nodes : list of list of int
        The worker ranks of each node, its leader (which receives the arrays) first.
    tasks_sent : int
        Batches sent so far.
    """

    def __init__(self, chan: Any, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.comm = chan.tasks
        comm = self.comm
        self.pid = os.getpid()
        self.n_workers = comm.Get_size() - 1
        self.nodes = chan.nodes
        self.shipper = Shipper(chan.data, chan.nodes, int(cache_bytes))
        self.idle = collections.deque(range(1, comm.Get_size()))
        self.queue: collections.deque[_Job] = collections.deque()
        self.running: dict[int, _Job] = {}
        self.dropped: set[int] = set()
        self.tasks_sent = 0
        self._paths: dict[int, tuple[str, ...]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="hpcml-mpi-client", daemon=True)
        self._thread.start()

    @property
    def sent(self) -> Counter[str]:
        """How many times each array key was sent (once per node that needed it)."""
        return self.shipper.sent

    @property
    def bytes_sent(self) -> int:
        """Array bytes sent to the nodes so far (tasks' own pickles not counted)."""
        return self.shipper.bytes_sent

    @property
    def array_messages(self) -> int:
        """Messages the node store sent so far (notices and array pieces)."""
        return self.shipper.messages

    # -- called from any thread ---------------------------------------------------------
    def put(self, job: _Job) -> None:
        with self._lock:
            job.tid = next(self._ids)
            self.queue.append(job)
        self._wake.set()

    def cancel(self, owner: int) -> None:
        """Forget ``owner``'s queued batches; its running ones finish unseen."""
        with self._lock:
            self.queue = collections.deque(j for j in self.queue if j.owner != owner)
            for job in self.running.values():
                if job.owner == owner:
                    self.dropped.add(job.tid)

    def close(self, grace: float = 30.0) -> None:
        """Wait for running batches (at most ``grace`` seconds, then abort every rank), and
        tell every worker to return. Idempotent."""
        global _CLIENT
        if self._closing:
            return
        with self._lock:
            self.queue.clear()
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            time.sleep(0.01)
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=max(deadline - time.monotonic(), 1.0))
        if self.running or self._thread.is_alive():
            sys.stderr.write(f"### hpcml: {len(self.running)} task(s) still running "
                             f"{grace:.0f} s after the script ended; aborting all ranks\n")
            sys.stderr.flush()
            self.comm.Abort(1)
        self.shipper.stop()  # the node stores free their windows
        for w in range(1, self.n_workers + 1):
            self.comm.send(None, dest=w, tag=STOP)
        self.comm.Free()
        self.shipper.data.Free()
        if _CLIENT is self:
            _CLIENT = None

    # -- the client thread ----------------------------------------------------------------
    def _loop(self) -> None:
        from mpi4py import MPI

        status = MPI.Status()
        delay = 1e-5
        while not self._closing:
            busy = self._send_ready()
            while True:
                if not probe(self.comm, MPI.ANY_SOURCE, RESULT, status):
                    break
                self._finish(receive(self.comm, status))
                busy = True
            if busy:
                delay = 1e-5
                continue
            self._wake.wait(delay)
            self._wake.clear()
            delay = min(delay * 2, POLL)

    def _send_ready(self) -> bool:
        sent = False
        while True:
            with self._lock:
                if not self.idle or not self.queue:
                    return sent
                job, worker = self.queue.popleft(), self.idle.popleft()
                self.running[job.tid] = job
            job.keys = self.shipper.place(worker, job.arrays)  # once per node
            path = tuple(sys.path)  # rank 0's module path (the script's folder, pytest's)
            if self._paths.get(worker) == path:
                path = None
            else:
                self._paths[worker] = path
            self.comm.send((job.tid, job.keys, job.payload, path), dest=worker, tag=TASK)
            self.tasks_sent += 1
            job.arrays = {}
            sent = True

    def _finish(self, msg: tuple) -> None:
        import cloudpickle

        tid, ok, blob, where = msg
        with self._lock:
            job = self.running.pop(tid)
            self.shipper.release(where[0], job.keys)
            self.idle.append(where[0])
            dropped = tid in self.dropped
            self.dropped.discard(tid)
        if dropped:
            return
        job.where = (where[0], where[1], where[2])
        try:
            if ok:
                job.set_result(cloudpickle.loads(blob))
            else:
                job.set_exception(_rebuild(blob, where))
        except BaseException as exc:  # noqa: B036 (a result that cannot be unpickled here)
            job.set_exception(exc)
        try:
            job.callback(job)
        except Exception:  # joblib's callback never raises; keep the client alive if it does
            import traceback

            traceback.print_exc()


def _rebuild(blob: tuple, where: tuple) -> BaseException:
    import cloudpickle

    pickled, kind, text = blob
    rank, host, size = where
    exc: BaseException | None = None
    if pickled is not None:
        try:
            exc = cloudpickle.loads(pickled)
        except Exception:
            exc = None
    if exc is None:
        exc = RemoteTaskError(kind)
    exc.add_note(f"### raised in a task on worker rank {rank} of {size} on {host}:\n{text}")
    return exc


class BudgetThreadingBackend(ThreadingBackend):
    """joblib's threading backend held to the thread budget of the worker rank.

    ``n_jobs`` is capped at the budget (``-1`` means the budget, not the node's cores), and
    while it runs ``n`` threads, BLAS and OpenMP pools get ``budget // n`` threads each, so a
    rank never uses more than its share. Deeper levels run sequentially.
    """

    def __init__(self, nesting_level: int | None = 1, **kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level, **kwargs)
        self._limits: Any = None

    def __reduce__(self) -> tuple:
        return (BudgetThreadingBackend, (self.nesting_level,))

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        return max(min(super().effective_n_jobs(n_jobs), worker_threads()), 1)

    def start_call(self) -> None:
        from threadpoolctl import threadpool_limits

        n = getattr(self, "_n_jobs", None) or 1
        self._limits = threadpool_limits(limits=max(worker_threads() // n, 1))

    def stop_call(self) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None

    def configure(self, n_jobs: int = 1, parallel: Any = None, **kwargs: Any) -> int:
        n = super().configure(n_jobs=n_jobs, parallel=parallel, **kwargs)
        self._n_jobs = n
        return n

    def get_nested_backend(self) -> tuple[Any, int | None]:
        return SequentialBackend(nesting_level=(self.nesting_level or 1) + 1), None


class MPIBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib backend ``"mpi"``: batches run on the MPI ranks other than 0.

    Parameters
    ----------
    scatter_threshold : int, optional
        Arrays of at least this many bytes (anywhere in a task's arguments) go to each node
        once, by content, into shared memory, and stay cached there across ``Parallel``
        calls. Default: each ``Parallel`` call's ``max_nbytes`` (joblib's own threshold,
        1 MiB unless set; ``None`` sends every array inline, with its task).
    **kwargs
        Passed to ``ParallelBackendBase``.

    Notes
    -----
    Use it under ``mpiexec -n P python -m hpcml.joblib script.py`` (or ``import
    hpcml.joblib`` at the top of a script started by ``mpiexec``). Without a world of several
    ranks, or inside a task on a worker, tasks run in the calling process.
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = False
    default_n_jobs = -1
    uses_threads = False

    def __init__(self, scatter_threshold: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scatter_threshold = None if scatter_threshold is None else int(scatter_threshold)
        self._threshold = DEFAULT_THRESHOLD if scatter_threshold is None else int(scatter_threshold)
        self._memo = KeyMemo()

    def __reduce__(self) -> tuple:
        return (MPIBackend, (self.scatter_threshold,))

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs`` batches at a time; ``-1`` is every worker rank, ``-2`` all but one...

        With one worker, ``-1`` is 2: joblib runs ``n_jobs == 1`` in the calling process
        (rank 0), so the one worker gets the batches one after the other instead.
        """
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        client = get_client()
        if client is None or n_jobs == 1:
            return 1
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        if n_jobs < 0:
            n = client.n_workers
            return 2 if n == 1 and n_jobs == -1 else max(n + 1 + int(n_jobs), 1)
        return int(n_jobs)

    def configure(self, n_jobs: int = 1, parallel: Any = None, **kwargs: Any) -> int:
        """Set up one ``Parallel`` call. ``max_nbytes`` is the size from which an array goes
        once per node into shared memory (unless ``scatter_threshold`` was given; ``None``:
        never); ``temp_folder`` and ``mmap_mode`` (loky's memory mapping) are ignored.

        Raises
        ------
        ValueError
            ``initializer``: a process-pool option (loky, multiprocessing); run the set-up
            at the top of the task instead.
        """
        if kwargs.get("initializer") is not None:
            raise ValueError("the 'mpi' backend does not support initializer=: it is an "
                             "option of the process-pool backends (loky, multiprocessing); "
                             "call the set-up at the start of the task instead")
        self.parallel = parallel
        if self.scatter_threshold is None and "max_nbytes" in kwargs:
            nbytes = kwargs["max_nbytes"]
            self._threshold = sys.maxsize if nbytes is None else int(nbytes)
        return self.effective_n_jobs(n_jobs)

    def start_call(self) -> None:
        self._memo.clear()

    def terminate(self) -> None:
        """The end of a ``Parallel`` call (or its context): the workers stay up."""
        self.reset_batch_stats()

    def stop_call(self) -> None:
        self._memo.clear()

    def submit(self, func: Any, callback: Any = None) -> Any:
        client = get_client()
        if client is None:  # not on rank 0 of a world of several: run here
            job = _Job(b"", {}, callback, id(self))
            try:
                job.set_result(func())
            except BaseException as exc:  # noqa: B036
                job.set_exception(exc)
            if callback is not None:
                callback(job)
            return job
        try:
            payload, arrays = _dumps(func, self._threshold, self._memo)
        except Exception as exc:  # unpicklable: the task's error, not the client thread's
            job = _Job(b"", {}, callback, id(self))  # (joblib dispatches from callbacks too)
            job.set_exception(exc)
            if callback is not None:
                callback(job)
            return job
        job = _Job(payload, arrays, callback, id(self))
        client.put(job)
        return job

    def retrieve_result_callback(self, out: _Job) -> Any:
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        client = get_client()
        if client is not None:
            client.cancel(id(self))

    def get_nested_backend(self) -> tuple[Any, int | None]:
        """Inside a worker: threads within the rank's budget, then sequential."""
        if is_worker() or get_client() is not None:
            return BudgetThreadingBackend(nesting_level=(self.nesting_level or 0) + 1), -1
        return super().get_nested_backend()
