"""The ``"mpi"`` backend with scikit-learn: results equal loky's, arrays sent once per node.

Run on every world size: ``mpiexec -n P python -m hpcml.joblib
tests/joblib_backend/run_pytest.py tests/joblib_backend/test_backend_mpi.py``; rank 0 runs
these tests, the other ranks are the workers. Under plain pytest (a world of one) the
backend runs tasks in-process, and the tests that count MPI transfers need workers.
"""

from __future__ import annotations

import os
import socket
import time

import joblib
import numpy as np
import pytest
from joblib import Parallel, delayed
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.svm import SVC

import hpcml.joblib  # noqa: F401  (registers "mpi"; the launcher started MPI already)
from hpcml.engines.mpi.joblib_backend import get_client

CLIENT = get_client()
needs_workers = pytest.mark.skipif(CLIENT is None, reason="needs mpiexec -n 2 or more")


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=300, n_features=20, random_state=0)


def both(fn):
    """``fn()`` under loky and under mpi."""
    with joblib.parallel_config(backend="loky", n_jobs=2):
        ref = fn()
    with joblib.parallel_config(backend="mpi", n_jobs=-1):
        got = fn()
    return ref, got


def test_grid_search_equals_loky(data):
    X, y = data
    grid = {"C": [0.1, 1.0, 10.0], "gamma": ["scale", 0.01]}
    ref, got = both(lambda: GridSearchCV(SVC(), grid, cv=5, n_jobs=-1).fit(X, y))
    assert got.best_params_ == ref.best_params_
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        np.testing.assert_array_equal(got.cv_results_[key], ref.cv_results_[key])


def test_cross_validate_equals_loky(data):
    X, y = data
    ref, got = both(lambda: cross_validate(LogisticRegression(max_iter=500), X, y, cv=5,
                                           n_jobs=-1, scoring=["accuracy", "roc_auc"]))
    for key in ("test_accuracy", "test_roc_auc"):
        np.testing.assert_array_equal(got[key], ref[key])


def test_forest_fit_equals_loky(data):
    X, y = data
    ref, got = both(lambda: RandomForestClassifier(n_estimators=20, random_state=0,
                                                   n_jobs=-1).fit(X, y))
    np.testing.assert_array_equal(got.predict_proba(X), ref.predict_proba(X))
    np.testing.assert_array_equal(got.feature_importances_, ref.feature_importances_)


def test_permutation_importance_equals_loky(data):
    X, y = data
    model = LogisticRegression(max_iter=500).fit(X, y)
    ref, got = both(lambda: permutation_importance(model, X, y, n_repeats=5, random_state=0,
                                                   n_jobs=-1))
    np.testing.assert_array_equal(got.importances, ref.importances)


def _backing(X, delay=0.05):
    """Where a worker's X lives: its pid, host, and the (perms, device, inode) of the
    mapping holding X's first byte (the same inode on two ranks: the same shared pages)."""
    time.sleep(delay)  # long enough for every worker to get a task
    addr = X.ctypes.data
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms, _offset, dev, inode = line.split()[:5]
            lo, hi = (int(v, 16) for v in span.split("-"))
            if lo <= addr < hi:
                return os.getpid(), socket.gethostname(), (perms, dev, inode), \
                    bool(X.flags.writeable), float(X.sum())
    raise AssertionError("X is in no mapping")


@needs_workers
def test_grid_search_sends_X_once_per_node_and_caches_across_calls():
    X, y = make_classification(n_samples=6000, n_features=30, random_state=1)
    assert X.nbytes > 1 << 20  # over Parallel's max_nbytes (y is below: it goes inline)
    from hpcml.core.shipping import array_key

    x_key = array_key(X)
    before, bytes_before, tasks_before = CLIENT.sent[x_key], CLIENT.bytes_sent, \
        CLIENT.tasks_sent
    grid = {"C": [0.01, 0.1, 1.0, 10.0]}
    ref, got = both(lambda: GridSearchCV(LogisticRegression(max_iter=200), grid, cv=5,
                                         n_jobs=-1).fit(X, y))
    np.testing.assert_array_equal(got.cv_results_["mean_test_score"],
                                  ref.cv_results_["mean_test_score"])
    assert CLIENT.tasks_sent - tasks_before >= CLIENT.n_workers  # every worker got work
    n_nodes = len(CLIENT.nodes)
    assert CLIENT.sent[x_key] - before == n_nodes  # once per node, not per task or worker
    assert CLIENT.bytes_sent - bytes_before == n_nodes * X.nbytes
    sent, nbytes, messages = CLIENT.sent[x_key], CLIENT.bytes_sent, CLIENT.array_messages
    with joblib.parallel_config(backend="mpi", n_jobs=-1):  # a second call: cached
        GridSearchCV(LogisticRegression(max_iter=200), grid, cv=5, n_jobs=-1).fit(X, y)
        Parallel()(delayed(np.sum)(X) for _ in range(4))
    assert (CLIENT.sent[x_key], CLIENT.bytes_sent, CLIENT.array_messages) == \
        (sent, nbytes, messages)


