"""The one place where hpcml starts other programs."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

__all__ = ["call", "run_foreground"]


def run_foreground(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``cmd`` with this terminal, forward SIGINT/SIGTERM/SIGUSR1 to it, return its status."""
    proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None)
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
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # pragma: no cover - forwarded instead
                continue
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def call(cmd: Sequence[str], timeout: float | None = None, env: Mapping[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` and capture its output; raise with command, status and output on failure."""
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **env} if env else None,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed with exit status {proc.returncode}: {' '.join(cmd)}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc
