"""Run scikit-learn's own search ``fit`` on every MPI rank, with its fits spread over the ranks.

Every rank calls ``fit`` with the same data (SPMD). scikit-learn's code runs unchanged on each
rank: validation, metadata routing, candidates, splits, warnings, errors, ``cv_results_``
and refit. Only where the ``(candidate, split)`` fits of ``evaluate_candidates`` run changes:
scikit-learn hands them to ``joblib.Parallel``, and :class:`SPMDBackend`, a joblib backend
on its documented API, runs them over the ranks with hpcml's engine (cost estimates, a
longest-first plan, dynamic self-scheduling) and gives every rank every output in
scikit-learn's order. Every rank then goes on identically.

What stays the same on every rank, so that it does:

- the inputs: a cheap fingerprint of ``X``, ``y`` and the fit params is compared with rank 0's
  (:func:`check_same_inputs`), and every rank raises the same error when one differs;
- the draws: every rank starts ``fit`` with rank 0's global NumPy random state
  (:func:`share_random_state`), so ``random_state=None`` samples the same candidates and
  splits everywhere, and each round of fits leaves that state as it found it;
- the outcome of each fit: an exception (``error_score='raise'``), its printed output
  (``verbose``) and its warnings travel back as data and are raised, printed and warned on
  every rank, in scikit-learn's order. An exception never escapes a task: the MPI engine
  would abort the world.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from joblib import parallel_config
from joblib.parallel import FallbackToBackend, ParallelBackendBase, SequentialBackend

from hpcml.core.costs import estimate_costs
from hpcml.core.progress import Progress
from hpcml.core.schedule import CostModel, plan_chunks
from hpcml.core.threads import thread_budget, threads_per_rank
from hpcml.engines import get_engine
from hpcml.engines.base import Engine, Observers, World, rebuild_error, report_error

__all__ = [
    "SPMDBackend",
    "FitRunner",
    "Checkpoints",
    "spmd_fit",
    "in_task",
    "check_same_inputs",
    "share_random_state",
    "fingerprint",
]

#: Workers the backend claims to have: sklearn's ``pre_dispatch="2*n_jobs"`` then hands
#: over every fit of a round before the first result is asked for (one collective round).
WIDE = 500_000  # joblib evaluates pre_dispatch with literals up to 1e6
#: Rows sampled for the fingerprint of an input.
SAMPLE_ROWS = 32

_LOCAL = threading.local()


def in_task() -> bool:
    """Whether this thread is running one fit of a spread round (a nested search inside it
    must not talk to the other ranks: it runs as plain scikit-learn)."""
    return getattr(_LOCAL, "depth", 0) > 0


@contextlib.contextmanager
def _task_scope() -> Iterator[None]:
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1


# --------------------------------------------------------------------------- inputs

def fingerprint(value: Any) -> Any:
    """A cheap, picklable digest of ``value``: its type, shape and a hash of sampled rows.

    Never raises: a value it cannot digest is described by its type name only.

    Examples
    --------
    >>> a = np.arange(12.0).reshape(6, 2)
    >>> fingerprint(a) == fingerprint(a.copy()), fingerprint(a) == fingerprint(a + 1)
    (True, False)
    """
    if value is None:
        return None
    try:
        from sklearn.utils import _safe_indexing

        shape = getattr(value, "shape", None)
        if shape is None and (not hasattr(value, "__len__")
                              or isinstance(value, (dict, str, bytes, tuple))):
            return (type(value).__qualname__, _hash(value))
        n = int(shape[0]) if shape is not None and len(shape) else len(value)
        if shape is not None and not len(shape):  # a 0-d array
            return (type(value).__qualname__, (), _hash(value))
        rows = np.unique(np.linspace(0, max(n - 1, 0), num=min(n, SAMPLE_ROWS)).astype(int))
        sample = _safe_indexing(value, rows) if n else value
        return (type(value).__qualname__, tuple(shape) if shape is not None else n,
                _hash(sample))
    except Exception:
        return (type(value).__qualname__,)


def _hash(value: Any) -> str:
    """``joblib.hash`` of ``value``, with NumPy random states hashed by their state only.

    A ``RandomState`` pickles its bit generator's seed sequence too, which differs between
    processes that share the state (:func:`share_random_state`); scipy's frozen
    distributions carry one. joblib's ``NumpyHasher`` (``joblib.hashing``) is extended here
    and nowhere else.
    """
    from joblib.hashing import NumpyHasher

    class _StateHasher(NumpyHasher):
        def save(self, obj: Any) -> None:
            if isinstance(obj, np.random.RandomState):
                obj = ("RandomState", obj.get_state(legacy=True))
            elif isinstance(obj, np.random.Generator):
                obj = ("Generator", obj.bit_generator.state)
            super().save(obj)

    return _StateHasher(hash_name="md5").hash(value)


def check_same_inputs(world: World, X: Any, y: Any, params: Mapping[str, Any],
                      settings: Mapping[str, Any] | None = None) -> None:
    """Raise on every rank when this rank's ``X``, ``y``, fit params or the search's
    ``settings`` (constructor parameters) differ from rank 0's.

    Collective. Compares :func:`fingerprint` digests, so it costs a few sampled rows.

    Raises
    ------
    ValueError
        On every rank, the same message: the lowest rank whose inputs differ, and which.
    """
    if world.size == 1:
        return
    mine = {"X": fingerprint(X), "y": fingerprint(y)}
    mine.update({name: fingerprint(v) for name, v in sorted(params.items())})
    mine.update({f"parameter {k}": fingerprint(v) for k, v in sorted((settings or {}).items())})
    root = world.bcast(mine)

    def compare() -> None:
        differ = [k for k in sorted(set(mine) | set(root))
                  if mine.get(k, "missing") != root.get(k, "missing")]
        if differ:
            raise ValueError(
                f"fit was called with different data on different ranks: rank {world.rank}'s "
                f"{', '.join(differ)} differ from rank 0's (shape, type or values); every rank "
                "must build the same search and call fit with the same X, y and fit "
                "parameters"
            )

    world.agree(compare)


def share_random_state(world: World) -> None:
    """Give every rank rank 0's global NumPy random state (collective).

    ``random_state=None`` then draws the same candidates (``ParameterSampler``), shuffled
    splits and halving subsamples on every rank.
    """
    if world.size > 1:
        # the legacy global state is what random_state=None draws from
        state = world.bcast(np.random.get_state() if world.is_root else None)  # noqa: NPY002
        if not world.is_root:
            np.random.set_state(state)  # noqa: NPY002


class Checkpoints:
    """The points where every rank of a fit meets, so that an error on one rank reaches all.

    scikit-learn's code between the rounds of fits runs on every rank; when it raises on
    some ranks only (a bad parameter or a refit that fails on one rank), the others would
    wait in the next round. Every round therefore starts with :meth:`meet`, and the fit
    ends with one: a rank that raised meets the others with its exception instead
    (:meth:`fail`), and they raise it too (same type and message).
    """

    def __init__(self, world: World) -> None:
        self.world = world
        #: Whether this rank already knows every rank's outcome (no more meetings).
        self.settled = False

    def meet(self) -> None:
        r"""Collective; raises the lowest rank's exception when any rank :meth:`fail`\ ed."""
        if self.world.size > 1:
            self._exchange(None)

    def fail(self, exc: BaseException) -> None:
        """Meet the others with ``exc`` (unless they already know), so they raise it too."""
        if self.world.size > 1 and not self.settled:
            self._exchange(report_error(exc, self.world.rank))

    def _exchange(self, mine: Any) -> None:
        reports = self.world.allgather(mine)
        first = next((r for r in reports if r is not None), None)
        if first is not None:
            self.settled = True
            if mine is None:
                raise rebuild_error(first)


