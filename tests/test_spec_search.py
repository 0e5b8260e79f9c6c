"""The spec's ``search:`` block and its distributions: parsed, checked, one line per mistake."""

import copy

import pytest
import scipy.stats
import yaml
from sklearn.model_selection import ParameterSampler

from hpcml.errors import SpecError
from hpcml.spec.schema import parse_spec
from hpcml.spec.search import Distribution, SearchSpec, parse_distribution

BASE = {
    "data": {"generator": "sklearn.datasets.make_classification", "params": {"n_samples": 60}},
    "models": {
        "tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                 "grid": {"max_depth": [1, 2, 3], "min_samples_leaf": "randint(1, 10)"}},
        "logit": {"estimator": "sklearn.linear_model.LogisticRegression",
                  "grid": {"C": [0.1, 1.0]}},
    },
}


def spec(search=None, **model_search):
    raw = copy.deepcopy(BASE)
    if search is not None:
        raw["search"] = search
    for name, block in model_search.items():
        raw["models"][name]["search"] = block
    return raw


def error(raw) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_default_is_grid_and_a_distribution_in_a_grid_says_use_random():
    msg = error(spec())
    assert msg.startswith("models.tree.grid.min_samples_leaf: randint(1, 10) is a distribution")
    assert "strategy: random" in msg
    raw = spec()
    del raw["models"]["tree"]
    (model,) = parse_spec(raw).models
    assert model.search == SearchSpec("grid", {}, False, "search")
    assert model.grid == ({"C": [0.1, 1.0]},)  # lists stay lists


def test_top_level_search_applies_to_every_model_and_a_model_block_replaces_it():
    s = parse_spec(spec({"strategy": "random", "n_iter": 4, "random_state": 3},
                        logit={"strategy": "halving", "factor": 2}))
    tree, logit = s.models
    assert tree.search.strategy == "random" and tree.search.sampled
    assert dict(tree.search.options) == {"n_iter": 4, "random_state": 3}
    assert tree.search.sklearn_class == "RandomizedSearchCV"
    assert logit.search.key == "models.logit.search"
    assert dict(logit.search.options) == {  # scikit-learn's defaults of HalvingGridSearchCV
        "factor": 2, "resource": "n_samples", "min_resources": "exhaust",
        "max_resources": "auto", "aggressive_elimination": False, "random_state": None}
    assert logit.search.sklearn_class == "HalvingGridSearchCV" and logit.search.multi_round


def test_halving_over_a_distribution_is_halving_random_with_its_defaults():
    (tree, _) = parse_spec(spec({"strategy": "halving", "random_state": 0})).models
    assert tree.search.sklearn_class == "HalvingRandomSearchCV"
    assert tree.search.options["min_resources"] == "smallest"
    assert tree.search.options["n_candidates"] == "exhaust"
    (_, logit) = parse_spec(spec({"strategy": "halving", "n_candidates": 3})).models
    assert logit.search.sklearn_class == "HalvingRandomSearchCV"  # lists, n_candidates given


def test_asha_options_are_parsed_with_their_defaults():
    raw = spec({"strategy": "asha", "resource": "max_iter", "min_resources": 10,
                "max_resources": 270, "n_iter": 20, "random_state": 1})
    del raw["models"]["tree"]
    (logit,) = parse_spec(raw).models
    assert logit.search.strategy == "asha" and logit.search.sampled
    assert dict(logit.search.options) == {"factor": 3, "resource": "max_iter",
                                          "min_resources": 10, "max_resources": 270,
                                          "n_iter": 20, "random_state": 1}


def test_distributions_sample_as_scipy_does():
    d = parse_distribution("loguniform(1e-3, 1e2)", "k")
    ours = list(ParameterSampler({"C": d, "k": [1, 2]}, 5, random_state=0))
    theirs = list(ParameterSampler({"C": scipy.stats.loguniform(1e-3, 1e2), "k": [1, 2]}, 5,
                                   random_state=0))
    assert ours == theirs
    assert parse_distribution(" expon( scale = 0.1 ) ", "k") == Distribution(
        "expon", (), (("scale", 0.1),))
    assert parse_distribution("norm(-1, 2)", "k").make().mean() == -1


