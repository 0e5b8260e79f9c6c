"""Asynchronous successive halving (ASHA): the pure promotion rule.

Li et al., "A System for Massively Parallel Hyperparameter Tuning" (MLSys 2020), Algorithm 2.
Whenever a worker is free it asks :meth:`ASHA.next_job`, which

1. looks at the rungs from the highest but one down to the bottom, and promotes the best
   candidate of rung ``k`` that is in the top ``1/factor`` of the scores known there
   (``len(rung) // factor`` candidates, NaN last, ties by draw order) and was not promoted
   from it yet: the job is that candidate at rung ``k + 1``;
2. failing that, starts the next candidate (in draw order) at the bottom rung;
3. failing that, returns ``None``: nothing to start until a result comes back.

Rung ``k`` gives ``min_resources * factor**k`` of the resource, for every ``k`` where that is
at most ``max_resources``. No worker ever waits for a rung to fill: a promotion uses the
scores known when the worker asks, so which candidates climb depends on the order results
come back (at one worker, serially, it is deterministic).

This module is pure (no numpy, no MPI); :mod:`hpcml.search.asha_tasks` turns jobs into fold
tasks on an engine.

Examples
--------
>>> a = ASHA([{"C": c} for c in (1, 2, 3)], factor=3, min_resources=1, max_resources=3)
>>> a.resources
[1, 3]
>>> jobs = [a.next_job() for _ in range(3)]
>>> [(j.candidate, j.rung) for j in jobs], a.next_job()
([(0, 0), (1, 0), (2, 0)], None)
>>> for j, s in zip(jobs, (0.5, 0.9, 0.7), strict=True):
...     a.report(j, s)
>>> j = a.next_job()
>>> (j.candidate, j.rung, j.resource, j.params)
(1, 1, 3, {'C': 2})
>>> a.report(j, 0.95); a.done
True
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Job", "ASHA", "rung_resources"]


@dataclass(frozen=True)
class Job:
    """One candidate at one rung: fit it with ``resource`` of the resource.

    Attributes
    ----------
    candidate : int
        Index of the candidate (its draw order).
    params : dict
        Its parameters.
    rung : int
        The rung (0: the bottom).
    resource : int
        The resource of that rung.
    """

    candidate: int
    params: Mapping[str, Any]
    rung: int
    resource: int


def rung_resources(min_resources: int, max_resources: int, factor: float = 3) -> list[int]:
    """The resource of each rung: ``min_resources * factor**k`` up to ``max_resources``.

    Examples
    --------
    >>> rung_resources(10, 810)
    [10, 30, 90, 270, 810]
    >>> rung_resources(10, 800), rung_resources(5, 5), rung_resources(2, 20, factor=2)
    ([10, 30, 90, 270], [5], [2, 4, 8, 16])
    """
    if int(min_resources) != min_resources or min_resources < 1:
        raise ValueError(f"min_resources must be a positive integer, got {min_resources!r}")
    if int(max_resources) != max_resources or max_resources < min_resources:
        raise ValueError(f"max_resources must be an integer >= min_resources "
                         f"({min_resources}), got {max_resources!r}")
    if not factor > 1:
        raise ValueError(f"factor must be greater than 1, got {factor!r}")
    out = [int(min_resources)]
    while True:
        nxt = int(min_resources * factor ** len(out))  # exact for integer factors
        if nxt > max_resources or nxt <= out[-1]:
            return out
        out.append(nxt)


def _order_key(item: tuple[int, float]) -> tuple[bool, float, int]:
    """Best first: a higher score, NaN last, ties by draw order."""
    candidate, score = item
    nan = score is None or math.isnan(score)
    return (nan, 0.0 if nan else -score, candidate)


class ASHA:
    """The ASHA rule over a fixed list of sampled candidates (see the module docstring).

    Parameters
    ----------
    candidates : sequence of dict
        The candidates' parameters, in draw order (``ParameterSampler``'s).
    factor : int or float
        Rung ``k`` keeps its best ``1/factor`` for promotion (``eta`` in the paper).
    min_resources, max_resources : int
        The bottom rung's resource, and the most any rung gets.

    Attributes
    ----------
    resources : list of int
        The resource of each rung.
    rungs : list of dict
        Per rung, candidate -> its score there, in the order the scores were reported.
    promoted : list of set
        Per rung, the candidates promoted out of it.
    """

    def __init__(self, candidates: Sequence[Mapping[str, Any]], *, factor: float = 3,
                 min_resources: int, max_resources: int) -> None:
        self.candidates = [dict(c) for c in candidates]
        self.factor = factor
        self.resources = rung_resources(min_resources, max_resources, factor)
        self.rungs: list[dict[int, float]] = [{} for _ in self.resources]
        # per rung, its scores' order keys kept sorted as they arrive (best first)
        self._ordered: list[list[tuple[bool, float, int]]] = [[] for _ in self.resources]
        self.promoted: list[set[int]] = [set() for _ in self.resources]
        self.started: set[int] = set()  # candidates started at the bottom rung
        self.running: set[tuple[int, int]] = set()  # (candidate, rung) out, not reported
        self._next_new = 0
        self._restart: list[tuple[int, int]] = []  # started before a resume, not finished

    @property
    def top_rung(self) -> int:
        """The index of the highest rung."""
        return len(self.resources) - 1

    def _job(self, candidate: int, rung: int) -> Job:
        return Job(candidate, dict(self.candidates[candidate]), rung, self.resources[rung])

    def promotable(self, rung: int) -> Iterator[int]:
        """Candidates of ``rung`` in its top ``1/factor``, not promoted yet, best first."""
        ordered = self._ordered[rung]
        for _, _, candidate in ordered[:int(len(ordered) // self.factor)]:
            if candidate not in self.promoted[rung]:
                yield candidate

    def _pick(self) -> tuple[int, int] | None:
        """The next (candidate, rung) to start, without changing anything."""
        if self._restart:
            return self._restart[0]
        for k in range(self.top_rung - 1, -1, -1):
            for candidate in self.promotable(k):
                return candidate, k + 1
        while self._next_new < len(self.candidates) and self._next_new in self.started:
            self._next_new += 1
        if self._next_new < len(self.candidates):
            return self._next_new, 0
        return None

    def next_job(self) -> Job | None:
        """The job a free worker should run now; ``None`` when there is none for now."""
        pick = self._pick()
        if pick is None:
            return None
        if self._restart and self._restart[0] == pick:
            self._restart.pop(0)
        self._mark_started(*pick)
        self.running.add(pick)
        return self._job(*pick)

    def _mark_started(self, candidate: int, rung: int) -> None:
        if rung == 0:
            self.started.add(candidate)
        else:
            self.promoted[rung - 1].add(candidate)

    def report(self, job: Job, score: float) -> None:
        """The job's score (the mean test score over its folds; NaN for a failed fit)."""
        key = (job.candidate, job.rung)
        if key not in self.running:
            raise ValueError(f"job of candidate {job.candidate} at rung {job.rung} is not "
                             "running (reported twice, or never handed out)")
        self.running.discard(key)
        self._score(job.candidate, job.rung, score)

    def _score(self, candidate: int, rung: int, score: float) -> None:
        scores = self.rungs[rung]
        if candidate in scores:  # replaced: rebuild the order
            scores[candidate] = float(score)
            self._ordered[rung] = sorted(_order_key(item) for item in scores.items())
        else:
            scores[candidate] = float(score)
            bisect.insort(self._ordered[rung], _order_key((candidate, float(score))))

    def restore(self, candidate: int, rung: int, score: float | None = None) -> None:
        """Replay a job of an earlier run (a resume), before any :meth:`next_job`.

        With its ``score``, the job is finished: it enters its rung as reported, and the
        candidate counts as promoted out of the rung below (the promotion happened then).
        Without it (some of its folds were journaled, not all), the job is handed out again
        first by :meth:`next_job`. The state after a replay does not depend on its order.
        """
        if not 0 <= candidate < len(self.candidates) or not 0 <= rung <= self.top_rung:
            raise ValueError(f"no job of candidate {candidate} at rung {rung}")
        self._mark_started(candidate, rung)
        if score is not None:
            self._score(candidate, rung, score)
            if (candidate, rung) in self._restart:
                self._restart.remove((candidate, rung))
        elif candidate not in self.rungs[rung] and (candidate, rung) not in self._restart:
            self._restart.append((candidate, rung))

    @property
    def done(self) -> bool:
        """Nothing running, and nothing left to start or promote."""
        return not self.running and self._pick() is None

    def best(self) -> tuple[int, int] | None:
        """``(candidate, rung)`` of the best score at the highest rung reached (NaN last)."""
        for k in range(self.top_rung, -1, -1):
            if self.rungs[k]:
                return min(self.rungs[k].items(), key=_order_key)[0], k
        return None
