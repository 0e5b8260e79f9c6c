"""Scheduling simulator: replay task costs on any number of ranks, with no MPI.

The plan comes from the real policy (:func:`hpcml.core.schedule.plan_chunks`, or any function with
its signature), built from cost *estimates*; the simulation then runs the *true* costs with
the engines' semantics: every rank, when free, claims the next chunk number from one shared
counter (an MPI-3 atomic fetch-and-add on rank 0) and runs that chunk's tasks; a claim past
the last chunk tells the rank to stop. Event-driven with a heap, so 4,096 ranks and 100,000
tasks take a fraction of a second.

Model of one claim by rank ``r``: the request reaches the counter ``latency[r] / 2`` after
the rank is free; the counter serves one request at a time (``service`` seconds each, in
order of arrival); the chunk number is back at the rank another ``latency[r] / 2`` later.
Every task costs its true cost plus ``overhead`` (clone, split, result bookkeeping).

Re-plans, as in :class:`hpcml.engines.mpi.board.PlanBoard`: a rank publishes its chunk's measured costs
when it next claims; the rank that makes claim ``2P, 4P, ...`` re-plans the chunks from
``q`` on (:func:`~hpcml.core.schedule.replan_start`) with what was published, spending
``replan_cost`` per unclaimed task before it runs its own chunk; the new plan lands then,
unless the counter has passed ``q`` meanwhile.

Run ``python -m hpcml.core.simulate --ranks 64 1024 4096 --tasks 100000`` for a table.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpcml.core.schedule import (
    DEFAULT_GRAIN,
    REPLAN_COST,
    CostModel,
    Plan,
    plan_chunks,
    replan,
    replan_due,
    replan_start,
)

__all__ = [
    "SimResult",
    "simulate",
    "node_latencies",
    "synthetic_costs",
    "grid_costs",
    "grid_estimates",
    "noisy_estimates",
    "load_costs",
    "costs_from_cv_results",
    "main",
]

#: A scheduling policy: (estimated costs, number of ranks) -> Plan.
Policy = Callable[[np.ndarray, int], Plan]

#: Round trip of one atomic claim, seconds: a rank on the counter's node / on another node.
LATENCY_INTRA = 2e-6
LATENCY_INTER = 10e-6


@dataclass(frozen=True)
class SimResult:
    """What one simulated run measured.

    Attributes
    ----------
    n_ranks, n_tasks, n_chunks, n_claims : int
        ``n_claims`` counts every fetch-and-add, the last (empty) one of each rank included.
    makespan : float
        When the last rank learnt there was no chunk left (seconds from the start).
    work : float
        Sum of the true task costs (without ``overhead``).
    max_cost : float
        The longest true task.
    busy : float
        Rank-seconds spent running tasks (true costs plus per-task overhead).
    plan : Plan
        The schedule that was replayed (after its last re-plan).
    n_replans : int
        Re-plans with measured costs that landed.
    chunk_rank, chunk_start : ndarray or None
        Rank and start time of every chunk (with ``record=True``).
    """

    n_ranks: int
    n_tasks: int
    n_chunks: int
    n_claims: int
    makespan: float
    work: float
    max_cost: float
    busy: float
    plan: Plan = field(repr=False)
    n_replans: int = 0
    task_time: np.ndarray | None = field(default=None, repr=False)
    chunk_rank: np.ndarray | None = field(default=None, repr=False)
    chunk_start: np.ndarray | None = field(default=None, repr=False)

    @property
    def lower_bound(self) -> float:
        """``max(sum(c) / P, max(c))``: no schedule of the true costs finishes sooner."""
        return max(self.work / self.n_ranks, self.max_cost)

    @property
    def ratio(self) -> float:
        """``makespan / lower_bound`` (1.0 is perfect)."""
        lb = self.lower_bound
        return self.makespan / lb if lb > 0 else float("nan")

    @property
    def idle_fraction(self) -> float:
        """Share of the ranks' time not spent running tasks (claims, waits, the tail)."""
        total = self.n_ranks * self.makespan
        return max(0.0, 1.0 - self.busy / total) if total > 0 else 0.0  # (rounding)

    def timeline(self) -> list[tuple[int, float, float, int]]:
        """``(rank, start, end, task)`` of every task, in plan order (needs ``record=True``)."""
        if self.chunk_rank is None or self.task_time is None:
            raise ValueError("simulate(..., record=True) keeps the timeline")
        out = []
        order, bounds = self.plan.order, self.plan.bounds
        for c in range(self.plan.n_chunks):
            rank, t = int(self.chunk_rank[c]), float(self.chunk_start[c])
            for i in range(bounds[c], bounds[c + 1]):
                end = t + float(self.task_time[i])
                out.append((rank, t, end, int(order[i])))
                t = end
        return out


