"""Rank 0's bookkeeping of the joblib backend's node store, with a fake communicator (no MPI):
what goes to which rank, once per node, and what a bounded cache evicts."""

from __future__ import annotations

import numpy as np

from hpcml.core.shipping import array_key
from hpcml.engines.mpi.nodestore import DATA, NOTICE, Shipper, _contiguous, _raw, wire_layout


class FakeComm:
    """Records ``send`` (pickled notices) and ``Send`` (raw bytes)."""

    def __init__(self) -> None:
        self.log: list[tuple] = []

    def send(self, obj, dest, tag):
        self.log.append(("send", dest, tag, obj))

    def Send(self, buf, dest, tag):  # noqa: N802 (mpi4py's name)
        self.log.append(("Send", dest, tag, bytes(buf)))


def arrays(*arrs):
    return {array_key(a): a for a in arrs}


def test_layout_groups_workers_by_leader():
    assert wire_layout([None, 1, 2, 1, 2]) == [[1, 3], [2, 4]]
    assert wire_layout([None, 1]) == [[1]]


def test_an_array_goes_once_to_each_node_leader_and_notices_to_every_worker():
    comm = FakeComm()
    ship = Shipper(comm, [[1, 2], [3, 4]], capacity=1 << 30)
    X = np.arange(1000.0)
    task = arrays(X)
    for worker in (1, 2, 1, 3, 4, 3):
        keys = ship.place(worker, task)
        ship.release(worker, keys)
    data = [e for e in comm.log if e[0] == "Send"]
    assert [(dest, tag) for _, dest, tag, _ in data] == [(1, DATA), (3, DATA)]
    assert all(raw == X.tobytes() for *_, raw in data)
    notices = [(dest, obj[0]) for kind, dest, tag, obj in comm.log if kind == "send"]
    assert {tag for kind, _, tag, _ in comm.log if kind == "send"} == {NOTICE}
    assert notices == [(1, "share"), (2, "share"), (3, "share"), (4, "share")]
    assert ship.sent[array_key(X)] == 2 and ship.bytes_sent == 2 * X.nbytes
    assert ship.messages == 6
    ship.stop()
    assert [obj for kind, _, _, obj in comm.log[-4:]] == [("stop",)] * 4


def test_the_cache_evicts_least_recent_arrays_but_never_one_in_use():
    comm = FakeComm()
    ship = Shipper(comm, [[1, 2]], capacity=2 * 8000)
    a, b, c = (np.full(1000, float(i)) for i in range(3))
    ka = ship.place(1, arrays(a))  # a stays in use on worker 1
    ship.release(2, ship.place(2, arrays(b)))
    ship.place(2, arrays(c))  # over capacity: b goes (a is in use)
    frees = [obj for kind, _, _, obj in comm.log if kind == "send" and obj[0] == "free"]
    assert frees == [("free", [array_key(b)])] * 2  # to both workers of the node
    assert array_key(a) in ship.caches[0] and array_key(b) not in ship.caches[0]
    ship.release(1, ka)
    ship.place(1, arrays(b))  # b again: a is the oldest now, and free
    assert comm.log[-4][3] == ("free", [array_key(a)])
    assert ship.sent[array_key(b)] == 2


def test_layouts_travel_without_a_copy_but_strided_views():
    F = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    arr, order = _contiguous(F)
    assert arr is F and order == "F"
    back = np.ndarray(F.shape, F.dtype, buffer=_raw(arr, order).tobytes(), order=order)
    np.testing.assert_array_equal(back, F)
    strided = np.arange(20.0)[::2]
    arr, order = _contiguous(strided)
    assert order == "C" and arr.flags.c_contiguous
    np.testing.assert_array_equal(arr, strided)
