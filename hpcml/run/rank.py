"""The one entry point of a rank: ``hpcml run``, ``hpcml predict`` and submitit's ranks.

In this order, which matters:

1. stop handlers first (a wall-time signal during MPI's start-up must not kill the rank);
2. MPI starts before numpy, scipy or scikit-learn load (this module imports none of them,
   and neither do the modules it imports at the top): on two nodes, MPI start-up after
   scikit-learn has loaded fails about half the time with MPICH's default transport;
3. the thread budget (``OMP_NUM_THREADS`` and friends) is set from the node layout, before
   BLAS sizes its pools;
4. the work runs inside :func:`~hpcml.engines.mpi.world.abort_on_error`: an exception that
   escapes it on one rank aborts every rank, with that rank's traceback, rank and host;
5. once the work is over, stop signals are ignored (a late one must not turn a finished
   rank into a dead one while MPI finalises).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hpcml.errors import UsageError, exit_status, print_error
from hpcml.run.signals import (
    EARLY,
    STOP_SIGNALS,
    StopFlag,
    ignore_stop_signals,
    install_stop_handlers,
)

__all__ = ["Rank", "on_rank", "rank_main"]

T = TypeVar("T")


@dataclass
class Rank:
    """What the work of a rank gets: its world communicator, threads and stop flag."""

    comm: Any
    threads: int
    stop: StopFlag

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    @property
    def comm_or_none(self) -> Any:
        """The communicator, or ``None`` in a world of one (the serial engine)."""
        return self.comm if self.size > 1 else None


def on_rank(work: Callable[[Rank], T], *, threads: int | None = None,
            stop_signals: Sequence[int] = STOP_SIGNALS) -> T:
    """Start this rank (MPI, threads, stop handlers) and run ``work`` on it.

    Exceptions from ``work`` propagate (a :class:`UsageError` on every rank, when ``work``
    raises it collectively); any other exception aborts every rank of a world of several.
    """
    import os

    from hpcml.engines.mpi.world import abort_on_error, join_world

    parent = os.getppid()
    stop = StopFlag()
    if EARLY():  # a stop signal during start-up: stop before the first fit
        stop.set(EARLY.signal_name or "request")
    if stop_signals:
        install_stop_handlers(stop, stop_signals)
    comm, threads = join_world(threads)  # refuses plain srun; threads before numpy
    if comm.Get_size() > 1:  # a rank whose launcher (proxy, step daemon) dies dies with it
        from hpcml.run.orphans import die_with_parent

        die_with_parent(parent=parent)
    deferred: BaseException | None = None
    try:
        with abort_on_error(comm):
            try:
                return work(Rank(comm, threads, stop))
            except UsageError as exc:  # raised on every rank (World.agree): no abort
                if comm.Get_size() > 1 and getattr(exc, "one_rank", False) and not getattr(
                        exc, "hpcml_collective", False):
                    raise  # on this rank only (its journal's disk): abort_on_error ends all
                deferred = exc
            except SystemExit as exc:  # every rank's own exit status (75 after a stop)
                deferred = exc
    finally:
        if stop_signals:
            ignore_stop_signals(stop_signals)
    if deferred is None:  # pragma: no cover - abort_on_error never returns quietly
        raise RuntimeError("the rank's work ended without a result")
    raise deferred


def rank_main(work: Callable[[Rank], int], *, threads: int | None = None,
              stop_signals: Sequence[int] = STOP_SIGNALS) -> int:
    """:func:`on_rank` for a command: a :class:`UsageError` is one line from rank 0 and
    exit status 2 on every rank; returns the work's exit status."""
    try:
        return on_rank(work, threads=threads, stop_signals=stop_signals)
    except UsageError as exc:
        from hpcml.engines.mpi.world import world_rank

        if world_rank() == 0:
            print_error(str(exc))
        return exit_status(exc)