# --------------------------------------------------------------------------- fits

@dataclass
class _Outcome:
    """What one call of a round produced: plain data that travels between ranks."""

    task: int
    value: Any = None
    error: Any = None  # (rank, pickled exception, type name, message), see engines.base
    stdout: str = ""
    warned: list = field(default_factory=list)
    rank: int = 0
    start: float = 0.0
    end: float = 0.0


def _warning_data(w: warnings.WarningMessage) -> tuple[Any, type, str, int]:
    import pickle

    message: Any = w.message
    try:
        pickle.loads(pickle.dumps(message))
    except Exception:
        message = str(message)
    return message, w.category, str(w.filename), int(w.lineno)


def call_costs(calls: Sequence[tuple[Any, tuple, dict]]) -> tuple[np.ndarray, np.ndarray]:
    """Estimated seconds and candidate number of each ``_fit_and_score`` call of a round.

    Read from the call's own arguments (estimator, ``X``, ``train``, ``parameters``,
    ``candidate_progress``); a call without them costs 1 and is its own candidate.
    """
    n = len(calls)
    costs = np.ones(n, dtype=np.float64)
    cand = np.arange(n, dtype=np.int64)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (_, args, kwargs) in enumerate(calls):
        train, est = kwargs.get("train"), args[0] if args else None
        if train is None or est is None or not hasattr(est, "get_params"):
            continue
        X = args[1] if len(args) > 1 else None
        n_features = int(X.shape[1]) if getattr(X, "ndim", 1) > 1 else 1
        groups.setdefault((len(train), n_features), []).append(i)
        progress = kwargs.get("candidate_progress")
        if progress is not None:
            cand[i] = int(progress[0])
    for (n_train, n_features), idx in groups.items():
        est = calls[idx[0]][1][0]
        params = [calls[i][2].get("parameters") or {} for i in idx]
        try:
            costs[idx] = estimate_costs(est, params, n_train, n_features)
        except Exception:  # an odd estimator: equal costs
            costs[idx] = 1.0
    return costs, cand


