"""Successive halving on P simulated workers: round barriers against asynchronous promotion.

Both schedules run the same :class:`HalvingWorkload`: ``n`` candidates, ``K`` folds, rungs of
resource ``min_resources * factor**k`` up to ``max_resources``. A fit of candidate ``c`` on
fold ``f`` at resource ``r`` takes ``(a + b_c r) * e_c * e_cf`` seconds: ``a + b_c r`` is
hpcml's cost model (:func:`hpcml.core.costs.estimate_costs`, linear in ``n_estimators``) for
the candidate's own params, ``e_c`` and ``e_cf`` are lognormal errors of that model (per
candidate, per fold). The score of a candidate at resource ``r`` (the mean over its folds)
is ``s_c - (g_c - z_cr sd) sqrt(min_resources / r)``: it rises towards its final value
``s_c`` as the resource grows, and low rungs rank the candidates only roughly. Everything is
drawn from one seed.

- :func:`simulate_barriers`: scikit-learn's ``HalvingGridSearchCV`` rounds
  (:func:`halving_rounds`, the same iteration count and resources), each rung's fits spread
  over the workers longest-first by the cost model's estimate (every worker takes the next
  fit when it is free, as hpcml's engines do); the next rung starts when the last fit of this
  one ends, with the top ``ceil(n / factor)`` candidates.
- :func:`simulate_async`: asynchronous successive halving (ASHA); every free worker asks the
  rule for a job (:meth:`next_job`), a job's folds are fits like any other, and when the last
  fold of a job ends its score is reported (:meth:`report`). Default rule:
  :class:`hpcml.search.asha.ASHA`.

Event-driven (a heap of fit ends), deterministic for a seed: 1,024 workers and ~30,000 fits
take about a second. ``python benchmarks/bench_halving_sim.py`` prints the comparison.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from hpcml.core.costs import BASE_COST, estimate_costs

__all__ = [
    "HalvingWorkload",
    "HalvingRun",
    "Completion",
    "halving_workload",
    "halving_rounds",
    "simulate_barriers",
    "simulate_async",
    "PromotionRule",
]


class PromotionRule(Protocol):
    """What :func:`simulate_async` needs of an asynchronous halving rule (``ASHA``)."""

    def next_job(self) -> Any | None:
        """A job (with ``candidate``, ``rung``, ``resource``) to start now, or ``None``."""

    def report(self, job: Any, score: float) -> None:
        """The mean score of a finished job."""

    @property
    def done(self) -> bool:
        """True when no job is left to start or wait for."""


#: ``factory(candidates, factor=, min_resources=, max_resources=) -> PromotionRule``.
RuleFactory = Callable[..., PromotionRule]


@dataclass(frozen=True)
class HalvingWorkload:
    """Candidates, folds, costs and scores that both schedules share.

    Attributes
    ----------
    params : list of dict
        Each candidate's params (without the resource).
    n_folds, factor, min_resources, max_resources : int
        Folds per candidate and the halving schedule.
    fixed_cost, unit_cost : ndarray
        Cost model of candidate ``c``: ``fixed_cost[c] + unit_cost[c] * resource`` seconds.
    error : ndarray, shape (n_candidates, n_folds)
        True cost / estimated cost of each (candidate, fold).
    final, gap : ndarray
        Score at infinite resource, and how far below it the candidate starts.
    noise : float
        Standard deviation of the score's noise at ``min_resources`` (shrinks as
        ``sqrt(min_resources / r)``).
    seed : int
    """

    params: list[dict[str, Any]]
    n_folds: int
    factor: int
    min_resources: int
    max_resources: int
    fixed_cost: np.ndarray = field(repr=False)
    unit_cost: np.ndarray = field(repr=False)
    error: np.ndarray = field(repr=False)
    final: np.ndarray = field(repr=False)
    gap: np.ndarray = field(repr=False)
    noise: float = 0.02
    seed: int = 0

    @property
    def n_candidates(self) -> int:
        """Number of candidates."""
        return len(self.params)

    def estimate(self, candidate: int, resource: int) -> float:
        """The cost model's seconds for one fit of ``candidate`` at ``resource``."""
        return float(self.fixed_cost[candidate] + self.unit_cost[candidate] * resource)

    def fit_cost(self, candidate: int, resource: int, fold: int) -> float:
        """True seconds of one fit."""
        return self.estimate(candidate, resource) * float(self.error[candidate, fold])

    def score(self, candidate: int, resource: int) -> float:
        """Mean score over the folds of ``candidate`` at ``resource`` (deterministic)."""
        z = np.random.default_rng((self.seed, 7919, candidate, resource)).standard_normal()
        shrink = math.sqrt(self.min_resources / resource)
        return float(self.final[candidate] - (self.gap[candidate] - self.noise * z) * shrink)


