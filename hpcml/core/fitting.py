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

__all__ = ["FitResult", "Folds", "candidate_estimator", "fit_and_score", "make_scorer_map",
           "takes_pairwise", "unfitted_copy"]

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
        Task index in the :class:`~hpcml.core.tasks.TaskGrid`.
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

    def __reduce__(self):
        # Pickled as the class and a tuple of fields: half the bytes and time of the default
        # (a dict of field names per result), which matters when 10,000s of them are gathered.
        return (type(self), (self.task, self.test_scores, self.train_scores, self.fit_time,
                             self.score_time, self.error, self.rank, self.start, self.end,
                             self.oof))


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
    pairwise: bool | None = None,
) -> FitResult:
    """Clone ``estimator``, set ``params``, fit on ``train`` and score on ``test``.

    The numbers equal ``GridSearchCV``'s for the same folds: same clone, same split helper,
    same scorers. A fit that raises gets ``error_score`` for every metric, with the traceback
    kept in :attr:`FitResult.error`, unless ``error_score='raise'``. With ``oof_method``
    (e.g. ``"predict_proba"``), the fitted model's predictions for the test rows are kept
    too, as ``cross_val_predict`` would make them. With ``prototype``, ``estimator`` already
    has the candidate's params and is copied as ``copy.deepcopy`` would (see
    :func:`unfitted_copy`; the same as ``clone`` for an unfitted estimator, and cheaper).
    ``pairwise`` is :func:`takes_pairwise` of the estimator, when the caller knows it.
    """
    if not (error_score == "raise" or isinstance(error_score, numbers.Number)):
        raise ValueError("error_score must be 'raise' or a number")
    if prototype:
        est = unfitted_copy(estimator)
    else:
        est = clone(estimator)
        if params:
            est.set_params(**clone(dict(params), safe=False))
    if pairwise is None:
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
        if type(X) is np.ndarray and X.flags.c_contiguous and type(idx) is np.ndarray \
                and idx.dtype.kind == "i":
            X_part = X.take(idx, axis=0)  # the same C-ordered copy as X[idx], 3x faster
        else:
            X_part = X[idx]
        return X_part, None if y is None else y[idx]
    if _safe_split is not None:
        return _safe_split(est, X, y, idx, train)
    from sklearn.utils import _safe_indexing

    return _safe_indexing(X, idx), None if y is None else _safe_indexing(y, idx)


def takes_pairwise(est: Any) -> bool:
    """Whether ``est`` takes a pairwise matrix as X (then folds cut rows and columns)."""
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(est).input_tags.pairwise)
    except (ImportError, AttributeError):
        return True  # unknown: take sklearn's careful path


_PAIRWISE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _is_pairwise(template: Any, params: Mapping[str, Any], est: Any) -> bool:
    """Whether ``est`` (``template`` with ``params``) takes a pairwise matrix; cached."""
    try:
        cache = _PAIRWISE.setdefault(template, {})
    except TypeError:  # not weak-referenceable: no cache
        cache = {}
    key = repr(sorted((k, repr(v)) for k, v in params.items()))
    if key not in cache:
        cache[key] = takes_pairwise(est)
    return cache[key]


# Types that ``copy.deepcopy`` returns as they are.
_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes})
_PLAIN_TYPES: dict[type, bool] = {}


def unfitted_copy(est: Any) -> Any:
    """``copy.deepcopy(est)``, without its cost for the usual unfitted estimator.

    When every attribute of ``est`` is ``None``, a number or a string (what deepcopy returns
    unchanged) and its class copies the default way, a new instance with the same attribute
    dict is what deepcopy would build: about 20x faster. Anything else goes to deepcopy.
    """
    cls = type(est)
    plain = _PLAIN_TYPES.get(cls)
    if plain is None:
        plain = _PLAIN_TYPES[cls] = _copies_plainly(cls)
    if plain:
        state = getattr(est, "__dict__", None)
        if state is not None and all(type(v) in _ATOMIC for v in state.values()):
            new = cls.__new__(cls)
            new.__dict__.update(state)
            return new
    return copy.deepcopy(est)


def candidate_estimator(base: Any, params: Mapping[str, Any]) -> Any:
    """``clone(base).set_params(**params)`` for an unfitted ``base`` (itself a clone).

    Cheaper than ``clone`` when :func:`unfitted_copy` copies ``base`` plainly, its class
    keeps scikit-learn's ``set_params``, and every param is a top-level one set to ``None``,
    a number or a string: then ``set_params`` is one ``setattr`` per param.
    """
    from sklearn.base import BaseEstimator

    cls = type(base)
    if (
        getattr(cls, "set_params", None) is BaseEstimator.set_params
        and getattr(cls, "get_params", None) is BaseEstimator.get_params
        and all(type(v) in _ATOMIC for v in params.values())
        and _param_names(cls).issuperset(params)
    ):
        est = unfitted_copy(base)
        for key, value in params.items():
            setattr(est, key, value)
        return est
    est = clone(base)
    if params:
        est.set_params(**clone(dict(params), safe=False))
    return est


_PARAM_NAMES: dict[type, frozenset] = {}


def _param_names(cls: type) -> frozenset:
    names = _PARAM_NAMES.get(cls)
    if names is None:
        try:
            names = frozenset(cls._get_param_names())
        except Exception:  # not a scikit-learn estimator class: no fast path
            names = frozenset()
        _PARAM_NAMES[cls] = names
    return names


def _copies_plainly(cls: type) -> bool:
    """Whether deepcopy copies ``cls`` as ``cls.__new__`` + its ``__dict__`` (no hooks)."""
    import copyreg

    from sklearn.base import BaseEstimator

    getstates = {getattr(object, "__getstate__", None), BaseEstimator.__getstate__}
    return (
        not issubclass(cls, type)
        and cls not in copy._deepcopy_dispatch  # type: ignore[attr-defined]
        and cls not in copyreg.dispatch_table
        and getattr(cls, "__deepcopy__", None) is None
        and cls.__reduce_ex__ is object.__reduce_ex__
        and cls.__reduce__ is object.__reduce__
        and getattr(cls, "__getstate__", None) in getstates
        and getattr(cls, "__setstate__", None) in (None, BaseEstimator.__setstate__)
        and not any(vars(k).get("__slots__") for k in cls.__mro__)
    )


def _flatten(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    off = np.zeros(len(arrays) + 1, dtype=np.int64)
    for i, a in enumerate(arrays):
        off[i + 1] = off[i] + len(a)
    flat = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)
    return flat, off
