"""Scheduling policy: longest-first order and guided chunks (costs: :mod:`hpcml.core.costs`).

Pure functions of the task list and the world size, so every rank computes the same plan
without talking, and a simulator can replay the same policy without MPI. The engines only
claim chunk numbers (``0, 1, 2, ...``) from a shared counter: whoever is free takes the next
chunk, which is dynamic self-scheduling with no dispatcher rank.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpcml.core.costs import learn_costs

__all__ = [
    "CostModel",
    "Plan",
    "batch_grain",
    "cut_chunks",
    "replan",
    "replan_due",
    "replan_start",
    "plan_chunks",
    "shard_tasks",
    "DEFAULT_GRAIN",
]

#: Largest batch floor (seconds of estimated work per claim of the shared counter).
DEFAULT_GRAIN = 0.02
#: Smallest batch floor: a claim costs microseconds, so 1 ms keeps it well under 1 %.
MIN_GRAIN = 1e-3
#: Seconds per unclaimed task to re-plan (learn costs, sort, cut); measured ~0.9 us at 100k.
REPLAN_COST = 1e-6
#: The batch floor is at most this share of the work per worker (the idle tail it can cause).
TAIL_SHARE = 0.01
@dataclass(frozen=True)
class CostModel:
    """What a plan needs to learn costs while it runs: the estimates and who shares a cost.

    Attributes
    ----------
    estimates : ndarray of float64
        Estimated cost of item ``i`` (an item is what ``run_task(i)`` runs).
    candidate : ndarray of int64
        Candidate of item ``i``: the folds of a candidate cost about the same.
    model : ndarray of int64
        Model of item ``i``: a model's estimates tend to be off by the same factor.
    unit : ndarray of int64, optional
        Unit of item ``i`` (:func:`plan_chunks`): a re-plan keeps each unit in one chunk.
    """

    estimates: np.ndarray
    candidate: np.ndarray
    model: np.ndarray
    unit: np.ndarray | None = None

    def learn(self, items: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Every item's cost, corrected by the measured ``seconds`` of ``items``."""
        return learn_costs(self.estimates, self.candidate, self.model, (items, seconds))


@dataclass(frozen=True)
class Plan:
    """A schedule: tasks in claim order, cut into chunks.

    Attributes
    ----------
    order : ndarray of int64
        Task indices, most expensive first.
    bounds : ndarray of int64
        Chunk ``c`` is ``order[bounds[c]:bounds[c + 1]]``.
    costs : CostModel, optional
        Lets an engine re-plan the unclaimed tasks with costs measured during the run
        (:func:`replan`); ``None`` keeps the plan fixed.
    n_workers : int
        Ranks the plan was cut for.
    grain : float
        The ``grain`` it was cut with.
    """

    order: np.ndarray
    bounds: np.ndarray
    costs: CostModel | None = None
    n_workers: int = 1
    grain: float = DEFAULT_GRAIN

    @property
    def n_chunks(self) -> int:
        return len(self.bounds) - 1

    def chunk(self, c: int) -> np.ndarray:
        """Task indices of chunk ``c``."""
        return self.order[self.bounds[c] : self.bounds[c + 1]]


