"""The task list: every (model, candidate params, fold) of an experiment is one fit task.

Pure and deterministic, like scikit-learn's ``ParameterGrid``: task ``t`` maps to its
candidate and fold with ``divmod`` without building the whole list, and every rank builds the
same grid from the same spec, so no task list ever travels over MPI. Which engine runs the
tasks does not matter here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Candidate", "Task", "TaskGrid"]


@dataclass(frozen=True)
class Candidate:
    """One hyperparameter setting of one model.

    Attributes
    ----------
    index : int
        Position among all candidates of the experiment (the ``cv_results_`` row).
    model : str
        Name of the model it belongs to.
    params : dict
        Parameters set on the model's estimator for this candidate.
    """

    index: int
    model: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Task:
    """One fit: a candidate on one fold."""

    index: int
    candidate: Candidate
    fold: int


class TaskGrid(Sequence):
    """All fit tasks of an experiment, in a fixed order: model, candidate, fold.

    Parameters
    ----------
    models : sequence of (name, param_grid)
        ``param_grid`` is a dict or list of dicts, as for ``GridSearchCV``; candidates are
        enumerated in ``ParameterGrid`` order (sorted keys), models in the given order.
    n_splits : int
        Number of CV folds.

    Examples
    --------
    >>> grid = TaskGrid([("a", {"C": [1, 2]}), ("b", [{"k": [3]}])], n_splits=2)
    >>> len(grid), grid.n_candidates
    (6, 3)
    >>> t = grid[5]
    >>> t.candidate.model, dict(t.candidate.params), t.fold
    ('b', {'k': 3}, 1)
    >>> list(grid) == [grid[i] for i in range(len(grid))]
    True
    """

    def __init__(self, models: Sequence[tuple[str, Any]], n_splits: int) -> None:
        from sklearn.model_selection import ParameterGrid

        if n_splits < 1:
            raise ValueError(f"n_splits must be >= 1, got {n_splits}")
        self.n_splits = int(n_splits)
        self.model_names = [name for name, _ in models]
        candidates: list[Candidate] = []
        for name, grid in models:
            for params in ParameterGrid(grid):
                candidates.append(Candidate(len(candidates), name, params))
        self.candidates: tuple[Candidate, ...] = tuple(candidates)

    @classmethod
    def from_candidates(cls, candidates: Sequence[tuple[str, Mapping[str, Any]]],
                        n_splits: int) -> TaskGrid:
        """The tasks of explicit ``(model, params)`` candidates, in the given order.

        >>> g = TaskGrid.from_candidates([("a", {"C": 2}), ("a", {"C": 1})], 3)
        >>> [dict(c.params) for c in g.candidates], len(g)
        ([{'C': 2}, {'C': 1}], 6)
        """
        grid = cls([], n_splits)
        grid.model_names = list(dict.fromkeys(m for m, _ in candidates))
        grid.candidates = tuple(Candidate(i, m, dict(p)) for i, (m, p) in enumerate(candidates))
        return grid

    @property
    def n_candidates(self) -> int:
        return len(self.candidates)

    def __len__(self) -> int:
        return self.n_candidates * self.n_splits

    def __getitem__(self, index: int) -> Task:  # type: ignore[override]
        if not isinstance(index, int):
            raise TypeError("TaskGrid indices must be integers")
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("TaskGrid index out of range")
        cand, fold = divmod(index, self.n_splits)
        return Task(index, self.candidates[cand], fold)

    def __iter__(self) -> Iterator[Task]:
        for i in range(len(self)):
            yield self[i]

    def task_index(self, candidate: int, fold: int) -> int:
        """Index of the task that fits ``candidate`` on ``fold``."""
        return candidate * self.n_splits + fold