def simulate(
    costs: Sequence[float] | np.ndarray,
    n_ranks: int,
    *,
    estimates: Sequence[float] | np.ndarray | None = None,
    latency: float | Sequence[float] = LATENCY_INTRA,
    overhead: float = 0.0,
    service: float = 0.0,
    grain: float = DEFAULT_GRAIN,
    policy: Policy | None = None,
    record: bool = False,
    cost_model: CostModel | None = None,
    learn: bool = True,
    replan_cost: float = REPLAN_COST,
) -> SimResult:
    """Replay tasks of true cost ``costs`` on ``n_ranks`` ranks that self-schedule chunks.

    Parameters
    ----------
    costs : sequence of float
        True cost (seconds) of task ``i``: what the simulated fits take.
    n_ranks : int
        Ranks claiming chunks (every rank fits, none dispatches).
    estimates : sequence of float, optional
        Costs the plan is built from (default: the true costs, a perfect estimate).
    latency : float or sequence of float
        Round trip of one claim, seconds; one value for all ranks or one per rank (see
        :func:`node_latencies`).
    overhead : float
        Seconds added to every task (clone, data split, result bookkeeping).
    service : float
        Seconds the counter is held by one claim; claims queue behind each other.
    grain : float
        Passed to :func:`~hpcml.core.schedule.plan_chunks` (ignored with ``policy``).
    policy : callable, optional
        ``policy(estimates, n_ranks) -> Plan``; default ``plan_chunks`` with ``grain``.
    record : bool
        Keep every chunk's rank and start time (for :meth:`SimResult.timeline`).
    cost_model : CostModel, optional
        Candidates and models of the tasks (with ``estimates``): the simulated ranks then
        re-plan the unclaimed chunks with the costs measured so far, as the engines do
        (:func:`~hpcml.core.schedule.replan_due`, :func:`~hpcml.core.schedule.replan`).
    learn : bool
        Re-plan when ``cost_model`` is given (``False``: the fixed plan, for comparison).
    replan_cost : float
        Seconds a re-plan takes per unclaimed task; the re-planning rank starts its own
        chunk that much later, and the new plan only lands if nobody claimed its first chunk
        meanwhile (the engine's rule).

    Returns
    -------
    SimResult

    Examples
    --------
    Eight one-second tasks on four ranks, 2 µs per claim: two tasks and three claims each.

    >>> r = simulate([1.0] * 8, 4, latency=2e-6)
    >>> r.lower_bound, round(r.makespan, 6), r.n_claims
    (2.0, 2.000006, 12)

    A task that dominates: the makespan is that task.

    >>> r = simulate([50.0] + [0.1] * 100, 8, latency=0.0)
    >>> r.makespan, r.ratio
    (50.0, 1.0)
    """
    true = np.asarray(costs, dtype=np.float64).ravel()
    n = true.size
    est = true if estimates is None else np.asarray(estimates, dtype=np.float64).ravel()
    if est.size != n:
        raise ValueError(f"estimates has {est.size} values but costs has {n}")
    if np.any(true < 0) or not np.all(np.isfinite(true)):
        raise ValueError("costs must be finite and non-negative")
    p = int(n_ranks)
    if p < 1:
        raise ValueError(f"n_ranks must be >= 1, got {n_ranks}")
    lat = np.broadcast_to(np.asarray(latency, dtype=np.float64), (p,))
    if np.any(lat < 0):
        raise ValueError("latency must be non-negative")

    if policy is not None:
        plan = policy(est, p)
    else:
        plan = plan_chunks(est, p, grain, cost_model=cost_model)
    learning = learn and plan.costs is not None

    def chunk_costs(plan: Plan) -> tuple[np.ndarray, list[float]]:
        task_time = true[plan.order] + float(overhead)
        cum = np.concatenate([[0.0], np.cumsum(task_time)])
        return task_time, (cum[plan.bounds[1:]] - cum[plan.bounds[:-1]]).tolist()

    task_time, chunk_cost = chunk_costs(plan)
    n_chunks = len(chunk_cost)
    half = (lat / 2).tolist()
    service = float(service)

    # Heap of (time the claim reaches the counter, rank): the counter numbers claims in the
    # order they arrive, which is what an atomic fetch-and-add does.
    heap = [(half[r], r) for r in range(p)]
    heapq.heapify(heap)
    counter_free = 0.0
    next_chunk = 0
    claims = 0
    replans = 0
    makespan = 0.0
    chunk_rank: dict[int, int] = {}
    chunk_start: dict[int, float] = {}
    running: list[int] = [-1] * p  # the chunk each rank runs; published at its next claim
    published: list[int] = []
    pending: tuple[float, int, Plan] | None = None  # (time it is written, first chunk, plan)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        arrive, r = pop(heap)
        served = arrive if arrive > counter_free else counter_free
        if pending is not None and served >= pending[0]:
            # the re-plan is written (under an exclusive lock) unless its chunks went meanwhile
            if next_chunk <= pending[1]:
                plan = pending[2]
                task_time, chunk_cost = chunk_costs(plan)
                n_chunks = len(chunk_cost)
                replans += 1
            pending = None
        counter_free = served + service
        back = counter_free + half[r]
        claims += 1
        if running[r] >= 0:
            published.append(running[r])
            running[r] = -1
        if next_chunk >= n_chunks:
            if back > makespan:
                makespan = back
            continue
        c = next_chunk
        next_chunk += 1
        start = back
        if learning and pending is None and replan_due(c, p):
            # this rank re-plans the chunks from c + lag on with what was published so far
            q = replan_start(plan, c, back, p, replan_cost)
            if q is not None:
                pos = [np.arange(plan.bounds[k], plan.bounds[k + 1]) for k in published]
                items = plan.order[np.concatenate(pos)] if pos else np.zeros(0, np.int64)
                new = replan(plan, q, plan.costs.learn(items, true[items]))
                start = back + replan_cost * (n - int(plan.bounds[q]))
                pending = (start, q, new)
        running[r] = c
        if record:
            chunk_rank[c] = r
            chunk_start[c] = start
        push(heap, (start + chunk_cost[c] + half[r], r))

    return SimResult(
        n_ranks=p,
        n_tasks=n,
        n_chunks=n_chunks,
        n_claims=claims,
        makespan=makespan,
        work=float(true.sum()),
        max_cost=float(true.max()) if n else 0.0,
        busy=float(task_time.sum()),
        plan=plan,
        n_replans=replans,
        task_time=task_time if record else None,
        chunk_rank=np.array([chunk_rank[c] for c in range(n_chunks)]) if record else None,
        chunk_start=np.array([chunk_start[c] for c in range(n_chunks)]) if record else None,
    )


