"""Parallel prediction without MPI: block partitioning, readers, writers, output columns, API.

Runs in one process (``comm=None``); tests/mpi/test_mpi_predict.py runs the same paths on
every rank of 1, 2 and 3, and tests/test_predict_cli.py runs ``hpcml predict -n P``.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from hpcml.batch.blocks import (
    byte_blocks,
    default_block_rows,
    group_blocks,
    model_names,
    row_blocks,
)
from hpcml.batch.predict import (
    _claim_blocks,
    _LocalCounter,
    describe_output,
    predict,
    predict_file,
    prepare_job,
)
from hpcml.batch.readers import open_reader
from hpcml.batch.writers import format_csv
from hpcml.errors import UsageError


@pytest.fixture(scope="module")
def clf_data():
    X, y = make_classification(n_samples=300, n_features=5, n_informative=3, n_classes=3,
                               random_state=0)
    return X, y


@pytest.fixture(scope="module")
def models(clf_data):
    X, y = clf_data
    return {
        "logit": LogisticRegression(max_iter=1000).fit(X, y),
        "tree": DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y),
    }


def write_csv(path, X, header=None, newline="\n", trailing=True):
    header = header or [f"f{j}" for j in range(X.shape[1])]
    lines = [",".join(header)] + [",".join(map(repr, row)) for row in X.tolist()]
    path.write_text(newline.join(lines) + (newline if trailing else ""), newline="")
    return path


# -- pure partitioning ------------------------------------------------------------------------


@pytest.mark.parametrize("n, k", [(0, 1), (1, 1), (10, 3), (10, 10), (10, 11), (1000, 7)])
def test_row_blocks_cover_rows_once_in_order(n, k):
    blocks = row_blocks(n, k)
    assert [i for lo, hi in blocks for i in range(lo, hi)] == list(range(n))
    assert all(0 < hi - lo <= k for lo, hi in blocks)


@pytest.mark.parametrize("groups", [[3, 3, 3], [10, 1, 1, 1, 10], [0, 0, 5, 0], [7], []])
@pytest.mark.parametrize("k", [1, 4, 100])
def test_group_blocks_are_whole_groups_covering_all_rows(groups, k):
    blocks = group_blocks(groups, k)
    edges = set(np.cumsum([0, *groups]).tolist())
    assert [i for lo, hi in blocks for i in range(lo, hi)] == list(range(sum(groups)))
    assert all(lo in edges and hi in edges for lo, hi in blocks)
    # a block exceeds k rows only when it is one group
    assert all(hi - lo <= k or hi - lo in groups for lo, hi in blocks)


def test_byte_blocks_and_bad_sizes():
    assert byte_blocks(3, 10, 3) == [(3, 6), (6, 9), (9, 10)]
    for fn, args in ((row_blocks, (5, 0)), (group_blocks, ([1], 0)), (byte_blocks, (0, 5, 0))):
        with pytest.raises(ValueError):
            fn(*args)


def test_default_block_rows_is_bounded_by_memory_whatever_the_input_size():
    row = 8 * 100
    sizes = [default_block_rows(row, n_rows=n, ranks=4) for n in (10**4, 10**6, 10**9, 10**12)]
    assert max(sizes) * row <= 64 << 20
    assert sizes[-1] == sizes[-2]  # flat once the input is large
    assert default_block_rows(row, n_rows=10**9, ranks=4, budget=1 << 20) == (1 << 20) // row


def test_model_names():
    assert model_names(["a/x.joblib", "b/y.pkl"]) == ["x", "y"]
    assert model_names(["a/m.joblib", "b/m.joblib", "c.joblib"]) == ["model0", "model1", "model2"]


def test_claim_loop_drains_after_bad_input():
    """A rank that finds bad input takes the remaining blocks without working on them."""
    done = []

    def work(b):
        if b == 2:
            raise UsageError("bad value in block 2")
        done.append(b)
        return 1

    with _LocalCounter() as counter:
        mine, failed = _claim_blocks(counter, 6, work)
    assert mine == [0, 1] and done == [0, 1] and failed == "bad value in block 2"
    assert counter.claim() == 7  # every block was claimed: other ranks would stop now


# -- output columns ---------------------------------------------------------------------------


def test_output_columns_name_classes(models, clf_data):
    X, _ = clf_data
    out = describe_output(models["logit"], "predict_proba", "logit", X[:1])
    assert out.columns == ("logit:0", "logit:1", "logit:2") and out.dtype == np.float64
    out = describe_output(models["tree"], "predict", "tree", X[:1])
    assert out.columns == ("tree",) and out.one_d and out.dtype.kind == "i"
    Xb, yb = make_classification(n_samples=60, n_features=5, random_state=1)
    svc = LinearSVC().fit(Xb, np.where(yb == 1, "yes", "no"))
    assert describe_output(svc, "decision_function", "svc", Xb[:1]).columns == ("svc",)
    labels = describe_output(svc, "predict", "svc", Xb[:1])
    assert labels.dtype == np.dtype("<U3")  # wide enough for every class, not just the first row
    Xr, yr = make_regression(n_samples=40, n_features=3, n_targets=2, random_state=0)
    two = describe_output(LinearRegression().fit(Xr, yr), "predict", "lin", Xr[:1])
    assert two.columns == ("lin:0", "lin:1")


def test_missing_method_and_wrong_column_count_are_usage_errors(models, clf_data):
    X, _ = clf_data
    lin = LinearRegression().fit(X, X[:, 0])
    with pytest.raises(UsageError, match=r"LinearRegression has no predict_proba \(it has: predict\)"):
        predict(lin, X, method="predict_proba", comm=None)
    with pytest.raises(UsageError, match="X has 4 columns but model model0 expects 5 features"):
        predict(models["logit"], X[:, :4], comm=None)
    with pytest.raises(UsageError, match="unknown method 'transform'"):
        predict(models["logit"], X, method="transform", comm=None)


# -- Python API, one process ------------------------------------------------------------------


@pytest.mark.parametrize("block_rows", [None, 1, 7, 1000])
def test_api_equals_the_model(models, clf_data, block_rows):
    X, _ = clf_data
    got = predict(models, X, method="predict_proba", comm=None, block_rows=block_rows)
    assert list(got) == ["logit", "tree"]
    for name, est in models.items():
        np.testing.assert_allclose(got[name], est.predict_proba(X), rtol=0, atol=1e-12)
    labels = predict(list(models.values()), X, comm=None, block_rows=block_rows)
    for arr, est in zip(labels, models.values(), strict=True):
        np.testing.assert_array_equal(arr, est.predict(X))
        assert arr.dtype == est.predict(X).dtype


def test_api_empty_input(models, clf_data):
    X, _ = clf_data
    got = predict(models["logit"], X[:0], method="predict_proba", comm=None)
    assert got.shape == (0, 3) and got.dtype == np.float64
    assert predict(models["logit"], X[:0], comm=None).shape == (0,)


# -- readers ----------------------------------------------------------------------------------


def read_all(reader, block_rows):
    blocks = reader.blocks(block_rows)
    parts = [reader.read(b) for b in blocks]
    return np.concatenate(parts) if parts else np.empty((0, reader.n_features))


@pytest.mark.parametrize("newline, trailing", [("\n", True), ("\r\n", True), ("\n", False)])
@pytest.mark.parametrize("block_rows", [1, 2, 3, 50, 10**6])
def test_csv_blocks_hold_every_line_once(tmp_path, newline, trailing, block_rows):
    X = np.random.default_rng(0).normal(size=(37, 4)) * np.logspace(-5, 5, 37)[:, None]
    path = write_csv(tmp_path / "x.csv", X, newline=newline, trailing=trailing)
    reader = open_reader(path)
    assert reader.columns == ["f0", "f1", "f2", "f3"] and reader.n_rows is None
    np.testing.assert_array_equal(read_all(reader, block_rows), X)
    np.testing.assert_array_equal(reader.head(), X[:1])


def test_csv_blank_lines_quotes_and_missing_values(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('a,"b"\n1,2\n\n  \n"3.5",\n,4\n')
    reader = open_reader(path)
    for k in (1, 2, 100):
        np.testing.assert_array_equal(read_all(reader, k), [[1, 2], [3.5, np.nan], [np.nan, 4]])


def test_csv_input_problems(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "noheader.csv").write_text("0.5,1.5\n2.5,3\n")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,x\n")
    (tmp_path / "short.csv").write_text("a,b\n1,2\n3\n")
    (tmp_path / "header_only.csv").write_text("a,b\n")
    with pytest.raises(UsageError, match="empty.csv: is empty; expected a header line"):
        open_reader(tmp_path / "empty.csv")
    with pytest.raises(UsageError, match="needs a header line"):
        open_reader(tmp_path / "noheader.csv")
    with pytest.raises(UsageError, match=r"byte 8, column 'b': 'x' is not a number"):
        read_all(open_reader(tmp_path / "bad.csv"), 100)
    with pytest.raises(UsageError, match="has 1 fields but the header has 2"):
        read_all(open_reader(tmp_path / "short.csv"), 100)
    empty = open_reader(tmp_path / "header_only.csv")
    assert read_all(empty, 10).shape == (0, 2) and empty.head().shape == (0, 2)
    with pytest.raises(UsageError, match="input file not found"):
        open_reader(tmp_path / "nope.csv")
    (tmp_path / "x.txt").write_text("a\n1\n")
    with pytest.raises(UsageError, match="unknown file type '.txt'"):
        open_reader(tmp_path / "x.txt")


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16])
def test_npy_reader_keeps_dtype_and_rows(tmp_path, order, dtype):
    X = np.asarray(np.arange(60).reshape(20, 3) * 1.5, dtype=dtype, order=order)
    np.save(tmp_path / "x.npy", X)
    reader = open_reader(tmp_path / "x.npy")
    assert (reader.n_rows, reader.n_features) == (20, 3)
    for k in (1, 3, 20, 64):
        got = read_all(reader, k)
        assert got.dtype == X.dtype
        np.testing.assert_array_equal(got, X)


def test_npy_input_problems(tmp_path):
    np.save(tmp_path / "one_d.npy", np.arange(4.0))
    np.save(tmp_path / "text.npy", np.array([["a"]]))
    with pytest.raises(UsageError, match=r"must be 2-D \(rows x features\), got shape \(4,\)"):
        open_reader(tmp_path / "one_d.npy")
    with pytest.raises(UsageError, match="needs numbers"):
        open_reader(tmp_path / "text.npy")
    np.save(tmp_path / "empty.npy", np.empty((0, 3)))
    reader = open_reader(tmp_path / "empty.npy")
    assert reader.blocks(10) == [] and reader.head().shape == (0, 3)


# -- files end to end, one process ------------------------------------------------------------


def save_models(tmp_path, models):
    paths = []
    for name, est in models.items():
        joblib.dump(est, tmp_path / f"{name}.joblib")
        paths.append(str(tmp_path / f"{name}.joblib"))
    return paths


def read_output(path):
    if str(path).endswith(".npy"):
        return None, np.load(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=np.float64).reshape(len(rows) - 1, len(rows[0]))


@pytest.mark.parametrize("src", [".npy", ".csv"])
@pytest.mark.parametrize("dst", [".npy", ".csv"])
@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_predict_file_equals_the_models(tmp_path, models, clf_data, src, dst, method):
    X, _ = clf_data
    paths = save_models(tmp_path, models)
    inp = tmp_path / f"x{src}"
    np.save(inp, X) if src == ".npy" else write_csv(inp, X)
    out = tmp_path / f"out{dst}"
    job = prepare_job(paths, str(inp), str(out), method=method, block_rows=23)
    summary = predict_file(job)
    expected = np.column_stack([getattr(m, method)(X) for m in models.values()])
    header, got = read_output(out)
    assert summary["rows"] == len(X) and got.shape == expected.shape
    if method == "predict":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    names = ["logit", "tree"] if method == "predict" else [
        f"{m}:{c}" for m in ("logit", "tree") for c in range(3)]
    assert summary["columns"] == names and (header is None or header == names)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_text_labels_to_csv_and_npy(tmp_path):
    X, y = make_classification(n_samples=80, n_features=4, random_state=2)
    labels = np.array(["no", "maybe"])[y]
    paths = save_models(tmp_path, {"words": DecisionTreeClassifier(random_state=0).fit(X, labels)})
    np.save(tmp_path / "x.npy", X)
    for dst in ("out.csv", "out.npy"):
        predict_file(prepare_job(paths, str(tmp_path / "x.npy"), str(tmp_path / dst),
                                 block_rows=9))
    expected = joblib.load(paths[0]).predict(X)
    assert np.load(tmp_path / "out.npy")[:, 0].tolist() == expected.tolist()
    text = (tmp_path / "out.csv").read_text().splitlines()
    assert text[0] == "words" and text[1:] == expected.tolist()


def test_text_and_numbers_cannot_share_an_npy(tmp_path, clf_data):
    X, y = clf_data
    paths = save_models(tmp_path, {
        "words": DecisionTreeClassifier(random_state=0).fit(X, np.array(["a", "b", "c"])[y]),
        "nums": DecisionTreeClassifier(random_state=0).fit(X, y),
    })
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(UsageError, match="column words holds text labels and column nums numbers"):
        prepare_job(paths, str(tmp_path / "x.npy"), str(tmp_path / "out.npy"))
    assert not (tmp_path / "out.npy").exists()


def test_job_checks_before_writing(tmp_path, models, clf_data):
    X, _ = clf_data
    paths = save_models(tmp_path, models)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "x4.npy", X[:, :4])
    (tmp_path / "taken.npy").write_bytes(b"")
    x = str(tmp_path / "x.npy")
    cases = [
        ((paths, x, str(tmp_path / "a.npy"), "predict_proba"), None),
        (([str(tmp_path / "nope.joblib")], x, str(tmp_path / "a.npy")), "model file not found"),
        ((paths, str(tmp_path / "x4.npy"), str(tmp_path / "a.npy")),
         "x4.npy has 4 columns but model logit .* expects 5 features"),
        ((paths, x, str(tmp_path / "taken.npy")), "already exists; choose another name or pass --force"),
        ((paths, x, x), "is the input file"),
        ((paths, x, str(tmp_path / "a.json")), "unknown file type '.json'"),
        ((paths, x, str(tmp_path)), "unknown file type"),
    ]
    for args, message in cases:
        if message is None:
            prepare_job(*args)  # both have predict_proba: fine
            continue
        with pytest.raises(UsageError, match=message):
            prepare_job(*args)
    lin = tmp_path / "lin.joblib"
    joblib.dump(LinearRegression().fit(X, X[:, 0]), lin)
    with pytest.raises(UsageError, match="lin.joblib.*has no predict_proba"):
        prepare_job([str(lin)], x, str(tmp_path / "a.npy"), method="predict_proba")
    (tmp_path / "junk.joblib").write_text("not a pickle")
    with pytest.raises(UsageError, match="junk.joblib: cannot load the model"):
        prepare_job([str(tmp_path / "junk.joblib")], x, str(tmp_path / "a.npy"))
    assert not (tmp_path / "a.npy").exists()


def test_csv_header_must_match_fitted_feature_names(tmp_path, clf_data):
    X, y = clf_data

    est = LogisticRegression(max_iter=500).fit(X, y)
    est.feature_names_in_ = np.array(["a", "b", "c", "d", "e"], dtype=object)
    joblib.dump(est, tmp_path / "named.joblib")
    write_csv(tmp_path / "ok.csv", X, header=list("abcde"))
    write_csv(tmp_path / "swapped.csv", X, header=list("abdce"))
    prepare_job([str(tmp_path / "named.joblib")], str(tmp_path / "ok.csv"), str(tmp_path / "o.npy"))
    with pytest.raises(UsageError, match="column 3 is 'd' but model named .* was fit with 'c'"):
        prepare_job([str(tmp_path / "named.joblib")], str(tmp_path / "swapped.csv"),
                    str(tmp_path / "o.npy"))


def test_bad_value_deep_in_csv_writes_nothing(tmp_path, models, clf_data):
    X, _ = clf_data
    paths = save_models(tmp_path, models)
    path = write_csv(tmp_path / "x.csv", X)
    text = path.read_text().splitlines()
    text[200] = "1,2,oops,4,5"
    path.write_text("\n".join(text) + "\n")
    job = prepare_job(paths, str(path), str(tmp_path / "new" / "out.npy"), block_rows=10)
    with pytest.raises(UsageError, match="'oops' is not a number"):
        predict_file(job)
    assert not (tmp_path / "new").exists()


def test_empty_input_writes_empty_output_with_columns(tmp_path, models):
    paths = save_models(tmp_path, models)
    (tmp_path / "x.csv").write_text("f0,f1,f2,f3,f4\n")
    np.save(tmp_path / "x.npy", np.empty((0, 5)))
    predict_file(prepare_job(paths, str(tmp_path / "x.csv"), str(tmp_path / "o.csv"),
                             method="predict_proba"))
    assert (tmp_path / "o.csv").read_text() == ",".join(
        f"{m}:{c}" for m in ("logit", "tree") for c in range(3)) + "\n"
    predict_file(prepare_job(paths, str(tmp_path / "x.npy"), str(tmp_path / "o.npy")))
    out = np.load(tmp_path / "o.npy")
    assert out.shape == (0, 2) and out.dtype.kind == "i"


def test_format_csv_round_trips_floats_exactly():
    values = np.array([[0.1], [1 / 3], [1e-300], [np.nan], [np.inf], [-0.0], [2.0**60]])
    back = np.loadtxt(io.StringIO(format_csv([values])), ndmin=2)
    np.testing.assert_array_equal(back, values)


# -- parquet (optional: pip install 'hpcml[parquet]') -----------------------------------------


def test_parquet_in_and_out(tmp_path, models, clf_data):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    X, _ = clf_data
    paths = save_models(tmp_path, models)
    table = pa.table({f"f{j}": X[:, j] for j in range(5)})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=40)
    reader = open_reader(tmp_path / "x.parquet")
    assert reader.n_rows == 300 and len(reader.group_rows) == 8
    np.testing.assert_array_equal(read_all(reader, 100), X)
    assert all(b.row_start % 40 == 0 for b in reader.blocks(100))
    job = prepare_job(paths, str(tmp_path / "x.parquet"), str(tmp_path / "o.parquet"),
                      method="predict_proba", block_rows=90)
    predict_file(job)
    got = pq.read_table(tmp_path / "o.parquet")
    assert got.column_names == [f"{m}:{c}" for m in ("logit", "tree") for c in range(3)]
    expected = np.hstack([m.predict_proba(X) for m in models.values()])
    np.testing.assert_allclose(np.column_stack([c.to_numpy() for c in got.columns]), expected,
                               rtol=0, atol=1e-12)
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    predict_file(prepare_job(paths, str(tmp_path / "empty.parquet"), str(tmp_path / "e.parquet")))
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0


def test_hpcml_predict_is_the_function_whatever_was_imported_first():
    code = ("import hpcml.batch.predict, hpcml.blockio, hpcml.cli.predict, hpcml; "
            "assert callable(hpcml.predict)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
