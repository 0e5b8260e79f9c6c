"""The journal: every finished fit, on disk at once, so no finished work is ever lost.

One append-only JSON-lines file per rank and run attempt under ``DIR/journal/`` (no locks, no
shared file, safe on parallel file systems), and ``DIR/manifest.json`` that says which spec
and data the journal belongs to. Lines are written as fits finish (a killed process loses
only the fits in flight) and fsync'd at most every ``sync_every`` seconds (a crashed node
loses at most that much more). A record's key hashes (model, params, fold, CV config, data
fingerprint), so it is found again whatever rank count or shard ran it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.core.fitting import FitResult
from hpcml.errors import UsageError
from hpcml.run.outputs import atomic_write_json, disk_error

__all__ = ["Journal", "Manifest", "read_journal", "task_key", "task_keys", "JOURNAL_DIR"]

JOURNAL_DIR = "journal"
MANIFEST = "manifest.json"


def task_key(model: str, params: Mapping[str, Any], fold: int, cv_id: str, data_id: str,
             repeat: int = 0) -> str:
    """Stable id of one fit task.

    ``repeat`` tells apart candidates with equal params (a random draw may repeat one): the
    ``n``-th repeat of a candidate gets ``repeat=n``; the first keeps the plain key.

    Examples
    --------
    >>> a = task_key("rf", {"max_depth": None, "n": 3}, 0, "cv", "data")
    >>> a == task_key("rf", {"n": 3, "max_depth": None}, 0, "cv", "data")
    True
    >>> a == task_key("rf", {"max_depth": None, "n": 3}, 1, "cv", "data")
    False
    >>> a == task_key("rf", {"max_depth": None, "n": 3}, 0, "cv", "data", repeat=1)
    False
    """
    parts: list[Any] = [model, dict(params), int(fold), cv_id, data_id]
    if repeat:
        parts.append(int(repeat))
    blob = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def task_keys(grid: Any, cv_id: str, data_id: str) -> list[str]:
    """Keys of every task of a :class:`~hpcml.core.tasks.TaskGrid`, in task order (a
    candidate equal to an earlier one of its model gets keys of its own)."""
    keys = []
    seen: dict[str, int] = {}
    for cand in grid.candidates:
        ident = json.dumps([cand.model, dict(cand.params)], sort_keys=True, default=repr)
        repeat = seen.get(ident, 0)
        seen[ident] = repeat + 1
        for k in range(grid.n_splits):
            keys.append(task_key(cand.model, cand.params, k, cv_id, data_id, repeat))
    return keys


def array_id(*arrays: Any) -> str:
    """Short content hash of some integer arrays (the folds)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


