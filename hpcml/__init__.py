"""hpcml: scikit-learn model selection on HPC clusters.

Names are imported on first use, so a rank can start MPI and size its thread pools before
numpy and scikit-learn load.

The rooms (see the README's "How it works"): ``core`` (pure logic), ``spec`` (schema, checks,
data), ``search`` (strategies and the scikit-learn drop-ins), ``engines`` (where fits run;
``engines/mpi`` is the only place that imports mpi4py), ``run`` (one run as a pipeline of
stages, the journal and outputs), ``batch`` (parallel prediction), ``slurm`` (render, queries,
submitit) and ``cli`` (one module per command).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

__all__ = [
    # Model selection over MPI ranks
    "MPISearchCV",
    "MPIRandomizedSearchCV",
    "MPIHalvingGridSearchCV",
    "MPIHalvingRandomSearchCV",
    "run_experiment",
    "ExperimentResult",
    # Slurm and submitit
    "submit",
    # Specs
    "load_spec",
    "parse_spec",
    "ExperimentSpec",
    "SearchSpec",
    "Distribution",
    # Task list, scheduling and results (pure)
    "TaskGrid",
    "plan_chunks",
    "format_cv_results",
    "ASHA",
    # Parallel prediction
    "predict",
    # Engines and worlds
    "Engine",
    "World",
    "SerialEngine",
    "MPIEngine",
    "TaskSource",
    "register_engine",
    "get_engine",
    "available_engines",
    # Errors
    "UsageError",
    "SpecError",
]

_LOCATION = {
    "MPISearchCV": "hpcml.search.drop_in",
    "MPIRandomizedSearchCV": "hpcml.search.drop_in",
    "MPIHalvingGridSearchCV": "hpcml.search.drop_in",
    "MPIHalvingRandomSearchCV": "hpcml.search.drop_in",
    "run_experiment": "hpcml.run.experiment",
    "ExperimentResult": "hpcml.run.experiment",
    "submit": "hpcml.slurm.submit",
    "predict": "hpcml.batch.predict",
    "load_spec": "hpcml.spec.schema",
    "parse_spec": "hpcml.spec.schema",
    "ExperimentSpec": "hpcml.spec.schema",
    "SearchSpec": "hpcml.spec.search",
    "Distribution": "hpcml.spec.search",
    "TaskGrid": "hpcml.core.tasks",
    "plan_chunks": "hpcml.core.schedule",
    "format_cv_results": "hpcml.core.results",
    "ASHA": "hpcml.search.asha",
    "Engine": "hpcml.engines.base",
    "World": "hpcml.engines.base",
    "SerialEngine": "hpcml.engines.base",
    "TaskSource": "hpcml.engines.base",
    "MPIEngine": "hpcml.engines.mpi.engine",
    "register_engine": "hpcml.engines",
    "get_engine": "hpcml.engines",
    "available_engines": "hpcml.engines",
    "UsageError": "hpcml.errors",
    "SpecError": "hpcml.errors",
}

#: Module paths of hpcml 0.1's flat layout, kept importable (``import hpcml.experiment``).
#: ``hpcml.predict`` and ``hpcml.submit`` are functions only: their modules are
#: ``hpcml.batch.predict`` and ``hpcml.slurm.submit``.
_MOVED = {
    "hpcml.tasks": "hpcml.core.tasks",
    "hpcml.fitting": "hpcml.core.fitting",
    "hpcml.results": "hpcml.core.results",
    "hpcml.threads": "hpcml.core.threads",
    "hpcml.progress": "hpcml.core.progress",
    "hpcml.schedule": "hpcml.core.schedule",
    "hpcml.simulate": "hpcml.core.simulate",
    "hpcml.oof": "hpcml.core.oof",
    "hpcml.checks": "hpcml.spec.checks",
    "hpcml.data": "hpcml.spec.data",
    "hpcml.evaluate": "hpcml.search.evaluate",
    "hpcml.engine": "hpcml.engines.base",
    "hpcml.experiment": "hpcml.run.experiment",
    "hpcml.journal": "hpcml.run.journal",
    "hpcml.outputs": "hpcml.run.outputs",
    "hpcml.signals": "hpcml.run.signals",
    "hpcml.timeout": "hpcml.run.timeout",
    "hpcml.launch": "hpcml.run.launch",
    "hpcml.collect": "hpcml.run.collect",
    "hpcml.plan": "hpcml.run.plan",
    "hpcml.blockio": "hpcml.batch.readers",
    "hpcml.predict_cli": "hpcml.cli.predict",
    "hpcml.slurm_cli": "hpcml.cli.slurm",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module it moved to (the same module object)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module: Any) -> None:
        return None


if not any(isinstance(f, _Alias) for f in sys.meta_path):
    sys.meta_path.append(_Alias())


def __getattr__(name: str) -> Any:
    if name in _LOCATION:
        value = getattr(importlib.import_module(_LOCATION[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hpcml' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
