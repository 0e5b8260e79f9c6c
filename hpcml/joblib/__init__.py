"""Unmodified scikit-learn code on MPI ranks: joblib's ``"mpi"`` backend.

``import hpcml.joblib`` registers the backend::

    import hpcml.joblib  # first: it starts MPI before numpy loads
    import joblib
    with joblib.parallel_config(backend="mpi", n_jobs=-1):
        GridSearchCV(SVC(), grid, cv=5, n_jobs=-1).fit(X, y)

Start the script either way:

* ``mpiexec -n P python -m hpcml.joblib script.py [args]`` (or ``srun``): rank 0 runs the
  script, the other ranks serve its tasks until it ends, as ``python -m mpi4py.futures``;
* ``mpiexec -n P python script.py`` with ``import hpcml.joblib`` at the top: on ranks > 0
  the import serves tasks until rank 0's script ends, then exits the process
  (``sys.exit(0)``), so the rest of the script runs on rank 0 only. Import it before
  numpy, scipy or scikit-learn.

An uncaught exception on rank 0 aborts every rank; a worker that dies ends the job (the
MPI launcher kills the other ranks). The MPI code lives in
:mod:`hpcml.engines.mpi.joblib_backend` and :mod:`hpcml.engines.mpi.serve`.
"""

from __future__ import annotations

import sys

from hpcml.engines.mpi.joblib_launch import join_from_import

__all__ = ["register"]


def register() -> None:
    """Register the ``"mpi"`` joblib backend (done on import)."""
    from hpcml.engines.mpi.joblib_backend import register as _register

    _register()


# Under ``python -m hpcml.joblib`` this package is imported while ``sys.argv[0]`` is still
# "-m" (Python's documented behaviour): __main__ then starts MPI and registers the backend
# itself, before joblib (and numpy) load.
if sys.argv[:1] != ["-m"]:
    join_from_import()  # ranks > 0 of a script started by mpiexec serve here, then exit
    register()
