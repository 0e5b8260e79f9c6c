"""Out-of-fold predictions (``save_oof``), made during the search without extra fits."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from hpcml.core.csvcells import cell
from hpcml.core.fitting import FitResult, Folds
from hpcml.core.tasks import TaskGrid
from hpcml.errors import SpecError

__all__ = ["oof_methods", "check_oof_folds", "oof_csv", "best_per_model", "save_test_folds",
           "load_test_folds"]


def oof_methods(save_oof: Mapping[str, str] | None, estimators: Mapping[str, Any],
                source: str | None = None) -> dict[str, str] | None:
    """The prediction method of each model (``auto``: ``predict_proba``, else
    ``decision_function`` for classifiers, else ``predict``)."""
    if not save_oof:
        return None
    methods = {}
    for name, est in estimators.items():
        method = save_oof["method"]
        if method == "auto":
            method = "predict"
            if _is_classifier(est):
                method = next(
                    (m for m in ("predict_proba", "decision_function") if hasattr(est, m)),
                    "predict",
                )
        elif not hasattr(est, method):
            raise SpecError("save_oof.method", f"models.{name} has no {method}(); use 'auto'",
                            source)
        methods[name] = method
    return methods


def check_oof_folds(folds: Folds, n_samples: int, source: str | None = None) -> None:
    """Out-of-fold predictions need every row in at most one test fold."""
    counts = np.bincount(folds.test_flat, minlength=n_samples)
    if counts.max(initial=0) > 1:
        raise SpecError(
            "save_oof", "a row is in several test folds (a Repeated* or ShuffleSplit "
            "splitter?), so it has no single out-of-fold prediction; use a K-fold splitter",
            source,
        )


def oof_csv(grid: TaskGrid, results: Mapping[int, FitResult], folds: Folds, n_samples: int,
            candidates: list[int], classes: Any = None) -> str:
    """The out-of-fold predictions of ``candidates`` as CSV, in the input's row order.

    Columns: ``row``, ``fold``, then one per candidate (``model``, or ``model#index`` when
    several candidates of a model are saved) and class (``model:class``) for 2-D outputs.
    Rows in no test fold, and folds whose fit failed, are empty.
    """
    fold_of = np.full(n_samples, -1, dtype=np.int64)
    for k in range(len(folds)):
        fold_of[folds[k][1]] = k
    per_model: dict[str, int] = {}
    for c in candidates:
        m = grid.candidates[c].model
        per_model[m] = per_model.get(m, 0) + 1
    header = ["row", "fold"]
    columns = []
    for c in candidates:
        cand = grid.candidates[c]
        name = cand.model if per_model[cand.model] == 1 else f"{cand.model}#{c}"
        width, values = _assemble(grid, results, folds, n_samples, c)
        if width == 1:
            header.append(name)
        else:
            labels = list(classes) if classes is not None and len(classes) == width \
                else list(range(width))
            header += [f"{name}:{label}" for label in labels]
        columns.append(values)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for i in range(n_samples):
        row = [i, "" if fold_of[i] < 0 else int(fold_of[i])]
        for values in columns:
            row += [cell(v) for v in np.atleast_1d(values[i])]
        writer.writerow(row)
    return buf.getvalue()


def best_per_model(grid: TaskGrid, cv_results: Mapping[str, Any], metric: str) -> list[int]:
    """Row of each model's best candidate (lowest rank on ``metric``; first among ties)."""
    ranks = np.asarray(cv_results[f"rank_test_{metric}"])
    best: dict[str, int] = {}
    for c in grid.candidates:
        if c.model not in best or ranks[c.index] < ranks[best[c.model]]:
            best[c.model] = c.index
    return list(best.values())


def save_test_folds(path: Any, folds: Folds, classes: Any = None) -> None:
    """Keep the test folds (and class labels) beside the journal, for ``hpcml collect``."""
    labels = np.asarray([] if classes is None else [str(c) for c in classes])
    np.savez(path, test_flat=folds.test_flat, test_off=folds.test_off, classes=labels)


def load_test_folds(path: Any) -> tuple[Folds, list[str] | None]:
    """The test folds and class labels saved by :func:`save_test_folds`."""
    with np.load(path) as z:
        empty = np.zeros(0, dtype=np.int64)
        folds = Folds.from_arrays(empty, np.zeros(len(z["test_off"]), dtype=np.int64),
                                  z["test_flat"], z["test_off"])
        classes = [str(c) for c in z["classes"]] or None
    return folds, classes


def _assemble(grid, results, folds, n_samples, c) -> tuple[int, np.ndarray]:
    parts = [results.get(grid.task_index(c, k)) for k in range(len(folds))]
    shapes = {np.asarray(r.oof).shape[1:] for r in parts if r is not None and r.oof is not None}
    if len(shapes) > 1:
        raise ValueError(f"candidate {c}: folds predict different shapes {sorted(shapes)} "
                         "(a class missing from a training fold?)")
    tail = shapes.pop() if shapes else ()
    width = int(np.prod(tail)) if tail else 1
    kinds = {np.asarray(r.oof).dtype.kind for r in parts if r is not None and r.oof is not None}
    dtype = np.float64 if kinds <= {"f"} else object  # labels keep their type
    out = np.full((n_samples, *tail), np.nan if dtype is np.float64 else None, dtype=dtype)
    for k, r in enumerate(parts):
        if r is not None and r.oof is not None:
            out[folds[k][1]] = r.oof
    return width, out


def _is_classifier(est: Any) -> bool:
    from sklearn.base import is_classifier

    return is_classifier(est)