def halving_workload(
    n_candidates: int,
    *,
    n_folds: int = 5,
    factor: int = 3,
    min_resources: int = 10,
    max_resources: int = 810,
    estimator: str = "RandomForestClassifier",
    resource: str = "n_estimators",
    n_samples: int = 4000,
    n_features: int = 30,
    cost_sigma: float = 0.3,
    fold_sigma: float = 0.05,
    noise: float = 0.02,
    seed: int = 0,
) -> HalvingWorkload:
    """A random search over a forest's depth and leaf size, costed by hpcml's cost model.

    Parameters
    ----------
    n_candidates : int
        Candidates at the first rung.
    n_folds, factor, min_resources, max_resources : int
        Folds and the halving schedule (``resource`` from ``min_resources`` up to
        ``max_resources``, times ``factor`` per rung).
    estimator, resource : str
        Model class name for :func:`~hpcml.core.costs.estimate_costs` and the param that is
        the resource (its cost must be linear in it, like ``n_estimators``).
    n_samples, n_features : int
        Training data size for the cost model.
    cost_sigma, fold_sigma : float
        Lognormal error of the true cost against the estimate, per candidate and per fold.
    noise : float
        Score noise at ``min_resources``.
    seed : int

    Examples
    --------
    >>> w = halving_workload(9, seed=1)
    >>> w.n_candidates, w.fit_cost(0, 30, 0) > w.fit_cost(0, 10, 0)
    (9, True)
    >>> w.score(3, 810) > w.score(3, 10) - 0.1, w.score(3, 90) == w.score(3, 90)
    (True, True)
    """
    n = int(n_candidates)
    if n < 1 or n_folds < 1 or factor < 2 or not 1 <= min_resources <= max_resources:
        raise ValueError("need n_candidates >= 1, n_folds >= 1, factor >= 2 and "
                         "1 <= min_resources <= max_resources")
    rng = np.random.default_rng(seed)
    depths = [None, 4, 8, 16]
    depth, leaf = rng.integers(0, len(depths), n), rng.integers(1, 20, n)
    params = [{"max_depth": depths[int(d)], "min_samples_leaf": int(m)}
              for d, m in zip(depth, leaf, strict=True)]
    at_one = estimate_costs(estimator, [{**p, resource: 1} for p in params], n_samples,
                            n_features)
    at_two = estimate_costs(estimator, [{**p, resource: 2} for p in params], n_samples,
                            n_features)
    unit = np.maximum(at_two - at_one, 0.0)
    fixed = np.maximum(at_one - unit, BASE_COST)
    error = (rng.lognormal(0.0, cost_sigma, size=(n, 1))
             * rng.lognormal(0.0, fold_sigma, size=(n, n_folds)))
    final = rng.uniform(0.70, 0.95, size=n)
    gap = rng.uniform(0.0, 0.15, size=n)
    return HalvingWorkload(params, int(n_folds), int(factor), int(min_resources),
                           int(max_resources), fixed, unit, error, final, gap, float(noise),
                           int(seed))


