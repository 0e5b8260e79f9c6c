"""The ``"loky"`` engine: a pool of worker processes on this machine, no MPI at all.

loky ships with joblib (a dependency of hpcml), so this engine needs no extra. Each worker
gets the data and the fit tasks once, when it starts (the pool's initializer); a chunk then
travels as a list of item numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpcml.engines.farm import FuturesFarm

if TYPE_CHECKING:
    from hpcml.core.fitting import FitResult
    from hpcml.search.evaluate import FitTasks

__all__ = ["LokyEngine", "make_engine"]

#: What a loky worker holds: the run's fit tasks and data (set once by the initializer).
_STATE: dict[str, Any] = {}


def _install(tasks: FitTasks, X: Any, y: Any) -> None:
    _STATE.update(tasks=tasks, X=X, y=y)


def _run_items(items: Sequence[int], t0: float) -> list[FitResult]:
    return _STATE["tasks"].run_items(items, _STATE["X"], _STATE["y"], t0)


class LokyEngine(FuturesFarm):
    """Worker processes on this machine (joblib's loky), one task at a time each.

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: the usable cores).
    threads : int, optional
        Threads of each task (default 1).
    """

    name = "loky"

    def __init__(self, *, workers: int | None = None, threads: int | None = None) -> None:
        super().__init__(workers=workers, threads=threads)
        self._pool: Any = None
        self._arrays: dict[str, Any] = {}

    def _start(self) -> None:
        return None  # the pool starts with the run's tasks (its initializer holds them)

    def _share(self, arrays: dict[str, Any]) -> dict[str, Any]:
        self._arrays = arrays  # sent once per worker, by the initializer
        return {name: None for name in arrays}

    def _prepare(self, tasks: FitTasks) -> Any:
        from joblib.externals.loky import ProcessPoolExecutor

        from hpcml.core.threads import thread_env

        self._stop_workers()
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, initializer=_install,
            initargs=(tasks, self._arrays.get("X"), self._arrays.get("y")),
            env=thread_env(self.threads, environ={}),
        )
        return None

    def _submit(self, tasks: Any, items: Sequence[int], data: dict[str, Any], t0: float) -> Any:
        return self._pool.submit(_run_items, items, t0)

    def _stop_workers(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, kill_workers=True)
            self._pool = None


def make_engine(*, workers: int | None = None, threads: int | None = None) -> LokyEngine:
    """The ``"loky"`` engine of the registry."""
    return LokyEngine(workers=workers, threads=threads)
