"""scikit-learn's four searches, with their fits spread over MPI ranks.

Swap one import and run the script with ``mpiexec -n P python script.py``: every rank calls
``fit`` with the same data, the fits are shared out, and every rank gets the same
``cv_results_`` and ``best_estimator_``. Each class is its scikit-learn class with
scikit-learn's own ``fit``; only where the fits run differs (:mod:`hpcml.search.spmd`).
"""

from __future__ import annotations

import inspect
from numbers import Integral
from typing import Any

from sklearn.experimental import enable_halving_search_cv  # noqa: F401 - enables the import
from sklearn.model_selection import (
    GridSearchCV,
    HalvingGridSearchCV,
    HalvingRandomSearchCV,
    RandomizedSearchCV,
)
from sklearn.utils._param_validation import Interval

from hpcml.search.spmd import spmd_fit

__all__ = ["MPISearchCV", "MPIRandomizedSearchCV", "MPIHalvingGridSearchCV",
           "MPIHalvingRandomSearchCV", "mpi_init"]

#: The parameters the drop-ins add to their scikit-learn class, and their defaults.
MPI_PARAMS = {"comm": None, "threads_per_rank": None, "progress": True}

_MPI_DOC = """comm : mpi4py communicator, optional
        Ranks that share the work (default ``COMM_WORLD``; a single rank runs serially).
        Every rank of it must call :meth:`fit` with the same data.
    threads_per_rank : int, optional
        Thread budget of each fit; default from Slurm, ``OMP_NUM_THREADS`` or
        cores / ranks on the node.
    progress : bool, default=True
        Show a progress line on rank 0 (not with ``verbose < 0``).

    ``n_jobs`` and ``pre_dispatch`` are accepted and ignored: the ranks (and
    ``threads_per_rank`` within each) are the parallelism.
"""


def mpi_init(base: type, **defaults: Any) -> Any:
    """An ``__init__`` taking ``base``'s parameters and :data:`MPI_PARAMS` (keyword-only).

    Its signature lists every parameter by name, as scikit-learn's ``get_params`` and
    ``clone`` need; ``defaults`` overrides the defaults of :data:`MPI_PARAMS` (a test
    harness turns ``progress`` off).
    """
    base_init = base.__init__
    values = {**MPI_PARAMS, **defaults}
    sig = inspect.signature(base_init)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value)
             for name, value in values.items()]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        mine = {name: kwargs.pop(name, value) for name, value in values.items()}
        base_init(self, *args, **kwargs)
        for name, value in mine.items():
            setattr(self, name, value)

    __init__.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[*sig.parameters.values(), *extra])
    __init__.__doc__ = f"See :class:`{base.__module__.split('._')[0]}.{base.__name__}`."
    return __init__


def _constraints(base: type) -> dict[str, list]:
    return {**base._parameter_constraints, "comm": "no_validation",
            "threads_per_rank": [Interval(Integral, 1, None, closed="left"), None],
            "progress": ["boolean"]}


def _documented(cls: type) -> type:
    """Fill the ``{mpi_params}`` slot of a drop-in's docstring."""
    cls.__doc__ = (cls.__doc__ or "").replace("{mpi_params}", _MPI_DOC)
    return cls


class _SpreadFits:
    """The ``fit`` of the drop-ins: scikit-learn's, run SPMD (see :mod:`hpcml.search.spmd`)."""

    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Run fit with all sets of parameters, on every rank of ``comm``.

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            The same on every rank (checked from a sample of rows).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), optional
        **params : dict
            As for scikit-learn's ``fit``: ``groups`` for the splitter, ``sample_weight``
            and other fit parameters (split by fold), metadata routing.

        Returns
        -------
        self
        """
        return spmd_fit(self, super().fit, X, y, params)  # type: ignore[misc]


@_documented
class MPISearchCV(_SpreadFits, GridSearchCV):
    """:class:`sklearn.model_selection.GridSearchCV` with the fits spread over MPI ranks.

    Same parameters, attributes and results as ``GridSearchCV``, plus:

    Parameters
    ----------
    {mpi_params}
    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = make_classification(n_samples=200, random_state=0)
    >>> search = MPISearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3, progress=False)
    >>> search.fit(X, y).best_params_
    {'C': 0.1}
    """

    __init__ = mpi_init(GridSearchCV)
    _parameter_constraints = _constraints(GridSearchCV)


@_documented
class MPIRandomizedSearchCV(_SpreadFits, RandomizedSearchCV):
    """:class:`sklearn.model_selection.RandomizedSearchCV` with the fits spread over MPI
    ranks: the same candidates for the same ``random_state`` (``ParameterSampler``'s draws).

    Same parameters, attributes and results as ``RandomizedSearchCV``, plus:

    Parameters
    ----------
    {mpi_params}
    """

    __init__ = mpi_init(RandomizedSearchCV)
    _parameter_constraints = _constraints(RandomizedSearchCV)


@_documented
class MPIHalvingGridSearchCV(_SpreadFits, HalvingGridSearchCV):
    """:class:`sklearn.model_selection.HalvingGridSearchCV` with the fits of each round
    spread over MPI ranks: the same rungs, resources and survivors.

    Same parameters, attributes and results as ``HalvingGridSearchCV``, plus:

    Parameters
    ----------
    {mpi_params}
    """

    __init__ = mpi_init(HalvingGridSearchCV)
    _parameter_constraints = _constraints(HalvingGridSearchCV)


@_documented
class MPIHalvingRandomSearchCV(_SpreadFits, HalvingRandomSearchCV):
    """:class:`sklearn.model_selection.HalvingRandomSearchCV` with the fits of each round
    spread over MPI ranks: the same candidates, rungs, resources and survivors.

    Same parameters, attributes and results as ``HalvingRandomSearchCV``, plus:

    Parameters
    ----------
    {mpi_params}
    """

    __init__ = mpi_init(HalvingRandomSearchCV)
    _parameter_constraints = _constraints(HalvingRandomSearchCV)
