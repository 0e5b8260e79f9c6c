"""Exceptions that hpcml turns into a one-line message and exit status 2."""

from __future__ import annotations

import sys

__all__ = ["UsageError", "SpecError", "RunError", "EXIT_USAGE", "exit_status", "print_error"]

#: Exit status of a run refused for bad input (spec, data, options).
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback."""

    #: The exit status of a command that stops on this error.
    exit_status = EXIT_USAGE


class SpecError(UsageError):
    """A problem in an experiment spec, located by its key path.

    Parameters
    ----------
    key : str
        Dotted path of the offending key, e.g. ``models.rf.grid.max_depth``.
    message : str
        What is wrong and how to fix it.
    source : str, optional
        File the spec came from, shown before the key.
    """

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        self.key = key
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        at = f"{key}: " if key else ""
        super().__init__(_one_line(f"{where}{at}{message}"))

    def __reduce__(self):  # the same error on another rank (World.agree pickles it)
        return (type(self), (self.key, self.message, self.source))


class RunError(UsageError):
    """A run that failed for a known cause outside the spec (a full disk, every fit failing
    for a reason that is not the spec's): one line naming the cause and the fix, exit status
    1, no traceback. Raised collectively (or on one rank, which then aborts the others)."""

    exit_status = 1

    def __init__(self, message: str, one_rank: bool = False) -> None:
        super().__init__(message)
        #: Raised on this rank only (its own journal, say), not on every rank: the rank then
        #: aborts the others (:func:`hpcml.run.rank.on_rank`) instead of returning alone.
        self.one_rank = one_rank

    def __reduce__(self):
        return (type(self), (str(self), self.one_rank))


def _one_line(text: str) -> str:
    """A message on one line: line breaks (e.g. in a key of the spec) written as ``\\n``."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def exit_status(exc: BaseException) -> int:
    """The exit status for a :class:`UsageError` (2) or :class:`RunError` (1)."""
    return int(getattr(exc, "exit_status", EXIT_USAGE))


def print_error(message: str) -> None:
    """``hpcml: error: MESSAGE``: one line on standard error."""
    sys.stderr.write(f"hpcml: error: {message}\n")
    sys.stderr.flush()
