"""The strategy seam: a strategy proposes candidates and reads back their results.

Shaped like scikit-learn's ``BaseSearchCV._run_search(evaluate_candidates)``: the evaluator
owns the folds, the scoring, the engine and ``cv_results_``; a strategy owns only the choice
of candidates. A :class:`Proposal` is a candidate's params with an optional resource (such as
``n_samples`` or ``n_estimators``, for successive halving).

- A **synchronous** strategy is a loop: :meth:`Strategy.run` calls ``evaluate(proposals)`` once
  per round and gets each proposal's fold results back. The grid is one call; successive
  halving is one call per rung; nested CV runs an inner strategy per outer fold.
- An **asynchronous** strategy (ASHA) is offered each result as it lands
  (:meth:`AsyncStrategy.offer`) and answers with more proposals, so no worker waits for a
  round to end.

The spec runner (:func:`hpcml.run.experiment.run_experiment`) evaluates the proposals of every
model's strategy in one pool of tasks, so the ranks stay busy across models; the
scikit-learn drop-ins (:mod:`hpcml.search.drop_in`) are scikit-learn's own ``_run_search``
with the evaluation spread over the ranks. A new strategy is a class here (or in a module of
this package) and a line in :data:`STRATEGIES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Proposal", "Strategy", "AsyncStrategy", "GridStrategy", "RandomStrategy", "STRATEGIES",
           "plain",
           "make_strategy", "first_round"]


@dataclass(frozen=True)
class Proposal:
    """A candidate to evaluate: its params, and the resource to give it (``None``: all).

    ``iter`` is its rung (successive halving), ``folds`` the folds to fit it on when they are
    not the run's (a halving on ``n_samples`` subsamples each fold, as scikit-learn does).
    """

    params: Mapping[str, Any]
    resource: Mapping[str, Any] | None = field(default=None)
    iter: int | None = None
    folds: Any = field(default=None, compare=False)


#: What a strategy gets back for each proposal: its fold results (the evaluator's rows).
Evaluate = Callable[[Sequence[Proposal]], Sequence[Any]]


class Strategy(ABC):
    """Proposes candidates round by round (see the module docstring)."""

    @abstractmethod
    def run(self, evaluate: Evaluate) -> None:
        """Call ``evaluate(proposals)`` once per round until the search is done."""


class AsyncStrategy(Strategy):
    """A strategy that is offered each result as it lands, with no round barrier."""

    @abstractmethod
    def first(self, n_workers: int) -> list[Proposal]:
        """Proposals to start with (enough to keep ``n_workers`` busy)."""

    @abstractmethod
    def offer(self, proposal: Proposal, result: Any) -> list[Proposal]:
        """More proposals now that ``proposal`` has ``result`` (empty: none for now)."""

    def run(self, evaluate: Evaluate) -> None:  # pragma: no cover - engines drive offer()
        pending = self.first(1)
        while pending:
            proposal = pending.pop(0)
            (result,) = evaluate([proposal])
            pending += self.offer(proposal, result)


class GridStrategy(Strategy):
    """Every candidate of a parameter grid, in ``ParameterGrid`` order, in one call.

    >>> got = []
    >>> GridStrategy({"C": [2, 1], "k": ["a"]}).run(lambda ps: got.extend(ps) or [None] * len(ps))
    >>> [dict(p.params) for p in got]
    [{'C': 2, 'k': 'a'}, {'C': 1, 'k': 'a'}]
    """

    def __init__(self, param_grid: Any) -> None:
        self.param_grid = param_grid

    def run(self, evaluate: Evaluate) -> None:
        from sklearn.model_selection import ParameterGrid

        evaluate([Proposal(p) for p in ParameterGrid(self.param_grid)])


def plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """Params with NumPy scalars (a distribution's draws) as Python numbers: the same values,
    printed plainly and with journal keys that do not depend on NumPy's ``repr``.

    >>> import numpy as np
    >>> plain({"C": np.float64(0.5), "k": np.int64(3), "s": "rbf"})
    {'C': 0.5, 'k': 3, 's': 'rbf'}
    """
    return {k: v.item() if type(v).__module__ == "numpy" and hasattr(v, "item")
            and getattr(v, "ndim", None) == 0 else v for k, v in params.items()}


class RandomStrategy(Strategy):
    """``n_iter`` candidates drawn as ``RandomizedSearchCV._run_search`` draws them
    (``ParameterSampler``, same ``random_state``, same order), in one call.

    >>> got = []
    >>> RandomStrategy({"C": [1, 2, 3]}, n_iter=2, random_state=0).run(
    ...     lambda ps: got.extend(ps) or [None] * len(ps))
    >>> [dict(p.params) for p in got]
    [{'C': 3}, {'C': 2}]
    """

    def __init__(self, param_distributions: Any, n_iter: int = 10,
                 random_state: Any = None) -> None:
        self.param_distributions = param_distributions
        self.n_iter, self.random_state = n_iter, random_state

    def run(self, evaluate: Evaluate) -> None:
        from sklearn.model_selection import ParameterSampler

        sampler = ParameterSampler(self.param_distributions, self.n_iter,
                                   random_state=self.random_state)
        evaluate([Proposal(plain(p)) for p in sampler])


#: Strategy name (the spec's ``search.strategy``) -> factory taking the model's grid. The
#: strategies of several rounds (halving) run scikit-learn's own loop:
#: :class:`hpcml.search.rounds.SklearnStrategy`.
STRATEGIES: dict[str, Callable[..., Strategy]] = {"grid": GridStrategy, "random": RandomStrategy}


def make_strategy(name: str, param_grid: Any, **options: Any) -> Strategy:
    """The strategy ``name`` over ``param_grid``."""
    return STRATEGIES[name](param_grid, **options)


def first_round(strategies: Mapping[str, Strategy]) -> list[tuple[str, Proposal]]:
    """The first round of proposals of every model's strategy, models in order.

    The spec runner evaluates them in one pool of tasks. Strategies of several rounds
    (successive halving) are not yet offered in a spec: a second call is refused.
    """
    out: list[tuple[str, Proposal]] = []
    for name, strategy in strategies.items():
        batch: list[Proposal] = []

        def take(proposals: Sequence[Proposal], batch: list[Proposal] = batch,
                 name: str = name) -> list[None]:
            if batch:
                raise NotImplementedError(f"models.{name}: a search of several rounds")
            batch.extend(proposals)
            return [None] * len(proposals)

        strategy.run(take)
        out += [(name, p) for p in batch]
    return out
