"""Where the fits run: engines by name, like joblib's parallel backends.

``get_engine("mpi")`` (the default) spreads the tasks over the MPI ranks of this job;
``"serial"`` runs them in this process. A new engine is a module that defines an
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
}


def register_engine(name: str, factory: str | Callable[..., Engine]) -> None:
    """Make ``get_engine(name)`` call ``factory(**options)``.

    Parameters
    ----------
    name : str
        The engine's name, as given to ``hpcml run --engine`` or ``get_engine``.
    factory : callable or str
        A callable returning an :class:`Engine`, or ``"module:attribute"`` imported on first
        use.
    """
    _ENGINES[name] = factory


def available_engines() -> list[str]:
    """The registered engine names."""
    return sorted(_ENGINES)


def get_engine(name: str | None = None, **options: Any) -> Engine:
    """The engine ``name`` (default ``"mpi"``), built with ``options``.

    Raises
    ------
    UsageError
        An unknown name, naming the known ones.
    """
    name = name or "mpi"
    factory = _ENGINES.get(name)
    if factory is None:
        raise UsageError(f"unknown engine {name!r}; choose one of: {', '.join(available_engines())}")
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory(**options)


def open_world(comm: Any = None) -> World:
    """The MPI world over ``comm`` (default: this job's), or a :class:`SerialWorld` when it
    has one rank. Collective."""
    from hpcml.engines.mpi.world import world_of

    return world_of(comm)