class Manifest(dict):
    """What a journal belongs to: spec hash and content, data fingerprint, folds, task count."""

    @classmethod
    def read(cls, out: str | os.PathLike) -> Manifest | None:
        path = Path(out) / MANIFEST
        if not path.exists():
            return None
        try:
            return cls(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: unreadable manifest ({exc}); move the folder aside") from None

    def write(self, out: str | os.PathLike) -> None:
        atomic_write_json(Path(out) / MANIFEST, dict(self))

    def differences(self, other: Mapping[str, Any]) -> list[str]:
        """Human-readable list of what differs from ``other`` (empty when compatible)."""
        diffs = []
        if self.get("data_fingerprint") != other.get("data_fingerprint"):
            diffs.append("the data differ (fingerprint "
                         f"{other.get('data_fingerprint')} vs {self.get('data_fingerprint')})")
        if self.get("folds") != other.get("folds"):
            diffs.append("the CV folds differ")
        mine, theirs = self.get("spec", {}), other.get("spec", {})
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                diffs.append(f"spec key '{key}' differs")
        return diffs


class Journal:
    """This rank's journal file (append-only JSON lines).

    Parameters
    ----------
    out : path
        The run's output folder.
    rank : int
        Rank number, in the file name.
    shard : str
        Shard label, in the file name (``""`` for unsharded runs).
    sync_every : float
        Seconds between fsyncs.
    """

    def __init__(self, out: str | os.PathLike, rank: int, shard: str = "",
                 sync_every: float = 2.0) -> None:
        folder = Path(out) / JOURNAL_DIR
        tag = f"-shard{shard.replace('/', 'of')}" if shard else ""
        name = f"rank{rank:05d}{tag}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
        self.path = folder / name
        # Who writes this file, so a launcher's "PID 1234 RUNNING AT host" names a rank.
        self._who = self.path.with_suffix(".who")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
            self._who.write_text(json.dumps({"rank": rank, "pid": os.getpid(),
                                             "host": socket.gethostname(), "shard": shard}))
        except OSError as exc:
            raise disk_error(self.path, exc, out, one_rank=True) from None
        self.sync_every = sync_every
        self._last_sync = time.monotonic()
        self.host = socket.gethostname()
        self.n_written = 0

    def append(self, key: str, result: FitResult, **extra: Any) -> None:
        """Record one finished fit; flush now, fsync when ``sync_every`` has passed."""
        rec = {
            "key": key,
            "task": result.task,
            "test": result.test_scores,
            "train": result.train_scores,
            "fit_time": result.fit_time,
            "score_time": result.score_time,
            "error": result.error,
            "rank": result.rank,
            "host": self.host,
            "start": result.start,
            "end": result.end,
            **extra,
        }
        if self._f.closed:
            raise RuntimeError(f"{self.path}: the journal is closed (an earlier write failed)")
        try:
            if result.oof is not None:
                _save_oof(self.path.parent / "oof", key, result.oof)
                rec["oof"] = True
            # One write call per record: a full disk leaves at most a torn last line, which
            # read_journal skips; nothing more is written to this file after a failure.
            self._f.write(json.dumps(rec) + "\n")
            self._f.flush()
            self.n_written += 1
            if time.monotonic() - self._last_sync >= self.sync_every:
                self.sync()
        except OSError as exc:
            self._abandon()
            raise disk_error(self.path, exc, self.path.parent.parent, one_rank=True) from None

    def _abandon(self) -> None:
        """Drop what is buffered and close the file (after a failed write)."""
        import contextlib

        with contextlib.suppress(OSError):
            os.close(self._f.fileno())  # unbuffered close: the buffer is not written again
        with contextlib.suppress(OSError, ValueError):
            self._f.close()

    def sync(self) -> None:
        """fsync the file (and its folder entry)."""
        if self._f.closed:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """fsync and close the file; a journal that recorded nothing is removed."""
        if not self._f.closed:
            try:
                self.sync()
                self._f.close()
            except OSError:  # a full disk: the records written so far are on disk
                self._abandon()
        if self.n_written == 0:
            for path in (self.path, self._who):
                try:
                    path.unlink()
                except OSError:
                    pass

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def find_rank(out: str | os.PathLike, pid: int, host: str) -> dict[str, Any] | None:
    """The rank (``{"rank", "pid", "host"}``) whose journal was written by ``pid`` on ``host``."""
    folder = Path(out) / JOURNAL_DIR
    for path in folder.glob("*.who") if folder.is_dir() else ():
        try:
            who = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if who.get("pid") == pid and who.get("host", "").split(".")[0] == host.split(".")[0]:
            return who
    return None


def iter_records(out: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every record of every journal file in ``out`` (a torn last line is skipped)."""
    folder = Path(out) / JOURNAL_DIR
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.jsonl")):
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if not line.endswith("\n"):
                        break  # torn write at a crash
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
        except OSError:
            continue


def read_journal(out: str | os.PathLike, keys: Iterable[str]) -> dict[int, FitResult]:
    """Finished fits of ``out``'s journal, as task index → FitResult for the given task keys.

    ``keys[i]`` is the key of task ``i``; records with unknown keys are ignored.
    """
    index = {k: i for i, k in enumerate(keys)}
    found: dict[int, FitResult] = {}
    for rec in iter_records(out):
        t = index.get(rec.get("key"))
        if t is None:
            continue
        oof = None
        if rec.get("oof"):
            try:
                oof = np.load(Path(out) / JOURNAL_DIR / "oof" / f"{rec['key']}.npy")
            except (OSError, ValueError):
                continue  # predictions lost: run the task again
        found[t] = FitResult(
            task=t,
            test_scores=rec["test"],
            train_scores=rec.get("train"),
            fit_time=rec["fit_time"],
            score_time=rec["score_time"],
            error=rec.get("error"),
            rank=rec.get("rank", 0),
            start=rec.get("start", 0.0),
            end=rec.get("end", 0.0),
            oof=oof,
        )
    return found


def _save_oof(folder: Path, key: str, values: Any) -> None:
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
    np.save(tmp, np.asarray(values))
    os.replace(tmp, folder / f"{key}.npy")
