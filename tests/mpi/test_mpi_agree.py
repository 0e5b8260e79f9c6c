"""An error at any collective step, on one rank only, is raised on every rank (same type and
message) within seconds: no rank is left waiting in a collective."""

from __future__ import annotations

import pickle

import pytest

import hpcml.run.experiment as experiment
import hpcml.run.finalize as finalize
from hpcml import run_experiment
from hpcml.engines import open_world
from hpcml.engines.base import RankError, SerialWorld
from hpcml.errors import SpecError, UsageError

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(60)]

SPEC = {
    "data": {"generator": "sklearn.datasets.make_classification",
             "params": {"n_samples": 80, "n_features": 4, "random_state": 0}},
    "cv": {"n_splits": 2},
    "models": {"lr": {"estimator": "sklearn.linear_model.LogisticRegression",
                      "grid": {"C": [0.1, 1.0]}}},
}


def failing_on(rank, comm, real, exc):
    """``real``, except on ``rank``, where it raises ``exc``."""
    def fn(*args, **kwargs):
        if comm.Get_rank() == rank:
            raise exc
        return real(*args, **kwargs)
    return fn


# (module, name, rank that fails: "last" for steps every rank runs, "root" for root-only ones,
#  the exception)
STEPS = {
    "spec check": (experiment, "_as_spec", "last", SpecError("models.lr", "no such model")),
    "out folder": (experiment, "check_out_dir", "last", UsageError("--out x: not writable")),
    "data load": (experiment, "load_data", "root", UsageError("data.csv: no such file")),
    "data check": (experiment, "check_nan_support", "last", SpecError("data", "has NaN")),
    "folds": (experiment, "_split", "root", SpecError("cv", "cannot split the data")),
    "journal": (experiment, "Journal", "last", OSError(28, "No space left on device")),
    "refit": (finalize, "refit_best", "root", ValueError("refit failed: bad input")),
    "outputs": (finalize, "atomic_write_text", "root", OSError(28, "No space left on device")),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_error_on_one_rank_is_raised_on_every_rank(comm, shared_tmp, monkeypatch, step):
    module, name, who, exc = STEPS[step]
    rank = 0 if who == "root" else comm.Get_size() - 1
    monkeypatch.setattr(module, name, failing_on(rank, comm, getattr(module, name), exc))
    with pytest.raises(type(exc)) as info:
        run_experiment(SPEC, shared_tmp / step.replace(" ", "_"), comm=comm, progress=False)
    assert str(info.value) == str(exc)
    # the same on every rank
    assert comm.allgather((type(info.value).__name__, str(info.value))) == \
        [(type(exc).__name__, str(exc))] * comm.Get_size()


def test_agree_returns_the_root_value_and_raises_the_lowest_rank_error(comm):
    world = open_world(comm)
    try:
        assert world.agree(lambda: comm.Get_rank(), on_root=True) == 0
        assert world.agree(lambda: comm.Get_rank()) == comm.Get_rank()

        def odd():
            if comm.Get_rank() >= 1 or comm.Get_size() == 1:
                raise KeyError(f"rank {comm.Get_rank()}")

        with pytest.raises(KeyError) as info:
            world.agree(odd)
        lowest = 1 if comm.Get_size() > 1 else 0
        assert str(info.value) == repr(f"rank {lowest}")
    finally:
        world.close()


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no")


def test_an_unpicklable_error_arrives_as_rank_error_with_its_message(comm):
    world = open_world(comm)
    try:
        last = comm.Get_size() - 1

        def step():
            if comm.Get_rank() == last:
                raise Unpicklable("odd one")

        expected = Unpicklable if comm.Get_rank() == last else RankError
        with pytest.raises(expected, match="odd one"):
            world.agree(step)
    finally:
        world.close()


def test_spec_error_pickles_with_its_key():
    exc = pickle.loads(pickle.dumps(SpecError("cv.n_splits", "must be >= 2", "s.yaml")))
    assert (exc.key, exc.message, str(exc)) == ("cv.n_splits", "must be >= 2",
                                                 "s.yaml: cv.n_splits: must be >= 2")
    assert SerialWorld().agree(lambda: 3) == 3
