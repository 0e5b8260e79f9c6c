"""Exceptions that hpcml turns into a one-line message and exit status 2."""

from __future__ import annotations

import sys

__all__ = ["UsageError", "SpecError", "EXIT_USAGE", "print_error"]

#: Exit status of a run refused for bad input (spec, data, options).
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback."""


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
        super().__init__(f"{where}{at}{message}")

    def __reduce__(self):  # the same error on another rank (World.agree pickles it)
        return (type(self), (self.key, self.message, self.source))


def print_error(message: str) -> None:
    """``hpcml: error: MESSAGE``: one line on standard error."""
    sys.stderr.write(f"hpcml: error: {message}\n")
    sys.stderr.flush()
