"""Loading data files and generators; bad files give a SpecError naming the problem."""

import numpy as np
import pytest

from hpcml.errors import SpecError
from hpcml.spec.data import fingerprint, load_data
from hpcml.spec.schema import DataSpec


def write(path, text):
    path.write_text(text)
    return path


def test_csv_with_header_and_numeric_target(tmp_path):
    f = write(tmp_path / "d.csv", "a, b ,label,c\n1,2,0,5.5\n3,4,1,-1e3\n")
    ds = load_data(DataSpec(path=f, target="label"))
    np.testing.assert_array_equal(ds.X, [[1.0, 2.0, 5.5], [3.0, 4.0, -1000.0]])
    assert ds.X.dtype == np.float64
    assert ds.feature_names == ["a", "b", "c"]  # header cells are stripped, target removed
    np.testing.assert_array_equal(ds.y, [0, 1])
    assert ds.y.dtype.kind == "i"
    assert ds.groups is None
    assert ds.n_samples == 2


def test_csv_string_labels(tmp_path):
    f = write(tmp_path / "d.csv", "label,x\ncat,1\ndog,2\ncat,3\n")
    ds = load_data(DataSpec(path=f, target="label"))
    assert ds.y.tolist() == ["cat", "dog", "cat"]
    assert ds.y.dtype.kind == "U"
    np.testing.assert_array_equal(ds.X, [[1.0], [2.0], [3.0]])


def test_csv_float_target_stays_float(tmp_path):
    f = write(tmp_path / "d.csv", "x,y\n1,0.5\n2,1.25\n")
    ds = load_data(DataSpec(path=f, target="y"))
    assert ds.y.dtype == np.float64
    np.testing.assert_array_equal(ds.y, [0.5, 1.25])


def test_csv_groups_column(tmp_path):
    f = write(tmp_path / "d.csv", "x,g,y\n1,a,0\n2,b,1\n3,a,0\n")
    ds = load_data(DataSpec(path=f, target="y", groups="g"))
    assert ds.groups.tolist() == ["a", "b", "a"]
    assert ds.feature_names == ["x"]


def test_csv_empty_cell_is_nan(tmp_path):
    f = write(tmp_path / "d.csv", "x,z,y\n1,,0\n2,3,1\n")
    ds = load_data(DataSpec(path=f, target="y"))
    assert np.isnan(ds.X[0, 1]) and ds.X[1, 1] == 3.0


def test_csv_trailing_blank_lines_are_not_rows(tmp_path):
    f = write(tmp_path / "d.csv", "x,y\n1,0\n2,1\n\n\n")
    ds = load_data(DataSpec(path=f, target="y"))
    assert ds.X.shape == (2, 1)


def test_npz(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", X=X, y=y, groups=np.array([1, 1, 2, 2]))
    ds = load_data(DataSpec(path=tmp_path / "d.npz"))
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    np.testing.assert_array_equal(ds.groups, [1, 1, 2, 2])


def test_npz_named_target(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 2)), label=np.array([3, 4]))
    ds = load_data(DataSpec(path=tmp_path / "d.npz", target="label"))
    assert ds.y.tolist() == [3, 4]
    with pytest.raises(SpecError) as info:
        load_data(DataSpec(path=tmp_path / "d.npz"))
    assert info.value.key == "data.target"
    assert "'label'" in str(info.value)  # lists the arrays it has


def test_npz_without_X(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.zeros((2, 2)), y=np.array([0, 1]))
    with pytest.raises(SpecError, match="no array 'X'"):
        load_data(DataSpec(path=tmp_path / "d.npz"))


def test_npy_pair(tmp_path):
    X = np.random.default_rng(0).normal(size=(5, 2))
    y = np.array([0, 1, 1, 0, 1])
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    # the target path is taken relative to X's folder
    ds = load_data(DataSpec(path=tmp_path / "X.npy", target="y.npy"))
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)


def test_npy_missing_target_file(tmp_path):
    np.save(tmp_path / "X.npy", np.zeros((2, 2)))
    with pytest.raises(SpecError) as info:
        load_data(DataSpec(path=tmp_path / "X.npy", target="nope.npy"))
    assert info.value.key == "data.target"
    assert "nope.npy" in str(info.value)
    with pytest.raises(SpecError) as info:
        load_data(DataSpec(path=tmp_path / "X.npy"))
    assert info.value.key == "data.target"


def test_npy_length_mismatch(tmp_path):
    np.save(tmp_path / "X.npy", np.zeros((3, 2)))
    np.save(tmp_path / "y.npy", np.zeros(2))
    with pytest.raises(SpecError, match="X has 3 rows but the target has 2"):
        load_data(DataSpec(path=tmp_path / "X.npy", target="y.npy"))


