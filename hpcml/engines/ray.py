"""The ``"ray"`` engine: Ray tasks (``pip install 'hpcml[ray]'``).

``ray.init()`` starts a local Ray on the loopback interface, or joins the cluster at
``address`` (``"auto"`` or ``ray://host:10001``). The data and the fit tasks go to the object
store once (``ray.put``); each chunk is a remote call that names them, and Ray hands the
workers zero-copy read-only views.

This module is ``hpcml.engines.ray``: its imports are absolute, so ``ray`` below is the real
package.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ray

from hpcml.engines.farm import FarmEngine

if TYPE_CHECKING:
    from hpcml.core.fitting import FitResult
    from hpcml.search.evaluate import FitTasks

__all__ = ["RayEngine", "make_engine"]


def _run_items(tasks: FitTasks, items: Sequence[int], t0: float, X: Any, y: Any
               ) -> list[FitResult]:
    return tasks.run_items(items, X, y, t0)


def _loopback_only() -> None:
    """Make a local Ray listen on 127.0.0.1 only (its servers bind to the node's IP).

    ``ray.init()`` turns a loopback ``_node_ip_address`` into the machine's reachable IP; it
    keeps 127.0.0.1 only when multi-node clusters are off (Ray's switch for laptops). Set for
    this process (a constant Ray read at import) and the Ray processes it starts.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = False


class RayEngine(FarmEngine):
    """Chunks of the plan as Ray tasks of ``threads`` CPUs each.

    Parameters
    ----------
    address : str, optional
        A running Ray cluster (``"auto"``, ``ray://host:10001``); default: a local Ray with
        ``workers`` CPUs, listening on 127.0.0.1 only, without a dashboard. A Ray already
        initialised in this process is used as it is (and not shut down).
    workers : int, optional
        CPUs of the local Ray (default: the usable cores).
    threads : int, optional
        Threads (and Ray CPUs) of each task (default 1).
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int | None = None,
                 threads: int | None = None) -> None:
        super().__init__(workers=workers, threads=threads)
        self.address = address
        self._own = False
        self._remote: Any = None

    def _start(self) -> None:
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if self.address:
                ray.init(address=self.address, log_to_driver=False,
                         logging_level=logging.ERROR)
            else:
                _loopback_only()
                ray.init(num_cpus=super().workers, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.ERROR)
            self._own = True
        self._remote = ray.remote(_run_items).options(num_cpus=self.threads)

    @property
    def workers(self) -> int:
        if not self.started:
            return super().workers
        return max(int(ray.cluster_resources().get("CPU", 1)) // self.threads, 1)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "address": self.address, "ray": ray.__version__}

    def _share(self, arrays: dict[str, Any]) -> dict[str, Any]:
        return {name: ray.put(arr) for name, arr in arrays.items()}

    def _prepare(self, tasks: FitTasks) -> Any:
        self._remote = ray.remote(_run_items).options(num_cpus=self.threads)
        return ray.put(tasks)

    def _submit(self, tasks: Any, items: Sequence[int], data: dict[str, Any], t0: float) -> Any:
        return self._remote.remote(tasks, items, t0, data["X"], data["y"])

    def _wait(self, pending: list[Any], timeout: float) -> list[Any]:
        ready, _ = ray.wait(pending, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
        ready_ids = {r.hex() for r in ready}
        return [h for h in pending if h.hex() in ready_ids]

    def _result(self, handle: Any) -> list[FitResult]:
        return ray.get(handle)

    def _cancel(self, pending: list[Any]) -> None:
        for ref in pending:
            ray.cancel(ref)

    def _stop_workers(self) -> None:
        if self._own:
            ray.shutdown()
            self._own = False


def make_engine(*, address: str | None = None, workers: int | None = None,
                threads: int | None = None) -> RayEngine:
    """The ``"ray"`` engine of the registry."""
    return RayEngine(address=address, workers=workers, threads=threads)
