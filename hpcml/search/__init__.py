"""Search strategies and the scikit-learn drop-ins that run them over an engine."""

from __future__ import annotations

from typing import Any

__all__ = ["MPISearchCV"]


def __getattr__(name: str) -> Any:
    if name == "MPISearchCV":
        from hpcml.search.drop_in import MPISearchCV

        return MPISearchCV
    raise AttributeError(f"module 'hpcml.search' has no attribute {name!r}")
