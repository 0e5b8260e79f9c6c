"""The per-process cache of fitted pipeline prefixes: least recently used out, within a bound
in bytes. In memory only; nothing goes to disk."""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any

__all__ = ["DEFAULT_PREFIX_CACHE_BYTES", "PREFIX_CACHE_ENV", "PrefixCache", "nbytes",
           "parse_bytes", "prefix_cache_bytes"]

#: Bytes of transformed data each process keeps by default (per rank, per loky worker).
DEFAULT_PREFIX_CACHE_BYTES = 1 << 30
#: The environment variable that sets the bound (``512M``, ``4G``, ``0`` turns it off).
PREFIX_CACHE_ENV = "HPCML_PREFIX_CACHE"

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """Bytes of a size such as ``"512M"``, ``"4G"``, ``"1.5GiB"`` or ``"1000"``.

    Examples
    --------
    >>> parse_bytes("512M"), parse_bytes("1.5GiB"), parse_bytes("0")
    (536870912, 1610612736, 0)
    """
    s = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in _UNITS and s[-1:] != "" else ""
    number = s[: len(s) - len(unit)].strip()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (write e.g. 512M, 4G or 0)") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"not a size: {text!r} (write e.g. 512M, 4G or 0)")
    return int(value * _UNITS[unit])


def prefix_cache_bytes(value: int | str | None = None,
                       environ: Mapping[str, str] | None = None) -> int:
    """The cache bound: ``value`` if given, else ``$HPCML_PREFIX_CACHE``, else 1 GiB.

    Examples
    --------
    >>> prefix_cache_bytes(None, {}), prefix_cache_bytes(None, {"HPCML_PREFIX_CACHE": "2G"})
    (1073741824, 2147483648)
    >>> prefix_cache_bytes("0", {"HPCML_PREFIX_CACHE": "2G"})
    0
    """
    from hpcml.errors import UsageError

    env = os.environ if environ is None else environ
    if value is not None:
        source, text = "the prefix cache size", value
    elif env.get(PREFIX_CACHE_ENV, "").strip():
        source, text = PREFIX_CACHE_ENV, env[PREFIX_CACHE_ENV]
    else:
        return DEFAULT_PREFIX_CACHE_BYTES
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    try:
        return parse_bytes(str(text))
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from None


def nbytes(obj: Any) -> int:
    """Bytes held by ``obj``: arrays, sparse matrices, data frames, and tuples of them."""
    if obj is None:
        return 0
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(o) for o in obj)
    size = getattr(obj, "nbytes", None)
    if isinstance(size, int) and not callable(size):
        return size
    memory_usage = getattr(obj, "memory_usage", None)  # pandas
    if callable(memory_usage):
        try:
            used = memory_usage(index=True)
            return int(getattr(used, "sum", lambda: used)())
        except Exception:  # noqa: BLE001 - an odd frame: count it as below
            pass
    parts = [getattr(obj, a, None) for a in ("data", "indices", "indptr", "row", "col")]
    found = [p for p in parts if hasattr(p, "nbytes") and not callable(p.nbytes)]
    if found:  # scipy.sparse
        return int(sum(p.nbytes for p in found))
    return sys.getsizeof(obj)


class PrefixCache:
    """What fitted pipeline prefixes output, by key, least recently used evicted past a bound.

    An entry larger than the bound is not kept (each candidate then refits its prefix, as
    scikit-learn does); a bound of 0 keeps nothing.

    Parameters
    ----------
    capacity : int
        Bytes the entries may hold together.

    Examples
    --------
    >>> cache = PrefixCache(100)
    >>> cache.put("a", "A", 60), cache.put("b", "B", 30), cache.get("a")
    (True, True, 'A')
    >>> cache.put("c", "C", 30)   # 120 bytes: "b", least recently used, goes
    True
    >>> sorted(cache), cache.nbytes, cache.evictions
    (['a', 'c'], 90, 1)
    """

    def __init__(self, capacity: int = DEFAULT_PREFIX_CACHE_BYTES) -> None:
        self.capacity = int(capacity)
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = self.evictions = 0

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Any:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any:
        """The entry of ``key`` (now the most recently used), or ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: Hashable, value: Any, size: int | None = None) -> bool:
        """Keep ``value`` under ``key`` (``size`` bytes, default :func:`nbytes`); whether it
        was kept. Least recently used entries go until the rest fits."""
        size = nbytes(value) if size is None else int(size)
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        if size > self.capacity:
            return False
        while self._entries and self.nbytes + size > self.capacity:
            _, (_, gone) = self._entries.popitem(last=False)
            self.nbytes -= gone
            self.evictions += 1
        self._entries[key] = (value, size)
        self.nbytes += size
        return True

    def pop(self, key: Hashable) -> Any:
        """Drop the entry of ``key`` (no longer needed); its value, or ``None``."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.nbytes -= entry[1]
        return entry[0]

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
