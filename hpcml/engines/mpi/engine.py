"""The MPI engine: dynamic self-scheduling of a plan's chunks over the ranks of an MPI world."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from hpcml.engines.base import Engine, Observers, SerialEngine, ShouldStop
from hpcml.engines.mpi.board import PlanBoard
from hpcml.engines.mpi.world import MPIWorld, mpi_library_version, world_of

if TYPE_CHECKING:
    from hpcml.core.fitting import FitResult
    from hpcml.core.schedule import Plan
    from hpcml.engines.base import RunTask

__all__ = ["MPIEngine", "make_engine"]


class MPIEngine(Engine):
    """Dynamic self-scheduling over MPI ranks; every rank fits, none dispatches.

    Rank 0 holds the plan board in MPI-3 windows (:class:`~hpcml.engines.mpi.board.PlanBoard`).
    A free rank takes the next chunk of the plan with one atomic fetch-and-add, runs its
    tasks, and adds its count to a counter that rank 0 reads for progress. Results are
    gathered on rank 0 at the end.

    Parameters
    ----------
    world : MPIWorld or mpi4py communicator, optional
        The ranks that share the work (default: this job's world).
    """

    name = "mpi"

    def __init__(self, world: Any = None) -> None:
        if world is None or not isinstance(world, MPIWorld):
            world = MPIWorld(world)
        super().__init__(world)
        #: Re-plans with measured costs that landed in the last :meth:`run` (every rank).
        self.replans = 0

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def size(self) -> int:
        return self.world.size

    def info(self) -> dict[str, Any]:
        return {"engine": "MPIEngine", "ranks": self.world.size, "mpi": mpi_library_version(),
                "replans": self.replans}

    def run(  # noqa: D102 - see Engine.run
        self,
        plan: Plan,
        run_task: RunTask,
        observers: Observers | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult] | None:
        comm, rank = self.world.comm, self.world.rank
        obs = observers or Observers()
        t0 = comm.bcast(time.time() if rank == 0 else None, root=0)
        mine: list[FitResult] = []
        stop = should_stop or (lambda: False)
        with PlanBoard(comm, plan, obs if obs.watches_progress else None, t0) as board:
            while not board.stopped and (chunk := board.next_chunk()) is not None:
                seconds = []
                for t in chunk:
                    if stop() or board.poll_stop():
                        board.stop()
                        break
                    start = time.time() - t0
                    r = run_task(int(t))
                    r.rank, r.start, r.end = rank, start, time.time() - t0
                    mine.append(r)
                    seconds.append(r.end - r.start)
                    obs.result(r)
                board.publish(seconds)
                board.add_done(len(seconds), _estimated(plan, chunk[: len(seconds)]))
                if stop():
                    board.stop()
        states = comm.allgather((board.stopped, board.replans))
        self.interrupted = any(stopped for stopped, _ in states)
        self.replans = sum(n for _, n in states)
        gathered = comm.gather(mine, root=0)
        if rank != 0:
            return None
        return {r.task: r for part in gathered for r in part}


    def run_source(  # noqa: D102 - see Engine.run_source
        self,
        source: Any,
        run_task: RunTask,
        observers: Observers | None = None,
        should_stop: ShouldStop | None = None,
    ) -> dict[int, FitResult] | None:
        from hpcml.engines.mpi.source import run_source

        out, self.interrupted = run_source(self.world.comm, source, run_task,
                                           observers or Observers(), should_stop)
        return out


def _estimated(plan: Plan, tasks: Any) -> float:
    """Estimated seconds of ``tasks`` (0 for a plan without a cost model)."""
    return float(plan.costs.estimates[tasks].sum()) if plan.costs is not None else 0.0


def make_engine(world: Any = None, **options: Any) -> Engine:
    """The ``"mpi"`` engine of the registry: over ``world`` (default: this job's MPI world);
    a world of one rank gets the serial engine, which needs no MPI windows."""
    if options:
        raise TypeError(f"the mpi engine takes no options: {sorted(options)}")
    if world is None:
        world = world_of(None)
    elif not hasattr(world, "agree"):  # an mpi4py communicator
        world = world_of(world)
    return MPIEngine(world) if isinstance(world, MPIWorld) else SerialEngine(world)
