"""Turn fit results into scikit-learn's ``cv_results_`` and pick the best candidate.

Pure: the same numbers whichever engine ran the fits and in whatever order they came back.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from hpcml.core.csvcells import cell
from hpcml.core.fitting import FitResult
from hpcml.core.tasks import Candidate

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
    row_of = {cand.index: row for row, cand in enumerate(candidates)}
    # One pass over the results into flat lists, then one scatter per column (numpy element
    # writes one at a time cost more than the rest of this function).
    cells: list[int] = []
    fits: list[float] = []
    scores: list[float] = []
    tests: dict[str, list[float]] = {m: [] for m in metrics}
    trains: dict[str, list[float]] = {m: [] for m in metrics}
    train_cells: list[int] = []
    for t, r in results.items():
        c, k = divmod(t, n_splits)
        row = row_of.get(c)
        if row is None:
            continue
        cell = row * n_splits + k
        cells.append(cell)
        fits.append(r.fit_time)
        scores.append(r.score_time)
        for m in metrics:
            tests[m].append(r.test_scores[m])
        if return_train_score and r.train_scores is not None:
            train_cells.append(cell)
            for m in metrics:
                trains[m].append(r.train_scores[m])
    fit_t, score_t = _scatter(shape, cells, fits), _scatter(shape, cells, scores)
    test = {m: _scatter(shape, cells, tests[m]) for m in metrics}
    train = {m: _scatter(shape, train_cells, trains[m]) for m in metrics}
    done = np.zeros(shape, dtype=bool)
    done.flat[cells] = True

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
                row.append(cell(col[i]))
        writer.writerow(row)
    return buf.getvalue()


def _scatter(shape: tuple[int, int], cells: list[int], values: list[float]) -> np.ndarray:
    """A NaN array of ``shape`` with ``values`` at the flat positions ``cells``."""
    out = np.full(shape, np.nan)
    if cells:
        out.flat[cells] = np.array(values, dtype=np.float64)
    return out


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
        # As sklearn's masked array with one `ma[i] = v` per value, built on plain arrays
        # (a masked array's item assignment is 20x slower).
        data = np.empty(n, dtype=dtype)
        mask = np.ones(n, dtype=bool)
        for i, v in values.items():
            data[i] = v
            mask[i] = False
        ma = np.ma.MaskedArray(data, mask=mask)
        out[key] = ma
    return out
