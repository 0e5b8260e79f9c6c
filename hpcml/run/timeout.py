"""Per-fit time limits: fits run in a forked child process that can really be stopped.

A fit is native code; no Python signal or thread can interrupt it. With a ``fit_timeout``,
each rank forks one worker process (after the data are loaded, so the worker shares them
copy-on-write) and sends it task numbers over a pipe. A fit past the limit gets the worker
killed (SIGKILL), is scored as failed, and a fresh worker is forked for the next task.
Cost: one pipe round trip per task (~0.1 ms) and a fork per timeout.
"""

from __future__ import annotations

import os
import signal
import traceback
from multiprocessing.connection import Connection, Pipe
from typing import Any

import numpy as np

from hpcml.core.fitting import FitResult
from hpcml.engines.base import RunTask

__all__ = ["TimeoutRunner"]


class TimeoutRunner:
    """Run ``run_task`` in a child process, giving up on a task after ``timeout`` seconds.

    Parameters
    ----------
    run_task : callable
        ``run_task(t) -> FitResult``; it runs in the child.
    timeout : float
        Seconds a task may take.
    metrics : sequence of str
        Metric names, for the failed result's scores.
    error_score : float or 'raise'
        Score of a task that timed out (with ``'raise'``, a timeout raises ``TimeoutError``).
    return_train_score : bool
        Also fill train scores of a timed-out task.
    task_of : callable, optional
        The task number of ``run_task``'s argument (when it is an index into a list of
        tasks, e.g. those left on resume): a timed-out result carries it, as a fit's does.
    """

    def __init__(self, run_task: RunTask, timeout: float, metrics, error_score=np.nan,
                 return_train_score: bool = False, task_of=None) -> None:
        self.run_task = run_task
        self.task_of = task_of or (lambda i: i)
        self.timeout = float(timeout)
        self.metrics = list(metrics)
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.pid: int | None = None
        self.conn: Connection | None = None
        self.n_timeouts = 0

    def _start(self) -> None:
        parent, child = Pipe()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: never returns, never touches MPI
            parent.close()
            code = 0
            try:
                _serve(child, self.run_task, me)
            except BaseException:
                code = 1
            os._exit(code)
        child.close()
        self.pid, self.conn = pid, parent

    def __call__(self, t: int) -> FitResult:
        if self.pid is None:
            self._start()
        self.conn.send(t)
        if self.conn.poll(self.timeout):
            try:
                kind, value = self.conn.recv()
            except EOFError:
                self._reap()
                raise RuntimeError(
                    f"the fit worker of task {t} died (killed, or out of memory?)"
                ) from None
            if kind == "error":
                raise RuntimeError(f"task {t} failed in the fit worker:\n{value}")
            return value
        self.kill()
        self.n_timeouts += 1
        msg = f"TimeoutError: the fit took longer than fit_timeout={self.timeout:g}s and was stopped"
        if self.error_score == "raise":
            raise TimeoutError(f"task {t}: {msg}")
        bad = {m: float(self.error_score) for m in self.metrics}
        return FitResult(int(self.task_of(t)), bad, dict(bad) if self.return_train_score else None,
                         self.timeout, 0.0, error=msg)

    def kill(self) -> None:
        """Stop the worker now."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap()

    def close(self) -> None:
        """Let the worker exit."""
        if self.pid is not None:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
            self._reap()

    def _reap(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        if self.conn is not None:
            self.conn.close()
        self.pid, self.conn = None, None

    def __enter__(self) -> TimeoutRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _serve(conn: Connection, run_task: RunTask, parent: int) -> None:
    # The parent handles stop signals (a TERM to the process group, as from scancel or
    # ``hpcml run``'s launcher, reaches this worker too): the worker finishes its fit and is
    # then closed or killed by the rank, and dies with the rank if the rank is killed.
    from hpcml.run.orphans import die_with_parent

    die_with_parent(signal.SIGKILL, parent=parent)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            t = conn.recv()
        except EOFError:
            return
        if t is None:
            return
        try:
            conn.send(("ok", run_task(t)))
        except Exception:
            conn.send(("error", traceback.format_exc()))