@needs_workers
def test_workers_of_a_node_map_one_shared_read_only_copy():
    X = np.random.default_rng(7).random((400, 400))  # 1.28 MB
    with joblib.parallel_config(backend="mpi", n_jobs=-1):
        out = Parallel(batch_size=1)(delayed(_backing)(X) for _ in range(4 * CLIENT.n_workers))
    assert len({pid for pid, *_ in out}) == CLIENT.n_workers  # every worker answered
    assert all(not writeable and total == X.sum() for *_, writeable, total in out)
    by_host: dict = {}
    for pid, host, backing, _, _ in out:
        by_host.setdefault(host, (set(), set()))
        by_host[host][0].add(pid)
        by_host[host][1].add(backing)
    assert len(by_host) == len(CLIENT.nodes)
    for pids, backings in by_host.values():
        assert len(backings) == 1, by_host  # one copy per node: the same pages
        if len(pids) > 1:  # MPICH keeps a node of one rank's window in private memory
            assert next(iter(backings))[0].endswith("s"), by_host  # a shared mapping


@needs_workers
def test_max_nbytes_is_the_threshold():
    X = np.random.default_rng(3).random(50_000)  # 400 kB: under the default 1 MiB
    from hpcml.core.shipping import array_key

    with joblib.parallel_config(backend="mpi", n_jobs=-1):
        a = Parallel()(delayed(np.sum)(X) for _ in range(4))
        assert CLIENT.sent[array_key(X)] == 0  # inline, with each task
        b = Parallel(max_nbytes="100K")(delayed(np.sum)(X) for _ in range(4))
        assert CLIENT.sent[array_key(X)] == len(CLIENT.nodes)
        Z = X * 2
        c = Parallel(max_nbytes=None)(delayed(np.sum)(Z) for _ in range(4))
        assert CLIENT.sent[array_key(Z)] == 0
    assert a == b == [X.sum()] * 4 and c == [Z.sum()] * 4


def _keep_a_view(X):
    import builtins

    builtins._hpcml_test_view = X[10:]  # a task that keeps a view of a shared array
    return float(X.sum())


def _kept_view_sum():
    import builtins

    view = getattr(builtins, "_hpcml_test_view", None)
    return None if view is None else float(view.sum())


@needs_workers
def test_bounded_cache_evicts_and_kept_views_stay_valid():
    rng = np.random.default_rng(11)
    arrays = [rng.random(150_000) for _ in range(8)]  # 1.2 MB each
    saved = [c.capacity for c in CLIENT.shipper.caches]
    try:
        for cache in CLIENT.shipper.caches:
            cache.capacity = 3 * arrays[0].nbytes
        with joblib.parallel_config(backend="mpi", n_jobs=-1):
            assert Parallel()(delayed(_keep_a_view)(arrays[0]) for _ in range(4)) == \
                [arrays[0].sum()] * 4
            for _ in range(2):
                out = Parallel(batch_size=1)(delayed(np.sum)(a) for a in arrays)
                assert out == [a.sum() for a in arrays]
            kept = Parallel(batch_size=1)(delayed(_kept_view_sum)() for _ in range(8))
        assert all(len(c) <= 3 for c in CLIENT.shipper.caches)
        assert all(c.nbytes <= c.capacity for c in CLIENT.shipper.caches)
        assert {k for k in kept if k is not None} == {float(arrays[0][10:].sum())}
        from hpcml.core.shipping import array_key

        assert CLIENT.sent[array_key(arrays[1])] >= 2 * len(CLIENT.nodes)  # evicted, re-sent
    finally:
        for cache, capacity in zip(CLIENT.shipper.caches, saved, strict=True):
            cache.capacity = capacity


@needs_workers
def test_changed_array_is_sent_again():
    from hpcml.core.shipping import array_key

    X = np.random.default_rng(0).random(200_000)
    with joblib.parallel_config(backend="mpi", n_jobs=-1):
        a = Parallel()(delayed(np.sum)(X) for _ in range(4))
        first = array_key(X)
        X[0] += 1.0  # same object, new content: a new key
        b = Parallel()(delayed(np.sum)(X) for _ in range(4))
    assert a[0] != b[0] and len(set(a)) == len(set(b)) == 1
    assert CLIENT.sent[array_key(X)] == CLIENT.sent[first] == len(CLIENT.nodes)