@pytest.mark.parametrize("text, expected", [
    ("logunifrom(1, 2)", "unknown distribution 'logunifrom'. Did you mean 'loguniform'?"),
    ("loguniform(0, 1)", "scipy.stats.loguniform refuses these arguments"),
    ("randint(1)", "scipy.stats.randint refuses these arguments"),
    ("uniform(a, 1)", "arguments must be numbers"),
    ("uniform(True, 1)", "arguments must be numbers"),
    ("uniform(1e999, 1)", "finite numbers"),
    ("__import__('os').system('x')", "not a distribution call"),
    ("os.system('x')", "not a distribution call"),
    ("norm(**{'loc': 1})", "'**' is not allowed"),
    ("uniform(0, 1", "YAML cut at its comma"),
    ("uniform(" + "1, " * 200 + ")", "at most 300"),
    ("rbf", "must be a list of values"),
])
def test_bad_distribution_is_one_line_naming_the_key(text, expected):
    raw = spec({"strategy": "random"})
    raw["models"]["tree"]["grid"]["min_samples_leaf"] = text
    msg = error(raw)
    assert msg.startswith("models.tree.grid.min_samples_leaf: "), msg
    assert expected in msg


def test_a_flow_mapping_cut_at_the_comma_is_explained():
    raw = spec({"strategy": "random"})
    raw["models"]["logit"]["grid"] = yaml.safe_load("{C: loguniform(1e-3, 1e2)}")
    msg = error(raw)
    assert msg.startswith("models.logit.grid.C: 'loguniform(1e-3' is a call that YAML cut")
    raw["models"]["logit"]["grid"] = yaml.safe_load("{C: 'loguniform(1e-3, 1e2)'}")
    assert isinstance(parse_spec(raw).models[1].grid[0]["C"], Distribution)


@pytest.mark.parametrize("search, key, expected", [
    ("random", "search", "must be a mapping"),
    ({"strategy": "randm"}, "search.strategy", "Did you mean 'random'?"),
    ({"strategy": "random", "factor": 2}, "search.factor", "belongs to strategy halving or asha"),
    ({"strategy": "random", "n_iter": 0}, "search.n_iter", "integer >= 1"),
    ({"strategy": "random", "n_iter": True}, "search.n_iter", "integer >= 1"),
    ({"strategy": "random", "random_state": -1}, "search.random_state", "2**32"),
    ({"strategy": "halving", "factor": 1}, "search.factor", "number > 1"),
    ({"strategy": "halving", "min_resources": "all"}, "search.min_resources", "'exhaust'"),
    ({"strategy": "halving", "max_resources": 0}, "search.max_resources", "'auto'"),
    ({"strategy": "halving", "aggressive_elimination": "yes"},
     "search.aggressive_elimination", "true or false"),
    ({"strategy": "halving", "resource": "n_estimatrs", "max_resources": 9},
     "search.resource", "not 'n_samples' nor a parameter of DecisionTreeClassifier (for "),
    ({"strategy": "halving", "resource": "max_depth", "max_resources": 9},
     "search.resource", "also in the grid"),
    ({"strategy": "halving", "resource": "max_leaf_nodes"}, "search.max_resources",
     "must be an integer when resource is 'max_leaf_nodes'"),
    ({"strategy": "halving", "min_resources": 20, "max_resources": 10},
     "search.min_resources", "greater than max_resources 10"),
    ({"strategy": "halving", "min_resources": "exhaust", "n_candidates": "exhaust"},
     "search.min_resources", "cannot both be 'exhaust'"),
    ({"strategy": "asha", "min_resources": "exhaust"}, "search.min_resources", "'smallest'"),
    ({"strategy": "asha", "aggressive_elimination": True}, "search.aggressive_elimination",
     "unknown key for strategy 'asha'"),
])
def test_bad_search_block_is_one_line_naming_the_key(search, key, expected):
    msg = error(spec(search))
    assert msg.startswith(f"{key}: "), msg
    assert expected in msg


def test_a_model_block_is_named_in_its_errors():
    msg = error(spec({"strategy": "random"}, logit={"strategy": "halving", "factor": 0.5}))
    assert msg.startswith("models.logit.search.factor: ")
    raw = spec(logit={"n_iter": 3})
    del raw["models"]["tree"]
    msg = error(raw)
    assert msg.startswith("models.logit.search.n_iter: unknown key for strategy 'grid'")


def test_unknown_model_key_lists_search():
    raw = spec()
    raw["models"]["logit"]["serch"] = {}
    assert "Did you mean 'search'?" in error(raw)


def test_the_halving_example_loads():
    from pathlib import Path

    from hpcml.spec.schema import load_spec

    s = load_spec(Path(__file__).resolve().parent.parent / "examples" / "halving.yaml")
    logit, rf = s.models
    assert logit.search.sklearn_class == "RandomizedSearchCV"
    assert rf.search.sklearn_class == "HalvingRandomSearchCV"
    assert rf.search.options["resource"] == "n_estimators" and s.multi_round
