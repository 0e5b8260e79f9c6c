"""The one place where hpcml starts other programs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

__all__ = ["call", "run_foreground"]


def run_foreground(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    on_stdout_line: Callable[[str], None] | None = None,
) -> int:
    """Run ``cmd`` with this terminal, forward SIGINT/SIGTERM/SIGUSR1 to it, return its status.

    With ``on_stdout_line``, its standard output is passed through line by line and each
    line is also given to that callback (e.g. to read the launcher's failure report).
    """
    from hpcml.run.orphans import preexec_die_with_parent

    proc = subprocess.Popen(
        list(cmd), env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE if on_stdout_line else None, text=True if on_stdout_line else None,
        preexec_fn=preexec_die_with_parent,  # a SIGKILLed launcher leaves no mpiexec behind
    )
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    previous = {}

    def forward(signum, _frame):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    for s in forwarded:
        previous[s] = signal.signal(s, forward)
    try:
        if on_stdout_line is not None:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                on_stdout_line(line)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # pragma: no cover - forwarded instead
                continue
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if proc.poll() is None:  # left by an exception (a SystemExit from a signal handler)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def call(cmd: Sequence[str], timeout: float | None = None, env: Mapping[str, str] | None = None,
         check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` and capture its output; raise with command, status and output on failure.

    ``input`` is sent to its standard input (e.g. a job script to ``sbatch``).
    """
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, input=input,
        env={**os.environ, **env} if env else None,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed with exit status {proc.returncode}: {' '.join(cmd)}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc
