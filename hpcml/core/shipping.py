"""Shipping tasks to workers: large arrays travel once, by content key (pure, no MPI).

A task is pickled with :func:`dumps_task`: every numpy array of at least ``threshold`` bytes
met anywhere in the task (arguments, keyword arguments, inside a DataFrame) is left out of
the payload and replaced by its content key (a hash of its dtype, shape and bytes). The
sender keeps a :class:`KeyCache` per destination (for the joblib backend: per node) that
knows which keys are there, so it ships only the missing arrays, and tells the other side
what it evicts. :func:`loads_task` rebuilds the task from the payload and the arrays found
there.

Nothing here imports numpy at module level.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

import cloudpickle

__all__ = ["KeyCache", "KeyMemo", "dumps_task", "loads_task", "array_key", "DEFAULT_THRESHOLD",
           "DEFAULT_CACHE_BYTES"]

#: Arrays of at least this many bytes are sent by key instead of inline (1 MiB: joblib's
#: default ``max_nbytes``).
DEFAULT_THRESHOLD = 1 << 20
#: Bytes of arrays a node keeps, least recently used evicted first (a task's own arrays
#: are never evicted while it needs them, so one task may exceed it).
DEFAULT_CACHE_BYTES = 4 << 30


def array_key(arr: Any) -> str:
    """The content key of a numpy array: dtype, shape and bytes (BLAKE2b, 128 bits).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(6.0)
    >>> array_key(a) == array_key(a.copy()) != array_key(a.reshape(2, 3))
    True
    >>> array_key(a.astype("datetime64[s]")) != array_key(a.astype("timedelta64[s]"))
    True
    """
    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    data = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    h.update(data.reshape(-1).view(np.uint8))  # (datetimes have no buffer format of their own)
    return h.hexdigest()


class KeyMemo:
    """Keys of arrays already hashed in this ``Parallel`` call, by object identity.

    An array is hashed once per call, not once per task; identity is checked (an ``id`` may
    be reused once an array dies), and :meth:`clear` forgets everything between calls (an
    array changed in place between two calls gets a new key).
    """

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, str]] = {}

    def key(self, arr: Any) -> str:
        hit = self._by_id.get(id(arr))
        if hit is not None and hit[0] is arr:
            return hit[1]
        key = array_key(arr)
        self._by_id[id(arr)] = (arr, key)
        return key

    def clear(self) -> None:
        self._by_id.clear()


class _Pickler(cloudpickle.Pickler):
    def __init__(self, file: Any, threshold: int, memo: KeyMemo, found: dict[str, Any]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._threshold = threshold
        self._keys = memo
        self._found = found
        import numpy as np

        self._types = (np.ndarray, np.memmap)

    def persistent_id(self, obj: Any) -> str | None:
        if type(obj) in self._types and obj.nbytes >= self._threshold and obj.nbytes \
                and not obj.dtype.hasobject:
            key = self._keys.key(obj)
            self._found[key] = obj
            return key
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, lookup: Callable[[str], Any]) -> None:
        super().__init__(file)
        self._lookup = lookup

    def persistent_load(self, pid: Any) -> Any:
        return self._lookup(pid)


def dumps_task(obj: Any, threshold: int = DEFAULT_THRESHOLD,
               memo: KeyMemo | None = None) -> tuple[bytes, dict[str, Any]]:
    """Pickle ``obj`` (with cloudpickle) leaving out its large arrays.

    Parameters
    ----------
    obj : object
        The task (e.g. a joblib batch of calls).
    threshold : int
        Arrays of at least this many bytes go by key.
    memo : KeyMemo, optional
        Keys already computed in this call (saves hashing the same array per task).

    Returns
    -------
    payload : bytes
        The task without its large arrays.
    arrays : dict
        Content key -> array, for every array left out, in the order first met.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.zeros(100_000)
    >>> payload, arrays = dumps_task((sum, X, X[:10]), threshold=1000)
    >>> len(payload) < 1000, list(arrays.values())[0] is X
    (True, True)
    >>> f, big, small = loads_task(payload, arrays.__getitem__)
    >>> big is X, small.shape
    (True, (10,))
    """
    found: dict[str, Any] = {}
    buf = io.BytesIO()
    _Pickler(buf, threshold, memo if memo is not None else KeyMemo(), found).dump(obj)
    return buf.getvalue(), found


def loads_task(payload: bytes, lookup: Callable[[str], Any]) -> Any:
    """Rebuild a task from :func:`dumps_task`'s payload; ``lookup(key)`` gives an array."""
    return _Unpickler(io.BytesIO(payload), lookup).load()


class KeyCache:
    """A least-recently-used set of keys with sizes: what a destination holds.

    Parameters
    ----------
    capacity : int
        Bytes kept; the least recently used keys go first, never one of the task at hand
        (nor one in ``keep``: in use by other running tasks).

    Examples
    --------
    >>> c = KeyCache(capacity=10)
    >>> c.admit([("x", 6), ("y", 2)])
    (['x', 'y'], [])
    >>> c.admit([("y", 2)])
    ([], [])
    >>> c.admit([("z", 6)])   # x is the least recently used
    (['z'], ['x'])
    >>> sorted(c)
    ['y', 'z']
    >>> c.admit([("w", 6)], keep={"y"})   # y is in use elsewhere: z goes, y stays
    (['w'], ['z'])
    """

    def __init__(self, capacity: int = DEFAULT_CACHE_BYTES) -> None:
        self.capacity = int(capacity)
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.nbytes = 0

    def __contains__(self, key: object) -> bool:
        return key in self._sizes

    def __iter__(self) -> Any:
        return iter(list(self._sizes))

    def __len__(self) -> int:
        return len(self._sizes)

    def admit(self, keys: Iterable[tuple[str, int]],
              keep: Container[str] = ()) -> tuple[list[str], list[str]]:
        """Make a task's keys present: ``(missing keys to ship, keys evicted)``.

        The task's keys become the most recently used; others (but those in ``keep``) are
        evicted, oldest first, while the cache holds more than its capacity.
        """
        keys = list(keys)
        mine = {k for k, _ in keys}
        missing = []
        for key, nbytes in keys:
            if key in self._sizes:
                self._sizes.move_to_end(key)
            elif key not in missing:
                missing.append(key)
                self._sizes[key] = int(nbytes)
                self.nbytes += int(nbytes)
        evicted = []
        for key in list(self._sizes):
            if self.nbytes <= self.capacity:
                break
            if key not in mine and key not in keep:
                self.nbytes -= self._sizes.pop(key)
                evicted.append(key)
        return missing, evicted


def sizes(arrays: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(key, nbytes)`` of a task's arrays, in order (what :meth:`KeyCache.admit` takes)."""
    return [(k, int(a.nbytes)) for k, a in arrays.items()]
