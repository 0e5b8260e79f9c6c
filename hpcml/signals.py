"""Stop requests: SIGTERM and SIGUSR1 (Slurm's ``--signal=B:USR1@120``) end a run cleanly.

The handler only sets a flag; the engine checks it between fits, every rank stops taking
tasks, the journal is flushed, and ``hpcml run`` exits with :data:`EXIT_REQUEUE`.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["EXIT_REQUEUE", "StopFlag", "install_stop_handlers"]

#: Exit status of a run stopped by SIGTERM/SIGUSR1 with its journal saved (sysexits' TEMPFAIL):
#: run the same command again and it resumes. The Slurm templates requeue on it.
EXIT_REQUEUE = 75


class StopFlag:
    """Set by a signal handler (or by hand); callable, for ``Engine.run(should_stop=...)``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def set(self, name: str = "request") -> None:
        if self.signal_name is None:
            self.signal_name = name
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()


def install_stop_handlers(flag: StopFlag, signals=(signal.SIGTERM, signal.SIGUSR1)) -> None:
    """Make ``signals`` set ``flag`` instead of killing the process (main thread only)."""

    def handler(signum, _frame):
        flag.set(signal.Signals(signum).name)

    for s in signals:
        signal.signal(s, handler)
