"""hpcml: scikit-learn model selection on HPC clusters.

Names are imported on first use, so ``hpcml run`` can size each rank's thread pools before
numpy and scikit-learn load.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    # Grid search over MPI ranks
    "MPISearchCV",
    "run_experiment",
    "ExperimentResult",
    # Slurm and submitit
    "submit",
    # Specs
    "load_spec",
    "parse_spec",
    "ExperimentSpec",
    # Task list, scheduling and results (pure)
    "TaskGrid",
    "plan_chunks",
    "format_cv_results",
    # Parallel prediction
    "predict",
    # Engines
    "Engine",
    "SerialEngine",
    "MPIEngine",
    # Errors
    "UsageError",
    "SpecError",
]

_LOCATION = {
    "MPISearchCV": "search",
    "run_experiment": "experiment",
    "ExperimentResult": "experiment",
    "submit": "submit",
    "load_spec": "spec",
    "parse_spec": "spec",
    "ExperimentSpec": "spec",
    "TaskGrid": "tasks",
    "plan_chunks": "schedule",
    "format_cv_results": "results",
    "Engine": "engine",
    "SerialEngine": "engine",
    "MPIEngine": "_mpi",
    "UsageError": "errors",
    "SpecError": "errors",
}


# ``hpcml.predict`` is a function that lives in the submodule of the same name: bind it now,
# or importing the submodule first (``from hpcml.predict import ...``) would leave the module
# in its place. Cheap: hpcml.predict loads numpy and scikit-learn only when called.
from .predict import predict  # noqa: E402


def __getattr__(name: str) -> Any:
    if name in _LOCATION:
        module = importlib.import_module(f".{_LOCATION[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hpcml' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