def plan_chunks(
    costs: Sequence[float] | np.ndarray,
    n_workers: int,
    grain: float = DEFAULT_GRAIN,
    *,
    cost_model: CostModel | None = None,
    units: np.ndarray | None = None,
) -> Plan:
    """Order tasks longest first and cut them into guided chunks.

    A chunk takes tasks while its cost stays under ``max(g, remaining / (2 * n_workers))``
    (at least one task), so long tasks go one at a time and early, and tiny tasks travel in
    batches whose size shrinks towards the end of the run. The batch floor ``g`` is ``grain``,
    lowered to 1 % of the work per worker when that is smaller (but not under
    :data:`MIN_GRAIN`): on many ranks with little work each, a fixed grain would leave ranks
    idle at the end while others finish a whole batch.

    Parameters
    ----------
    costs : sequence of float
        Estimated cost of task ``i``.
    n_workers : int
        Number of ranks claiming chunks.
    grain : float
        Largest batch floor: the smallest chunk cost worth one claim.
    cost_model : CostModel, optional
        Kept in the plan so that an engine can re-plan with measured costs (:func:`replan`).
    units : ndarray of int64, optional
        Unit of each task: the tasks of a unit go together into one chunk, so one worker
        runs them all (tasks sharing a fitted pipeline prefix, :mod:`hpcml.core.prefixes`).
        Units are then ordered longest first by their summed cost, and chunks are cut
        between units only. A re-plan keeps them (give them in ``cost_model`` too).
        ``None`` (or every task its own unit): the plain plan.

    Returns
    -------
    Plan

    Examples
    --------
    >>> p = plan_chunks([1.0, 5.0, 0.01, 0.01, 0.01, 0.01], n_workers=2, grain=0.05)
    >>> [p.chunk(c).tolist() for c in range(p.n_chunks)]
    [[1], [0], [2, 3, 4], [5]]

    The batch floor was 0.03 there: 1 % of the 3.02 s per worker.

    With units, tasks 0 and 2 stay together:

    >>> p = plan_chunks([1.0, 5.0, 1.0, 0.5], n_workers=2, grain=0.0, units=np.array([0, 1, 0, 2]))
    >>> [p.chunk(c).tolist() for c in range(p.n_chunks)]
    [[1], [0, 2], [3]]
    """
    c = np.asarray(costs, dtype=np.float64)
    workers = max(int(n_workers), 1)
    if units is not None:
        order, bounds = _unit_plan(c, np.arange(len(c), dtype=np.int64), units, workers, grain)
        return Plan(order, bounds, cost_model, workers, float(grain))
    # Stable sort: ties keep task order, so the plan is the same on every rank.
    order = np.argsort(-c, kind="stable").astype(np.int64)
    bounds = cut_chunks(c[order], workers, grain)
    return Plan(order, bounds, cost_model, workers, float(grain))


def batch_grain(total: float, n_workers: int, grain: float = DEFAULT_GRAIN) -> float:
    """The batch floor for ``total`` seconds of work on ``n_workers``: see :func:`plan_chunks`.

    Examples
    --------
    >>> batch_grain(1000.0, 2), batch_grain(250.0, 4096), batch_grain(1.0, 2, grain=0.0)
    (0.02, 0.001, 0.0)
    """
    per_worker = total / max(int(n_workers), 1)
    return min(float(grain), max(MIN_GRAIN, per_worker * TAIL_SHARE))


def cut_chunks(sorted_costs: np.ndarray, n_workers: int, grain: float = DEFAULT_GRAIN
               ) -> np.ndarray:
    """Chunk bounds of tasks already in claim order (the cutting half of :func:`plan_chunks`)."""
    s = np.asarray(sorted_costs, dtype=np.float64)
    n = len(s)
    cum_arr = np.concatenate([[0.0], np.cumsum(s)])
    cum = cum_arr.tolist()  # bisect on a list: ~1 us per chunk, for re-plans of 100k tasks
    total = cum[-1]
    workers2 = 2 * max(int(n_workers), 1)
    floor = batch_grain(total, max(int(n_workers), 1), grain)
    bounds = [0]
    i = 0
    while i < n:
        limit = (total - cum[i]) / workers2
        if limit < floor:
            limit = floor
        # the last j with cum[j] - cum[i] <= limit, and at least one task
        j = bisect_right(cum, cum[i] + limit) - 1
        if j <= i:
            j = i + 1
        bounds.append(j)
        i = j
    return np.asarray(bounds, dtype=np.int64)


def replan(plan: Plan, first_chunk: int, costs: np.ndarray) -> Plan:
    """``plan`` with chunks from ``first_chunk`` on re-ordered and re-cut by ``costs``.

    Chunks before ``first_chunk`` (claimed, or about to be) stay as they are; the tasks of
    the rest are ordered longest first by ``costs`` (indexed by task) and cut again for the
    same workers and grain. What the engines call with learned costs (:meth:`CostModel.learn`).

    Examples
    --------
    >>> p = plan_chunks([1.0, 1.0, 1.0, 1.0], n_workers=2, grain=0.0)
    >>> q = replan(p, 1, np.array([1.0, 1.0, 1.0, 9.0]))
    >>> q.chunk(0).tolist(), q.order.tolist()[:2]
    ([0], [0, 3])
    """
    first_chunk = min(max(int(first_chunk), 0), plan.n_chunks)
    start = int(plan.bounds[first_chunk])
    rest = plan.order[start:]
    c = np.asarray(costs, dtype=np.float64)
    units = plan.costs.unit if plan.costs is not None else None
    if units is not None:
        rest, tail = _unit_plan(c, rest, units, plan.n_workers, plan.grain)
    else:
        rest = rest[np.argsort(-c[rest], kind="stable")]
        tail = cut_chunks(c[rest], plan.n_workers, plan.grain)
    return Plan(
        np.concatenate([plan.order[:start], rest]),
        np.concatenate([plan.bounds[:first_chunk], start + tail]),
        plan.costs, plan.n_workers, plan.grain,
    )


