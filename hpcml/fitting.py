"""Fit and score one task, as scikit-learn's ``_fit_and_score`` does for ``GridSearchCV``."""

from __future__ import annotations

import copy
import numbers
import time
import traceback
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

__all__ = ["FitResult", "Folds", "fit_and_score", "make_scorer_map"]

try:  # handles pairwise (precomputed kernel) estimators like GridSearchCV does
    from sklearn.utils.metaestimators import _safe_split
except ImportError:  # pragma: no cover - very old or very new scikit-learn
    _safe_split = None


@dataclass
class FitResult:
    """What one fit task produced. Plain data: it travels between ranks and into journals.

    Attributes
    ----------
    task : int
        Task index in the :class:`~hpcml.tasks.TaskGrid`.
    test_scores, train_scores : dict
        Metric name to score (``train_scores`` is ``None`` unless asked for).
    fit_time, score_time : float
        Seconds, as ``cv_results_`` reports them.
    error : str or None
        Traceback text of a fit that failed (scores are then ``error_score``).
    rank, start, end : int, float, float
        Which rank ran it, and when (seconds since the run started), for timelines.
    oof : ndarray or None
        Predictions for the test rows of the fold (``save_oof``), in fold order.
    """

    task: int
    test_scores: dict[str, float]
    train_scores: dict[str, float] | None
    fit_time: float
    score_time: float
    error: str | None = None
    rank: int = 0
    start: float = 0.0
    end: float = 0.0
    oof: Any = None


