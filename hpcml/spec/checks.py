"""Checks of the data against the spec, run before any fit: one clear error, not 500 failures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hpcml.errors import SpecError

__all__ = ["check_nan_support", "check_splits_vs_classes", "check_target_classes"]


def check_nan_support(X: np.ndarray, estimators: Mapping[str, Any], feature_names=None,
                      source: str | None = None) -> None:
    """Refuse NaN in ``X`` when a model's estimator rejects missing values.

    Raises
    ------
    SpecError
        Naming the first NaN's row and column, the models that reject it and the fix.
    """
    if X.dtype.kind != "f" or not _has_nan(X):
        return
    rejecting = [name for name, est in estimators.items() if not _allows_nan(est)]
    if not rejecting:
        return
    rows, cols = np.nonzero(np.isnan(X))
    n_bad = len(rows)
    col = feature_names[cols[0]] if feature_names else f"#{cols[0]}"
    raise SpecError(
        "data",
        f"{n_bad} missing values (NaN), first at row {rows[0]} (0-based), column {col!r}, and "
        f"{', '.join(f'models.{n}' for n in rejecting)} reject NaN. Impute them first, or make "
        "the model a Pipeline with sklearn.impute.SimpleImputer, or use a model that accepts "
        "NaN (e.g. HistGradientBoostingClassifier)",
        source,
    )


def _has_nan(X: np.ndarray, block_bytes: int = 64 << 20) -> bool:
    """``np.isnan(X).any()`` in row blocks: no temporary the size of X."""
    rows = max(block_bytes // max(X[:1].nbytes, 1), 1)
    return any(np.isnan(X[lo : lo + rows]).any() for lo in range(0, len(X), rows))


def check_splits_vs_classes(splitter: Any, y: Any, source: str | None = None,
                            key: str = "cv.n_splits", where: str = "") -> None:
    """Refuse a stratified splitter with more folds than members of the smallest class
    (``where``: of which rows, for the message)."""
    name = type(splitter).__name__
    n_splits = getattr(splitter, "n_splits", None)
    if "Stratified" not in name or n_splits is None or y is None:
        return
    _, counts = np.unique(np.asarray(y), return_counts=True)
    if counts.size and counts.min() < n_splits:
        raise SpecError(
            key,
            f"{n_splits} folds but the smallest class{where} has only {counts.min()} members; "
            f"use n_splits <= {counts.min()}, or a non-stratified splitter",
            source,
        )


def _allows_nan(estimator: Any) -> bool:
    steps = getattr(estimator, "steps", None)
    if steps:  # a Pipeline takes NaN when it imputes, or when its final step takes NaN
        if any("Imputer" in type(step).__name__ for _, step in steps):
            return True
        return _allows_nan(steps[-1][1])
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(estimator).input_tags.allow_nan)
    except (ImportError, AttributeError):  # scikit-learn < 1.6
        tags = getattr(estimator, "_get_tags", lambda: {})()
        return bool(tags.get("allow_nan", False))


def check_target_classes(y: Any, estimators: Mapping[str, Any], source: str | None = None) -> None:
    """Refuse a target with a single class when a model is a classifier.

    Every fit would fail ("needs samples of at least 2 classes"); say it once, up front.
    """
    if y is None:
        return
    from sklearn.base import is_classifier

    classifiers = [name for name, est in estimators.items() if is_classifier(est)]
    if not classifiers:
        return
    classes = np.unique(np.asarray(y))
    if classes.size < 2:
        raise SpecError(
            "data.target",
            f"the target has a single class ({classes[0].item() if classes.size else 'no rows'!r}) "
            f"and {', '.join(f'models.{n}' for n in classifiers)} are classifiers, which "
            "need at least 2 classes; check the target column, or use a regressor",
            source,
        )
