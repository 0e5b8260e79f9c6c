"""Turn fit results into scikit-learn's ``cv_results_`` and pick the best candidate.

Pure: the same numbers whichever engine ran the fits and in whatever order they came back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from .fitting import FitResult
from .tasks import Candidate

__all__ = ["format_cv_results", "best_index", "cv_results_to_csv", "TIME_COLUMNS"]

TIME_COLUMNS = ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time")


def format_cv_results(
    candidates: Sequence[Candidate],
    n_splits: int,
    results: Mapping[int, FitResult],
    metrics: Sequence[str],
    return_train_score: bool = False,
    with_model: bool = True,
    partial: bool = False,
) -> dict[str, Any]:
    """Build ``cv_results_`` the way ``BaseSearchCV._format_results`` does.

    Parameters
    ----------
    candidates : sequence of Candidate
        In ``cv_results_`` row order.
    n_splits : int
        Folds per candidate; the result of task ``c * n_splits + k`` is fold ``k`` of ``c``.
    results : mapping of task index to FitResult
        Missing tasks count as not finished: their scores are NaN.
    metrics : sequence of str
        Metric names, in column order.
    return_train_score : bool
        Also store ``split*_train_*`` and their mean and std.
    with_model : bool
        Add a ``model`` column (the candidate's model name).
    partial : bool
        Results of an unfinished run: means, stds and ranks over the finished splits only.

    Returns
    -------
    dict
        Keys and dtypes as in scikit-learn (masked ``param_*`` arrays, a ``params`` list).
    """
    n_cand = len(candidates)
    shape = (n_cand, n_splits)
    fit_t, score_t = np.full(shape, np.nan), np.full(shape, np.nan)
    test = {m: np.full(shape, np.nan) for m in metrics}
    train = {m: np.full(shape, np.nan) for m in metrics}
    done = np.zeros(shape, dtype=bool)
    for row, cand in enumerate(candidates):
        for k in range(n_splits):
            r = results.get(cand.index * n_splits + k)
            if r is None:
                continue
            done[row, k] = True
            fit_t[row, k], score_t[row, k] = r.fit_time, r.score_time
            for m in metrics:
                test[m][row, k] = r.test_scores[m]
                if return_train_score and r.train_scores is not None:
                    train[m][row, k] = r.train_scores[m]

    out: dict[str, Any] = {}
    if with_model:
        out["model"] = np.array([c.model for c in candidates], dtype=object)
    _store(out, "fit_time", fit_t, partial=partial)
    _store(out, "score_time", score_t, partial=partial)
    params = [dict(c.params) for c in candidates]
    out.update(_masked_params(params))
    out["params"] = params
    for m in metrics:
        _store(out, f"test_{m}", test[m], splits=True, rank=True, partial=partial)
        if return_train_score:
            _store(out, f"train_{m}", train[m], splits=True, partial=partial)
    out["n_finished_splits"] = done.sum(axis=1)
    return out


def best_index(cv_results: Mapping[str, Any], refit_metric: str) -> int:
    """Row of the best candidate: lowest ``rank_test_<metric>``, first among ties (as sklearn)."""
    return int(np.asarray(cv_results[f"rank_test_{refit_metric}"]).argmin())


def cv_results_to_csv(cv_results: Mapping[str, Any], partial: bool = False) -> str:
    """``cv_results_`` as CSV text: one row per candidate.

    ``params`` is written as JSON; a ``param_*`` cell is the value as Python prints it
    (``None`` for ``None``), empty where the candidate has no such parameter; numbers are
    written with ``repr`` so they read back exactly. With ``partial``, a ``finished_splits``
    column (``"3/5"``) marks candidates whose folds are not all done.
    """
    keys = [k for k in cv_results if k != "n_finished_splits"]
    if partial:
        n_splits = sum(1 for k in cv_results if k.startswith("split") and "_test_" in k)
        n_metrics = max(sum(1 for k in cv_results if k.startswith("rank_test_")), 1)
        n_splits //= n_metrics
        cv_results = dict(cv_results)
        cv_results["finished_splits"] = [
            f"{int(k)}/{n_splits}" for k in cv_results["n_finished_splits"]
        ]
        keys = keys + ["finished_splits"]
    n = len(cv_results["params"])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(keys)
    for i in range(n):
        row = []
        for key in keys:
            col = cv_results[key]
            if key == "params":
                row.append(json.dumps(col[i], sort_keys=True, default=repr))
            elif isinstance(col, np.ma.MaskedArray) and col.mask is not np.ma.nomask and col.mask[i]:
                row.append("")
            else:
                row.append(_cell(col[i]))
        writer.writerow(row)
    return buf.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "nan" if math.isnan(v) else repr(v)
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


def _store(out, key, array, splits=False, rank=False, partial=False) -> None:
    n_splits = array.shape[1]
    if splits:
        for k in range(n_splits):
            out[f"split{k}_{key}"] = array[:, k]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if partial:
            means = np.nanmean(array, axis=1)
            stds = np.nanstd(array, axis=1)
        else:
            means = np.average(array, axis=1)
            stds = np.sqrt(np.average((array - means[:, np.newaxis]) ** 2, axis=1))
    out[f"mean_{key}"] = means
    out[f"std_{key}"] = stds
    if rank:
        if np.isnan(means).all():
            ranks = np.ones_like(means, dtype=np.int32)
        else:
            filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
            ranks = rankdata(-filled, method="min").astype(np.int32, copy=False)
        out[f"rank_{key}"] = ranks


def _masked_params(candidate_params: list[dict]) -> dict[str, np.ma.MaskedArray]:
    n = len(candidate_params)
    by_name: dict[str, dict[int, Any]] = defaultdict(dict)
    for i, params in enumerate(candidate_params):
        for name, value in params.items():
            by_name[f"param_{name}"][i] = value
    out = {}
    for key, values in by_name.items():
        vals = list(values.values())
        try:
            arr = np.array(vals)
        except ValueError:
            dtype = np.dtype(object)
        else:
            dtype = arr.dtype if arr.dtype.kind != "U" and arr.ndim == 1 else object
        ma = np.ma.MaskedArray(np.empty(n, dtype=dtype), mask=True)
        for i, v in values.items():
            ma[i] = v
        out[key] = ma
    return out
