"""Nested cross-validation as plain task arithmetic: one task grid for every fit of the run.

Nested CV (``outer_cv`` in the spec) is ``cross_validate(GridSearchCV(est, grid, cv=inner),
X, y, cv=outer)`` for each model, next to the ordinary search on the whole data. Every fit of
both is a task of *one* :class:`~hpcml.core.tasks.TaskGrid`, so the ranks stay busy across
outer folds: the grid's candidates are the spec's, and its folds are, in this order,

- the ``n_search`` folds of the ordinary search (the spec's ``cv`` on all rows),
- for each outer fold ``o``, the ``inner[o]`` folds of the spec's ``cv`` applied to the outer
  training part, their indices mapped back to rows of ``X`` (as ``GridSearchCV`` inside
  ``cross_validate`` sees them),
- the ``n_outer`` outer folds themselves: the refit of each outer fold's chosen candidate
  on its training part, scored on its test part (one task per outer fold and model).

Pure: no MPI, no files. :mod:`hpcml.run.nested` runs it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcml.core.csvcells import cell
from hpcml.core.fitting import FitResult
from hpcml.core.results import best_index, format_cv_results
from hpcml.core.tasks import Candidate, TaskGrid

__all__ = ["NestedLayout", "Choice", "choose", "refit_tasks", "nested_rows", "nested_csv",
           "nested_summary"]


@dataclass(frozen=True)
class NestedLayout:
    """Where each kind of fold sits among the folds of the run's one task grid.

    Parameters
    ----------
    n_search : int
        Folds of the ordinary search.
    inner : tuple of int
        Inner folds of each outer fold.

    Examples
    --------
    >>> lay = NestedLayout(3, (2, 2))
    >>> lay.n_outer, lay.n_folds, lay.inner_fold(1, 0), lay.refit_fold(1)
    (2, 9, 5, 8)
    >>> [lay.kind(f) for f in (2, 5, 8)]
    [('search', 2), ('inner', 1, 0), ('refit', 1)]
    >>> lay.phase1_tasks(2).tolist()[:8], lay.n_tasks(n_candidates=2, n_models=1)
    ([0, 1, 2, 3, 4, 5, 6, 9], 16)
    >>> NestedLayout.from_manifest({"nested": lay.to_manifest()}) == lay
    True
    """

    n_search: int
    inner: tuple[int, ...]

    @property
    def n_outer(self) -> int:
        return len(self.inner)

    @property
    def n_folds(self) -> int:
        """Folds of the task grid: search, every inner, every outer."""
        return self.n_search + sum(self.inner) + self.n_outer

    def inner_fold(self, outer: int, k: int) -> int:
        """Grid fold of inner fold ``k`` of outer fold ``outer``."""
        return self.n_search + sum(self.inner[:outer]) + k

    def refit_fold(self, outer: int) -> int:
        """Grid fold of outer fold ``outer`` (its refit and outer test)."""
        return self.n_search + sum(self.inner) + outer

    def kind(self, fold: int) -> tuple[Any, ...]:
        """``("search", k)``, ``("inner", outer, k)`` or ``("refit", outer)``."""
        if fold < self.n_search:
            return ("search", fold)
        f = fold - self.n_search
        for o, n in enumerate(self.inner):
            if f < n:
                return ("inner", o, f)
            f -= n
        return ("refit", f)

    def label(self, fold: int) -> str:
        """A fold for a person: ``2``, ``outer 1 inner 0`` or ``outer 1 refit``."""
        kind = self.kind(fold)
        if kind[0] == "search":
            return str(kind[1])
        if kind[0] == "inner":
            return f"outer {kind[1]} inner {kind[2]}"
        return f"outer {kind[1]} refit"

    def phase1_tasks(self, n_candidates: int) -> np.ndarray:
        """Tasks of the first pool: every candidate on every search and inner fold."""
        per = self.n_search + sum(self.inner)
        cand = np.repeat(np.arange(n_candidates, dtype=np.int64), per)
        fold = np.tile(np.arange(per, dtype=np.int64), n_candidates)
        return cand * self.n_folds + fold

    def n_tasks(self, n_candidates: int, n_models: int) -> int:
        """Fits of the whole run: the first pool and one refit per outer fold and model."""
        return n_candidates * (self.n_search + sum(self.inner)) + n_models * self.n_outer

    def search_results(self, results: Mapping[int, FitResult]) -> dict[int, FitResult]:
        """The ordinary search's results, re-indexed as tasks of a grid of ``n_search``
        folds (what ``cv_results_`` and the journal-free tools expect)."""
        out = {}
        for t, r in results.items():
            c, f = divmod(t, self.n_folds)
            if f < self.n_search:
                i = c * self.n_search + f
                out[i] = FitResult(i, r.test_scores, r.train_scores, r.fit_time,
                                   r.score_time, r.error, r.rank, r.start, r.end, r.oof)
        return out

    def to_manifest(self) -> dict[str, Any]:
        return {"n_search": self.n_search, "inner": list(self.inner)}

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> NestedLayout | None:
        """The layout a manifest records (``None`` for a run without ``outer_cv``)."""
        entry = manifest.get("nested")
        if not entry:
            return None
        return cls(int(entry["n_search"]), tuple(int(n) for n in entry["inner"]))


@dataclass(frozen=True)
class Choice:
    """The candidate an outer fold's inner search picked for one model (as ``best_index_``)."""

    outer: int
    model: str
    candidate: int | None  # None: every inner fit failed (sklearn's search would raise)
    inner_score: float  # the inner mean of the refit metric (``best_score_``)


