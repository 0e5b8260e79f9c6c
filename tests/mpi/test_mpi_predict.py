"""Parallel prediction equals the models' own predictions, at any world size."""

from __future__ import annotations

import csv

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from hpcml import predict
from hpcml.batch.predict import predict_file, prepare_job
from hpcml.errors import UsageError

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=401, n_features=6, n_informative=4, n_classes=3,
                               random_state=5)
    return X, y


@pytest.fixture(scope="module")
def models(data):
    X, y = data
    return {
        "logit": LogisticRegression(max_iter=1000).fit(X, y),
        "tree": DecisionTreeClassifier(max_depth=5, random_state=0).fit(X, y),
    }


@pytest.mark.parametrize("root_only", [False, True])
def test_api_equals_model_on_every_rank(comm, models, data, root_only):
    X, _ = data
    labels = predict(models, X, comm=comm, root_only=root_only, block_rows=13)
    proba = predict(list(models.values()), X, method="predict_proba", comm=comm,
                    root_only=root_only, block_rows=50)
    if root_only and comm.Get_rank() != 0:
        assert labels is None and proba is None
        return
    for (name, est), p in zip(models.items(), proba, strict=True):
        np.testing.assert_array_equal(labels[name], est.predict(X))
        assert labels[name].dtype == est.predict(X).dtype
        np.testing.assert_allclose(p, est.predict_proba(X), rtol=0, atol=1e-12)


def test_api_fewer_rows_than_ranks_and_empty(comm, models, data):
    X, _ = data
    est = models["logit"]
    two = predict(est, X[:2], method="decision_function", comm=comm, block_rows=1)
    np.testing.assert_allclose(two, est.decision_function(X[:2]), rtol=0, atol=1e-12)
    empty = predict(est, X[:0], method="predict_proba", comm=comm)
    assert empty.shape == (0, 3) and empty.dtype == np.float64


def test_api_errors_on_every_rank_before_any_work(comm, data):
    X, _ = data
    lin = LinearRegression().fit(X, X[:, 0])
    with pytest.raises(UsageError, match="has no predict_proba"):
        predict(lin, X, method="predict_proba", comm=comm)
    with pytest.raises(UsageError, match="X has 5 columns but model model0 expects 6"):
        predict(lin, X[:, :5], comm=comm)
    # the world is still usable: no rank was left waiting in a collective
    assert comm.allreduce(1) == comm.Get_size()


def test_api_x_that_differs_between_ranks_fails_on_every_rank(comm, models, data):
    """Every rank must pass the same X; when one does not, every rank raises (none waits)."""
    X, _ = data
    est, size = models["logit"], comm.Get_size()
    rows = 11 if size > 1 and comm.Get_rank() == size - 1 else 10
    if size == 1:
        np.testing.assert_array_equal(predict(est, X[:rows], comm=comm), est.predict(X[:rows]))
    else:
        with pytest.raises(ValueError, match=rf"rank {size - 1} has X of shape \(11, 6\) but "
                           r"rank 0 has \(10, 6\); every rank must call predict"):
            predict(est, X[:rows], comm=comm)
    assert comm.allreduce(1) == size


def shared_files(comm, tmp, models, X, header=True):
    if comm.Get_rank() == 0:
        for name, est in models.items():
            joblib.dump(est, tmp / f"{name}.joblib")
        np.save(tmp / "x.npy", X)
        with open(tmp / "x.csv", "w") as f:
            f.write(",".join(f"f{j}" for j in range(X.shape[1])) + "\n")
            for row in X.tolist():
                f.write(",".join(map(repr, row)) + "\n")
    comm.Barrier()
    return [str(tmp / f"{name}.joblib") for name in models]


@pytest.mark.parametrize("src, dst", [(".npy", ".npy"), (".csv", ".npy"), (".npy", ".csv"),
                                      (".csv", ".csv")])
def test_files_equal_the_models(comm, shared_tmp, models, data, src, dst):
    X, _ = data
    paths = shared_files(comm, shared_tmp, models, X)
    for method, block_rows in (("predict", 17), ("predict_proba", 64)):
        out = shared_tmp / f"{method}{src[1:]}{dst}"
        job = prepare_job(paths, str(shared_tmp / f"x{src}"), str(out), method=method,
                          block_rows=block_rows)
        summary = predict_file(job, comm)
        assert summary["rows"] == len(X)
        expected = np.column_stack([getattr(m, method)(X) for m in models.values()])
        if dst == ".npy":
            got = np.load(out)
        else:
            with open(out, newline="") as f:
                rows = list(csv.reader(f))
            assert rows[0] == summary["columns"]
            got = np.array(rows[1:], dtype=np.float64)
        if method == "predict":
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    comm.Barrier()
    assert not [p for p in shared_tmp.iterdir() if p.name.startswith(".")]


def test_files_fewer_rows_than_ranks_and_empty(comm, shared_tmp, models, data):
    X, _ = data
    paths = shared_files(comm, shared_tmp, models, X[:2])
    job = prepare_job(paths, str(shared_tmp / "x.csv"), str(shared_tmp / "two.npy"),
                      method="predict_proba", block_rows=1)
    assert predict_file(job, comm)["rows"] == 2
    np.testing.assert_allclose(
        np.load(shared_tmp / "two.npy"),
        np.hstack([m.predict_proba(X[:2]) for m in models.values()]), rtol=0, atol=1e-12)
    paths = shared_files(comm, shared_tmp, models, X[:0])
    for src in (".npy", ".csv"):
        out = shared_tmp / f"empty{src}.csv"
        job = prepare_job(paths, str(shared_tmp / f"x{src}"), str(out), method="predict_proba")
        assert predict_file(job, comm)["rows"] == 0
        assert out.read_text().count("\n") == 1 and out.read_text().startswith("logit:0,")


def test_bad_value_found_by_any_rank_stops_every_rank(comm, shared_tmp, models, data):
    X, _ = data
    paths = shared_files(comm, shared_tmp, models, X)
    if comm.Get_rank() == 0:
        lines = (shared_tmp / "x.csv").read_text().splitlines()
        lines[300] = "1,2,3,oops,5,6"
        (shared_tmp / "bad.csv").write_text("\n".join(lines) + "\n")
    comm.Barrier()
    job = prepare_job(paths, str(shared_tmp / "bad.csv"), str(shared_tmp / "bad.npy"),
                      block_rows=10)
    with pytest.raises(UsageError, match="'oops' is not a number"):
        predict_file(job, comm)
    comm.Barrier()
    assert not [p for p in shared_tmp.iterdir() if "bad.npy" in p.name]


def test_parquet_in_and_out(comm, shared_tmp, models, data):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    X, _ = data
    paths = shared_files(comm, shared_tmp, models, X)
    if comm.Get_rank() == 0:
        table = pa.table({f"f{j}": X[:, j] for j in range(X.shape[1])})
        pq.write_table(table, shared_tmp / "x.parquet", row_group_size=30)
    comm.Barrier()
    job = prepare_job(paths, str(shared_tmp / "x.parquet"), str(shared_tmp / "p.parquet"),
                      method="predict_proba", block_rows=60)
    assert predict_file(job, comm)["rows"] == len(X)
    got = pq.read_table(shared_tmp / "p.parquet")
    assert got.column_names == job.columns
    np.testing.assert_allclose(np.column_stack([c.to_numpy() for c in got.columns]),
                               np.hstack([m.predict_proba(X) for m in models.values()]),
                               rtol=0, atol=1e-12)
