"""A spec fuzzer: valid specs mutated by hypothesis must be accepted, or refused with one line.

``load_spec`` (what every rank runs) and ``precheck_spec`` (what the launcher runs) may raise
only :class:`~hpcml.errors.UsageError`; anything else would be a traceback for the user. The
mutations: wrong types, missing keys, unknown names, empty lists, huge values, non-UTF-8
bytes, YAML anchors, aliases and tags. A few cases also go through the real command line.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from faultkit import one_error_line, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcml.errors import UsageError
from hpcml.spec import load_spec, precheck_spec

#: Examples of each fuzz test (HPCML_FUZZ_EXAMPLES=20000 for a long run by hand).
EXAMPLES = int(os.environ.get("HPCML_FUZZ_EXAMPLES", "2000"))

VALID = [
    {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": 60, "random_state": 0}},
        "cv": {"splitter": "StratifiedKFold", "n_splits": 3, "shuffle": True,
               "random_state": 0},
        "scoring": ["accuracy", "roc_auc"],
        "refit": "accuracy",
        "return_train_score": False,
        "error_score": 0.0,
        "fit_timeout": 30,
        "save_oof": {"candidates": "best", "method": "auto"},
        "models": {
            "lr": {"estimator": "sklearn.linear_model.LogisticRegression",
                   "params": {"max_iter": 200}, "grid": {"C": [0.1, 1.0]}},
            "tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                     "grid": [{"max_depth": [None, 3]}, {"min_samples_leaf": [1, 5]}]},
        },
    },
    {
        "data": {"path": "d.csv", "target": "label", "groups": "site"},
        "cv": {"splitter": "GroupKFold", "n_splits": 2},
        "scoring": "accuracy",
        "models": {"svc": {"estimator": "factories:scaled_svc",
                           "params": {"svc__kernel": "linear"},
                           "grid": {"svc__C": [0.1, 1]}}},
    },
    {
        "data": {"path": "d.npz"},
        "cv": 4,
        "refit": False,
        "models": {"ridge": {"estimator": "sklearn.linear_model.Ridge",
                             "grid": {"alpha": [0.5, 1.0]}}},
    },
    {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": 60, "random_state": 0}},
        "cv": 3,
        "outer_cv": {"splitter": "StratifiedKFold", "n_splits": 3, "shuffle": True,
                     "random_state": 1},
        "scoring": ["accuracy"],
        "models": {"lr": {"estimator": "sklearn.linear_model.LogisticRegression",
                          "grid": {"C": [0.1, 1.0]}}},
    },
]

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["", "nan", "raise", "lots", "sklearn", "os.system", "no.such.module",
                     "sklearn.linear_model", "sklearn.linear_model:Nope", "KFold", "auto",
                     "best", "all", "..", "a.b:c:d", "sklearn.linear_model.LogisticRegression"]),
    st.lists(st.integers(), max_size=3), st.just([]), st.just({}),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.lists(st.dictionaries(st.text(max_size=3), st.lists(st.integers(), max_size=2),
                             max_size=2), max_size=2),
)


def _paths(node, prefix=()):
    """Every key path of a nested spec (mappings and lists)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw):
    """A valid spec with one to three mutations."""
    spec = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(spec) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = spec
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        op = draw(st.sampled_from(["replace", "delete", "unknown", "empty", "rename"]))
        if op == "replace":
            parent[key] = draw(JUNK)
        elif op == "delete":
            del parent[key]
        elif op == "unknown" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["colour", "max_depht", "C", 3, None, ""]))] = draw(JUNK)
        elif op == "empty":
            parent[key] = draw(st.sampled_from([[], {}, "", None]))
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = parent.pop(key)
    return spec


TAGS = ["!!python/object:os.system", "!!binary", "!!set", "!!timestamp", "!custom", "!!str",
        "!!float", "!!int", "!!map", "!!seq", "!!python/name:os.system"]


@st.composite
def spec_bytes(draw):
    """The YAML text of a mutated spec, then maybe mangled as bytes."""
    text = yaml.dump(draw(mutated()), Dumper=yaml.CSafeDumper, sort_keys=False)
    kind = draw(st.sampled_from(["plain", "bytes", "tag", "anchor", "bomb", "truncate"]))
    raw = text.encode()
    if kind == "bytes":  # non-UTF-8 bytes somewhere
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + b"\xff\xfe" + raw[at:]
    elif kind == "tag":
        lines = text.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        if ": " in lines[i]:
            k, v = lines[i].split(": ", 1)
            lines[i] = f"{k}: {draw(st.sampled_from(TAGS))} {v}"
        raw = "\n".join(lines).encode()
    elif kind == "anchor":  # one value aliased in another place
        raw = (text + "extra: &a [1, 2]\nmore: *a\n" if draw(st.booleans())
               else text.replace("models:", "models: &m", 1) + "again: *m\n").encode()
    elif kind == "bomb":
        lol = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
        raw = (text.replace("data:", "junk: *a8\ndata:", 1) + lol).encode()
        raw = (lol + text.replace("models:", "models_x: *a8\nmodels:", 1)).encode()
    elif kind == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        (p / "d.csv").write_text("a,b,site,label\n1,2,x,0\n3,4,y,1\n5,6,x,0\n7,8,y,1\n")
        import numpy as np

        np.savez(p / "d.npz", X=np.ones((4, 2)), y=np.arange(4.0))
        yield p


def _check(path: Path) -> None:
    for check in (precheck_spec, load_spec):
        try:
            check(path)
        except UsageError as exc:
            msg = str(exc)
            assert msg and "\n" not in msg.strip(), repr(msg)
            assert "Traceback" not in msg


@pytest.mark.timeout(120)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(raw=spec_bytes())
def test_fuzzed_spec_files_are_accepted_or_refused_in_one_line(folder, raw):
    path = folder / "s.yaml"
    path.write_bytes(raw)
    _check(path)


def test_every_valid_base_spec_is_accepted(folder):
    for spec in VALID:
        (folder / "v.yaml").write_text(yaml.safe_dump(spec))
        load_spec(folder / "v.yaml")


def test_alias_bomb_is_refused_fast(folder):
    lol = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
    (folder / "b.yaml").write_text(lol)
    with pytest.raises(UsageError, match="YAML aliases"):
        load_spec(folder / "b.yaml")


CLI_CASES = {
    "non-utf8": (b"data: {generator: faultmodels:small}\nmodels: \xff\xfe\n", "cannot read"),
    "tag": (b"data: !!python/object:os.system {x: 1}\nmodels: {}\n", "malformed YAML"),
    "wrong type": (b"data: {generator: faultmodels:small}\nmodels:\n  lr:\n    estimator: "
                   b"sklearn.linear_model.LogisticRegression\n    params: {max_iter: lots}\n",
                   "models.lr.params.max_iter"),
    "bad grid value": (b"data: {generator: faultmodels:small}\nmodels:\n  lr:\n    estimator: "
                       b"sklearn.linear_model.LogisticRegression\n    grid: {C: [1, -1]}\n",
                       "models.lr.grid.C"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_specs_through_the_command_line(tmp_path, case):
    text, needle = CLI_CASES[case]
    (tmp_path / "s.yaml").write_bytes(text)
    proc = run(["run", "-n", "2", "s.yaml", "--out", "out"], tmp_path, timeout=50)
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc, needle)
    assert not (tmp_path / "out").exists()