def halving_rounds(n_candidates: int, factor: int, min_resources: int,
                   max_resources: int) -> list[tuple[int, int]]:
    """``(candidates, resource)`` of each round, as scikit-learn's successive halving runs
    them (``aggressive_elimination=False``, a fixed ``min_resources``).

    Examples
    --------
    >>> halving_rounds(100, 3, 10, 810)
    [(100, 10), (34, 30), (12, 90), (4, 270), (2, 810)]
    >>> halving_rounds(20, 3, 10, 810)  # fewer candidates than rungs: stops early
    [(20, 10), (7, 30), (3, 90)]
    """
    required = 1 + math.floor(math.log(n_candidates, factor))
    possible = 1 + math.floor(math.log(max_resources // min_resources, factor))
    out, n = [], int(n_candidates)
    for itr in range(min(required, possible)):
        out.append((n, min(int(factor**itr * min_resources), int(max_resources))))
        n = math.ceil(n / factor)
    return out


@dataclass(frozen=True)
class Completion:
    """A candidate's score at one resource became known (its last fold ended)."""

    time: float
    candidate: int
    rung: int
    resource: int
    score: float


@dataclass(frozen=True)
class HalvingRun:
    """What one simulated search measured.

    Attributes
    ----------
    schedule : str
        ``"barriers"`` or ``"async"``.
    n_workers, n_fits : int
    makespan : float
        When the last fit ended.
    busy : float
        Worker-seconds spent fitting.
    completions : list of Completion
        In time order.
    barrier_idle : float
        Worker-seconds idle inside rounds, waiting for the round's last fit (barriers only).
    """

    schedule: str
    n_workers: int
    n_fits: int
    makespan: float
    busy: float
    completions: list[Completion] = field(repr=False)
    barrier_idle: float = 0.0

    @property
    def utilisation(self) -> float:
        """Busy fraction of the workers over the makespan (at most 1)."""
        total = self.n_workers * self.makespan
        return min(1.0, self.busy / total) if total > 0 else 0.0

    @property
    def top_resource(self) -> int:
        """The largest resource any candidate reached."""
        return max((c.resource for c in self.completions), default=0)

    def rung_sizes(self) -> dict[int, int]:
        """Candidates evaluated at each resource."""
        out: dict[int, int] = {}
        for c in self.completions:
            out[c.resource] = out.get(c.resource, 0) + 1
        return dict(sorted(out.items()))

    @property
    def n_top(self) -> int:
        """Candidates evaluated at :attr:`top_resource`."""
        return self.rung_sizes().get(self.top_resource, 0)

    def best(self) -> Completion:
        """The best score at :attr:`top_resource` (the search's answer; first if tied)."""
        top = [c for c in self.completions if c.resource == self.top_resource]
        if not top:
            raise ValueError("no candidate was evaluated")
        return max(top, key=lambda c: (c.score, -c.time))

    def time_to(self, score: float, resource: int | None = None) -> float:
        """When a score >= ``score`` at ``resource`` (default :attr:`top_resource`) was first
        known; ``inf`` if never."""
        r = self.top_resource if resource is None else resource
        return min((c.time for c in self.completions if c.resource >= r and c.score >= score),
                   default=math.inf)


def simulate_barriers(workload: HalvingWorkload, n_workers: int) -> HalvingRun:
    """Synchronous successive halving: rounds with a barrier.

    Each round's fits (candidate x fold at the round's resource) are spread longest-first by
    the cost model's estimate: each fit goes to the worker that is free first, and runs its
    true cost. The round ends with its last fit; the ``ceil(n / factor)`` best candidates go
    on to the next round.

    Examples
    --------
    One candidate, two folds of one rung on two workers: one fit each, no idle time inside
    the round if the fits cost the same.

    >>> w = halving_workload(1, n_folds=2, min_resources=10, max_resources=10,
    ...                      fold_sigma=0.0, seed=0)
    >>> r = simulate_barriers(w, 2)
    >>> r.n_fits, round(r.makespan, 9) == round(w.fit_cost(0, 10, 0), 9), r.utilisation
    (2, True, 1.0)
    """
    p = _workers(n_workers)
    w = workload
    alive = list(range(w.n_candidates))
    completions: list[Completion] = []
    t0 = busy = idle = 0.0
    n_fits = 0
    for itr, (_, resource) in enumerate(halving_rounds(w.n_candidates, w.factor,
                                                       w.min_resources, w.max_resources)):
        fits = sorted(((c, f) for c in alive for f in range(w.n_folds)),
                      key=lambda cf: (-w.estimate(cf[0], resource), cf))
        free = [(t0, k) for k in range(p)]  # already a heap
        done_at: dict[int, float] = {}
        round_busy = 0.0
        for c, f in fits:
            start, k = heapq.heappop(free)
            cost = w.fit_cost(c, resource, f)
            end = start + cost
            round_busy += cost
            done_at[c] = max(done_at.get(c, 0.0), end)
            heapq.heappush(free, (end, k))
        end_of_round = max(done_at.values())
        idle += p * (end_of_round - t0) - round_busy
        busy += round_busy
        n_fits += len(fits)
        scores = {c: w.score(c, resource) for c in alive}
        completions.extend(Completion(done_at[c], c, itr, resource, scores[c]) for c in alive)
        keep = math.ceil(len(alive) / w.factor)
        # scikit-learn's _top_k: the last k of an ascending sort of the round's scores
        ranked = sorted(alive, key=lambda c: (scores[c], -c))
        alive = sorted(ranked[-keep:])
        t0 = end_of_round
    completions.sort(key=lambda c: (c.time, c.candidate))
    return HalvingRun("barriers", p, n_fits, t0, busy, completions, max(idle, 0.0))


def simulate_async(workload: HalvingWorkload, n_workers: int,
                   rule: RuleFactory | None = None) -> HalvingRun:
    """Asynchronous successive halving: no worker waits for a round.

    A free worker takes the next waiting fold of a started job; if there is none, it asks the
    rule for a new job (a promotion or a new candidate) and queues that job's folds; if the
    rule has nothing, the worker waits for the next fit to end (the rule is asked again only
    after a report: a ``None`` stands until the rule learns something). When the last fold
    of a job ends, its score is reported to the rule. Ties in time are broken by worker number, so a
    seed gives one result.

    Parameters
    ----------
    workload : HalvingWorkload
    n_workers : int
    rule : callable, optional
        ``rule(candidates, factor=, min_resources=, max_resources=)`` returning an object
        with ``next_job()``, ``report(job, score)`` and ``done`` (:class:`PromotionRule`);
        default :class:`hpcml.search.asha.ASHA`.
    """
    p = _workers(n_workers)
    w = workload
    if rule is None:
        from hpcml.search.asha import ASHA

        rule = ASHA
    asha = rule(w.params, factor=w.factor, min_resources=w.min_resources,
                max_resources=w.max_resources)
    free = list(range(p))  # a heap of idle workers
    running: list[tuple[float, int, int, int]] = []  # (end, worker, job id, fold)
    waiting: deque[tuple[int, int]] = deque()  # (job id, fold) not started yet
    jobs: dict[int, Any] = {}
    left: dict[int, int] = {}
    completions: list[Completion] = []
    now = busy = 0.0
    n_fits = 0
    next_id = 0
    starved = False  # the rule said None and nothing was reported since
    while True:
        while free:
            if not waiting:
                job = None if starved else asha.next_job()
                if job is None:
                    starved = True
                    break
                jobs[next_id], left[next_id] = job, w.n_folds
                waiting.extend((next_id, f) for f in range(w.n_folds))
                next_id += 1
            j, f = waiting.popleft()
            k = heapq.heappop(free)
            job = jobs[j]
            cost = w.fit_cost(job.candidate, job.resource, f)
            busy += cost
            n_fits += 1
            heapq.heappush(running, (now + cost, k, j, f))
        if not running:
            break
        now, k, j, _ = heapq.heappop(running)
        heapq.heappush(free, k)
        left[j] -= 1
        if left[j] == 0:
            job = jobs.pop(j)
            del left[j]
            s = w.score(job.candidate, job.resource)
            completions.append(Completion(now, job.candidate, job.rung, job.resource, s))
            asha.report(job, s)
            starved = False
    if not asha.done:
        raise RuntimeError("the rule offered no job, none was running, and it is not done")
    return HalvingRun("async", p, n_fits, now, busy, completions)


def _workers(n_workers: int) -> int:
    p = int(n_workers)
    if p < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    return p
