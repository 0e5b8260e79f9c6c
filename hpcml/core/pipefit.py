"""Fit and score one task of a ``Pipeline`` whose first steps another task fitted already.

The first ``k`` steps (the prefix, :mod:`hpcml.core.prefixes`) are fitted on the fold's
training rows once; what they output is kept in a :class:`~hpcml.core.prefix_cache.PrefixCache`:
the training data for the later steps (``fit_transform``'s output, as ``Pipeline.fit`` passes
it on), the test rows transformed, and the training rows transformed (what
``Pipeline.predict`` would feed the later steps when scoring on the training part). The rest
of the pipeline is then fitted and scored on those, with scikit-learn's own ``Pipeline``, so
the scores equal :func:`hpcml.core.fitting.fit_and_score`'s (and ``GridSearchCV``'s).
"""

from __future__ import annotations

import copy
import time
import traceback
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcml.core.fitting import FitResult, _score, _split, unfitted_copy
from hpcml.core.prefix_cache import PrefixCache, nbytes

__all__ = ["PrefixOutput", "fit_prefix", "fit_and_score_prefixed", "prefix_is_trivial"]


@dataclass
class PrefixOutput:
    """What a fitted prefix made of one fold, or how it failed.

    Attributes
    ----------
    fit : array-like or None
        ``fit_transform`` of the training rows: what the next step is fitted on.
    test : array-like or None
        The test rows transformed (``None`` when the transform raised: see ``test_error``).
    train : array-like or None
        The training rows transformed, kept for train scores (``fit`` itself when equal).
    fit_time : float
        Seconds the prefix took to fit.
    error : BaseException or None
        What the prefix's fit raised; ``error_text`` is its traceback.
    """

    fit: Any = None
    test: Any = None
    train: Any = None
    fit_time: float = 0.0
    error: BaseException | None = None
    error_text: str | None = None
    test_error: BaseException | None = None
    train_error: BaseException | None = None

    @property
    def nbytes(self) -> int:
        train = 0 if self.train is self.fit else nbytes(self.train)
        return nbytes(self.fit) + nbytes(self.test) + train


def prefix_is_trivial(pipe: Any, k: int) -> bool:
    """Whether the first ``k`` steps of ``pipe`` fit nothing (all ``passthrough``/``None``),
    or its final step is ``passthrough``: then there is nothing worth caching."""
    steps = pipe.steps
    if steps[-1][1] is None or (isinstance(steps[-1][1], str) and steps[-1][1] == "passthrough"):
        return True
    return all(s is None or (isinstance(s, str) and s == "passthrough") for _, s in steps[:k])


def _sub_pipeline(pipe: Any, steps: list) -> Any:
    from sklearn.pipeline import Pipeline

    return Pipeline(steps, memory=pipe.memory, verbose=pipe.verbose)


def fit_prefix(pipe: Any, k: int, X_train: Any, y_train: Any, X_test: Any, *,
               train_scores: bool) -> PrefixOutput:
    """Fit the first ``k`` steps of ``pipe`` (an unfitted copy, changed in place) on the
    training rows and transform what the later steps need; a fit that raises is kept in
    :attr:`PrefixOutput.error` (the caller decides: ``error_score``)."""
    prefix = _sub_pipeline(pipe, pipe.steps[:k])
    start = time.time()
    try:
        fit = prefix.fit_transform(X_train, y_train)
    except Exception as exc:
        return PrefixOutput(fit_time=time.time() - start, error=exc,
                            error_text=traceback.format_exc())
    out = PrefixOutput(fit=fit, fit_time=time.time() - start)
    try:
        out.test = _transform(prefix, X_test)
    except Exception as exc:
        out.test_error = exc
    if train_scores:
        try:
            train = _transform(prefix, X_train)
            out.train = fit if _same(train, fit) else train
        except Exception as exc:
            out.train_error = exc
    return out


def _transform(prefix: Any, X: Any) -> Any:
    """``X`` through the fitted steps of ``prefix``, as ``Pipeline.predict`` feeds its final
    step (``Pipeline.transform`` would also ask its last step to look fitted)."""
    Xt = X
    for _, step in prefix.steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        Xt = step.transform(Xt)
    return Xt


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    return False