def _where(i, delay=0.0):
    time.sleep(delay)
    return i, os.getpid()


def test_results_in_order_and_spread_over_workers():
    with joblib.parallel_config(backend="mpi", n_jobs=-1):
        out = Parallel(batch_size=1)(delayed(_where)(i, 0.01 * (i % 3)) for i in range(24))
    assert [i for i, _ in out] == list(range(24))
    if CLIENT is not None and CLIENT.n_workers > 1:
        assert len({pid for _, pid in out}) == CLIENT.n_workers
        assert os.getpid() not in {pid for _, pid in out}


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_generators(return_as):
    with joblib.parallel_config(backend="mpi", n_jobs=-1):
        gen = Parallel(return_as=return_as, batch_size=1)(
            delayed(_where)(i, 0.02 * (5 - i)) for i in range(6))
        got = [i for i, _ in gen]
    assert sorted(got) == list(range(6))
    if return_as == "generator":
        assert got == list(range(6))


def _fails(i):
    if i == 3:
        raise KeyError(f"task {i} failed")
    return i


def test_task_exception_names_worker_rank_and_host():
    with joblib.parallel_config(backend="mpi", n_jobs=-1), \
            pytest.raises(KeyError, match="task 3 failed") as info:
        Parallel(batch_size=1)(delayed(_fails)(i) for i in range(8))
    if CLIENT is not None:
        notes = "\n".join(getattr(info.value, "__notes__", []))
        assert "worker rank" in notes and socket.gethostname() in notes
        assert "_fails" in notes  # the worker's traceback
    with joblib.parallel_config(backend="mpi", n_jobs=-1):  # still works after
        assert Parallel()(delayed(_fails)(i) for i in range(3)) == [0, 1, 2]


def _nested_n_jobs():
    from joblib.parallel import get_active_backend

    backend, n_jobs = get_active_backend()
    inner = Parallel(n_jobs=-1)
    effective = inner._effective_n_jobs()
    from threadpoolctl import threadpool_info

    return type(backend).__name__, n_jobs, effective, os.environ.get("OMP_NUM_THREADS"), \
        [p["num_threads"] for p in threadpool_info()]


@needs_workers
def test_nested_parallel_stays_within_the_rank_budget():
    from hpcml.core.threads import threads_per_rank

    with joblib.parallel_config(backend="mpi", n_jobs=-1):
        out = Parallel(batch_size=1)(delayed(_nested_n_jobs)() for _ in range(4))
    for name, _, effective, omp, _pools in out:
        assert name == "BudgetThreadingBackend"
        budget = int(omp) if omp else threads_per_rank(CLIENT.n_workers + 1)[0]
        assert 1 <= effective <= budget


def _echo(a):
    return a.copy(), bool(a.flags.writeable)


def test_shared_arrays_keep_dtype_order_and_values():
    rng = np.random.default_rng(1)
    arrays = [rng.random((300, 500)).astype(">f8"),  # big-endian
              np.zeros(20_000, dtype=[("a", "i4"), ("b", "f8")]),
              rng.random(300_000) > 0.5,
              np.arange(40_000).astype("datetime64[s]"),  # no buffer format of its own
              rng.random((1000, 60))[:, ::3],  # strided: sent as a C-ordered copy
              np.asfortranarray(rng.random((70, 300))),
              np.zeros((0, 100_000))]  # empty: inline
    with joblib.parallel_config(backend="mpi", n_jobs=-1, max_nbytes="100K"):
        out = Parallel(batch_size=1)(delayed(_echo)(a) for a in arrays for _ in range(2))
    for i, (back, writeable) in enumerate(out):
        a = arrays[i // 2]
        assert back.dtype == a.dtype and back.shape == a.shape
        np.testing.assert_array_equal(back, a)
        if CLIENT is not None and a.nbytes:
            assert not writeable  # mapped read-only from the node's shared copy


@needs_workers
def test_an_unpicklable_argument_in_a_later_batch_raises_not_hangs():
    import threading

    args = [1.0] * 12 + [threading.Lock()]  # dispatched from a result's callback
    with joblib.parallel_config(backend="mpi", n_jobs=-1), \
            pytest.raises(TypeError, match="pickle"):
        Parallel(batch_size=1)(delayed(str)(a) for a in args)
    with joblib.parallel_config(backend="mpi", n_jobs=-1):  # still works after
        assert Parallel()(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
