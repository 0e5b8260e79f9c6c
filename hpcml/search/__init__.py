"""Search strategies and the scikit-learn drop-ins that run them over an engine."""

from __future__ import annotations

from typing import Any

__all__ = ["MPISearchCV", "MPIRandomizedSearchCV", "MPIHalvingGridSearchCV",
           "MPIHalvingRandomSearchCV"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hpcml.search import drop_in

        return getattr(drop_in, name)
    raise AttributeError(f"module 'hpcml.search' has no attribute {name!r}")