def _rows(y: Any, idx: np.ndarray) -> Any:
    """``y``'s rows ``idx``, as the fold split takes them."""
    if y is None:
        return None
    if isinstance(y, np.ndarray):
        return y[idx]
    from sklearn.utils import _safe_indexing

    return _safe_indexing(y, idx)


def _fresh(data: Any) -> Any:
    """A copy of cached data for one use: a later step may change its input in place."""
    if data is None:
        return None
    if isinstance(data, np.ndarray):
        return data.copy(order="K")
    method = getattr(data, "copy", None)
    return method() if callable(method) else copy.deepcopy(data)


def _scores_of(tail: Any, X: Any, y: Any, scorers: Mapping[str, Any], error_score: Any,
               failed: BaseException | None) -> dict[str, float]:
    """Scores on transformed rows; when their transform raised, each metric is scored as
    scikit-learn's scorer would score it (``error_score``, or the error with ``'raise'``)."""
    if failed is None:
        return _score(tail, _fresh(X), y, scorers, error_score)
    if error_score == "raise":
        raise failed
    return {name: float(error_score) for name in scorers}


def fit_and_score_prefixed(
    prototype: Any,
    k: int,
    X: Any,
    y: Any,
    train: np.ndarray,
    test: np.ndarray,
    scorers: Mapping[str, Any],
    cache: PrefixCache,
    key: Hashable,
    *,
    task: int = -1,
    return_train_score: bool = False,
    error_score: float | str = np.nan,
    oof_method: str | None = None,
    pairwise: bool = False,
) -> FitResult:
    """:func:`~hpcml.core.fitting.fit_and_score` of a pipeline candidate whose first ``k``
    steps are fitted once per ``key`` (model, prefix params, fold) and kept in ``cache``.

    ``prototype`` is the candidate's unfitted pipeline (its params set); it is copied. The
    result's ``fit_time`` is the time this task spent fitting: the prefix's fit counts in the
    task that made it. A prefix whose fit raised fails every task that shares it, with its
    traceback (or raises it again with ``error_score='raise'``).
    """
    est = unfitted_copy(prototype)
    out = cache.get(key)
    made = out is None
    if made:
        X_train, y_train = _split(est, X, y, train, pairwise=pairwise)
        X_test, y_test = _split(est, X, y, test, train, pairwise=pairwise)
        start = time.time()
        out = fit_prefix(est, k, X_train, y_train, X_test, train_scores=return_train_score)
        del X_train, X_test
        cache.put(key, out, out.nbytes)
    else:
        y_train, y_test = _rows(y, train), _rows(y, test)
        start = time.time()
    if out.error is not None:
        if error_score == "raise":
            raise out.error
        bad = {name: float(error_score) for name in scorers}
        return FitResult(task, bad, dict(bad) if return_train_score else None,
                         time.time() - start, 0.0, error=out.error_text)
    prefix_time = out.fit_time if made else 0.0
    tail = _sub_pipeline(est, est.steps[k:])
    fit_start = time.time()
    try:
        tail.fit(_fresh(out.fit), y_train)
    except Exception:
        if error_score == "raise":
            raise
        bad = {name: float(error_score) for name in scorers}
        return FitResult(task, bad, dict(bad) if return_train_score else None,
                         prefix_time + time.time() - fit_start, 0.0,
                         error=traceback.format_exc())
    fit_time = prefix_time + time.time() - fit_start
    score_start = time.time()
    test_scores = _scores_of(tail, out.test, y_test, scorers, error_score, out.test_error)
    score_time = time.time() - score_start
    train_scores = (_scores_of(tail, out.train, y_train, scorers, error_score, out.train_error)
                    if return_train_score else None)
    oof = None
    if oof_method is not None:
        if out.test_error is not None:
            raise out.test_error
        oof = np.asarray(getattr(tail, oof_method)(_fresh(out.test)))
    return FitResult(task, test_scores, train_scores, fit_time, score_time, oof=oof)