class FitRunner:
    """Runs the calls of one round of fits over the ranks of ``engine``; collective.

    Parameters
    ----------
    engine : Engine
        Spreads the calls (its world is the ranks of the search).
    threads : int
        Thread budget of each fit.
    progress : bool
        A progress line on rank 0.
    redundant : bool
        Run every call on every rank instead (scikit-learn callbacks keep their state in
        the process that runs the fit: every rank must see every hook).
    checkpoints : Checkpoints, optional
        Met at the start of each round.
    """

    def __init__(self, engine: Engine, threads: int = 1, *, progress: bool = False,
                 redundant: bool = False, checkpoints: Checkpoints | None = None) -> None:
        self.engine = engine
        self.world = engine.world
        self.threads = threads
        self.progress = progress
        self.local = redundant or self.world.size == 1
        self.checkpoints = checkpoints or Checkpoints(self.world)
        #: Ranks that ran at least one call (every rank, when ``redundant``).
        self.ranks_used: set[int] = set()

    def __call__(self, calls: Sequence[tuple[Any, tuple, dict]]) -> list[tuple[bool, Any]]:
        """``(ok, value or exception)`` of each call, in call order, on every rank.

        Run locally (one rank, or ``redundant``), the calls stop at the first exception as
        scikit-learn's sequential loop does; the later ones are missing from the list.
        """
        # each round leaves the shared draws where it found them
        state = np.random.get_state()  # noqa: NPY002
        self.checkpoints.meet()
        try:
            with thread_budget(self.threads):
                return self._local(calls) if self.local else self._spread(calls)
        finally:
            np.random.set_state(state)  # noqa: NPY002

    def _local(self, calls: Sequence[tuple[Any, tuple, dict]]) -> list[tuple[bool, Any]]:
        self.ranks_used.update(range(self.world.size))
        out: list[tuple[bool, Any]] = []
        for func, args, kwargs in calls:
            try:
                with _task_scope():
                    out.append((True, func(*args, **kwargs)))
            except Exception as exc:
                out.append((False, exc))
                break
        return out

    def _spread(self, calls: Sequence[tuple[Any, tuple, dict]]) -> list[tuple[bool, Any]]:
        world = self.world
        costs, cand = call_costs(calls)
        plan = plan_chunks(costs, world.size,
                           cost_model=CostModel(costs, cand, np.zeros(len(calls), np.int64)))
        raised: dict[int, BaseException] = {}

        def run_task(i: int) -> _Outcome:
            func, args, kwargs = calls[i]
            outcome = _Outcome(i, rank=world.rank)
            buf = io.StringIO()
            with warnings.catch_warnings(record=True) as caught, \
                    contextlib.redirect_stdout(buf), _task_scope():
                warnings.simplefilter("always")
                try:
                    outcome.value = func(*args, **kwargs)
                except Exception as exc:  # it must not escape: the engine would abort
                    raised[i] = exc
                    outcome.error = report_error(exc, world.rank)
            outcome.stdout = buf.getvalue()
            outcome.warned = [_warning_data(w) for w in caught]
            return outcome

        bar = Progress(len(calls), enabled=self.progress and world.is_root,
                       work=float(costs.sum()))
        results = self.engine.run(plan, run_task, Observers([bar if bar.enabled else None]))
        ordered = world.bcast([results[i] for i in range(len(calls))] if world.is_root else None)
        out: list[tuple[bool, Any]] = []
        for o in ordered:
            self.ranks_used.add(o.rank)
            _replay(o)
            if o.error is not None:
                out.append((False, raised.get(o.task) or rebuild_error(o.error)))
            else:
                out.append((True, o.value))
        return out


