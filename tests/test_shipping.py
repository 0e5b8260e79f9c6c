"""Pure logic of the joblib backend's data shipping: keys, payloads, the mirrored cache."""

from __future__ import annotations

import random

import numpy as np

from hpcml.core.shipping import KeyCache, KeyMemo, array_key, dumps_task, loads_task, sizes


def test_key_is_content_not_identity():
    a = np.arange(12.0)
    assert array_key(a) == array_key(a.copy())
    assert array_key(a) != array_key(a.astype(np.float32))
    assert array_key(a.reshape(3, 4).T) == array_key(np.ascontiguousarray(a.reshape(3, 4).T))


def test_memo_hashes_once_per_object_and_forgets_on_clear(monkeypatch):
    calls = []
    import hpcml.core.shipping as sh

    real = sh.array_key
    monkeypatch.setattr(sh, "array_key", lambda x: calls.append(1) or real(x))
    memo = KeyMemo()
    X = np.zeros(1000)
    for _ in range(5):
        memo.key(X)
    assert len(calls) == 1
    memo.clear()
    memo.key(X)
    assert len(calls) == 2


def test_large_arrays_anywhere_leave_the_payload():
    X = np.random.default_rng(0).random((500, 40))
    task = [(np.sum, (X,), {"axis": 0}), (np.mean, (), {"a": {"nested": X}})]
    payload, arrays = dumps_task(task, threshold=1 << 10)
    assert len(arrays) == 1 and len(payload) < 2000
    back = loads_task(payload, arrays.__getitem__)
    np.testing.assert_array_equal(back[0][1][0], X)
    assert back[1][2]["a"]["nested"] is back[0][1][0]


def test_sender_mirror_and_worker_cache_agree():
    """Both ends run the same KeyCache steps: the sender ships exactly what is missing."""
    rng = random.Random(0)
    keys = [(f"k{i}", rng.randint(1, 40)) for i in range(12)]
    mirror, worker = KeyCache(200), KeyCache(200)  # smaller than all keys: evictions
    held: dict[str, int] = {}
    shipped = 0
    for _ in range(500):
        task = dict(rng.sample(keys, rng.randint(1, 4)))
        missing, _ = mirror.admit(task.items())
        new = {k: task[k] for k in missing}
        shipped += len(new)
        w_missing, w_evicted = worker.admit(task.items())
        assert w_missing == missing  # the worker expects exactly what was sent
        for k in w_evicted:
            del held[k]
        held.update(new)
        assert all(k in held for k in task)  # every key of the task is there
        assert sorted(mirror) == sorted(worker) == sorted(held)
    assert 12 < shipped < 500  # evictions happened, and caching saved transfers


def test_sizes():
    assert sizes({"a": np.zeros(3)}) == [("a", 24)]
