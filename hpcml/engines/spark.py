"""The ``"spark"`` engine: Spark tasks through joblibspark (``pip install 'hpcml[spark]'``).

Starts (or joins) a ``SparkSession`` on ``local[N]`` or a ``master`` URL, and runs each chunk
with ``joblib.Parallel(backend="spark")``: joblibspark makes it a one-task Spark job. A
thread of the driver waits for each chunk in flight (joblibspark's backend gives joblib no
results as they complete), so the run still collects chunks as they land and stops
between them. The data and the fit tasks are Spark broadcast variables, sent once per executor; a
chunk's closure carries only their ids.

This module is ``hpcml.engines.spark``: its imports are absolute.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import joblibspark
import pyspark
from pyspark.sql import SparkSession

from hpcml.engines.farm import FuturesFarm

if TYPE_CHECKING:
    from hpcml.core.fitting import FitResult
    from hpcml.search.evaluate import FitTasks

__all__ = ["SparkEngine", "make_engine"]


def _run_items(tasks: Any, items: Sequence[int], t0: float, X: Any, y: Any
               ) -> list[FitResult]:
    """On an executor: the broadcast values, then the chunk."""
    return tasks.value.run_items(items, X.value, y.value, t0)


class SparkEngine(FuturesFarm):
    """Chunks of the plan as Spark jobs, through joblibspark's joblib backend.

    Parameters
    ----------
    master : str, optional
        Spark master URL (``spark://host:7077``, ``yarn``, ...); default ``local[workers]``,
        with the driver on 127.0.0.1 and no UI. An active ``SparkSession`` is used as it is
        (and not stopped).
    workers : int, optional
        Tasks at once on ``local[N]`` (default: the usable cores).
    threads : int, optional
        Threads of each task (default 1).
    """

    name = "spark"
    #: A Spark job per chunk costs tens of milliseconds: chunks of at least a second of work.
    grain = 1.0

    def __init__(self, *, master: str | None = None, workers: int | None = None,
                 threads: int | None = None) -> None:
        super().__init__(workers=workers, threads=threads)
        self.master = master
        self.session: Any = None
        self._own = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _start(self) -> None:
        from hpcml.core.threads import thread_env

        # The Python workers: this interpreter (its packages), whatever python3 is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        active = SparkSession.getActiveSession()
        if active is not None:
            self.session = active
        else:
            builder = (SparkSession.builder.appName("hpcml")
                       .master(self.master or f"local[{super().workers}]")
                       .config("spark.ui.enabled", "false")
                       .config("spark.pyspark.python", sys.executable)
                       .config("spark.python.worker.reuse", "true"))
            if not self.master:
                builder = (builder.config("spark.driver.host", "127.0.0.1")
                           .config("spark.driver.bindAddress", "127.0.0.1"))
            for var, value in thread_env(self.threads, environ={}).items():
                builder = builder.config(f"spark.executorEnv.{var}", value)
            self.session = builder.getOrCreate()
            self.session.sparkContext.setLogLevel("ERROR")
            self._own = True
        joblibspark.register_spark()
        warnings.filterwarnings("ignore", message="Spark local mode doesn't support stage")
        # Each chunk is a blocking joblib call: a thread of the driver waits for it.
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers * self.window_per_worker,
                                                           thread_name_prefix="hpcml-spark")

    @property
    def workers(self) -> int:
        if self.session is None:
            return super().workers
        return max(int(self.session.sparkContext.defaultParallelism) // self.threads, 1)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "master": self.master, "pyspark": pyspark.__version__,
                "joblibspark": joblibspark.__version__}

    def _share(self, arrays: dict[str, Any]) -> dict[str, Any]:
        sc = self.session.sparkContext
        return {name: sc.broadcast(arr) for name, arr in arrays.items()}

    def _prepare(self, tasks: FitTasks) -> Any:
        return self.session.sparkContext.broadcast(tasks)

    def _submit(self, tasks: Any, items: Sequence[int], data: dict[str, Any], t0: float) -> Any:
        return self._pool.submit(self._spark_job, tasks, items, data, t0)

    def _spark_job(self, tasks: Any, items: Sequence[int], data: dict[str, Any], t0: float
                   ) -> list[FitResult]:
        """One chunk as one Spark job, through joblibspark (in a thread of the driver)."""
        from joblib import Parallel, delayed

        # joblib runs a call of n_jobs=1 in this process: ask for two slots, give one task.
        parallel = Parallel(n_jobs=max(self.workers, 2), backend="spark")
        try:
            out = parallel([delayed(_run_items)(tasks, items, t0, data["X"], data["y"])])[0]
        except TypeError as exc:  # joblib cannot re-raise joblibspark's wrapped worker error
            if "_ExceptionWithTraceback" not in str(exc):
                raise
            raise RuntimeError("a Spark task failed: its Python traceback is in the executor "
                               "log above (is every estimator's module importable on the "
                               "executors?)") from None
        if not isinstance(out, list):  # joblibspark hands back a worker's error as a value
            exc = getattr(out, "exc", None)
            if isinstance(exc, BaseException):
                raise RuntimeError(f"a Spark task failed: {getattr(out, 'tb', exc)}") from exc
            raise RuntimeError(f"a Spark task failed: {out!r}")
        return out

    def _stop_workers(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._own and self.session is not None:
            self.session.stop()
        self.session, self._own = None, False


def make_engine(*, master: str | None = None, workers: int | None = None,
                threads: int | None = None) -> SparkEngine:
    """The ``"spark"`` engine of the registry."""
    return SparkEngine(master=master, workers=workers, threads=threads)