def grid_costs(
    n_candidates: int,
    n_folds: int = 5,
    n_models: int = 4,
    median: float = 0.05,
    sigma: float = 1.0,
    fold_sigma: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Costs of a synthetic grid: ``(costs, candidate, model)`` per task, candidate-major.

    Candidates' costs are lognormal around ``median``; a candidate's folds cost about the
    same (``fold_sigma``), as in a real K-fold grid, so measuring one fold tells the others.

    Examples
    --------
    >>> c, cand, model = grid_costs(100, n_folds=5, seed=1)
    >>> c.shape, cand[:6].tolist(), int(model.max())
    ((500,), [0, 0, 0, 0, 0, 1], 3)
    """
    rng = np.random.default_rng(seed)
    per_cand = rng.lognormal(np.log(median), sigma, size=int(n_candidates))
    cand = np.repeat(np.arange(int(n_candidates), dtype=np.int64), int(n_folds))
    model = (cand * int(n_models)) // max(int(n_candidates), 1)
    costs = per_cand[cand] * rng.lognormal(0.0, fold_sigma, size=cand.size)
    return costs, cand, model.astype(np.int64)


def grid_estimates(
    costs: np.ndarray, candidate: np.ndarray, model: np.ndarray, error: float,
    model_error: float = 0.0, seed: int = 0,
) -> np.ndarray:
    """Estimates of :func:`grid_costs`: off by ``exp(N(0, error))`` per candidate, times
    ``exp(N(0, model_error))`` per model (a cost model that is wrong for a whole model kind).
    The folds of a candidate share their estimate, like the real cost model's."""
    rng = np.random.default_rng(seed + 1_000_003)
    cand = np.asarray(candidate)
    per_cand = np.zeros(int(cand.max()) + 1 if cand.size else 0)
    np.add.at(per_cand, cand, costs)
    per_cand /= np.maximum(np.bincount(cand, minlength=per_cand.size), 1)
    per_cand *= rng.lognormal(0.0, error, size=per_cand.size) if error > 0 else 1.0
    m = np.asarray(model)
    per_model = rng.lognormal(0.0, model_error, size=int(m.max()) + 1) if model_error > 0 \
        else np.ones(int(m.max()) + 1 if m.size else 0)
    return per_cand[cand] * per_model[m]


def node_latencies(
    n_ranks: int,
    ranks_per_node: int,
    intra: float = LATENCY_INTRA,
    inter: float = LATENCY_INTER,
) -> np.ndarray:
    """Claim latency per rank when the counter lives on rank 0's node.

    Examples
    --------
    >>> node_latencies(6, 4, intra=2e-6, inter=1e-5).tolist()
    [2e-06, 2e-06, 2e-06, 2e-06, 1e-05, 1e-05]
    """
    ranks = np.arange(int(n_ranks))
    return np.where(ranks < max(int(ranks_per_node), 1), float(intra), float(inter))


def synthetic_costs(
    n_tasks: int, median: float = 0.05, sigma: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Lognormal task costs (seconds): most tasks near ``median``, a long tail for ``sigma`` > 1.

    Examples
    --------
    >>> c = synthetic_costs(1000, median=0.05, sigma=1.0, seed=1)
    >>> c.shape, bool(0.04 < np.median(c) < 0.06), bool((c > 0).all())
    ((1000,), True, True)
    """
    rng = np.random.default_rng(seed)
    return rng.lognormal(mean=np.log(median), sigma=sigma, size=int(n_tasks))


def noisy_estimates(costs: np.ndarray, error: float, seed: int = 0) -> np.ndarray:
    """Estimates off by a lognormal factor: ``costs * exp(N(0, error))`` (0 = exact)."""
    costs = np.asarray(costs, dtype=np.float64)
    if error <= 0:
        return costs.copy()
    rng = np.random.default_rng(seed + 1_000_003)
    return costs * rng.lognormal(mean=0.0, sigma=error, size=costs.shape)


def costs_from_cv_results(path: str | Path) -> np.ndarray:
    """Task costs of a finished run: ``mean_fit_time + mean_score_time`` of each candidate,
    once per fold, in task order (candidate-major, as :class:`~hpcml.core.tasks.TaskGrid`).

    Works for hpcml's ``cv_results.csv`` and for a ``GridSearchCV.cv_results_`` saved as CSV.
    Per-fold times are not in ``cv_results_``, so the folds of a candidate get its mean.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return np.zeros(0)
    folds = {m.group(1) for key in rows[0] if (m := re.fullmatch(r"split(\d+)_test_.+", key))}
    n_splits = max(len(folds), 1)
    out = []
    for row in rows:
        c = float(row["mean_fit_time"]) + float(row.get("mean_score_time") or 0.0)
        if np.isfinite(c):
            out.extend([c] * n_splits)
    return np.asarray(out, dtype=np.float64)


def load_costs(path: str | Path) -> np.ndarray:
    """Task costs from a ``cv_results.csv``, a ``.npy`` array or a text file (one per line)."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path).astype(np.float64).ravel()
    if path.suffix == ".csv":
        with open(path) as f:
            header = f.readline()
        if "mean_fit_time" in header:
            return costs_from_cv_results(path)
    return np.loadtxt(path, dtype=np.float64, ndmin=1, delimiter=",")


# -- command line --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hpcml.core.simulate",
        description="Replay task costs on P simulated ranks with hpcml's scheduling policy "
        "(longest first, guided chunks, one shared claim counter) and report makespan / LB.",
    )
    p.add_argument("--ranks", type=int, nargs="+", default=[64, 1024, 4096], metavar="P")
    p.add_argument("--tasks", type=int, default=None, metavar="N",
                   help="number of tasks (default 100000 synthetic; with --costs: resample "
                   "the file to N tasks)")
    p.add_argument("--costs", metavar="FILE",
                   help="recorded costs: a cv_results.csv, a .npy, or one number per line")
    p.add_argument("--median", type=float, default=0.05, help="synthetic: median cost, s")
    p.add_argument("--sigma", type=float, default=1.0, help="synthetic: lognormal sigma")
    p.add_argument("--folds", type=int, default=5, metavar="K",
                   help="synthetic: a grid of candidates x K folds that cost about the same "
                   "(default 5; 1: independent tasks)")
    p.add_argument("--models", type=int, default=4, metavar="M",
                   help="synthetic: candidates belong to M models (default 4)")
    p.add_argument("--estimate-error", type=float, default=0.0, metavar="S",
                   help="plan from estimates off by a factor exp(N(0, S)), per candidate "
                   "(default: exact)")
    p.add_argument("--model-error", type=float, default=0.0, metavar="S",
                   help="synthetic: estimates also off by a factor exp(N(0, S)) per model")
    p.add_argument("--no-learn", action="store_true",
                   help="keep the plan fixed (no re-plans with measured costs), for comparison")
    p.add_argument("--blind", action="store_true",
                   help="plan from equal estimates (no cost model: task order, even chunks)")
    p.add_argument("--latency-intra", type=float, default=LATENCY_INTRA, metavar="S",
                   help=f"claim round trip on the counter's node (default {LATENCY_INTRA:g} s)")
    p.add_argument("--latency-inter", type=float, default=LATENCY_INTER, metavar="S",
                   help=f"claim round trip from other nodes (default {LATENCY_INTER:g} s)")
    p.add_argument("--ranks-per-node", type=int, default=64, metavar="R")
    p.add_argument("--overhead", type=float, default=0.0, metavar="S",
                   help="extra seconds per task (default 0)")
    p.add_argument("--service", type=float, default=0.0, metavar="S",
                   help="seconds the counter is held per claim (default 0)")
    p.add_argument("--grain", type=float, default=DEFAULT_GRAIN, metavar="S",
                   help=f"smallest chunk worth a claim (default {DEFAULT_GRAIN:g} s)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Print makespan / LB for each ``--ranks`` value."""
    import time

    args = _parser().parse_args(argv)
    cand = model = None
    if args.costs:
        costs = load_costs(args.costs)
        if costs.size == 0:
            sys.stderr.write(f"no costs in {args.costs}\n")
            return 2
        source = f"{args.costs} ({costs.size} tasks"
        if args.tasks is not None:
            rng = np.random.default_rng(args.seed)
            costs = rng.choice(costs, size=args.tasks, replace=True)
            source += f", resampled to {args.tasks}"
        source += ")"
    else:
        n = 100_000 if args.tasks is None else args.tasks
        k = max(args.folds, 1)
        costs, cand, model = grid_costs(-(-n // k), k, max(args.models, 1), args.median,
                                        args.sigma, seed=args.seed)
        costs, cand, model = costs[:n], cand[:n], model[:n]
        source = (f"{n} tasks: {cand[-1] + 1} candidates x {k} folds of {args.models} models, "
                  f"lognormal (median {args.median:g} s, sigma {args.sigma:g})")
    if cand is None:  # recorded costs: each task its own candidate
        cand = np.arange(costs.size, dtype=np.int64)
        model = np.zeros(costs.size, dtype=np.int64)
    if args.blind:
        est, how = np.ones_like(costs), "blind (equal)"
    else:
        est = grid_estimates(costs, cand, model, args.estimate_error, args.model_error, args.seed)
        how = "exact" if args.estimate_error <= 0 and args.model_error <= 0 else (
            f"off by exp(N(0, {args.estimate_error:g})) per candidate, "
            f"exp(N(0, {args.model_error:g})) per model")
    how += "; fixed plan" if args.no_learn else "; re-planned with measured costs"
    print(f"costs: {source}; total {costs.sum():.4g} s, max {costs.max():.4g} s")
    print(
        f"plan: plan_chunks, grain {args.grain:g} s, estimates {how}; latency "
        f"{args.latency_intra:g} s on node / {args.latency_inter:g} s off node "
        f"({args.ranks_per_node} ranks per node), overhead {args.overhead:g} s/task, "
        f"service {args.service:g} s/claim"
    )
    head = ("P", "sum/P s", "max c s", "LB s", "makespan s", "ratio", "idle", "chunks",
            "claims", "re-plans", "sim s")
    print("  ".join(f"{h:>10}" for h in head))
    for p in args.ranks:
        t = time.perf_counter()
        r = simulate(
            costs, p, estimates=est,
            latency=node_latencies(p, args.ranks_per_node, args.latency_intra, args.latency_inter),
            overhead=args.overhead, service=args.service, grain=args.grain,
            cost_model=CostModel(est, cand, model), learn=not args.no_learn,
        )
        wall = time.perf_counter() - t
        cells = (f"{p}", f"{r.work / p:.4g}", f"{r.max_cost:.4g}", f"{r.lower_bound:.4g}",
                 f"{r.makespan:.4g}", f"{r.ratio:.4f}", f"{r.idle_fraction:.2%}",
                 f"{r.n_chunks}", f"{r.n_claims}", f"{r.n_replans}", f"{wall:.2f}")
        print("  ".join(f"{c:>10}" for c in cells))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