def _unit_plan(costs: np.ndarray, items: np.ndarray, units: np.ndarray, n_workers: int,
               grain: float) -> tuple[np.ndarray, np.ndarray]:
    """Order ``items`` unit by unit, longest unit first, and cut chunks between units only.

    Ties keep the order of first appearance in ``items``, and the items of a unit keep their
    order, so every rank computes the same plan.
    """
    items = np.asarray(items, dtype=np.int64)
    if len(items) == 0:
        return items, np.zeros(1, dtype=np.int64)
    u = np.asarray(units, dtype=np.int64)[items]
    # units numbered by first appearance among items
    _, first, inv = np.unique(u, return_index=True, return_inverse=True)
    appearance = np.argsort(first, kind="stable")
    renum = np.empty_like(appearance)
    renum[appearance] = np.arange(len(appearance))
    inv = renum[inv.ravel()]
    ucost = np.bincount(inv, weights=costs[items])
    uorder = np.argsort(-ucost, kind="stable")
    rank = np.empty_like(uorder)
    rank[uorder] = np.arange(len(uorder))
    order = items[np.argsort(rank[inv], kind="stable")]
    sizes = np.bincount(inv)[uorder]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return order, offsets[cut_chunks(ucost[uorder], n_workers, grain)]


def replan_lag(claim: int, elapsed: float, n_left: int, n_workers: int,
               cost_per_task: float = REPLAN_COST) -> int:
    """How many chunks past ``claim`` a re-plan starts, so that it lands before they are claimed.

    A re-plan is computed from a snapshot while the others keep claiming; it is written only
    if nobody has claimed its first chunk meanwhile. At least ``n_workers`` chunks, and twice
    the chunks claimed (at the rate so far, ``claim / elapsed``) while ``n_left`` tasks are
    re-planned at ``cost_per_task`` seconds each.

    Examples
    --------
    >>> replan_lag(8, 1.0, 1000, 4), replan_lag(8192, 0.25, 100_000, 4096)
    (4, 6554)
    """
    p = max(int(n_workers), 1)
    rate = claim / elapsed if elapsed > 0 else 0.0
    return max(p, math.ceil(2 * rate * n_left * cost_per_task))


def replan_start(plan: Plan, claim: int, elapsed: float, n_workers: int,
                 cost_per_task: float = REPLAN_COST) -> int | None:
    """The first chunk a re-plan by the rank that made ``claim`` may change, or ``None``
    when no chunk would be left to change (:func:`replan_lag` past the claim).

    Examples
    --------
    >>> p = plan_chunks([1.0] * 8, 2, grain=0.0)
    >>> replan_start(p, 4, 1.0, 2), replan_start(p, p.n_chunks - 1, 1.0, 2)
    (6, None)
    """
    n_left = len(plan.order) - int(plan.bounds[claim])
    q = claim + replan_lag(claim, elapsed, n_left, n_workers, cost_per_task)
    return q if q < plan.n_chunks else None


def replan_due(claim: int, n_workers: int) -> bool:
    """Whether the rank that claimed chunk number ``claim`` re-plans the rest with measured costs.

    At claims ``2P, 4P, 8P, ...``: often early, when the big tasks are decided and much is
    learnt per chunk; rarely later. One rank per point, since each claim number is unique.

    Examples
    --------
    >>> [c for c in range(40) if replan_due(c, 4)]
    [8, 16, 32]
    """
    p = max(int(n_workers), 1)
    if claim < 2 * p or claim % p:
        return False
    k = claim // p
    return k & (k - 1) == 0


def shard_tasks(costs: Sequence[float] | np.ndarray, n_shards: int) -> np.ndarray:
    """Split tasks into ``n_shards`` shards of about equal estimated cost (greedy, longest first).

    Returns the shard number of each task. Deterministic: every job of an array computes
    the same split.

    Examples
    --------
    >>> shard_tasks([5.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2).tolist()
    [0, 1, 1, 1, 1, 1]
    """
    import heapq

    c = np.asarray(costs, dtype=np.float64)
    owner = np.zeros(len(c), dtype=np.int64)
    heap = [(0.0, s) for s in range(max(int(n_shards), 1))]
    for t in np.argsort(-c, kind="stable"):
        load, s = heapq.heappop(heap)
        owner[t] = s
        heapq.heappush(heap, (load + c[t], s))
    return owner
