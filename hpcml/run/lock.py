"""One run per output folder: a lock file in ``DIR`` with the holder's host, pid and start time.

The lock is an ``fcntl.flock`` on ``DIR/.hpcml.lock``, so it dies with its holder (a killed
run leaves no lock behind that the kernel keeps), and the file names the holder for the
message a second run gets. A file left by a dead holder (a stale lock) is taken over, with a
note. A run on another host that shares ``DIR`` over a file system without ``flock``
(old NFS) is named by the file when its pid cannot be checked from here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

from hpcml.errors import UsageError

__all__ = ["LOCK_FILE", "lock_file", "RunLock", "check_unlocked", "hold_lock", "release_lock"]

LOCK_FILE = ".hpcml.lock"


def lock_file(shard: tuple[int, int] | None = None) -> str:
    """The lock's file name: one per run, and one per shard (the shards of one run share
    their ``--out``: they may run at the same time).

    >>> lock_file(), lock_file((1, 4))
    ('.hpcml.lock', '.hpcml-shard1of4.lock')
    """
    return LOCK_FILE if shard is None else f".hpcml-shard{shard[0]}of{shard[1]}.lock"

_held: dict[str, RunLock] = {}


class RunLock:
    """The lock of one output folder.

    Parameters
    ----------
    out : path
        The run's output folder (created if need be).
    shard : (i, n), optional
        The shard this run is (each shard has a lock of its own).
    """

    def __init__(self, out: str | os.PathLike, shard: tuple[int, int] | None = None) -> None:
        self.out = Path(out)
        self.path = self.out / lock_file(shard)
        self._f: IO[str] | None = None

    def acquire(self, note: bool = True) -> None:
        """Take the lock, or raise naming the run that holds it.

        Raises
        ------
        UsageError
            When another live run holds it: its host, pid and start time, and the fix.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        flocked = True
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(f)
            f.close()
            raise UsageError(busy_message(self.out, holder)) from None
        except OSError:  # a file system without flock: ask whether the pid lives
            flocked = False
        holder = _read(f)
        if holder and holder.get("pid") != os.getpid():
            if not flocked and _alive_elsewhere(holder):
                f.close()
                raise UsageError(busy_message(self.out, holder))
            if note:
                sys.stderr.write(
                    f"hpcml: note: --out {self.out}: taking over the stale lock of pid "
                    f"{holder.get('pid')} on {holder.get('host')} (started "
                    f"{holder.get('start')}), which is no longer running\n"
                )
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                            "start": time.strftime("%Y-%m-%d %H:%M:%S %Z")}) + "\n")
        f.flush()
        self._f = f

    def release(self) -> None:
        """Empty the lock file and let it go (idempotent)."""
        if self._f is None:
            return
        with contextlib.suppress(OSError):
            self._f.seek(0)
            self._f.truncate()
            self._f.flush()
        with contextlib.suppress(OSError):
            fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
        self._f.close()
        self._f = None


def busy_message(out: Path, holder: dict[str, Any]) -> str:
    """What a second run on ``out`` is told."""
    who = (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('start')}"
           if holder else "another process")
    return (f"--out {out}: another hpcml run is using this folder ({who}); wait for it to "
            "finish or stop it, or choose another --out")


def check_unlocked(out: str | os.PathLike, shard: tuple[int, int] | None = None) -> None:
    """Refuse at once when a live run holds ``out``'s lock (a launcher's check; takes nothing).

    Raises
    ------
    UsageError
        Naming the run that holds it.
    """
    path = Path(out) / lock_file(shard)
    if not path.exists():
        return
    try:
        f = open(path, encoding="utf-8")
    except OSError:
        return
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(busy_message(Path(out), _read(f))) from None
        except OSError:  # a file system without flock: ask whether the pid lives
            holder = _read(f)
            if holder and _alive_elsewhere(holder):
                raise UsageError(busy_message(Path(out), holder)) from None


def hold_lock(out: str | os.PathLike, shard: tuple[int, int] | None = None) -> None:
    """Take ``out``'s lock for this process until :func:`release_lock` (or its death)."""
    key = str(Path(out).resolve() / lock_file(shard))
    if key not in _held:
        lock = RunLock(out, shard)
        lock.acquire()
        _held[key] = lock


def release_lock(out: str | os.PathLike | None, shard: tuple[int, int] | None = None) -> None:
    """Let ``out``'s lock go, if this process holds it."""
    if out is not None:
        lock = _held.pop(str(Path(out).resolve() / lock_file(shard)), None)
        if lock is not None:
            lock.release()


def _read(f: IO[str]) -> dict[str, Any]:
    try:
        f.seek(0)
        text = f.read().strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def _alive_elsewhere(holder: dict[str, Any]) -> bool:
    """Whether the holder is a live process other than this one, on this host."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    if str(holder.get("host", "")).split(".")[0] != socket.gethostname().split(".")[0]:
        return False  # flock said it is free; its host cannot be asked
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
