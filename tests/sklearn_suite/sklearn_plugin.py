"""pytest plugin: scikit-learn's own search tests, with hpcml's drop-ins in place of its classes.

Loaded by ``run_suite.py``. Before the test modules are imported, ``GridSearchCV``,
``RandomizedSearchCV``, ``HalvingGridSearchCV`` and ``HalvingRandomSearchCV`` of
``sklearn.model_selection`` become subclasses of hpcml's drop-ins with the same names (some
tests read the class name) and the progress line off; the test modules then import them.
Nothing of scikit-learn's tests is copied here. Every rank runs every test (SPMD).

``HPCML_SUITE_REFERENCE=1`` keeps scikit-learn's classes: the reference run, which says
which tests pass for scikit-learn itself in this environment.
"""

from __future__ import annotations

import os
import sys

import pytest

#: The scikit-learn test modules run against the drop-ins.
SUITES = (
    "sklearn.model_selection.tests.test_search",
    "sklearn.model_selection.tests.test_successive_halving",
)

#: ``module:test function`` -> why it cannot pass for a drop-in (listed in the README).
EXCLUDED: dict[str, str] = {}

#: The same, for worlds of several ranks only: these tests keep state of the test process
#: that the fits change, so they also fail for scikit-learn's class with ``n_jobs=2`` (the
#: fits then run in loky worker processes).
EXCLUDED_WHEN_SPREAD: dict[str, str] = {
    "test_successive_halving:test_cv_results": (
        "its scorer draws scores from one RandomState of the test process and the test "
        "asserts that no two scores tie; with the fits in several processes each draws "
        "from its own copy and scores repeat (HalvingGridSearchCV(n_jobs=2) gives 57 "
        "distinct scores of 119 too)"),
    "test_successive_halving:test_base_estimator_inputs": (
        "it appends the number of samples each fit and predict sees to lists of the test "
        "process; a rank's lists hold only the fits that rank ran (with n_jobs=2, "
        "scikit-learn's lists stay empty)"),
    "test_search:test_multi_metric_search_forwards_metadata": (
        "its scorer records each call in a registry of the test process and the test "
        "asserts the registry is not empty; with 1 candidate x 2 folds on 3 ranks, one rank "
        "runs no fit and its registry is empty (with n_jobs=2, scikit-learn's is empty too)"),
    "test_search:test_searchcv_raise_warning_with_non_finite_score": (
        "its scorer counts its calls in the test process and returns NaN at every 5th; "
        "with 12 fits on 3 ranks no rank scores 5 times, so no score is NaN (scikit-learn's "
        "GridSearchCV with n_jobs=2 or 3 gives no NaN either)"),
}

REFERENCE = os.environ.get("HPCML_SUITE_REFERENCE") == "1"
#: Let a failing rank go on (to see every failure); by default it aborts the world at once.
KEEP_GOING = os.environ.get("HPCML_SUITE_KEEP_GOING") == "1"


def _world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def harness_classes() -> dict[str, type]:
    """The four test-time classes: each subclasses a drop-in and takes its sklearn name."""
    import sklearn.model_selection as ms
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401

    from hpcml.search import drop_in

    pairs = {
        "GridSearchCV": drop_in.MPISearchCV,
        "RandomizedSearchCV": drop_in.MPIRandomizedSearchCV,
        "HalvingGridSearchCV": drop_in.MPIHalvingGridSearchCV,
        "HalvingRandomSearchCV": drop_in.MPIHalvingRandomSearchCV,
    }
    out = {}
    for name, ours in pairs.items():
        sklearn_class = getattr(ms, name)
        assert not issubclass(sklearn_class, ours), "classes substituted twice"
        out[name] = type(name, (ours,), {
            "__init__": drop_in.mpi_init(sklearn_class, progress=False),
            "__module__": __name__,
            "__doc__": f"{ours.__name__}, named {name} for scikit-learn's tests.",
        })
    return out


def pytest_configure(config: pytest.Config) -> None:
    if REFERENCE:
        return
    import sklearn.model_selection as ms

    for name, cls in harness_classes().items():
        setattr(ms, name, cls)
        globals()[name] = cls  # picklable by reference


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    modules = {item.module.__name__: item.module for item in items if hasattr(item, "module")}
    if not REFERENCE:
        from hpcml.search.spmd import spmd_fit  # noqa: F401 - the drop-ins' module is loaded

        for name, module in modules.items():
            for cls_name in ("GridSearchCV", "HalvingGridSearchCV"):
                cls = getattr(module, cls_name, None)
                if cls is not None and cls.__module__ != __name__:
                    raise pytest.UsageError(
                        f"{name}.{cls_name} is scikit-learn's class, not hpcml's: the "
                        "substitution came too late (was the module imported before?)")
        excluded = dict(EXCLUDED)
        if _world().Get_size() > 1:
            excluded.update(EXCLUDED_WHEN_SPREAD)
        for item in items:
            key = f"{item.module.__name__.rsplit('.', 1)[-1]}:{item.originalname}"
            if key in excluded:
                item.add_marker(pytest.mark.skip(reason=f"hpcml exclusion: {excluded[key]}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    comm = _world()
    if report.failed and comm.Get_size() > 1:
        sys.stderr.write(
            f"\n### rank {comm.Get_rank()} of {comm.Get_size()}: {item.nodeid} failed "
            f"({report.when})\n{report.longreprtext}\n"
        )
        sys.stderr.flush()
        if not KEEP_GOING:
            comm.Abort(1)
