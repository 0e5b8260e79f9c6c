"""scikit-learn's own search loops as strategies, and a driver that runs them round by round.

:class:`SklearnStrategy` runs a scikit-learn search's ``_run_search(evaluate_candidates)`` (the
loop of ``HalvingGridSearchCV``, ``HalvingRandomSearchCV`` or ``RandomizedSearchCV``) with an
``evaluate_candidates`` that turns each call into :class:`~hpcml.search.strategy.Proposal`\\ s
(with their ``iter``, resource and folds) and reads back hpcml's scores. The rungs, resources,
survivors (``_top_k``: ties, NaN) and ``n_resources_``, ``n_candidates_``, ``n_iterations_``
are then scikit-learn's by construction: its code makes every choice.

:class:`RoundDriver` runs several models' strategies together: each strategy's loop runs in a
thread that stops at each ``evaluate`` call (one at a time: a coroutine, deterministic), the
driver hands all the pending proposals out as one round, and gives each strategy its results
back. Pure: no MPI; the root of a run drives it and shares each round with the other ranks.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from inspect import signature
from typing import Any

import numpy as np  # noqa: F401 - the doctests use it

from hpcml.core.fitting import Folds
from hpcml.search.strategy import Evaluate, Proposal, Strategy, plain

__all__ = ["FixedFolds", "SklearnStrategy", "RoundDriver", "RoundResult", "sklearn_search"]

#: What ``evaluate`` gives back per proposal: ``(test score, fit time, score time)`` per fold.
RoundResult = Sequence[tuple[float, float, float]]


class FixedFolds:
    """A scikit-learn splitter that yields the given folds (the run's, made once).

    >>> f = FixedFolds(Folds([(np.array([1, 2]), np.array([0]))]))
    >>> f.get_n_splits(), [(a.tolist(), b.tolist()) for a, b in f.split()]
    (1, [([1, 2], [0])])
    """

    def __init__(self, folds: Folds) -> None:
        self.folds = folds

    def split(self, X: Any = None, y: Any = None, groups: Any = None, **_: Any) -> Any:
        for k in range(len(self.folds)):
            yield self.folds[k]

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None, **_: Any) -> int:
        return len(self.folds)


class _NoCallbacks:
    """scikit-learn's callback context, for a search with no callbacks set."""

    def subcontext(self, *args: Any, **kwargs: Any) -> _NoCallbacks:
        return self

    def call_on_fit_task_begin(self, **kwargs: Any) -> _NoCallbacks:
        return self

    def call_on_fit_task_end(self, **kwargs: Any) -> None:
        return None


class SklearnStrategy(Strategy):
    """A scikit-learn search's ``_run_search``, its fits evaluated by hpcml.

    Parameters
    ----------
    search : BaseSearchCV
        An unfitted ``HalvingGridSearchCV``, ``HalvingRandomSearchCV`` or
        ``RandomizedSearchCV`` with a single metric (the one that picks survivors).
    folds : Folds
        The run's folds (scikit-learn's ``_checked_cv_orig``).
    X, y : array-like
        The data (only their sizes and classes are read: ``min_resources='smallest'``).

    Attributes
    ----------
    results : dict
        scikit-learn's ``cv_results_`` of the search so far (single metric ``score``).
    """

    def __init__(self, search: Any, folds: Folds, X: Any, y: Any) -> None:
        self.search, self.folds, self.X, self.y = search, folds, X, y
        self.results: dict[str, Any] = {}

    def run(self, evaluate: Evaluate) -> None:
        from sklearn.utils.validation import _num_samples

        s, base = self.search, FixedFolds(self.folds)
        s._checked_cv_orig = base
        s._n_samples_orig = _num_samples(self.X)
        if hasattr(s, "_check_input_parameters"):  # halving: min_resources_, max_resources_
            s._check_input_parameters(X=self.X, y=self.y, split_params={})
        s.n_splits_ = n_splits = len(self.folds)
        all_params: list[dict] = []
        all_out: list[dict] = []
        all_more: dict[str, list] = defaultdict(list)
        resource = getattr(s, "resource", None)

        def evaluate_candidates(candidate_params: Any, cv: Any = None,
                                more_results: Mapping[str, list] | None = None,
                                callback_ctx: Any = None) -> dict[str, Any]:
            params = [dict(p) for p in candidate_params]
            folds = None if cv is None or cv is base else Folds(list(cv.split(None, None)))
            more = dict(more_results or {})
            proposals = []
            for i, p in enumerate(params):
                n_res = more["n_resources"][i] if "n_resources" in more else None
                proposals.append(Proposal(
                    plain(p), None if n_res is None else {resource: int(n_res)},
                    iter=int(more["iter"][i]) if "iter" in more else None, folds=folds))
            rows = evaluate(proposals)
            for row in rows:
                if len(row) != n_splits:
                    raise ValueError(f"expected {n_splits} fold results, got {len(row)}")
                all_out.extend({"test_scores": float(score), "fit_time": float(ft),
                                "score_time": float(st)} for score, ft, st in row)
            all_params.extend(params)
            for key, values in more.items():
                all_more[key].extend(values)
            with warnings.catch_warnings():  # non-finite scores: hpcml warns once at the end
                warnings.simplefilter("ignore", UserWarning)
                self.results = s._format_results(all_params, n_splits, all_out, all_more)
            return self.results

        if "callback_ctx" in signature(s._run_search).parameters:
            s._run_search(evaluate_candidates, callback_ctx=_NoCallbacks())
        else:  # scikit-learn without callbacks
            s._run_search(evaluate_candidates)

    def best_index(self) -> int | None:
        """The row scikit-learn's ``best_index_`` would be (halving: the best of the last
        rung), in the order of the proposals; ``None`` before any result."""
        if not self.results:
            return None
        return int(self.search._select_best_index(True, "score", self.results))


def sklearn_search(search: Any, estimator: Any, grid: Sequence[Mapping[str, Any]]) -> Any:
    """The unfitted scikit-learn search of a model's ``search:`` block (one metric).

    Parameters
    ----------
    search : SearchSpec
        The model's search (``random`` or ``halving``).
    estimator : estimator
        The model's estimator.
    grid : sequence of mapping
        Its grid: lists, and distributions (which sample as scipy's).
    """
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import (
        HalvingGridSearchCV,
        HalvingRandomSearchCV,
        RandomizedSearchCV,
    )

    classes = {"RandomizedSearchCV": RandomizedSearchCV, "HalvingGridSearchCV": HalvingGridSearchCV,
               "HalvingRandomSearchCV": HalvingRandomSearchCV}
    cls = classes[search.sklearn_class]
    grid_arg = [dict(g) for g in grid]
    return cls(estimator, grid_arg, **dict(search.options), refit=False, return_train_score=False)


class _Cancelled(BaseException):
    """Ends a strategy's thread when the driver closes before the strategy is done."""


_CANCEL = object()


class _Runner:
    def __init__(self, name: str, strategy: Strategy) -> None:
        self.name, self.strategy = name, strategy
        self.requests: queue.Queue = queue.Queue(1)
        self.replies: queue.Queue = queue.Queue(1)
        self.pending: list[Proposal] | None = None
        self.done = False
        self.thread = threading.Thread(target=self._main, name=f"hpcml-strategy-{name}",
                                       daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.strategy.run(self._evaluate)
        except _Cancelled:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the driver, raised there
            self.requests.put(("error", exc))
            return
        self.requests.put(("done", None))

    def _evaluate(self, proposals: Sequence[Proposal]) -> Sequence[Any]:
        self.requests.put(("batch", list(proposals)))
        reply = self.replies.get()
        if reply is _CANCEL:
            raise _Cancelled
        return reply


class RoundDriver:
    """Runs each model's strategy as a coroutine and hands out their proposals by rounds.

    Round ``r`` holds the ``r``-th ``evaluate`` call of every strategy that is not done yet
    (models in order), so the strategies advance together and one pool of fits serves them
    all.

    >>> from hpcml.search.strategy import GridStrategy
    >>> d = RoundDriver({"a": GridStrategy({"C": [1, 2]})})
    >>> [(m, dict(p.params)) for m, p in d.next_round()]
    [('a', {'C': 1}), ('a', {'C': 2})]
    >>> d.feed({"a": [None, None]}); d.next_round()
    []
    """

    def __init__(self, strategies: Mapping[str, Strategy]) -> None:
        self.runners = [_Runner(name, s) for name, s in strategies.items()]

    def next_round(self) -> list[tuple[str, Proposal]]:
        """The next round's proposals of every strategy (empty: every strategy is done)."""
        out: list[tuple[str, Proposal]] = []
        for r in self.runners:
            if r.done:
                continue
            if r.pending is None:
                kind, payload = r.requests.get()
                if kind == "error":
                    r.done = True
                    self.close()
                    payload.hpcml_model = r.name  # which model's strategy raised
                    raise payload
                if kind == "done":
                    r.done = True
                    continue
                r.pending = payload
            out += [(r.name, p) for p in r.pending]
        return out

    def feed(self, results: Mapping[str, Sequence[Any]]) -> None:
        """Give each strategy with pending proposals their results, in proposal order."""
        for r in self.runners:
            if r.pending is not None:
                got = results[r.name]
                if len(got) != len(r.pending):
                    raise ValueError(f"{r.name}: {len(got)} results for {len(r.pending)} "
                                     "proposals")
                r.pending = None
                r.replies.put(list(got))

    def close(self) -> None:
        """End the strategies' threads (those waiting for results are cancelled)."""
        for r in self.runners:
            if r.done:
                continue
            r.done = True
            if r.pending is None and r.requests.get()[0] != "batch":
                continue  # it ended by itself
            r.pending = None
            r.replies.put(_CANCEL)
        for r in self.runners:
            r.thread.join(timeout=5)
