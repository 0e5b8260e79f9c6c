"""ASHA as fit tasks: each (candidate, rung, fold) is one task of a fixed task grid.

Every model's :class:`~hpcml.search.asha.ASHA` has ``n`` sampled candidates and ``R`` rungs,
so the tasks it may ever ask for are known before the run: ``n * R`` grid candidates (the
candidate's params with the rung's resource set, e.g. ``n_estimators=90``; for ``n_samples``
the same params on the rung's subsampled folds, :func:`fold_sets`), times the folds.
The grid is the same on every rank and every run, so each task has its journal key like any
grid task, and resume, the journal and the per-fit timeout work unchanged. Which of those
tasks run is decided as the run goes, by :class:`AshaSource` on the root (a
:class:`~hpcml.engines.base.TaskSource`): a job's folds are handed out one task at a time,
and the job's score (the mean test score of its folds) goes to its ASHA when its last fold
is in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcml.core.fitting import FitResult
from hpcml.core.tasks import TaskGrid
from hpcml.errors import SpecError
from hpcml.search.asha import ASHA, Job

__all__ = ["AshaModel", "asha_grid", "AshaSource", "sample_candidates", "make_rules",
           "spec_grid", "subsample", "fold_sets"]


@dataclass(frozen=True)
class AshaModel:
    """One model's ASHA and where its candidates sit in the task grid.

    Grid candidate ``offset + rung * n + candidate`` is ``candidate`` at ``rung``, with
    ``params[resource]`` set to the rung's resource (``n_samples``: its folds are the
    rung's, see :func:`fold_sets`).
    """

    name: str
    asha: ASHA
    resource: str
    offset: int

    @property
    def n(self) -> int:
        return len(self.asha.candidates)

    def slot(self, candidate: int, rung: int) -> int:
        """The grid candidate of ``candidate`` at ``rung``."""
        return self.offset + rung * self.n + candidate

    def job_of(self, slot: int) -> tuple[int, int]:
        """``(candidate, rung)`` of a grid candidate of this model."""
        rung, candidate = divmod(slot - self.offset, self.n)
        return candidate, rung


def asha_grid(models: Sequence[tuple[str, ASHA, str]], n_splits: int,
              ) -> tuple[TaskGrid, list[AshaModel]]:
    """The task grid of every model's ASHA: models in order, then rungs, then candidates.

    Parameters
    ----------
    models : sequence of (name, ASHA, resource)
        ``resource`` is the estimator parameter each rung sets (``n_estimators``), or
        ``n_samples`` (the params stay; the rung's folds differ).
    n_splits : int
        The folds.

    Examples
    --------
    >>> a = ASHA([{"C": 1}, {"C": 2}], factor=2, min_resources=10, max_resources=20)
    >>> grid, (m,) = asha_grid([("lr", a, "max_iter")], 3)
    >>> len(grid), [dict(c.params) for c in grid.candidates][1:3]
    (12, [{'C': 2, 'max_iter': 10}, {'C': 1, 'max_iter': 20}])
    >>> m.slot(1, 1), m.job_of(3)
    (3, (1, 1))
    """
    out: list[AshaModel] = []
    cands: list[tuple[str, dict[str, Any]]] = []
    for name, asha, resource in models:
        clash = [c for c in asha.candidates if resource in c]
        if clash:
            raise ValueError(f"models.{name}: the resource {resource!r} is also a searched "
                             "parameter; take it out of the grid (each rung sets it)")
        out.append(AshaModel(name, asha, resource, len(cands)))
        for r in asha.resources:  # n_samples: the rung's folds differ, not its params
            extra = {} if resource == "n_samples" else {resource: r}
            cands += [(name, {**c, **extra}) for c in asha.candidates]
    return TaskGrid.from_candidates(cands, n_splits), out


class AshaSource:
    """The root's :class:`~hpcml.engines.base.TaskSource` of one ASHA run over all models.

    Parameters
    ----------
    models : list of AshaModel
        From :func:`asha_grid`.
    n_splits : int
        Folds per job.
    metric : str
        The test score a job is ranked by (the spec's ``refit`` metric).
    resumed : mapping, optional
        Task -> result of an earlier run (the journal): replayed to the rules first, in the
        given order (finished jobs as reported, unfinished ones to be handed out again; their
        journaled folds are not fitted again).

    Attributes
    ----------
    results : dict
        Task -> result, every one known (the journal's and this run's).
    """

    def __init__(self, models: Sequence[AshaModel], n_splits: int, metric: str,
                 resumed: Mapping[int, FitResult] | None = None) -> None:
        self.models = list(models)
        self.n_splits = int(n_splits)
        self.metric = metric
        self.results: dict[int, FitResult] = dict(resumed or {})
        self.queue: deque[int] = deque()
        self.out: set[int] = set()
        self.jobs: dict[int, tuple[AshaModel, Job]] = {}  # grid candidate -> its job
        self._turn = 0
        self._replay()

    def model_of(self, slot: int) -> AshaModel:
        """The model a grid candidate belongs to."""
        for m in reversed(self.models):
            if slot >= m.offset:
                return m
        raise IndexError(slot)

    def _folds_in(self, slot: int) -> list[FitResult]:
        base = slot * self.n_splits
        return [self.results[t] for t in range(base, base + self.n_splits) if t in self.results]

    def score(self, slot: int) -> float:
        """The mean test score of a grid candidate's folds (NaN when any fold failed)."""
        values = [r.test_scores.get(self.metric, math.nan) for r in self._folds_in(slot)]
        return math.fsum(values) / len(values) if values else math.nan

    def _replay(self) -> None:
        seen: dict[int, None] = {}
        for t in self.results:
            seen.setdefault(t // self.n_splits)
        for slot in seen:
            m = self.model_of(slot)
            candidate, rung = m.job_of(slot)
            finished = len(self._folds_in(slot)) == self.n_splits
            m.asha.restore(candidate, rung, self.score(slot) if finished else None)

    def next_task(self) -> int | None:  # noqa: D102 - see TaskSource
        while not self.queue:
            if not self._start_job():
                return None
        t = self.queue.popleft()
        self.out.add(t)
        return t

    def _start_job(self) -> bool:
        """Ask the models' rules, in turn, for a job; queue its folds not yet known."""
        n = len(self.models)
        for i in range(n):
            m = self.models[(self._turn + i) % n]
            job = m.asha.next_job()
            if job is None:
                continue
            self._turn = (self._turn + i + 1) % n
            slot = m.slot(job.candidate, job.rung)
            self.jobs[slot] = (m, job)
            base = slot * self.n_splits
            todo = [t for t in range(base, base + self.n_splits) if t not in self.results]
            if todo:
                self.queue.extend(todo)
            else:  # every fold is in the journal already
                self._finish(slot)
            return True
        return False

    def report(self, result: FitResult) -> None:  # noqa: D102 - see TaskSource
        self.out.discard(result.task)
        self.results[result.task] = result
        slot = result.task // self.n_splits
        if slot in self.jobs and len(self._folds_in(slot)) == self.n_splits:
            self._finish(slot)

    def _finish(self, slot: int) -> None:
        m, job = self.jobs.pop(slot)
        m.asha.report(job, self.score(slot))

    @property
    def done(self) -> bool:  # noqa: D102 - see TaskSource
        return not self.queue and not self.out and all(m.asha.done for m in self.models)

    def finished_slots(self) -> list[int]:
        """Grid candidates with every fold in, in grid order (model, rung, candidate)."""
        return sorted({t // self.n_splits for t in self.results
                       if len(self._folds_in(t // self.n_splits)) == self.n_splits})

    def expected_tasks(self) -> int:
        """About how many tasks the run makes: ``n / factor**k`` jobs at rung ``k``, as
        synchronous halving would (asynchronous promotion makes a few more)."""
        total = 0.0
        for m in self.models:
            total += sum(m.n / m.asha.factor ** k for k in range(len(m.asha.resources)))
        return max(int(round(total)) * self.n_splits, 1)


def _python(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (params go to JSON files)."""
    return value.item() if isinstance(value, np.generic) else value


def sample_candidates(spec: Any) -> dict[str, list[dict[str, Any]]]:
    """Each model's ``n_iter`` candidates, as ``ParameterSampler`` draws them (root only:
    with ``random_state: null`` every rank would draw others)."""
    from sklearn.model_selection import ParameterSampler

    out = {}
    for m in spec.models:
        opts = m.search.options
        sampler = ParameterSampler(list(m.grid), opts["n_iter"],
                                   random_state=opts["random_state"])
        out[m.name] = [{k: _python(v) for k, v in p.items()} for p in sampler]
    return out


#: What the resource ``n_samples`` needs to know of the data: its rows, its classes (``None``
#: for a regressor) and the folds.
DataInfo = Mapping[str, Any]


def _bounds(m: Any, info: DataInfo | None, source: str | None) -> tuple[int, int]:
    """A model's ``(min_resources, max_resources)``, with scikit-learn's ``smallest`` and
    ``auto``: for ``n_samples``, ``n_splits * 2`` (times the classes of a classifier) and
    every row; for an estimator parameter, 1 and the given integer."""
    opts = m.search.options
    lo, hi = opts["min_resources"], opts["max_resources"]
    if opts["resource"] == "n_samples" and ("smallest" == lo or "auto" == hi):
        if info is None:
            raise ValueError("the resource n_samples needs the data's size")
        if lo == "smallest":
            lo = int(info["n_splits"]) * 2 * int(info.get("n_classes") or 1)
        if hi == "auto":
            hi = int(info["n_samples"])
    lo = 1 if lo == "smallest" else int(lo)
    hi = int(hi)
    if hi < lo:
        raise SpecError(f"{m.search.key}.max_resources",
                        f"{hi} is smaller than min_resources ({lo})", source)
    return lo, hi


def make_rules(spec: Any, candidates: Mapping[str, list[dict[str, Any]]],
               info: DataInfo | None = None) -> list[tuple[str, ASHA, str]]:
    """Each model's ASHA rule over its candidates (``info``: see :data:`DataInfo`)."""
    rules = []
    for m in spec.models:
        lo, hi = _bounds(m, info, spec.source)
        rules.append((m.name, ASHA(candidates[m.name], factor=m.search.options["factor"],
                                   min_resources=lo, max_resources=hi),
                      m.search.options["resource"]))
    return rules


def spec_grid(spec: Any, n_splits: int, info: DataInfo | None = None) -> TaskGrid:
    """The task grid of an asha spec (the same on every call when each model's search has
    a ``random_state``: what ``hpcml status``, ``collect`` and a resume need).

    Without ``info``, a model on ``n_samples`` whose resources depend on the data gets its
    bottom rung only (an estimate, for ``hpcml plan`` and a job script's checks).
    """
    try:
        rules = make_rules(spec, sample_candidates(spec), info)
    except ValueError:
        rules = make_rules(spec, sample_candidates(spec),
                           {"n_splits": n_splits, "n_samples": 1 << 62, "n_classes": 1})
        rules = [(n, ASHA(a.candidates, factor=a.factor, min_resources=a.resources[0],
                          max_resources=a.resources[0]), r) for n, a, r in rules]
    return asha_grid(rules, n_splits)[0]


def subsample(folds: Any, fraction: float, random_state: Any) -> Any:
    """Each fold's train and test rows subsampled to ``fraction`` of them, as scikit-learn's
    halving does for the resource ``n_samples`` (``_SubsampleMetaSplitter``: ``resample``
    without replacement, the same ``random_state`` for every fold).

    >>> from hpcml.core.fitting import Folds
    >>> f = subsample(Folds([(np.arange(10), np.arange(10, 14))]), 0.5, 0)
    >>> [(len(a), len(b)) for a, b in f]
    [(5, 2)]
    """
    from sklearn.utils import resample

    from hpcml.core.fitting import Folds

    out = []
    for train, test in folds:
        out.append((
            resample(train, replace=False, random_state=random_state,
                     n_samples=int(fraction * len(train))),
            resample(test, replace=False, random_state=random_state,
                     n_samples=int(fraction * len(test))),
        ))
    return Folds(out)


def fold_sets(models: Sequence[AshaModel], folds: Any, n_samples: int,
              seeds: Mapping[str, Any]) -> tuple[list[Any], np.ndarray | None]:
    """The folds of each grid candidate: ``fold_sets[fold_set[c]]`` (``None``: all the
    run's folds). A rung of a model on ``n_samples`` trains and tests on its share of each
    fold's rows."""
    sets = [folds]
    index: dict[tuple[int, Any], int] = {}
    n = sum(m.n * len(m.asha.resources) for m in models)
    which = np.zeros(n, dtype=np.int64)
    for m in models:
        if m.resource != "n_samples":
            continue
        for k, r in enumerate(m.asha.resources):
            key = (r, seeds.get(m.name))
            if key not in index:
                index[key] = len(sets)
                sets.append(subsample(folds, r / n_samples, seeds.get(m.name)))
            which[m.slot(0, k): m.slot(0, k) + m.n] = index[key]
    return (sets, which) if len(sets) > 1 else (sets, None)
