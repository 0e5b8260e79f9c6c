"""Choosing an engine: the registry, a missing extra, options of another engine, the runner."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from enginehelpers import SPEC, TESTS, hpcml, hpcml_env

from hpcml.engines import _ENGINES, available_engines, get_engine, register_engine
from hpcml.errors import UsageError


@pytest.fixture
def fake_engine():
    register_engine("fake", "hpcml_fake_engine_package.engine:make_engine", extra="fake")
    yield "fake"
    _ENGINES.pop("fake", None)


def test_every_engine_of_the_issue_is_registered():
    assert {"mpi", "serial", "loky", "dask", "ray", "spark"} <= set(available_engines())


def test_a_missing_extra_is_one_usage_error_naming_it(fake_engine):
    with pytest.raises(UsageError) as info:
        get_engine(fake_engine)
    message = str(info.value)
    assert "pip install 'hpcml[fake]'" in message and "\n" not in message
    assert "hpcml_fake_engine_package" in message


def test_an_unknown_engine_names_the_known_ones():
    with pytest.raises(UsageError, match="choose one of: .*dask.*loky.*mpi.*ray.*spark"):
        get_engine("dusk")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine,module", [("dask", "distributed"), ("ray", "ray"),
                                           ("spark", "pyspark")])
def test_hpcml_run_without_the_extra_exits_2_with_one_line(tmp_path, engine, module):
    (tmp_path / "spec.yaml").write_text(SPEC)
    code = (f"import sys; sys.modules[{module!r}] = None\n"  # the package is not installed
            "from hpcml.cli import main\n"
            f"sys.exit(main(['run', 'spec.yaml', '--engine', {engine!r}, '--out', 'out']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=hpcml_env(),
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"pip install 'hpcml[{engine}]'" in proc.stderr


@pytest.mark.timeout(60)
def test_an_option_of_another_engine_is_refused(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    proc = hpcml("run", "spec.yaml", "--engine", "loky", "--master", "local[2]", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--master is an option of --engine spark, not of --engine loky" in proc.stderr
    proc = hpcml("run", "spec.yaml", "--address", "auto", cwd=tmp_path)
    assert proc.returncode == 2 and "--engine ray, not of --engine mpi" in proc.stderr


@pytest.mark.timeout(60)
def test_loky_needs_no_mpi(tmp_path):
    """``--engine loky`` never imports mpi4py (nor starts mpiexec)."""
    (tmp_path / "spec.yaml").write_text(SPEC.replace("[0.01, 0.1, 1.0, 10.0]", "[1.0]")
                                        .replace("[1, 2, 3, null]", "[2]"))
    code = ("import sys\nfrom hpcml.cli import main\n"
            "code = main(['run', 'spec.yaml', '--engine', 'loky', '-n', '1', '--out', 'out', "
            "'--no-progress'])\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\nsys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=hpcml_env(),
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "cv_results.csv").exists()


def test_fit_timeout_on_a_farm_engine_is_a_usage_error():
    from hpcml import run_experiment

    engine = get_engine("loky", workers=1)
    spec = {"data": {"generator": "sklearn.datasets.make_classification",
                     "params": {"n_samples": 40, "random_state": 0}},
            "cv": {"splitter": "KFold", "n_splits": 2},
            "models": {"lr": {"estimator": "sklearn.linear_model.LogisticRegression"}}}
    try:
        with pytest.raises(UsageError, match="fit_timeout is not supported on the loky engine"):
            run_experiment(spec, engine=engine, progress=False, fit_timeout=5.0)
    finally:
        engine.close()


def test_fit_tasks_pickle_and_run_the_same():
    """The runner a worker gets is plain data: pickled, it fits and scores the same."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    from hpcml.core.fitting import Folds, make_scorer_map
    from hpcml.core.tasks import TaskGrid
    from hpcml.search.evaluate import FitTasks

    X, y = make_classification(n_samples=60, random_state=0)
    est = {"lr": LogisticRegression()}
    grid = TaskGrid([("lr", {"C": [0.1, 1.0]})], n_splits=3)
    folds = Folds(list(KFold(3).split(X)))
    scorers = {"lr": make_scorer_map(["accuracy"], est["lr"])[0]}
    tasks = FitTasks(np.arange(len(grid)), grid, folds, est, scorers)
    here = tasks.run_items(range(len(grid)), X, y, t0=0.0)
    there = pickle.loads(pickle.dumps(tasks)).run_items(range(len(grid)), X, y, t0=0.0)
    assert [r.test_scores for r in here] == [r.test_scores for r in there]
    assert [r.task for r in there] == list(range(len(grid)))
    assert all(0 <= r.start <= r.end for r in there)


def test_tests_dir_is_importable_by_workers():
    assert str(TESTS) in hpcml_env()["PYTHONPATH"]
