"""Stop requests: SIGTERM and SIGUSR1 (Slurm's ``--signal=B:USR1@120``) end a run cleanly.

The handler only sets a flag; the engine checks it between fits, every rank stops taking
tasks, the journal is flushed, and ``hpcml run`` exits with :data:`EXIT_REQUEUE`.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["EARLY", "EXIT_REQUEUE", "StopFlag", "catch_early", "install_stop_handlers",
           "ignore_stop_signals"]

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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


#: Set by a stop signal that arrives before a run installs its own handlers: ``python -m
#: hpcml`` catches them first thing (a rank just started by mpiexec would die of SIGUSR1).
EARLY = StopFlag()


def catch_early(signals=STOP_SIGNALS) -> None:
    """Make ``signals`` set :data:`EARLY` from now on (the first lines of ``python -m hpcml``)."""
    install_stop_handlers(EARLY, signals)


def install_stop_handlers(flag: StopFlag, signals=STOP_SIGNALS) -> None:
    """Make ``signals`` set ``flag`` instead of killing the process (main thread only)."""

    def handler(signum, _frame):
        flag.set(signal.Signals(signum).name)

    for s in signals:
        signal.signal(s, handler)


def ignore_stop_signals(signals=STOP_SIGNALS) -> None:
    """The run is over: ignore ``signals`` while the process exits (main thread only).

    Python gives a signal back its default action (death) when the interpreter shuts down, so
    a wall-time signal that arrives during MPI's finalisation would kill a rank whose results
    are all written, and the job would end as FAILED. Ignored signals stay ignored.
    """
    for s in signals:
        signal.signal(s, signal.SIG_IGN)
