"""The one way hpcml writes a value into a CSV cell (results, out-of-fold and predictions).

Floats in their shortest exact form (``repr``), NaN as ``nan`` (pandas and numpy read it
back as NaN), integers as integers, anything else as ``str`` (a parameter value ``None`` is
``None``; an absent value is the caller's empty cell).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cell", "column", "quote"]


def cell(value: Any) -> str:
    """One value as CSV text (unquoted: the caller's ``csv.writer`` quotes).

    >>> [cell(v) for v in (None, float("nan"), np.float32(0.5), np.int64(3), 1 / 3, "a")]
    ['None', 'nan', '0.5', '3', '0.3333333333333333', 'a']
    """
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def column(col: np.ndarray) -> list[str]:
    """A column of values as CSV text, quoted where needed (fast path for numbers).

    >>> column(np.array([0.25, np.nan])), column(np.array([1, 2])), column(np.array(["a,b"]))
    (['0.25', 'nan'], ['1', '2'], ['"a,b"'])
    """
    kind = col.dtype.kind
    if kind == "f":
        return list(map(float.__repr__, col.astype(np.float64).tolist()))
    if kind in "biu":
        return list(map(str, col.tolist()))
    return [quote(s) for s in col.astype(str).tolist()]


def quote(s: str) -> str:
    """``s`` quoted as CSV needs it (commas, quotes, line breaks, outer spaces).

    >>> quote('x "y" z'), quote("plain")
    ('"x ""y"" z"', 'plain')
    """
    if any(c in s for c in ',"\n\r') or s != s.strip():
        return '"' + s.replace('"', '""') + '"'
    return s
