"""What ``hpcml run`` sees of a run: logging (rank and host in every record) and the status.

:func:`watch_run` wraps one rank's run: it sets up :mod:`logging`, starts the
:class:`~hpcml.run.status.RunStatus` observer, and on the way out writes the final state
(finished, stopped or failed, whatever ended the run) and has rank 0 sum it up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

from hpcml.errors import UsageError

__all__ = ["setup_logging", "watch_run", "Watch", "LOGGER"]

LOGGER = "hpcml"
FORMAT = "%(asctime)s hpcml[rank %(rank)s on %(host)s] %(levelname)s: %(message)s"


class _RankFilter(logging.Filter):
    def __init__(self, rank: int, host: str) -> None:
        super().__init__()
        self.rank, self.host = rank, host

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank, record.host = self.rank, self.host
        return True


def setup_logging(verbosity: int = 0, rank: int = 0, host: str | None = None,
                  stream: Any = None) -> logging.Logger:
    """The ``hpcml`` logger: rank and host in each record, on standard error.

    Parameters
    ----------
    verbosity : int
        ``-1`` (``--quiet``): warnings only; ``0``: rank 0 logs the summary at the end,
        other ranks warnings only; ``1`` (``--verbose``): every rank logs every fit.
    rank : int
        This rank.
    host : str, optional
        This host (default: the host name).
    stream : text stream, optional
        Where records go (standard error by default).
    """
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_hpcml", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._hpcml = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(_RankFilter(rank, host or socket.gethostname()))
    logger.addHandler(handler)
    logger.propagate = False
    if verbosity > 0:
        logger.setLevel(logging.DEBUG)
    elif verbosity == 0 and rank == 0:
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.WARNING)
    return logger


class _FitLog:
    """An observer that logs each fit (at DEBUG) on the rank that made it."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def result(self, r: Any) -> None:
        if not self.logger.isEnabledFor(logging.DEBUG):
            return
        if r.error:
            lines = str(r.error).strip().splitlines()
            self.logger.debug("task %d failed after %.2fs: %s", r.task, r.fit_time,
                              lines[-1] if lines else "")
        else:
            scores = ", ".join(f"{k}={v:.4g}" for k, v in r.test_scores.items())
            self.logger.debug("task %d: %s (fit %.2fs, score %.2fs)", r.task, scores,
                              r.fit_time, r.score_time)


class Watch:
    """What :func:`watch_run` yields: the observers to give the run, and :meth:`done`."""

    def __init__(self, status: Any, logger: logging.Logger) -> None:
        self.status = status
        self.logger = logger
        self.observers: tuple[Any, ...] = tuple(
            o for o in (status, _FitLog(logger)) if o is not None)
        self._ended = False

    def done(self, result: Any, stop_signal: str | None = None) -> None:
        """The run returned: ``stopped`` when it was interrupted before the end, else
        ``finished``."""
        stopped = bool(result.interrupted and not result.complete)
        self._end("stopped" if stopped else "finished", stop_signal=stop_signal)

    def _end(self, state: str, **kw: Any) -> None:
        if self._ended:
            return
        self._ended = True
        summary = self.status.finish(state, **kw) if self.status is not None else None
        if summary is not None:
            from hpcml.run.status import summary_line

            # a failure is already told by its error (one line for bad input): no more here
            log = self.logger.debug if state == "failed" else self.logger.info
            log("%s: %s", state, summary_line(summary))


@contextlib.contextmanager
def watch_run(out: str | os.PathLike | None, rank: int = 0, size: int = 1, *,
              verbosity: int = 0, force: bool = False, shard: tuple[int, int] | None = None,
              interval: float = 2.0) -> Iterator[Watch]:
    """Log and keep ``DIR/status.json`` for the run inside the block (on every rank).

    The block calls :meth:`Watch.done` with the run's result; leaving it by an exception
    writes ``failed`` with the exception's text. Bad input that the run refuses before it
    writes anything (spec, data, a folder holding a finished run) leaves no status either.

    Examples
    --------
    >>> with watch_run(None, verbosity=-1) as watch:
    ...     watch.observers[0].__class__.__name__
    '_FitLog'
    """
    logger = setup_logging(verbosity, rank)
    status = None
    if out is not None and _may_write(out, force):
        from hpcml.run.status import RunStatus

        status = RunStatus(out, rank, size, shard=shard, interval=interval)
    watch = Watch(status, logger)
    if rank == 0:
        logger.debug("run of %s rank(s) started; status: %s", size,
                    status.path if status is not None else "(no --out)")
    try:
        yield watch
    except KeyboardInterrupt:
        watch._end("stopped", stop_signal="SIGINT")
        raise
    except BaseException as exc:
        text = str(exc) if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}"
        watch._end("failed", error=text)
        raise
    finally:
        watch._end("finished")  # the block ended without done(): nothing was interrupted


def _may_write(out: str | os.PathLike, force: bool) -> bool:
    """Whether ``out`` may take a status (the run will not refuse it)."""
    from hpcml.run.outputs import check_out_dir

    try:
        check_out_dir(out, force)
    except UsageError:
        return False
    return True
