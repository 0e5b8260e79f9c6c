"""How the ``"mpi"`` joblib backend's ranks start: ``python -m hpcml.joblib script.py``
(:func:`run_script`), or ``import hpcml.joblib`` in a script started by ``mpiexec``
(:func:`join_from_import`). Rank 0 runs the script; the other ranks serve
(:func:`hpcml.engines.mpi.serve.serve`)."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from hpcml.engines.mpi.serve import channel, serve

__all__ = ["run_script", "join_from_import", "launched_by_mpi"]


def run_script(argv: list[str]) -> int:
    """``python -m hpcml.joblib script.py [args]``: rank 0 runs the script, the others serve.

    Returns the script's exit status (``sys.exit(n)`` in the script); any other exception
    escaping the script aborts every rank after printing rank 0's traceback.
    """
    from hpcml.run.rank import Rank, on_rank

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mpiexec -n P python -m hpcml.joblib script.py [args]\n"
              "Rank 0 runs script.py; the other ranks run its joblib tasks "
              "(parallel_config(backend='mpi')).")
        return 0 if argv else 2

    def work(rank: Rank) -> int:
        _STATE["launched"] = True
        from hpcml.engines.mpi.joblib_backend import register  # MPI is up: numpy may load

        register()
        if rank.size == 1:
            return _run_path(argv)
        chan = channel(rank.comm)
        if rank.rank != 0:
            serve(chan, rank.threads)
            return 0
        from hpcml.engines.mpi.joblib_backend import start_client

        client = start_client(chan)
        code = _run_path(argv)  # an exception here aborts every rank (on_rank)
        client.close()
        return code

    return on_rank(work, stop_signals=())


def _run_path(argv: list[str]) -> int:
    import runpy

    path = argv[0]
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    return 0


#: ``launched``: the ranks were started by :func:`run_script` (the import does nothing).
_STATE: dict[str, Any] = {"launched": False, "joined": False}


def launched_by_mpi(environ: dict[str, str] | None = None) -> bool:
    """Whether an MPI launcher started several processes (MPICH/Open MPI/PMIx/Slurm).

    Examples
    --------
    >>> launched_by_mpi({"PMI_SIZE": "3"}), launched_by_mpi({"PMI_SIZE": "1"})
    (True, False)
    >>> launched_by_mpi({})
    False
    """
    env = os.environ if environ is None else environ
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if env.get(var, "").isdigit() and int(env[var]) > 1:
            return True
    return False


def join_from_import() -> None:
    """``import hpcml.joblib`` in a script started by ``mpiexec``: ranks > 0 serve, then exit.

    Rank 0 returns and goes on with the script, with the client running, an ``atexit``
    hook that stops the workers, and an exception hook that aborts every rank on an
    uncaught exception. Does nothing under :func:`run_script`, in a plain ``python``
    process, or when called again.
    """
    if _STATE["launched"] or _STATE["joined"] or not launched_by_mpi():
        return
    _STATE["joined"] = True
    import atexit

    from hpcml.engines.mpi.world import abort_on_error, join_world

    comm, threads = join_world()
    if comm.Get_size() == 1:
        return
    chan = channel(comm)
    if comm.Get_rank() != 0:
        with abort_on_error(comm):
            serve(chan, threads)
        sys.exit(0)
    from hpcml.engines.mpi.joblib_backend import start_client

    client = start_client(chan)
    atexit.register(client.close)
    previous = sys.excepthook

    def abort_hook(kind: Any, exc: Any, tb: Any) -> None:
        sys.stdout.flush()
        sys.stderr.write(f"### hpcml: rank 0 of {comm.Get_size()} on {socket.gethostname()} "
                         "failed; aborting all ranks\n")
        previous(kind, exc, tb)
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = abort_hook
