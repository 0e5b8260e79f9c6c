"""No orphans: a child of hpcml dies with its parent (Linux ``prctl(PR_SET_PDEATHSIG)``).

``hpcml run -n P`` starts ``mpiexec``, which starts a proxy, which starts the ranks. If the
launcher is killed (SIGKILL: no handler runs), ``mpiexec`` gets SIGKILL from the kernel, and
its proxy ends the ranks; a rank whose parent (the proxy, or Slurm's step daemon) dies is
killed too, since it can no longer reach the other ranks. Every finished fit is already in
the journal (each record is written as the fit ends). Elsewhere than Linux this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

__all__ = ["die_with_parent", "preexec_die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    Parameters
    ----------
    sig : int
        The signal (default SIGKILL: no handler, no delay).
    parent : int, optional
        The parent's pid as the caller knew it: if it has died already (before the call),
        this process exits at once.

    Returns
    -------
    bool
        Whether the kernel took the request (False off Linux).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        ok = libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and parent is not None and os.getppid() != parent:
        os._exit(128 + int(sig))  # the parent died before the request: nobody waits for us
    return ok


def preexec_die_with_parent() -> None:
    """``Popen(preexec_fn=...)``: the child (``mpiexec``) dies with hpcml's launcher."""
    die_with_parent(signal.SIGKILL, parent=os.getppid())
