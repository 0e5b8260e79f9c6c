"""Where the fits run: engines by name, like joblib's parallel backends.

``get_engine("mpi")`` (the default) spreads the tasks over the MPI ranks of this job;
``"serial"`` runs them in this process; ``"loky"``, ``"dask"``, ``"ray"`` and ``"spark"`` run
the run in this one process and farm the tasks out to their workers
(:class:`~hpcml.engines.farm.FarmEngine`). A new engine is a module that defines an
:class:`~hpcml.engines.base.Engine` and one line here (or a call to :func:`register_engine`
from a user's code): engines are imported only when chosen, so a missing optional package is
reported by name only to the user who asked for that engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from hpcml.engines.base import Engine, Observers, SerialEngine, SerialWorld, World
from hpcml.errors import UsageError

__all__ = ["Engine", "World", "SerialEngine", "SerialWorld", "Observers", "register_engine",
           "get_engine", "available_engines", "open_world"]

#: name -> "module:factory"; a factory takes keyword options and returns an Engine.
_ENGINES: dict[str, str | Callable[..., Engine]] = {
    "serial": "hpcml.engines.base:SerialEngine",
    "mpi": "hpcml.engines.mpi.engine:make_engine",
    "loky": "hpcml.engines.loky:make_engine",
    "dask": "hpcml.engines.dask:make_engine",
    "ray": "hpcml.engines.ray:make_engine",
    "spark": "hpcml.engines.spark:make_engine",
}
#: name -> the optional extra that installs what the engine imports (``hpcml[extra]``).
_EXTRAS: dict[str, str] = {"dask": "dask", "ray": "ray", "spark": "spark"}


def register_engine(name: str, factory: str | Callable[..., Engine], *,
                    extra: str | None = None) -> None:
    """Make ``get_engine(name)`` call ``factory(**options)``.

    Parameters
    ----------
    name : str
        The engine's name, as given to ``hpcml run --engine`` or ``get_engine``.
    factory : callable or str
        A callable returning an :class:`Engine`, or ``"module:attribute"`` imported on first
        use.
    extra : str, optional
        The optional extra (``pip install 'hpcml[extra]'``) that a failed import names.
    """
    _ENGINES[name] = factory
    if extra is not None:
        _EXTRAS[name] = extra
    else:
        _EXTRAS.pop(name, None)


def available_engines() -> list[str]:
    """The registered engine names."""
    return sorted(_ENGINES)


def get_engine(name: str | None = None, **options: Any) -> Engine:
    """The engine ``name`` (default ``"mpi"``), built with ``options``.

    Raises
    ------
    UsageError
        An unknown name, naming the known ones; an engine whose optional package is not
        installed, naming the extra that installs it.
    """
    name = name or "mpi"
    factory = _ENGINES.get(name)
    if factory is None:
        raise UsageError(f"unknown engine {name!r}; choose one of: {', '.join(available_engines())}")
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            missing = exc.name or str(exc)
            if missing.split(".")[0] == "hpcml" and missing != module:
                raise  # a bug in hpcml, not a missing package
            extra = _EXTRAS.get(name)
            fix = (f"pip install 'hpcml[{extra}]'" if extra
                   else f"install the package that provides {missing!r}")
            raise UsageError(
                f"engine {name!r} needs {missing!r}, which is not installed: {fix}"
            ) from None
    return factory(**options)


def open_world(comm: Any = None) -> World:
    """The MPI world over ``comm`` (default: this job's), or a :class:`SerialWorld` when it
    has one rank. Collective."""
    from hpcml.engines.mpi.world import world_of

    return world_of(comm)
