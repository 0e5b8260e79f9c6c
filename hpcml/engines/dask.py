"""The ``"dask"`` engine: Dask distributed workers (``pip install 'hpcml[dask]'``).

Connects to a running scheduler (``scheduler_address``, e.g. one that dask-jobqueue's
``SLURMCluster`` started), or starts a ``LocalCluster`` on the loopback interface. The data
and the fit tasks are scattered once; each chunk is a ``client.submit`` that names them.

This module is ``hpcml.engines.dask``: its imports are absolute, so ``distributed`` below is
the real package.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import distributed

from hpcml.engines.farm import FarmEngine

if TYPE_CHECKING:
    from hpcml.core.fitting import FitResult
    from hpcml.search.evaluate import FitTasks

__all__ = ["DaskEngine", "make_engine"]


def _run_items(tasks: FitTasks, items: Sequence[int], t0: float, X: Any, y: Any
               ) -> list[FitResult]:
    return tasks.run_items(items, X, y, t0)


class DaskEngine(FarmEngine):
    """Chunks of the plan as Dask futures, on a scheduler's workers.

    Parameters
    ----------
    scheduler_address : str, optional
        ``tcp://host:port`` of a running scheduler; default: a ``LocalCluster`` of
        ``workers`` single-threaded worker processes, listening on 127.0.0.1 only.
    workers : int, optional
        Workers of the local cluster (default: the usable cores).
    threads : int, optional
        Threads of each task (default 1).
    """

    name = "dask"

    def __init__(self, *, scheduler_address: str | None = None, workers: int | None = None,
                 threads: int | None = None) -> None:
        super().__init__(workers=workers, threads=threads)
        self.scheduler_address = scheduler_address
        self.client: Any = None
        self._cluster: Any = None

    def _start(self) -> None:
        if self.scheduler_address:
            self.client = distributed.Client(self.scheduler_address, set_as_default=False)
            return
        from hpcml.core.threads import thread_env

        self._cluster = distributed.LocalCluster(
            n_workers=super().workers, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
            env=thread_env(self.threads, environ={}),
        )
        self.client = distributed.Client(self._cluster, set_as_default=False)

    @property
    def workers(self) -> int:
        if self.client is None:
            return super().workers
        slots = sum(w.get("nthreads", 1)
                    for w in self.client.scheduler_info()["workers"].values())
        return max(slots, 1)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "scheduler_address": self.scheduler_address,
                "dask": distributed.__version__}

    def _share(self, arrays: dict[str, Any]) -> dict[str, Any]:
        return {name: self.client.scatter(arr, broadcast=self._cluster is not None)
                for name, arr in arrays.items()}

    def _prepare(self, tasks: FitTasks) -> Any:
        return self.client.scatter(tasks, hash=False, broadcast=self._cluster is not None)

    def _submit(self, tasks: Any, items: Sequence[int], data: dict[str, Any], t0: float) -> Any:
        return self.client.submit(_run_items, tasks, items, t0, data["X"], data["y"],
                                  pure=False)

    def _wait(self, pending: list[Any], timeout: float) -> list[Any]:
        # distributed.wait would need this client as the process's default: poll instead.
        deadline = time.monotonic() + timeout
        while True:
            done = [f for f in pending if f.done()]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(0.01)

    def _result(self, handle: Any) -> list[FitResult]:
        return handle.result()

    def _cancel(self, pending: list[Any]) -> None:
        self.client.cancel(pending)

    def _stop_workers(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def make_engine(*, scheduler_address: str | None = None, workers: int | None = None,
                threads: int | None = None) -> DaskEngine:
    """The ``"dask"`` engine of the registry."""
    return DaskEngine(scheduler_address=scheduler_address, workers=workers, threads=threads)
