"""Check a model's fixed params and grid values against scikit-learn's parameter constraints.

scikit-learn validates an estimator's params only when ``fit`` runs, so a wrong type in a spec
(``max_iter: lots``) would fail every fit of the search. Here every estimator of the model's
tree (a Pipeline's steps too) runs its own ``_validate_params`` (the check ``fit`` starts
with) once for the fixed params and once per grid value, before anything is launched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hpcml.errors import SpecError

__all__ = ["check_model_params"]

_NAMED = re.compile(r"The '([^']+)' parameter of (\w+)")


def check_model_params(estimator: Any, params: Mapping[str, Any],
                       grids: Sequence[Mapping[str, list]], key: str,
                       source: str | None = None) -> None:
    """Refuse a fixed param or a grid value that scikit-learn's constraints reject.

    Parameters
    ----------
    estimator : estimator
        The model built with its fixed params.
    params : mapping
        The fixed params (``models.NAME.params``).
    grids : sequence of mapping
        The parsed grid (a list of mappings of lists).
    key : str
        ``models.NAME``, for messages.
    source : str, optional
        The spec file.

    Raises
    ------
    SpecError
        Naming ``models.NAME.params.KEY`` or ``models.NAME.grid.KEY`` and the constraint.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> check_model_params(LogisticRegression(), {}, [{"C": [0.1, 1.0]}], "models.lr")
    >>> check_model_params(LogisticRegression(max_iter="lots"), {"max_iter": "lots"}, [],
    ...                    "models.lr")
    Traceback (most recent call last):
    ...
    hpcml.errors.SpecError: models.lr.params.max_iter: The 'max_iter' parameter of \
LogisticRegression must be an int in the range [0, inf). Got 'lots' instead.
    """
    problem = _first_invalid(estimator)
    if problem is not None:
        name, message = problem
        raise SpecError(f"{key}.params{_which(name, params)}", message, source)
    from sklearn.base import clone

    for i, grid in enumerate(grids):
        where = f"{key}.grid" if len(grids) == 1 else f"{key}.grid[{i}]"
        for pname, values in grid.items():
            if not isinstance(values, list):  # a distribution: its draws are left to the fit
                continue
            for value in values:
                try:
                    trial = clone(estimator)
                    trial.set_params(**{pname: value})
                except Exception:  # noqa: BLE001 - not a constraint: left to the fit
                    continue
                problem = _first_invalid(trial)
                if problem is not None:
                    raise SpecError(f"{where}.{pname}", f"{problem[1]} Drop it from the grid or fix it.",
                                    source)


def _first_invalid(estimator: Any) -> tuple[str, str] | None:
    """``(param name, message)`` of the first constraint that the estimator tree breaks."""
    try:
        from sklearn.utils._param_validation import InvalidParameterError
    except ImportError:  # scikit-learn < 1.2: no constraints to check
        return None
    for est in _tree(estimator):
        validate = getattr(est, "_validate_params", None)
        if not callable(validate):
            continue
        try:
            validate()
        except InvalidParameterError as exc:
            m = _NAMED.search(str(exc))
            return (m.group(1) if m else ""), str(exc).strip()
        except Exception:  # noqa: BLE001 - a third-party _validate_params with another contract
            continue
    return None


def _tree(estimator: Any) -> list[Any]:
    """The estimator and every estimator among its nested params."""
    out = [estimator]
    try:
        nested = estimator.get_params(deep=True)
    except Exception:  # noqa: BLE001
        return out
    out += [v for v in nested.values() if hasattr(v, "get_params") and not isinstance(v, type)]
    return out


def _which(name: str, params: Mapping[str, Any]) -> str:
    """The fixed-params key that sets ``name`` (``max_iter``, or ``svc__max_iter``)."""
    for k in params:
        if k == name or str(k).endswith(f"__{name}"):
            return f".{k}"
    return ""
