"""Spec parsing and checking: good specs load, each bad input names its key and the fix."""

import copy
import math
from pathlib import Path

import pytest
from sklearn.pipeline import Pipeline

from hpcml.errors import SpecError, UsageError
from hpcml.spec.schema import ExperimentSpec, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

BASE = {
    "data": {"generator": "sklearn.datasets.make_classification", "params": {"n_samples": 50}},
    "models": {
        "rf": {
            "estimator": "sklearn.tree.DecisionTreeClassifier",
            "grid": {"max_depth": [None, 3]},
        }
    },
}


def spec_with(**changes):
    """A copy of BASE with top-level keys replaced (a value of ``...`` deletes the key)."""
    raw = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is ...:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def model_with(**body):
    raw = copy.deepcopy(BASE)
    raw["models"]["rf"].update(body)
    return raw


def spec_error(raw, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(raw, **kwargs)
    return info.value


# -- good specs --------------------------------------------------------------------------------


def test_quickstart_example_loads():
    spec = load_spec(EXAMPLES / "quickstart.yaml")
    assert isinstance(spec, ExperimentSpec)
    assert [m.name for m in spec.models] == ["logit", "rf"]
    assert spec.scoring == ("roc_auc", "accuracy")
    assert spec.refit == "roc_auc" and spec.refit_metric == "roc_auc"
    assert spec.cv.splitter == "StratifiedKFold"
    assert dict(spec.cv.kwargs) == {"n_splits": 5, "shuffle": True, "random_state": 0}
    assert spec.data.generator == "sklearn.datasets.make_classification"
    assert spec.source.endswith("quickstart.yaml")
    logit, rf = spec.models
    assert logit.grid == ({"C": [0.01, 0.1, 1.0, 10.0]},)
    assert dict(logit.params) == {"max_iter": 2000}
    assert logit.make().get_params()["max_iter"] == 2000


def test_yaml_null_becomes_none():
    spec = load_spec(EXAMPLES / "quickstart.yaml")
    rf = spec.models[1]
    assert rf.grid[0]["max_depth"] == [None, 8]
    assert rf.grid[0]["max_depth"][0] is None


def test_quickstart_parses_the_same_from_a_dict():
    import yaml

    path = EXAMPLES / "quickstart.yaml"
    from_file = load_spec(path)
    from_dict = parse_spec(yaml.safe_load(path.read_text()))
    assert from_dict.models == from_file.models
    assert from_dict.spec_hash() == from_file.spec_hash()


def test_spec_hash_ignores_formatting(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("data: {generator: sklearn.datasets.make_classification}\n"
                 "models: {m: {estimator: sklearn.tree.DecisionTreeClassifier}}\n")
    b.write_text("# a comment\nmodels:\n  m:\n    estimator: sklearn.tree.DecisionTreeClassifier\n"
                 "data:\n  generator: sklearn.datasets.make_classification\n")
    assert load_spec(a).spec_hash() == load_spec(b).spec_hash()
    c = tmp_path / "c.yaml"
    c.write_text(b.read_text().replace("DecisionTreeClassifier", "ExtraTreeClassifier"))
    assert load_spec(c).spec_hash() != load_spec(a).spec_hash()


def test_factory_callable_returning_pipeline():
    raw = model_with(estimator="factories:scaled_svc", grid={"svc__C": [0.1, 1.0, 10.0]})
    raw["models"]["rf"]["params"] = {"svc__kernel": "linear"}
    spec = parse_spec(raw)
    (model,) = spec.models
    assert model.grid == ({"svc__C": [0.1, 1.0, 10.0]},)
    est = model.make()
    assert isinstance(est, Pipeline)
    assert est.get_params()["svc__kernel"] == "linear"
    # each make() is a fresh object
    assert model.make() is not est


def test_defaults():
    spec = parse_spec(copy.deepcopy(BASE))
    assert spec.scoring is None
    assert spec.metric_names == ("score",)
    assert spec.refit is True and spec.refit_metric == "score"
    assert spec.cv.splitter is None
    assert spec.return_train_score is False
    assert math.isnan(spec.error_score)


def test_refit_false_and_error_score_raise():
    spec = parse_spec(spec_with(refit=False, error_score="raise", cv=3))
    assert spec.refit_metric is None
    assert spec.error_score == "raise"
    assert spec.cv.kwargs == {"n_splits": 3}


def test_list_of_grids():
    raw = model_with(grid=[{"max_depth": [1, 2]}, {"min_samples_leaf": [3]}])
    assert parse_spec(raw).models[0].grid == ({"max_depth": [1, 2]}, {"min_samples_leaf": [3]})


def test_relative_data_path_is_taken_from_the_spec_folder(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        "data: {path: d/train.csv, target: y}\n"
        "models: {m: {estimator: sklearn.tree.DecisionTreeClassifier}}\n"
    )
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.data.path == tmp_path.resolve() / "d" / "train.csv"
    assert spec.data.target == "y"


def test_group_splitter_with_data_groups_is_accepted():
    raw = spec_with(
        data={"path": "x.csv", "target": "y", "groups": "g"},
        cv={"splitter": "GroupKFold", "n_splits": 3},
    )
    spec = parse_spec(raw)
    assert spec.data.groups == "g" and spec.cv.groups == "g"


def test_cv_groups_is_passed_to_the_data_loader():
    raw = spec_with(
        data={"path": "x.csv", "target": "y"},
        cv={"splitter": "GroupKFold", "n_splits": 3, "groups": "g"},
    )
    assert parse_spec(raw).data.groups == "g"


# -- bad specs ---------------------------------------------------------------------------------


def test_spec_error_is_a_usage_error_with_source_and_key():
    err = spec_error(spec_with(modles=1), source="my.yaml")
    assert isinstance(err, UsageError)
    assert str(err).startswith("my.yaml: modles: ")
    assert err.key == "modles"


def test_malformed_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  generator: x\nmodels:\n  rf: {estimator: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    msg = str(info.value)
    assert "malformed YAML" in msg
    assert str(bad) in msg
    assert "line 5, column 1" in msg  # the unclosed list runs to the end of the file


def test_malformed_yaml_mapping_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {generator: x}\nmodels: rf: 1\n")
    with pytest.raises(SpecError, match=r"malformed YAML at line 2, column 11"):
        load_spec(bad)


def test_malformed_yaml_tab_indent_line_number(tmp_path):
    bad = tmp_path / "tab.yaml"
    bad.write_text("data:\n  generator: x\nmodels:\n\trf: 1\n")
    with pytest.raises(SpecError, match=r"malformed YAML at line 4"):
        load_spec(bad)


def test_missing_spec_file_and_folder(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)


@pytest.mark.parametrize("raw, match", [(None, "empty"), ([1, 2], "mapping")])
def test_spec_not_a_mapping(raw, match):
    assert match in str(spec_error(raw))


def test_unknown_top_level_key_suggests_closest():
    err = spec_error(spec_with(scorng=["accuracy"]))
    assert err.key == "scorng"
    assert "unknown key" in str(err)
    assert "Did you mean 'scoring'?" in str(err)


def test_unknown_model_key_suggests_closest():
    err = spec_error(model_with(gird={"max_depth": [1]}))
    assert err.key == "models.rf.gird"
    assert "Did you mean 'grid'?" in str(err)


def test_missing_models():
    err = spec_error(spec_with(models=...))
    assert err.key == "models"
    assert "missing 'models'" in str(err)
    assert "quickstart.yaml" in str(err)  # points at an example


def test_empty_models_mapping():
    err = spec_error(spec_with(models={}))
    assert err.key == "models"


@pytest.mark.parametrize(
    "path, expect",
    [
        ("sklearn.tree.NoSuchTree", "NoSuchTree"),
        ("nosuchpackage_xyz.Model", "nosuchpackage_xyz"),
        ("factories:no_such_function", "no_such_function"),
    ],
)
def test_estimator_path_that_does_not_import(path, expect):
    err = spec_error(model_with(estimator=path))
    assert err.key == "models.rf.estimator"
    assert str(err).startswith("models.rf.estimator: ")
    assert expect in str(err)


def test_missing_estimator():
    err = spec_error({"data": BASE["data"], "models": {"rf": {"grid": {"x": [1]}}}})
    assert err.key == "models.rf.estimator"
    assert "missing" in str(err)


@pytest.mark.parametrize("path", ["collections.OrderedDict", "sklearn.tree"])
def test_not_an_estimator(path):
    err = spec_error(model_with(estimator=path, grid=None))
    assert err.key == "models.rf.estimator"
    assert path in str(err)
    assert "estimator" in str(err.message)


def test_factory_that_raises_is_reported_on_the_estimator():
    err = spec_error(model_with(estimator="factories:broken_factory", grid=None))
    assert err.key == "models.rf.estimator"
    assert "factory exploded" in str(err)


def test_bad_constructor_param():
    raw = model_with(params={"max_dept": 3})
    err = spec_error(raw)
    assert err.key == "models.rf.params"
    assert "max_dept" in str(err)


def test_grid_key_not_a_parameter_lists_valid_ones():
    err = spec_error(model_with(grid={"max_depht": [1, 2]}))
    assert err.key == "models.rf.grid.max_depht"
    msg = str(err)
    assert msg.startswith("models.rf.grid.max_depht: ")
    assert "not a parameter of DecisionTreeClassifier" in msg
    assert "Did you mean 'max_depth'?" in msg
    assert "Valid parameters:" in msg
    for name in ("max_depth", "min_samples_leaf", "criterion", "random_state"):
        assert name in msg.split("Valid parameters:")[1]


def test_grid_key_in_pipeline_factory():
    err = spec_error(model_with(estimator="factories:scaled_svc", grid={"svc_C": [1.0]}))
    assert err.key == "models.rf.grid.svc_C"
    assert "svc__C" in str(err)


def test_grid_key_in_second_grid_of_a_list():
    err = spec_error(model_with(grid=[{"max_depth": [1]}, {"nope": [1]}]))
    assert err.key == "models.rf.grid[1].nope"


def test_empty_grid_list():
    err = spec_error(model_with(grid=[]))
    assert err.key == "models.rf.grid"
    assert "empty list" in str(err)


def test_empty_grid_values():
    err = spec_error(model_with(grid={"max_depth": []}))
    assert err.key == "models.rf.grid.max_depth"
    assert "empty list" in str(err)


@pytest.mark.parametrize("value", [3, "gini", {"a": 1}])
def test_grid_value_not_a_list(value):
    err = spec_error(model_with(grid={"max_depth": value}))
    assert err.key == "models.rf.grid.max_depth"
    assert "must be a list" in str(err)
    assert f"[{value!r}]" in str(err)  # shows the fix


def test_grid_not_a_mapping():
    err = spec_error(model_with(grid="max_depth=3"))
    assert err.key == "models.rf.grid"


@pytest.mark.parametrize(
    "scoring, key", [(["accuracy", "roc_aux"], "scoring[1]"), ("roc_aux", "scoring")]
)
def test_unknown_scorer_suggests_closest(scoring, key):
    err = spec_error(spec_with(scoring=scoring, refit=False))
    assert err.key == key
    assert "unknown scorer 'roc_aux'" in str(err)
    assert "Did you mean 'roc_auc'" in str(err)


def test_duplicate_scorer():
    err = spec_error(spec_with(scoring=["accuracy", "accuracy"]))
    assert err.key == "scoring"


def test_refit_not_in_scoring():
    err = spec_error(spec_with(scoring=["accuracy", "f1"], refit="roc_auc"))
    assert err.key == "refit"
    assert "'roc_auc' is not in scoring ['accuracy', 'f1']" in str(err)


def test_refit_wrong_type():
    assert spec_error(spec_with(refit=3)).key == "refit"


def test_unknown_splitter_suggests_closest():
    err = spec_error(spec_with(cv={"splitter": "StratifiedKFlod", "n_splits": 3}))
    assert err.key == "cv.splitter"
    msg = str(err)
    assert "Did you mean 'StratifiedKFold'?" in msg
    assert "KFold" in msg.split("Valid:")[1]
    assert "BaseCrossValidator" not in msg  # abstract bases are not offered


@pytest.mark.parametrize(
    "cv, expect",
    [
        ({"splitter": "KFold", "nsplits": 3}, "nsplits"),
        ({"splitter": "KFold", "n_splits": "five"}, "KFold"),
        ({"splitter": "KFold", "n_splits": 1}, "KFold"),
    ],
)
def test_bad_splitter_args(cv, expect):
    err = spec_error(spec_with(cv=cv))
    assert err.key == "cv"
    assert "bad arguments" in str(err)
    assert expect in str(err)


@pytest.mark.parametrize("cv", [{"n_splits": 1}, {"shuffle": True}, "five"])
def test_bad_cv_without_splitter(cv):
    err = spec_error(spec_with(cv=cv))
    assert err.key.startswith("cv")


@pytest.mark.parametrize("splitter", ["GroupKFold", "LeaveOneGroupOut", "GroupShuffleSplit"])
def test_group_splitter_without_groups(splitter):
    raw = spec_with(data={"path": "x.csv", "target": "y"}, cv={"splitter": splitter})
    err = spec_error(raw)
    assert err.key == "cv.groups"
    assert splitter in str(err) and "groups" in err.message


def test_conflicting_groups_names():
    raw = spec_with(
        data={"path": "x.csv", "target": "y", "groups": "a"},
        cv={"splitter": "GroupKFold", "groups": "b"},
    )
    assert spec_error(raw).key == "cv.groups"


def test_data_with_both_generator_and_path():
    raw = spec_with(data={"generator": "sklearn.datasets.make_classification", "path": "x.csv"})
    err = spec_error(raw)
    assert err.key == "data"
    assert "exactly one of 'generator'" in str(err)


def test_data_with_neither_generator_nor_path():
    assert spec_error(spec_with(data={"target": "y"})).key == "data"


def test_data_unknown_key():
    err = spec_error(spec_with(data={"generator": "sklearn.datasets.make_moons", "parms": {}}))
    assert err.key == "data.parms"
    assert "Did you mean 'params'?" in str(err)


def test_data_generator_bad_params():
    err = spec_error(spec_with(data={"generator": "factories:tiny_data", "params": {"n": 3}}))
    assert err.key == "data.params"
    assert "n_samples" in str(err)  # lists the valid arguments


def test_data_generator_that_does_not_import():
    err = spec_error(spec_with(data={"generator": "sklearn.datasets.make_nothing"}))
    assert err.key == "data.generator"


def test_data_unsupported_suffix_and_missing_target():
    assert "unsupported file type" in str(spec_error(spec_with(data={"path": "x.xlsx"})))
    err = spec_error(spec_with(data={"path": "x.csv"}))
    assert err.key == "data.target"


@pytest.mark.parametrize(
    "key, value", [("return_train_score", "yes"), ("error_score", "ignore")]
)
def test_bad_flags(key, value):
    err = spec_error(spec_with(**{key: value}))
    assert err.key == key


# -- precheck_spec: what the launcher checks before any rank starts -------------------------------


def test_precheck_finds_structure_and_path_mistakes_with_load_spec_messages(tmp_path):
    from hpcml.spec.schema import precheck_spec

    cases = {
        "scorng: [accuracy]\n": "scorng: unknown key",
        "models: {rf: {estmator: x}}\n": "models.rf.estmator: unknown key",
        "models: {rf: {grid: {}}}\n": "models.rf.estimator: missing",
        "data: {path: nowhere.csv, target: y}\n": "data.path: data file not found",
    }
    base = (
        "data: {generator: sklearn.datasets.make_classification}\n"
        "models: {rf: {estimator: sklearn.tree.DecisionTreeClassifier}}\n"
    )
    for text, expected in cases.items():
        path = tmp_path / "spec.yaml"
        path.write_text(base + text)  # a repeated YAML key: the later one wins
        with pytest.raises(SpecError) as info:
            precheck_spec(path)
        assert expected in str(info.value)
        if "data.path" not in expected:  # load_spec leaves the file to the data loader
            with pytest.raises(SpecError) as full:
                load_spec(path)
            assert str(full.value) == str(info.value)


def test_precheck_returns_the_data_path_and_imports_nothing(tmp_path):
    import subprocess
    import sys

    (tmp_path / "d.npy").write_bytes(b"")
    spec = tmp_path / "spec.yaml"
    spec.write_text("data: {path: d.npy}\nmodels: {m: {estimator: sklearn.tree.Nope}}\n")
    code = (
        "import sys; from hpcml.spec.schema import precheck_spec; "
        f"p = precheck_spec({str(spec)!r}); "
        "print(p.name, 'sklearn' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["d.npy", "False", "False"]


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_parses_and_names_its_strategy(name):
    spec = load_spec(EXAMPLES / name)
    strategies = {m.search.strategy for m in spec.models}
    expected = {"quickstart.yaml": {"grid"}, "nested.yaml": {"grid"},
                "halving.yaml": {"random", "halving"}, "asha.yaml": {"asha"}}
    assert strategies == expected[name]
    assert (spec.outer_cv is not None) == (name == "nested.yaml")