class Folds:
    """CV folds as two flat index arrays plus offsets, cheap to broadcast.

    Parameters
    ----------
    splits : sequence of (train, test)
        Index arrays, as a splitter's ``split`` yields them.
    """

    def __init__(self, splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        splits = list(splits or [])
        self.train_flat, self.train_off = _flatten([s[0] for s in splits])
        self.test_flat, self.test_off = _flatten([s[1] for s in splits])

    @classmethod
    def from_arrays(cls, train_flat, train_off, test_flat, test_off) -> Folds:
        obj = cls()
        obj.train_flat, obj.train_off = train_flat, train_off
        obj.test_flat, obj.test_off = test_flat, test_off
        return obj

    def __len__(self) -> int:
        return len(self.train_off) - 1

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        tr = self.train_flat[self.train_off[k] : self.train_off[k + 1]]
        te = self.test_flat[self.test_off[k] : self.test_off[k + 1]]
        return tr, te

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.train_flat, self.train_off, self.test_flat, self.test_off


def make_scorer_map(scoring: Any, estimator: Any) -> tuple[Any, list[str]]:
    """The scorer callable and the metric names, with ``GridSearchCV``'s naming.

    A single scorer (``None``, a string or a callable) is reported as ``"score"``; a list or
    dict keeps its names.
    """
    from sklearn.metrics import check_scoring

    if scoring is None or isinstance(scoring, str) or callable(scoring):
        scorer = check_scoring(estimator, scoring=scoring)
        return {"score": scorer}, ["score"]
    if isinstance(scoring, Mapping):
        names = list(scoring)
        scorers = {name: check_scoring(estimator, scoring=s) for name, s in scoring.items()}
        return scorers, names
    names = list(scoring)
    scorers = {name: check_scoring(estimator, scoring=name) for name in names}
    return scorers, names


def fit_and_score(
    estimator: Any,
    X: Any,
    y: Any,
    params: Mapping[str, Any],
    train: np.ndarray,
    test: np.ndarray,
    scorers: Mapping[str, Any],
    *,
    task: int = -1,
    return_train_score: bool = False,
    error_score: float | str = np.nan,
    oof_method: str | None = None,
    prototype: bool = False,
) -> FitResult:
    """Clone ``estimator``, set ``params``, fit on ``train`` and score on ``test``.

    The numbers equal ``GridSearchCV``'s for the same folds: same clone, same split helper,
    same scorers. A fit that raises gets ``error_score`` for every metric, with the traceback
    kept in :attr:`FitResult.error`, unless ``error_score='raise'``. With ``oof_method``
    (e.g. ``"predict_proba"``), the fitted model's predictions for the test rows are kept
    too, as ``cross_val_predict`` would make them. With ``prototype``, ``estimator`` already
    has the candidate's params and is copied with ``copy.deepcopy`` (4x cheaper than
    ``clone`` for tiny fits, and the same for an unfitted estimator).
    """
    if not (error_score == "raise" or isinstance(error_score, numbers.Number)):
        raise ValueError("error_score must be 'raise' or a number")
    if prototype:
        est = copy.deepcopy(estimator)
    else:
        est = clone(estimator)
        if params:
            est.set_params(**clone(dict(params), safe=False))
    pairwise = _is_pairwise(estimator, params, est)
    X_train, y_train = _split(est, X, y, train, pairwise=pairwise)
    X_test, y_test = _split(est, X, y, test, train, pairwise=pairwise)
    start = time.time()
    try:
        if y_train is None:
            est.fit(X_train)
        else:
            est.fit(X_train, y_train)
    except Exception:
        if error_score == "raise":
            raise
        fit_time = time.time() - start
        bad = {name: float(error_score) for name in scorers}
        return FitResult(
            task, bad, dict(bad) if return_train_score else None, fit_time, 0.0,
            error=traceback.format_exc(),
        )
    fit_time = time.time() - start
    test_scores = _score(est, X_test, y_test, scorers, error_score)
    score_time = time.time() - start - fit_time
    train_scores = _score(est, X_train, y_train, scorers, error_score) if return_train_score else None
    oof = None
    if oof_method is not None:
        oof = np.asarray(getattr(est, oof_method)(X_test))
    return FitResult(task, test_scores, train_scores, fit_time, score_time, oof=oof)


def _score(est, X, y, scorers, error_score) -> dict[str, float]:
    out = {}
    for name, scorer in scorers.items():
        try:
            value = scorer(est, X) if y is None else scorer(est, X, y)
        except Exception:
            if error_score == "raise":
                raise
            value = error_score
        if hasattr(value, "item"):
            value = value.item()
        if not isinstance(value, numbers.Number):
            raise ValueError(f"scoring must return a number, got {value!r} for {name!r}")
        out[name] = float(value)
    return out


def _split(est, X, y, idx, train=None, pairwise=True):
    # Fast path: plain numpy rows for an estimator that is not pairwise (sklearn's helper asks
    # for the estimator's tags on every call, which costs more than the indexing on small data).
    if not pairwise and isinstance(X, np.ndarray) and (y is None or isinstance(y, np.ndarray)):
        return X[idx], None if y is None else y[idx]
    if _safe_split is not None:
        return _safe_split(est, X, y, idx, train)
    from sklearn.utils import _safe_indexing

    return _safe_indexing(X, idx), None if y is None else _safe_indexing(y, idx)


_PAIRWISE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _is_pairwise(template: Any, params: Mapping[str, Any], est: Any) -> bool:
    """Whether ``est`` (``template`` with ``params``) takes a pairwise matrix; cached."""
    try:
        cache = _PAIRWISE.setdefault(template, {})
    except TypeError:  # not weak-referenceable: no cache
        cache = {}
    key = repr(sorted((k, repr(v)) for k, v in params.items()))
    if key not in cache:
        try:
            from sklearn.utils import get_tags

            cache[key] = bool(get_tags(est).input_tags.pairwise)
        except (ImportError, AttributeError):
            cache[key] = True  # unknown: take sklearn's careful path
    return cache[key]


def _flatten(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    off = np.zeros(len(arrays) + 1, dtype=np.int64)
    for i, a in enumerate(arrays):
        off[i + 1] = off[i] + len(a)
    flat = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)
    return flat, off