def test_npy_X_not_2d(tmp_path):
    np.save(tmp_path / "X.npy", np.zeros(3))
    np.save(tmp_path / "y.npy", np.zeros(3))
    with pytest.raises(SpecError, match="2-D"):
        load_data(DataSpec(path=tmp_path / "X.npy", target="y.npy"))


def test_generator():
    ds = load_data(
        DataSpec(
            generator="sklearn.datasets.make_classification",
            params={"n_samples": 40, "n_features": 6, "random_state": 1},
        )
    )
    assert ds.X.shape == (40, 6)
    assert ds.y.shape == (40,)
    again = load_data(
        DataSpec(
            generator="sklearn.datasets.make_classification",
            params={"n_samples": 40, "n_features": 6, "random_state": 1},
        )
    )
    assert fingerprint(ds.X, ds.y) == fingerprint(again.X, again.y)


def test_generator_bunch():
    ds = load_data(DataSpec(generator="sklearn.datasets.load_iris"))
    assert ds.X.shape == (150, 4) and ds.y.shape == (150,)


def test_generator_that_fails_is_a_spec_error():
    with pytest.raises(SpecError) as info:
        load_data(
            DataSpec(generator="sklearn.datasets.make_classification", params={"n_samples": -5})
        )
    assert info.value.key == "data.generator"


def test_generator_wrong_return():
    with pytest.raises(SpecError, match=r"must return \(X, y\)"):
        load_data(DataSpec(generator="builtins:dict", params={"a": 1}))


def test_fingerprint_changes_with_content():
    X = np.zeros((3, 2))
    y = np.array([0, 1, 0])
    assert fingerprint(X, y) != fingerprint(X, np.array([0, 1, 1]))
    assert fingerprint(X, None) != fingerprint(X, y)
    assert len(fingerprint(X, y)) == 16


# -- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_data(DataSpec(path=tmp_path / "nope.csv", target="y"), source="s.yaml")
    assert info.value.key == "data.path"
    assert "data file not found" in str(info.value)
    assert str(info.value).startswith("s.yaml: data.path: ")


def test_path_is_a_folder(tmp_path):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(SpecError, match="is a folder"):
        load_data(DataSpec(path=tmp_path / "d.csv", target="y"))


def test_missing_target_column_lists_columns(tmp_path):
    f = write(tmp_path / "d.csv", "alpha,beta,label\n1,2,0\n")
    with pytest.raises(SpecError) as info:
        load_data(DataSpec(path=f, target="target"))
    err = info.value
    assert err.key == "data.target"
    assert "no column 'target'" in str(err)
    assert "columns: alpha, beta, label" in str(err)


def test_missing_groups_column(tmp_path):
    f = write(tmp_path / "d.csv", "x,y\n1,0\n")
    with pytest.raises(SpecError) as info:
        load_data(DataSpec(path=f, target="y", groups="g"))
    assert info.value.key == "data.groups"


def test_non_numeric_feature_names_line_and_column(tmp_path):
    f = write(tmp_path / "d.csv", "x,colour,y\n1,2,0\n2,3,1\n3,red,0\n")
    with pytest.raises(SpecError) as info:
        load_data(DataSpec(path=f, target="y"))
    msg = str(info.value)
    assert info.value.key == "data.path"
    assert "d.csv line 4, column 'colour'" in msg
    assert "'red' is not a number" in msg


def test_non_numeric_line_counts_blank_lines(tmp_path):
    f = write(tmp_path / "d.csv", "x,y\n1,0\n\n2,1\nbad,0\n")
    with pytest.raises(SpecError, match="line 5, column 'x'"):
        load_data(DataSpec(path=f, target="y"))


def test_ragged_row(tmp_path):
    f = write(tmp_path / "d.csv", "a,b,y\n1,2,0\n3,4\n5,6,1\n")
    with pytest.raises(SpecError) as info:
        load_data(DataSpec(path=f, target="y"))
    assert info.value.key == "data.path"
    assert "d.csv line 3: 2 fields, header has 3" in str(info.value)


def test_empty_csv(tmp_path):
    f = write(tmp_path / "d.csv", "")
    with pytest.raises(SpecError, match="is empty"):
        load_data(DataSpec(path=f, target="y"))


def test_corrupt_npz(tmp_path):
    f = write(tmp_path / "d.npz", "this is not a zip file")
    with pytest.raises(SpecError) as info:
        load_data(DataSpec(path=f))
    assert info.value.key == "data.path"
