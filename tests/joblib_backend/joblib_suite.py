"""pytest plugin: joblib's own backend tests (from the installed joblib) with ``"mpi"``.

Nothing of joblib is copied: the installed ``joblib.test.test_parallel`` is imported once
the backend is registered, ``"mpi"`` is added to the backend lists it parametrizes with
(``BACKENDS`` lists pick it up already through the registry), and only the test cases that
run with ``"mpi"`` are kept. :data:`EXCLUDED` lists those that do not apply, and why.
"""

from __future__ import annotations

import pytest

from hpcml.engines.mpi.joblib_backend import MPIBackend, register

register()  # before joblib's test module builds its lists from BACKENDS

import joblib.test.test_parallel as tp  # noqa: E402  (pytest --pyargs finds this module)

for name in ("PARALLEL_BACKENDS", "PROCESS_BACKENDS", "all_backends_for_context_manager"):
    if "mpi" not in getattr(tp, name):
        getattr(tp, name).append("mpi")

#: Test name (without parameters) -> why it does not apply to a third-party backend.
EXCLUDED: dict[str, str] = {}


def _uses_mpi(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(v == "mpi" or isinstance(v, MPIBackend) for v in params.values()
               if isinstance(v, (str, MPIBackend)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        (keep if _uses_mpi(item) else drop).append(item)
    for item in keep:
        reason = EXCLUDED.get(item.originalname)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"not for a third-party backend: {reason}"))
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