def choose(grid: TaskGrid, layout: NestedLayout, results: Mapping[int, FitResult],
           metrics: Sequence[str], refit_metric: str) -> list[Choice] | None:
    """Each (outer fold, model)'s candidate, as ``GridSearchCV(cv=inner)`` on that model picks.

    Returns ``None`` while an inner fit is missing. Order: outer fold, then models in spec
    order.
    """
    by_model: dict[str, list[Candidate]] = {}
    for cand in grid.candidates:
        by_model.setdefault(cand.model, []).append(cand)
    F = layout.n_folds
    out = []
    for o, n_inner in enumerate(layout.inner):
        for model in grid.model_names:
            cands = by_model.get(model, [])
            sub: dict[int, FitResult] = {}
            for cand in cands:
                for k in range(n_inner):
                    r = results.get(cand.index * F + layout.inner_fold(o, k))
                    if r is None:
                        return None
                    sub[cand.index * n_inner + k] = r
            if not sub or all(r.error is not None for r in sub.values()):
                out.append(Choice(o, model, None, float("nan")))
                continue
            cv = format_cv_results(cands, n_inner, sub, metrics, with_model=False)
            i = best_index(cv, refit_metric)
            out.append(Choice(o, model, cands[i].index,
                              float(cv[f"mean_test_{refit_metric}"][i])))
    return out


def refit_tasks(choices: Sequence[Choice], layout: NestedLayout) -> list[int]:
    """The grid tasks that refit each choice on its outer fold."""
    return [c.candidate * layout.n_folds + layout.refit_fold(c.outer)
            for c in choices if c.candidate is not None]


def nested_rows(grid: TaskGrid, layout: NestedLayout, choices: Sequence[Choice],
                results: Mapping[int, FitResult], metrics: Sequence[str],
                error_score: Any = float("nan")) -> list[dict[str, Any]]:
    """One row per (outer fold, model): the choice, its outer test scores, and whether it is
    the whole search's pick for that outer fold (``selected``: best inner score over every
    model, first among ties, as the ranks of ``cv_results_`` over all models)."""
    rows = []
    picks: dict[int, Choice] = {}
    for ch in choices:
        best = picks.get(ch.outer)
        if ch.candidate is not None and (best is None or _better(ch.inner_score, best.inner_score)):
            picks[ch.outer] = ch
    for ch in choices:
        row: dict[str, Any] = {"outer_fold": ch.outer, "model": ch.model}
        r = None
        if ch.candidate is not None:
            row["params"] = dict(grid.candidates[ch.candidate].params)
            r = results.get(ch.candidate * layout.n_folds + layout.refit_fold(ch.outer))
        else:
            row["params"] = None
        score = float("nan") if error_score == "raise" else float(error_score)
        for m in metrics:
            row[f"test_{m}"] = r.test_scores[m] if r is not None else score
        row["inner_best_score"] = ch.inner_score
        row["selected"] = picks.get(ch.outer) is ch
        row["fit_time"] = r.fit_time if r is not None else float("nan")
        row["score_time"] = r.score_time if r is not None else float("nan")
        row["error"] = (r.error.strip().splitlines()[-1] if r is not None and r.error
                        else ("every inner fit failed" if ch.candidate is None else ""))
        rows.append(row)
    return rows


def nested_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """``nested_cv.csv``: ``params`` as JSON, numbers with ``repr`` (they read back exactly).

    >>> print(nested_csv([{"outer_fold": 0, "model": "a", "params": {"C": 1},
    ...                    "test_score": 0.5}]), end="")
    outer_fold,model,params,test_score
    0,a,"{""C"": 1}",0.5
    """
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = list(rows[0]) if rows else ["outer_fold", "model", "params"]
    w.writerow(keys)
    for row in rows:
        w.writerow([json.dumps(row[k], sort_keys=True, default=repr) if k == "params"
                    else cell(row[k]) for k in keys])
    return buf.getvalue()


def nested_summary(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]
                   ) -> dict[str, Any]:
    """``best.json``'s nested entries: ``nested`` ({metric: {mean, std}} over the outer folds
    of the whole search's pick, model choice included) and, with several models,
    ``nested_by_model`` (the same for each model's own nested CV). Std as ``cv_results_``
    (ddof 0); ``None`` for a mean that is not finite.

    >>> rows = [{"outer_fold": o, "model": "a", "test_s": v, "selected": True}
    ...         for o, v in enumerate([0.5, 1.0])]
    >>> nested_summary(rows, ["s"])["nested"]
    {'s': {'mean': 0.75, 'std': 0.25}}
    """
    def stats(sel: list[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
        out = {}
        for m in metrics:
            v = np.array([float(r[f"test_{m}"]) for r in sel], dtype=float)
            out[m] = {"mean": _num(v.mean()) if v.size else None,
                      "std": _num(v.std()) if v.size else None}
        return out

    models = list(dict.fromkeys(r["model"] for r in rows))
    out: dict[str, Any] = {"nested": stats([r for r in rows if r.get("selected")])}
    if len(models) > 1:
        out["nested_by_model"] = {m: stats([r for r in rows if r["model"] == m])
                                  for m in models}
    return out


def _better(a: float, b: float) -> bool:
    """``a`` beats ``b`` (NaN loses; ties keep ``b``, the earlier one)."""
    if math.isnan(a):
        return False
    return math.isnan(b) or a > b


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