def _replay(o: _Outcome) -> None:
    """Print and warn, on this rank, what the call printed and warned where it ran."""
    if o.stdout:
        import sys

        sys.stdout.write(o.stdout)
    for message, category, filename, lineno in o.warned:
        warnings.warn_explicit(message, category, filename, lineno)


# --------------------------------------------------------------------------- joblib

class _Job:
    """A batch handed to :class:`SPMDBackend`: its calls, and their outcomes once run."""

    def __init__(self, batch: Any, callback: Callable[[Any], None] | None) -> None:
        self.batch = batch
        self.callback = callback
        self.outcomes: list[tuple[bool, Any]] | None = None

    def result(self) -> list[Any]:
        if self.outcomes is None or len(self.outcomes) < len(self.batch.items):
            for ok, value in self.outcomes or ():
                if not ok:
                    raise value
            raise RuntimeError("hpcml: a batch of fits was skipped after an earlier one failed")
        values = []
        for ok, value in self.outcomes:
            if not ok:
                raise value
            values.append(value)
        return values


class SPMDBackend(ParallelBackendBase):
    """A joblib backend that runs the calls of one ``Parallel`` over MPI ranks, SPMD.

    Every rank makes the same ``Parallel`` call with the same calls; the backend collects
    the batches joblib submits and runs them in :meth:`retrieval_context` (joblib enters it
    once it has dispatched its ``pre_dispatch`` share, which :data:`WIDE` workers make all
    of them) with a :class:`FitRunner`, then hands each batch its outputs. Batches that
    joblib dispatches from the completion callbacks (a small integer ``pre_dispatch``) are
    run in further collective rounds, the same on every rank.

    Only the first ``Parallel`` that configures it (scikit-learn's search) is served; any
    other (an estimator's own ``n_jobs`` during refit) falls back to ``fallback``.

    Parameters
    ----------
    runner : callable
        Takes a list of ``(func, args, kwargs)`` and returns ``(ok, value)`` per call.
    fallback : joblib backend, optional
        For other ``Parallel`` calls (default: sequential).
    """

    supports_retrieve_callback = False
    supports_sharedmem = False  # ``require="sharedmem"`` gets joblib's threading backend
    default_n_jobs = 1  # what another ``Parallel(n_jobs=None)`` gets, as without hpcml

    def __init__(self, runner: Callable[[list], list[tuple[bool, Any]]],
                 fallback: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runner = runner
        self.fallback = fallback if fallback is not None else SequentialBackend()
        self._owner: Any = None
        self._closed = False
        self._pending: list[_Job] = []
        self._failed = False
        #: Calls run so far, and collective rounds (tests read them).
        self.n_calls = 0
        self.n_rounds = 0

    def effective_n_jobs(self, n_jobs: Any) -> int:
        if self._owner is not None and not self._closed:  # while serving the search
            return WIDE
        return self.fallback.effective_n_jobs(n_jobs)  # e.g. a refit's own n_jobs

    def configure(self, n_jobs: Any = 1, parallel: Any = None, **kwargs: Any) -> int:
        if self._owner is None and parallel is not None:
            self._owner = weakref.ref(parallel)
        elif self._closed or self._owner is None or self._owner() is not parallel:
            raise FallbackToBackend(self.fallback)
        self.parallel = parallel
        return WIDE

    def terminate(self) -> None:
        """The search's ``Parallel`` is done: later ones (refit) go to the fallback."""
        if self._owner is not None:
            self._closed = True

    def get_nested_backend(self) -> tuple[Any, Any]:
        return SequentialBackend(nesting_level=1), None  # unused: calls run in FitRunner

    def submit(self, func: Any, callback: Callable[[Any], None] | None = None) -> _Job:
        job = _Job(func, callback)
        self._pending.append(job)
        return job

    def retrieve_result(self, out: _Job, timeout: float | None = None) -> list[Any]:
        return out.result()

    @contextlib.contextmanager
    def retrieval_context(self) -> Iterator[None]:
        """Run every pending batch (collective), then let joblib read the outputs."""
        while self._pending:
            jobs, self._pending = self._pending, []
            if self._failed:  # joblib raises at the failed one and reads no further
                outcomes: list[tuple[bool, Any]] = []
            else:
                calls = [c for job in jobs for c in job.batch.items]
                outcomes = self.runner(calls)
                self.n_calls += len(calls)
                self.n_rounds += 1
                self._failed = len(outcomes) < len(calls) or not all(ok for ok, _ in outcomes)
            k = 0
            for job in jobs:
                n = len(job.batch.items)
                job.outcomes = outcomes[k : k + n]
                k += n
                if job.callback is not None and not self._failed:
                    job.callback(job)
        yield


def _active_backend() -> Any:
    """The joblib backend active before hpcml's (for the ``Parallel`` calls it does not serve)."""
    from joblib.parallel import get_active_backend

    return get_active_backend()[0]


# --------------------------------------------------------------------------- fit

def spmd_fit(search: Any, fit: Callable[..., Any], X: Any, y: Any,
             params: Mapping[str, Any]) -> Any:
    """Call scikit-learn's ``fit`` of ``search`` on every rank of ``search.comm``, its fits
    spread over the ranks; collective.

    ``search`` has the drop-ins' ``comm``, ``threads_per_rank``, ``progress`` and ``verbose``
    attributes; after the fit, ``search._hpcml_info`` says how it ran (ranks, threads, calls,
    rounds, the ranks that ran calls, seconds; a private name: scikit-learn's tests compare
    the public fitted attributes with its own classes'). Inside a fit of an outer spread search, ``fit`` runs as plain scikit-learn.
    The world and its communicators are freed before this returns or raises.
    """
    if in_task():
        return fit(X, y, **params)
    engine = get_engine("mpi", world=search.comm)
    world = engine.world
    try:
        threads, _ = threads_per_rank(world.layout()["ranks_on_node"],
                                      cli=search.threads_per_rank)
        settings = {k: v for k, v in search.get_params(deep=False).items() if k != "comm"}
        share_random_state(world)  # first: a frozen scipy distribution pickles the state
        check_same_inputs(world, X, y, params, settings)
        checkpoints = Checkpoints(world)
        runner = FitRunner(
            engine, threads, progress=bool(search.progress) and search.verbose >= 0,
            redundant=bool(getattr(search, "_skl_callbacks", None)), checkpoints=checkpoints,
        )
        backend = SPMDBackend(runner, fallback=_active_backend())
        start = time.time()
        try:
            with parallel_config(backend=backend):
                out = fit(X, y, **params)
        except Exception as exc:
            checkpoints.fail(exc)
            raise
        checkpoints.meet()
        search._hpcml_info = {"ranks": world.size, "threads_per_rank": threads,
                             "calls": backend.n_calls, "rounds": backend.n_rounds,
                             "ranks_used": sorted(runner.ranks_used),
                             "seconds": time.time() - start}
        return out
    finally:
        engine.close()
        world.close()
