"""The output folder: atomic writes and the guard against overwriting a finished run."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpcml.errors import RunError, UsageError

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_dump_joblib",
    "check_out_dir",
    "disk_error",
    "RESULT_FILES",
]

RESULT_FILES = ("cv_results.csv", "best.json", "best_model.joblib", "run.json", "nested_cv.csv")


def check_out_dir(out: str | os.PathLike, force: bool = False) -> Path:
    """Check that ``out`` can take this run's results, without touching it.

    Raises
    ------
    UsageError
        If ``out`` is a file, or already holds a finished run and ``force`` is false.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder; choose a folder for the results")
    if path.is_dir() and (path / "run.json").exists() and not force:
        raise UsageError(
            f"--out {out}: holds the results of a finished run (run.json); "
            "choose another folder, or pass --force to overwrite them"
        )
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent if not path.exists() else path, os.W_OK):
        raise UsageError(f"--out {out}: no permission to write there")
    return path


def disk_error(path: str | os.PathLike, exc: OSError, out: str | os.PathLike | None = None,
               one_rank: bool = False) -> OSError | RunError:
    """A full disk (or quota) as one line naming the folder and the fix; other errors as is.

    ``out`` is the run's output folder, when ``path`` lies deeper in it (the journal);
    ``one_rank`` says that only this rank writes it (see :class:`~hpcml.errors.RunError`).
    """
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return exc
    what = "no space left on the device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
    folder = Path(out) if out is not None else Path(path).parent
    return RunError(
        f"--out {folder}: {what} ({errno.errorcode[exc.errno]}) writing "
        f"{os.path.relpath(path, folder)}; free space there and run the same command again "
        "to resume (every fit recorded so far is kept)", one_rank=one_rank,
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary name beside ``path``; renamed over ``path`` if the block succeeds.

    The file gets the user's umask (``mkstemp`` alone would make it private).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise disk_error(path, exc) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON (NaN written as null)."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_dump_joblib(path: str | os.PathLike, obj: Any) -> None:
    """``joblib.dump`` to a temporary name, then rename."""
    import joblib

    try:
        with atomic_path(path) as tmp:
            joblib.dump(obj, tmp)
    except OSError as exc:
        raise disk_error(path, exc) from None


def _jsonable(obj: Any) -> Any:
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
